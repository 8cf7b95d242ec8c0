#!/usr/bin/env bash
# Builds the bcryptprimitives.dll stub (see bcryptprimitives.c) into
# target/wine/. Needs x86_64-w64-mingw32-gcc (Debian: gcc-mingw-w64-x86-64).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../../target/wine"
mkdir -p "$out"
x86_64-w64-mingw32-gcc -O2 -shared -s -o "$out/bcryptprimitives.dll" \
    "$here/bcryptprimitives.c" "$here/bcryptprimitives.def"
echo "$out/bcryptprimitives.dll"
