#!/usr/bin/env bash
# The README's first command: install what is missing (Debian 12), build
# feedguardd out of tree in build/, and run the demo.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/contrib/install-deps.sh"
cd "$top"
[ -x configure ] && [ configure -nt configure.ac ] && [ Makefile.in -nt Makefile.am ] || autoreconf -fi >/dev/null 2>&1
mkdir -p build
cd build
[ -f Makefile ] || ../configure -q
make -s -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
exec /usr/bin/python3 "$top/contrib/demo/feed_demo.py" --build "$top/build"
