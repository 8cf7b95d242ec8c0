#!/usr/bin/env bash
# Runs a Windows executable under Wine: cargo's runner for
# x86_64-pc-windows-gnu (CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER), so
# `cargo test/run --target x86_64-pc-windows-gnu` go through here.
#
# - copies the bcryptprimitives.dll stub (build-stub.sh) beside the .exe:
#   Wine 8.0 has no bcryptprimitives.dll, whose ProcessPrng Rust's std needs;
# - uses $WINEPREFIX if set (.ci/run makes one per run), else a prefix under
#   the temp dir; no display, no debug chatter;
# - bounds the run with `timeout` ($WINE_TIMEOUT seconds, default 600).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exe="$1"
shift
dll="$here/../../target/wine/bcryptprimitives.dll"
[ -f "$dll" ] || "$here/build-stub.sh" >/dev/null
dir="$(dirname "$exe")"
if ! cmp -s "$dll" "$dir/bcryptprimitives.dll"; then
    cp "$dll" "$dir/bcryptprimitives.dll.tmp$$" && mv -f "$dir/bcryptprimitives.dll.tmp$$" "$dir/bcryptprimitives.dll"
fi
export WINEPREFIX="${WINEPREFIX:-${TMPDIR:-/tmp}/multiproc-wine-$(id -u)}"
export WINEDEBUG="${WINEDEBUG:--all}"
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree,mshtml=}"
export DISPLAY=
unset WAYLAND_DISPLAY
if [ ! -f "$WINEPREFIX/system.reg" ]; then
    mkdir -p "$WINEPREFIX"
    timeout 300 wine wineboot --init >/dev/null 2>&1 || true
    timeout 120 wineserver -w || true
fi
wine=wine
command -v wine >/dev/null || wine=wine64
# stderr goes to a file, then to ours: whether the program wrote any is
# what tells a Wine start failure from a failing program (below).
err="$(mktemp "${TMPDIR:-/tmp}/wine-runner-err.XXXXXXXX")"
trap 'rm -f "$err"' EXIT
run() {
    rc=0
    timeout --kill-after=10 "${WINE_TIMEOUT:-600}" "$wine" "$exe" "$@" 2>"$err" || rc=$?
    cat "$err" >&2
}
run "$@"
# Status 1 with nothing on stderr is Wine failing to start the program:
# a Rust program that fails says why (a panic's message, main's `Err`),
# and exits 101 from a failed test; none of ours exits 1 silently. Wine's
# loader fails so about once among thousands of starts under load (the
# library retries its own worker starts for the same reason,
# `sys::windows::spawn`); for the program started here it shows up as
# this status. One more start, said on stderr and in $WINE_RETRY_LOG,
# which ci.sh prints; a second failure stands.
if [ "$rc" = 1 ] && [ ! -s "$err" ]; then
    echo "wine runner: $(basename "$exe") exited with status 1 and wrote nothing on stderr (no Rust program of ours fails so: taken for Wine failing to start it); starting it once more" >&2
    [ -z "${WINE_RETRY_LOG:-}" ] || echo "$(date -u +%H:%M:%S) $exe $*" >>"$WINE_RETRY_LOG"
    run "$@"
fi
# A failure that printed nothing still says which program and how.
[ "$rc" = 0 ] || echo "wine runner: $(basename "$exe") exited with status $rc" >&2
exit "$rc"
