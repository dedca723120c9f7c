#!/usr/bin/env bash
# Build every libFuzzer target in tests/fuzz/ with clang (ASan + UBSan) and
# run each for a while on its seed corpus.  A crash, leak or sanitizer report
# fails the run and leaves the reproducer in the work directory.
# Usage: tests/fuzz/run.sh [SECONDS_PER_TARGET]   (default 20)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-20}
work=$(mktemp -d "${TMPDIR:-/tmp}/feedguard-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
command -v clang >/dev/null || { echo "fuzz: clang is missing (apt-get install clang)" >&2; exit 1; }
printf '#define _GNU_SOURCE 1\n#define PACKAGE_VERSION "fuzz"\n' > "$work/config.h"
flags="-g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I$top/daemon -I$work"

# target name -> the daemon sources it links
declare -A sources=(
	[config]="daemon/fg_config.c daemon/fg_yaml.c daemon/fg_units.c"
	[grpcframe]="daemon/fg_grpcframe.c"
)
declare -A libs=(
	[config]="-lyaml"
	[grpcframe]="-lz"
)
for t in "${!sources[@]}"; do
	srcs=""
	for s in ${sources[$t]}; do srcs="$srcs $top/$s"; done
	# shellcheck disable=SC2086
	clang $flags "$top/tests/fuzz/fuzz_$t.c" $srcs ${libs[$t]} -o "$work/fuzz_$t"
	mkdir -p "$work/corpus_$t"
	cp "$top/tests/fuzz/corpus/$t/"* "$work/corpus_$t/"
	(cd "$work" && ./"fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 "corpus_$t" 2>"fuzz_$t.log") || {
		tail -n 60 "$work/fuzz_$t.log"
		echo "fuzz: fuzz_$t FAILED" >&2
		trap - EXIT
		exit 1
	}
	runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$work/fuzz_$t.log" | grep -Eo '[0-9]+$' || echo '?')
	echo "fuzz: fuzz_$t clean (${secs}s, $runs executions)"
done
