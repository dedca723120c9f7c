#!/bin/sh
# The researcher's walk-through in one command (README, "A researcher's
# walk-through"): builds build-hooks/, a build configured with
# --enable-test-hooks, beside the source tree (once; later runs only bring
# it up to date), then runs contrib/research/walkthrough.py with it.
# Arguments go to walkthrough.py:  --out DIR  --users N  --seed S  --day YYYY-MM-DD
# build/ (the quick start's) is not touched.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
b="$top/build-hooks"
if [ ! -f "$b/Makefile" ]; then
	echo "walkthrough: configuring $b (--enable-test-hooks; first run only)" >&2
	[ -x "$top/configure" ] || (cd "$top" && autoreconf -fi)
	mkdir -p "$b"
	(cd "$b" && "$top/configure" -q --enable-test-hooks)
fi
make -C "$b" -s -j2 >/dev/null
exec /usr/bin/python3 "$top/contrib/research/walkthrough.py" --build "$b" "$@"
