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
rc=0
timeout --kill-after=10 "${WINE_TIMEOUT:-600}" "$wine" "$exe" "$@" || rc=$?
# A failure that printed nothing (a Wine loader that could not start the
# program, say) still says which program and how.
[ "$rc" = 0 ] || echo "wine runner: $(basename "$exe") exited with status $rc" >&2
exit "$rc"
