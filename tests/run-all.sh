#!/usr/bin/env bash
# The whole test suite, from a fresh clone: install what is missing, build
# out of tree, run `make check` (cmocka units + interop tests with real
# gRPC peers), print the logs of whatever failed, and close with one line
# "tests: N passed, N failed".
#
# Environment:
#   FG_BUILD_DIR        build directory (default: build/ in the tree)
#   FG_CONFIGURE_FLAGS  extra ./configure flags (e.g. --enable-sanitizers);
#                       --enable-test-hooks is always given: the screen-time
#                       tests set each call's time (README, "Testing
#                       hour-scale rules"); .ci/run also builds without it
#   FG_TIME_FACTOR      slack for timing assertions (sanitizers: 3, valgrind: 10)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=${FG_BUILD_DIR:-$top/build}
jobs=$(nproc 2>/dev/null || echo 2)

"$top/contrib/install-deps.sh"
if [ ! -x "$top/configure" ] || [ "$top/configure.ac" -nt "$top/configure" ] ||
   [ "$top/Makefile.am" -nt "$top/Makefile.in" ]; then
	(cd "$top" && autoreconf -fi >/dev/null 2>&1)
fi
mkdir -p "$build"
cd "$build"
flags="--enable-test-hooks ${FG_CONFIGURE_FLAGS:-}"
if [ ! -f Makefile ] || [ "$(cat .fg-configure-flags 2>/dev/null)" != "$flags" ]; then
	# shellcheck disable=SC2086
	"$top/configure" -q $flags 2>/dev/null
	echo "$flags" > .fg-configure-flags
fi
make -s -j"$jobs" >/dev/null

status=0
make -s -j"$jobs" check >/dev/null 2>&1 || status=$?

# A short, honest summary from the per-test logs the harness wrote.
passed=0 failed=0 skipped=0
for log in tests/*.log tests/unit/*.log tests/interop/*.log; do
	[ -f "$log" ] || continue
	case "$log" in *test-suite.log) continue ;; esac
	# A script test (tests/check-*.sh) is one check: its .trs says how it went.
	if [ "${log%/*}" = tests ]; then
		if grep -q ':test-result: PASS' "${log%.log}.trs" 2>/dev/null; then p=1 f=0; else p=0 f=1; fi
		passed=$((passed + p)); failed=$((failed + f))
		echo "$(basename "$log" .log): $p passed, $f failed"
		continue
	fi
	p=$(grep -Eo '\[  PASSED  \] [0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1 || true)
	f=$(grep -Eo '\[  FAILED  \] [0-9]+ test' "$log" | grep -Eo '[0-9]+' | tail -1 || true)
	# pytest's closing line, with or without its ==== frame (-q drops it)
	line=$(grep -E '^(=+ )?[0-9]+ (passed|failed|errors?|skipped|deselected).* in [0-9.]+s' "$log" | tail -1 || true)
	if [ -n "$line" ]; then
		p=$(echo "$line" | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+' || true)
		f=$(( $(echo "$line" | grep -Eo '[0-9]+ failed' | grep -Eo '[0-9]+' || echo 0) + \
		      $(echo "$line" | grep -Eo '[0-9]+ errors?' | grep -Eo '[0-9]+' || echo 0) ))
		s=$(echo "$line" | grep -Eo '[0-9]+ skipped' | grep -Eo '[0-9]+' || true)
		skipped=$((skipped + ${s:-0}))
	fi
	passed=$((passed + ${p:-0}))
	failed=$((failed + ${f:-0}))
	echo "$(basename "$log" .log): ${p:-0} passed, ${f:-0} failed"
done
if [ "$status" -ne 0 ]; then
	for trs in tests/*.trs tests/unit/*.trs tests/interop/*.trs; do
		[ -f "$trs" ] || continue
		if grep -q ':test-result: \(FAIL\|ERROR\)' "$trs"; then
			echo "===== ${trs%.trs}.log ====="
			tail -n 200 "${trs%.trs}.log"
		fi
	done
	[ "$failed" -gt 0 ] || failed=1
fi
if [ "$skipped" -gt 0 ]; then
	echo "tests: $passed passed, $failed failed, $skipped skipped"
else
	echo "tests: $passed passed, $failed failed"
fi
exit "$status"
