#!/bin/bash
# contrib/bench/instructions.sh - instructions per call of fg-state against
# fg-filter under callgrind: the state's user-space work counted exactly,
# where CPU time on this VM moves by more than a change saves.
#
#   contrib/bench/instructions.sh RUN_DIR BUILD_DIR [CALLS]
#
# RUN_DIR is a run-bench.sh --scenario rankfeed --out directory (its
# policy.yaml, policy-state.yaml, bench.key, request.bin, response.msg,
# ranking.pb and bench-upstream); BUILD_DIR holds daemon/feedguardd.  Each
# daemon runs under valgrind --tool=callgrind with one worker, a local
# redis-server (state timeouts of 5 s: valgrind is slow) and CALLS calls
# (default 3000) at 4 in flight, then a run of 1 call for the start-up's
# share.  Prints the instructions per call of each and their difference.
set -euo pipefail
RUN=$(cd "$1" && pwd); BUILD=$(cd "$2" && pwd); N=${3:-3000}
W=$(mktemp -d /tmp/fg-instr.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
for f in policy.yaml policy-state.yaml bench.key request.bin response.msg ranking.pb bench-upstream; do
	cp "$RUN/$f" "$W/"
done
cd "$W"
RP=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$RP" --save '' --appendonly no --dir "$W" > redis.log 2>&1 &
PIDS+=($!)
./bench-upstream -s 100 -r response.msg 0 > up.port 2> up.log &
PIDS+=($!)
for _ in $(seq 100); do [[ -s up.port ]] && [[ $(redis-cli -p "$RP" ping 2>/dev/null) == PONG ]] && break; sleep 0.1; done
read -r UP < up.port
run() {     # run TARGET CALLS: prints the program's total instructions
	local t=$1 n=$2 pol=policy.yaml st="" vp port c
	[[ $t == state ]] && pol=policy-state.yaml &&
		st=$(printf 'state:\n  redis: 127.0.0.1:%s\n  timeout: 5s\n  stall_timeout: 10s' "$RP")
	printf 'listen: 127.0.0.1:0\nworkers: 1\nupstream:\n  address: 127.0.0.1:%s\nadmin:\n  listen: off\nlog:\n  level: info\npolicy: %s\npseudonym_keys:\n  - {id: bench, file: bench.key}\n%s\n' \
		"$UP" "$pol" "$st" > "$t.yaml"
	valgrind --tool=callgrind --callgrind-out-file="$W/cg.$t.$n" -q "$BUILD/daemon/feedguardd" -c "$t.yaml" > "$t.log" 2>&1 &
	vp=$!
	for _ in $(seq 300); do grep -q "event=ready" "$t.log" && break; sleep 0.1; done
	[[ $t == state ]] && for _ in $(seq 100); do grep -q redis_connected "$t.log" && break; sleep 0.1; done
	port=$(grep -o "event=listening addr=127.0.0.1:[0-9]*" "$t.log" | sed 's/.*://')
	c=4; (( n < 4 )) && c=$n
	h2load -n "$n" -c "$c" -m 4 -d request.bin -H 'content-type: application/grpc' -H 'te: trailers' \
		-H 'x-age-band: under_13' -H 'x-device-id: dev-42' \
		"http://127.0.0.1:$port/feedguard.ranking.v1.Ranker/RankFeed" | grep -q "$n succeeded" ||
		{ echo "instructions.sh: $t: not every call succeeded" >&2; kill "$vp"; exit 1; }
	kill -TERM "$vp"; wait "$vp" || true
	callgrind_annotate "$W/cg.$t.$n" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}
f1=$(run filter 1); fn=$(run filter "$N"); s1=$(run state 1); sn=$(run state "$N")
awk -v f1="$f1" -v fn="$fn" -v s1="$s1" -v sn="$sn" -v n="$N" 'BEGIN {
	f = (fn - f1) / (n - 1); s = (sn - s1) / (n - 1)
	printf "instructions a call (callgrind, %d calls, start-up taken out): fg-filter %.0f, fg-state %.0f, state - filter %.0f (%.1f%%)\n", n, f, s, s - f, 100 * (s - f) / f }'
