#!/usr/bin/env bash
# The Windows section of CI (.ci/run calls it): builds for
# x86_64-pc-windows-gnu with mingw and runs every example and every test
# under Wine, each bounded by `timeout`.
#
# Installs what it needs on Debian (wine, gcc-mingw-w64-x86-64) when run as
# root; makes one Wine prefix in a temp dir for the whole run (wineboot is
# slow the first time) and removes it at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=x86_64-pc-windows-gnu
step() { printf '\n--- wine: %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

if ! command -v wine >/dev/null || ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
    step "installing wine and mingw"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends wine wine64 gcc-mingw-w64-x86-64 >/dev/null
    else
        echo "need wine and x86_64-w64-mingw32-gcc (Debian: apt-get install wine wine64 gcc-mingw-w64-x86-64)"
        exit 1
    fi
fi
wine --version

step "ProcessPrng stub (bcryptprimitives.dll)"
.ci/wine/build-stub.sh

WINEPREFIX="$(mktemp -d "${TMPDIR:-/tmp}/multiproc-wine.XXXXXXXXXX")"
export WINEPREFIX WINEDEBUG=-all
cleanup() {
    if [ -s "${WINE_RETRY_LOG:-}" ]; then
        echo "--- wine: programs Wine did not start (status 1, nothing on stderr), started again:"
        cat "$WINE_RETRY_LOG"
    fi
    rm -f "${WINE_RETRY_LOG:-}"
    timeout 30 wineserver -k >/dev/null 2>&1 || true
    rm -rf "$WINEPREFIX"
}
trap cleanup EXIT
step "wine prefix $WINEPREFIX (wineboot)"
timeout 300 wine wineboot --init >/dev/null 2>&1 || true
timeout 120 wineserver -w || true
# Keep the wineserver up between runs (it would exit after each program).
timeout 7200 wineserver -p >/dev/null 2>&1 || true
# Start Wine's own services (services.exe, rpcss, ...) now, from a command
# whose output goes nowhere: the first program of a prefix starts them and
# they keep that program's stdout and stderr open. Started by a doctest,
# they would hold rustdoc's pipes and rustdoc would wait for EOF forever.
timeout 120 wine cmd /c exit 0 </dev/null >/dev/null 2>&1 || true

export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$PWD/.ci/wine/runner.sh"
# Programs Wine failed to start and the runner started again (runner.sh).
WINE_RETRY_LOG="$WINEPREFIX.retries"
: >"$WINE_RETRY_LOG"
export WINE_RETRY_LOG

step "build examples and tests for $target"
cargo build --locked --target "$target" --examples
cargo test --locked --target "$target" --no-run

step "examples under wine (each must exit 0)"
for ex in examples/*.rs; do
    name=$(basename "$ex" .rs)
    if .ci/gated-examples | grep -qx "$name"; then
        echo "--- example $name: needs a cargo feature; not built here"
        continue
    fi
    echo "--- example $name (wine)"
    WINE_TIMEOUT=120 .ci/wine/runner.sh "${CARGO_TARGET_DIR:-target}/$target/debug/examples/$name.exe"
done

step "tests under wine: cargo test --target $target"
WINE_TIMEOUT=600 timeout 1500 cargo test --locked --target "$target"

step "no leftovers under wine"
temp="$WINEPREFIX/drive_c/users/$(id -un)/Temp"
if [ -d "$temp" ] && [ -n "$(ls -A "$temp" 2>/dev/null)" ]; then
    echo "files left in %TEMP%:"; ls -laR "$temp" | head -40; exit 1
fi
echo "nothing left in %TEMP%"
# A Windows process under Wine is a Linux process whose command line is its
# Windows path (Z:\...\target\x86_64-pc-windows-gnu\...).
sleep 2
left=$(ps -eo pid,args | grep -F "$target" | grep -v -e grep -e cargo || true)
if [ -n "$left" ]; then
    echo "processes left running under wine:"; echo "$left"; exit 1
fi
echo "no worker processes left under wine"
