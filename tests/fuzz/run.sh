#!/usr/bin/env bash
# Build every libFuzzer target in tests/fuzz/ with clang (ASan + UBSan) and
# run each for a while on its seed corpus.  A crash, leak or sanitizer report
# fails the run and leaves the reproducer in the work directory.
#
# Usage: tests/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]   (default 20, all)
# A target is named as its file without fuzz_ and .c (pbwire, items), or
# with the prefix (fuzz_items).
# Environment: FG_BUILD_DIR, a configured build directory (default build/):
# its generated daemon/descriptor.pb-c.c, daemon/capture.pb-c.c, proto/ranking.pb and
# tests/unit/pbjson_test.pb are used.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${FG_BUILD_DIR:-$top/build}
secs=${1:-20}
shift || true
work=$(mktemp -d "${TMPDIR:-/tmp}/feedguard-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
command -v clang >/dev/null || { echo "fuzz: clang is missing (apt-get install clang)" >&2; exit 1; }
[ -f "$build/daemon/descriptor.pb-c.c" ] || { echo "fuzz: build first ($build has no daemon/descriptor.pb-c.c)" >&2; exit 1; }
printf '#define _GNU_SOURCE 1\n#define PACKAGE_VERSION "fuzz"\n#define HAVE_NGHTTP2_OPTION_SET_STREAM_RESET_RATE_LIMIT 1\n#define HAVE_NGHTTP2_OPTION_SET_MAX_CONTINUATIONS 1\n' > "$work/config.h"
cflags="-g -O1 -std=c11 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
incs="-I$top/daemon -I$work -I$build/daemon"
libs="-lyaml -lz -lprotobuf-c -lcrypto -levent -levent_pthreads -lnghttp2 -lpthread -lm"

# The daemon's code once, instrumented, as one archive every target links:
# a target pulls in only the objects it uses.
objs=()
for src in "$top"/daemon/fg_*.c "$build/daemon/descriptor.pb-c.c" "$build/daemon/capture.pb-c.c"; do
	o="$work/$(basename "${src%.c}").o"
	# shellcheck disable=SC2086
	clang $cflags $incs -c "$src" -o "$o"
	objs+=("$o")
done
ar cr "$work/libfg.a" "${objs[@]}"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	for f in "$top"/tests/fuzz/fuzz_*.c; do
		t=$(basename "$f" .c)
		targets+=("${t#fuzz_}")
	done
fi
export FG_RANKING_PB="$build/proto/ranking.pb"
export FG_PBJSON_TEST_PB="$build/tests/unit/pbjson_test.pb"
for t in "${targets[@]}"; do
	t=${t#fuzz_}
	# shellcheck disable=SC2086
	clang $cflags -fsanitize=fuzzer $incs "$top/tests/fuzz/fuzz_$t.c" "$work/libfg.a" $libs -o "$work/fuzz_$t"
	mkdir -p "$work/corpus_$t"
	corpus="$top/tests/fuzz/corpus/$t"
	[ -d "$corpus" ] || corpus="$top/tests/fuzz/corpus/config"   # yaml shares config's seeds
	cp "$corpus/"* "$work/corpus_$t/"
	(cd "$work" && ./"fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 "corpus_$t" 2>"fuzz_$t.log") || {
		tail -n 60 "$work/fuzz_$t.log"
		echo "fuzz: fuzz_$t FAILED (work dir kept: $work)" >&2
		trap - EXIT
		exit 1
	}
	runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$work/fuzz_$t.log" | grep -Eo '[0-9]+$' || echo '?')
	echo "fuzz: fuzz_$t clean (${secs}s, $runs executions)"
done
