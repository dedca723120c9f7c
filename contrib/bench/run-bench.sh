#!/usr/bin/env bash
# contrib/bench/run-bench.sh - feedguardd against nghttpx and against no proxy
# at all, side by side in one run.  See contrib/bench/README.md.
#
# Rounds alternate the targets (direct, nghttpx, feedguardd, direct, ...) so
# that a slow spell of the machine hits all of them alike; each figure in
# the table is the median over the rounds.  h2load runs on CPU 0; the
# upstream and the proxy under test share CPU 1.
#
# Scenarios: "passthrough" (the default: a 200-byte call no policy names,
# throughput, latency and idle memory) and "rankfeed" (an intercepted
# RankFeed call of the reference contract with 10 KiB request and a 100-item
# response: feedguardd without a policy, with the policy for a child band,
# for the filter band, for the filter band with screen-time state in a
# local Redis, and for the adult band, next to nghttpx and direct).
#
# Installs nothing.  Every process it starts is killed by PID when it exits.

set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)

ROUNDS=3
DURATION=5              # seconds of measurement per run (h2load -D)
WARMUP=1                # seconds of warm-up before each (h2load --warm-up-time)
IDLE_CONNS=10000
UP_STREAMS=100          # SETTINGS_MAX_CONCURRENT_STREAMS of the upstream
BUILD=""
OUT=""
PERF=0
ONLY=""
CLIENT_CPU=0
SERVER_CPU=1
SCENARIO=passthrough
DESCRIPTOR_SET=""
URL_PATH=/bench.Bench/Call
RANKFEED_PATH=/feedguard.ranking.v1.Ranker/RankFeed
CHILD_BAND=13_15        # a band the policy edits; "adult" has no rule block
RANKER_DELAY=0          # microseconds the upstream waits before it answers (bench-upstream -d)
REDIS_CPU=""            # rankfeed's redis-server; default the client's core
UPSTREAM_CPU=""         # the upstream (ranker); default the proxy's core
REDIS_IDLE=0            # --redis-idle: redis-server under SCHED_IDLE
RATE=0                  # --rate: also load every target at this fixed total req/s
PAIRS=()                # --pair "A B": A and B loaded at the same time, same rate
DAEMON_ENV=()           # --daemon-env: environment of every feedguardd started
PAIR_ONLY=0             # --pair-only: only the --pair rounds

usage() {
	cat <<EOF
Usage: contrib/bench/run-bench.sh [options]
  --build DIR         feedguardd from the build directory DIR (DIR/daemon/feedguardd)
                      (default: \$FEEDGUARDD, else the tree's daemon/feedguardd)
  --rounds N          rounds per load shape, targets alternating (default $ROUNDS)
  --duration SEC      measured seconds per run (default $DURATION)
  --warm-up SEC       warm-up seconds before each run (default $WARMUP)
  --idle-conns N      idle h2c connections for the memory test, 0 to skip (default $IDLE_CONNS)
  --upstream-streams N  SETTINGS_MAX_CONCURRENT_STREAMS of the upstream (default $UP_STREAMS)
  --out DIR           keep logs and results in DIR (default: a new /tmp/feedguard-bench.*)
  --scenario NAME     passthrough (default): a 200-byte call no policy names, throughput,
                      latency, idle memory; rankfeed: an intercepted RankFeed call (10 KiB
                      request, 100-item response), feedguardd with no policy / child band /
                      adult band next to nghttpx and direct (throughput only)
  --descriptor-set F  ranking.pb for the rankfeed scenario
                      (default: the build directory's proto/ranking.pb)
  --ranker-delay USEC the upstream answers each call USEC microseconds after its request
                      (bench-upstream -d: a ranker slower than a Redis round trip); default 0
  --redis-cpu N       the CPU of rankfeed's redis-server (default $CLIENT_CPU, the client's;
                      on a machine with a third core, give it that)
  --upstream-cpu N    the CPU of the upstream (default $SERVER_CPU, the proxy's): with a
                      slow ranker (--ranker-delay) at one call in flight, the client's
                      core is free while the ranker works, and a ranker there starts its
                      time when the request is written, as a ranker on another host
                      would, not when the proxy's core is next free
  --redis-idle        run rankfeed's redis-server under SCHED_IDLE (chrt --idle 0): its
                      work waits until its core has nothing else to run, as if Redis had
                      a core of its own; for the latency at one call in flight on a
                      machine without a spare core, never for the load shapes
  --perf              also profile feedguardd under the c16/m32 load (perf record -g;
                      rankfeed: the policy daemon with the child band)
  --rate N            also run every target at a fixed N calls a second (h2load -c16 -m32
                      --rps=N/16), below every target's capacity: the CPU per call of
                      targets compared at the same load, so with the same batching
                      (the "rate" lines); 0 (default) skips it
  --pair "A B"        also run targets A and B at the same time, each at a fixed
                      rate (--rate, default 8000 calls a second, half to each): this
                      machine's slow and fast spells then hit both alike, and the
                      median of the rounds' differences of CPU per call is what one
                      costs over the other; then both at one call in flight at the
                      same time (latency); the "Side by side" lines; may be repeated
  --pair-only         only the --pair rounds (no tables): a quick A/B check
  --daemon-env "V=X ..."
                      environment for every feedguardd the run starts (not for h2load,
                      nghttpx, Redis or the upstream): for example an allocator's
                      settings, GLIBC_TUNABLES=glibc.malloc.tcache_count=64, or another
                      allocator, LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2;
                      named in the report's header
  --only "T ..."      measure only these targets (for example "direct nghttpx fg-pass"),
                      in the order the scenario gives them; the tables show only them
  -h, --help          this text
EOF
}

die() { echo "run-bench: $*" >&2; exit 1; }
note() { echo "run-bench: $*" >&2; }

while [[ $# -gt 0 ]]; do
	case $1 in
	--build) BUILD=$2; shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	--duration) DURATION=$2; shift 2 ;;
	--warm-up) WARMUP=$2; shift 2 ;;
	--idle-conns) IDLE_CONNS=$2; shift 2 ;;
	--upstream-streams) UP_STREAMS=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--scenario) SCENARIO=$2; shift 2 ;;
	--descriptor-set) DESCRIPTOR_SET=$2; shift 2 ;;
	--ranker-delay) RANKER_DELAY=$2; shift 2 ;;
	--redis-cpu) REDIS_CPU=$2; shift 2 ;;
	--upstream-cpu) UPSTREAM_CPU=$2; shift 2 ;;
	--redis-idle) REDIS_IDLE=1; shift ;;
	--perf) PERF=1; shift ;;
	--only) ONLY=$2; shift 2 ;;
	--daemon-env) read -r -a DAEMON_ENV <<< "$2"; shift 2 ;;
	--rate) RATE=$2; shift 2 ;;
	--pair) PAIRS+=("$2"); shift 2 ;;
	--pair-only) PAIR_ONLY=1; shift ;;
	-h|--help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
for v in "${DAEMON_ENV[@]}"; do
	[[ $v =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--daemon-env wants NAME=VALUE words, not '$v'"
done
for v in ROUNDS DURATION WARMUP IDLE_CONNS UP_STREAMS RANKER_DELAY RATE; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "--${v,,} wants a whole number, not '${!v}'"
done
(( RANKER_DELAY <= 60000000 )) || die "--ranker-delay is at most 60000000 µs"
(( RATE == 0 || RATE >= 16 )) || die "--rate is at least 16 calls a second (one per h2load client)"
PAIR_RATE=$(( RATE > 0 ? RATE : 8000 ))
[[ -z $REDIS_CPU ]] && REDIS_CPU=$CLIENT_CPU
[[ $REDIS_CPU =~ ^[0-9]+$ ]] || die "--redis-cpu wants a CPU number, not '$REDIS_CPU'"
[[ -z $UPSTREAM_CPU ]] && UPSTREAM_CPU=$SERVER_CPU
[[ $UPSTREAM_CPU =~ ^[0-9]+$ ]] || die "--upstream-cpu wants a CPU number, not '$UPSTREAM_CPU'"
(( ROUNDS >= 1 && DURATION >= 1 )) || die "need at least one round of at least one second"
[[ $SCENARIO == passthrough || $SCENARIO == rankfeed ]] || die "--scenario is passthrough or rankfeed, not '$SCENARIO'"

# --- prerequisites ------------------------------------------------------

check_tools() {
	local missing=() tool py
	for tool in h2load:nghttp2-client nghttpx:nghttp2-proxy taskset:util-linux \
	            cc:gcc make:make pkg-config:pkg-config; do
		command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
	done
	if command -v pkg-config >/dev/null 2>&1; then
		pkg-config --exists libnghttp2 || missing+=(libnghttp2-dev)
		pkg-config --exists libevent || missing+=(libevent-dev)
	fi
	py=/usr/bin/python3
	[[ -x $py ]] || py=$(command -v python3 || true)
	[[ -n $py ]] || missing+=(python3)
	PYTHON=$py
	if [[ $SCENARIO == rankfeed && -n $py ]] && ! "$py" -c 'import google.protobuf' 2>/dev/null; then
		missing+=(python3-protobuf)
	fi
	if [[ $SCENARIO == rankfeed ]]; then
		command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
		command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
	fi
	if [[ ${#missing[@]} -gt 0 ]]; then
		die "missing tools; install them with: apt-get install ${missing[*]}"
	fi
	taskset -c "$SERVER_CPU" true 2>/dev/null ||
		die "CPU $SERVER_CPU is not available: the benchmark needs two cores (h2load on one, the servers on the other)"
	taskset -c "$REDIS_CPU" true 2>/dev/null || die "--redis-cpu $REDIS_CPU: no such CPU here"
	taskset -c "$UPSTREAM_CPU" true 2>/dev/null || die "--upstream-cpu $UPSTREAM_CPU: no such CPU here"
}

find_daemon() {
	if [[ -n $BUILD ]]; then
		FEEDGUARDD=$BUILD/daemon/feedguardd
	elif [[ -z ${FEEDGUARDD:-} ]]; then
		FEEDGUARDD=$TOP/daemon/feedguardd
	fi
	[[ -x $FEEDGUARDD ]] || die "no feedguardd at $FEEDGUARDD: build it (see README.md) or pass --build DIR"
	[[ $SCENARIO == rankfeed ]] || return 0
	# The build makes proto/ranking.pb next to daemon/.
	[[ -n $DESCRIPTOR_SET ]] || DESCRIPTOR_SET=$(dirname "$(dirname "$FEEDGUARDD")")/proto/ranking.pb
	[[ -s $DESCRIPTOR_SET ]] ||
		die "no descriptor set at $DESCRIPTOR_SET: build it (make proto/ranking.pb) or pass --descriptor-set FILE"
}

# File descriptors: the idle test holds IDLE_CONNS sockets in the opener and
# as many in the proxy.  Raising the hard limit needs root.
raise_nofile() {
	local need=$((IDLE_CONNS + 1024)) hard
	(( $(ulimit -Sn) >= need )) && return
	hard=$(ulimit -Hn)
	if [[ $hard != unlimited ]] && (( hard < need )); then
		ulimit -Hn "$need" 2>/dev/null || {
			IDLE_CONNS=$((hard - 1024))
			note "cannot raise the fd limit above $hard; idle test reduced to $IDLE_CONNS connections"
			need=$hard
		}
	fi
	ulimit -Sn "$need" || die "cannot raise the fd limit to $need"
}

# --- process bookkeeping --------------------------------------------------

PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	sleep 0.2
	for pid in "${PIDS[@]}"; do
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	[[ -n ${SHM:-} ]] && rm -rf "$SHM"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for i in {1..50}; do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 0
}

# Sets <var> to the CPU time (ns) of every thread of the given PIDs, from
# the first field of /proc/PID/task/TID/schedstat (time spent on a CPU).
cpu_ns() {
	local -n _out=$1
	local pid f a rest
	shift
	_out=0
	for pid in "$@"; do
		for f in /proc/"$pid"/task/*/schedstat; do
			read -r a rest < "$f" 2>/dev/null || continue
			_out=$((_out + a))
		done
	done
}

# Prints the summed VmRSS (KiB) of the given PIDs.
rss_kb() {
	local pid total=0 k v rest
	for pid in "$@"; do
		while read -r k v rest; do
			[[ $k == VmRSS: ]] && total=$((total + v))
		done < /proc/"$pid"/status
	done
	echo "$total"
}

free_port() {
	"$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
	local port=$1 i
	for i in {1..100}; do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

# --- servers ------------------------------------------------------------

# Per target: its port, the PIDs whose CPU is its cost, the extra request
# headers h2load sends, and the DATA bytes a correct call carries at the
# client (response) and at the upstream (request), 5-byte prefix included.
declare -A PORT CPU_PIDS HDRS EXPECT_RESP EXPECT_REQ ADMIN_PORT
UP_ARGS=()

start_upstream() {
	local delay=()
	(( RANKER_DELAY > 0 )) && delay=(-d "$RANKER_DELAY")
	rm -f "$WORK/upstream.port"       # a stale one from an earlier run would be read at once
	# taskset execs the server, so $! is the server's own PID.
	taskset -c "$UPSTREAM_CPU" "$WORK"/bench-upstream -s "$UP_STREAMS" "${UP_ARGS[@]}" "${delay[@]}" 0 \
		> "$WORK/upstream.port" 2> "$WORK/upstream.log" &
	UP_PID=$!
	PIDS+=("$UP_PID")
	for _ in {1..100}; do
		[[ -s $WORK/upstream.port ]] && break
		sleep 0.05
	done
	read -r UP_PORT < "$WORK/upstream.port" || die "bench-upstream did not start: $(cat "$WORK/upstream.log")"
	PORT[direct]=$UP_PORT
	CPU_PIDS[direct]=$UP_PID
}

# nghttpx, as fair as we can make it:
#   --conf=/dev/null       Debian's /etc/nghttpx/nghttpx.conf would add a frontend and syslog;
#   no --accesslog-file    nghttpx writes no access log unless told to (feedguardd's is off too);
#   windows                as feedguardd's defaults (limits.stream_window 1MiB,
#                          limits.connection_window 16MiB), backend connection window is
#                          already 2^31-1 by default;
#   backend connections    nghttpx opens another h2 backend connection whenever the
#                          upstream's SETTINGS_MAX_CONCURRENT_STREAMS is reached, with no cap
#                          (--backend-connections-per-host/-per-frontend apply to proxy mode
#                          and HTTP/1 backends); feedguardd does the same up to
#                          upstream.max_connections (default 8).  At -c16 -m32 and 100
#                          streams per upstream connection both need 6.
start_nghttpx() {
	local port kids i
	port=$(free_port)
	taskset -c "$SERVER_CPU" nghttpx --conf=/dev/null --workers=1 \
		--frontend="127.0.0.1,$port;no-tls" \
		--backend="127.0.0.1,$UP_PORT;;proto=h2" \
		--no-ocsp \
		--errorlog-file="$WORK/nghttpx.log" \
		--frontend-http2-window-size=1M \
		--frontend-http2-connection-window-size=16M \
		--backend-http2-window-size=1M \
		>> "$WORK/nghttpx.log" 2>&1 &
	NGHTTPX_PID=$!
	PIDS+=("$NGHTTPX_PID")
	wait_port "$port" || die "nghttpx did not start: $(tail -5 "$WORK/nghttpx.log")"
	# The master forks one worker process (pinned too: affinity is
	# inherited), which holds the connections; both are measured.
	for i in {1..100}; do
		kids=$(pgrep -P "$NGHTTPX_PID" | tr '\n' ' ')
		[[ -n $kids ]] && break
		sleep 0.05
	done
	[[ -n $kids ]] || die "nghttpx started no worker process"
	PORT[nghttpx]=$port
	CPU_PIDS[nghttpx]="$NGHTTPX_PID $kids"
}

# start_feedguardd TARGET LOGNAME [CONFIG-LINES [admin]]
# Writes TARGET.yaml in the results directory (workers 1, admin off, the
# rest default, then CONFIG-LINES: the rankfeed scenario's policy and key)
# and starts feedguardd on it.  Sets PORT[TARGET], CPU_PIDS[TARGET], FG_PID.
# With "admin" the admin endpoint listens on a port of its own (the kernel
# picks it), in ADMIN_PORT[TARGET], so the script can read its /metrics.
start_feedguardd() {
	local target=$1 log=$WORK/$2 extra=${3:-} admin=${4:-} conf=$WORK/$1.yaml i port
	{
		echo "listen: 127.0.0.1:0"
		echo "workers: 1"
		echo "upstream:"
		echo "  address: 127.0.0.1:$UP_PORT"
		echo "admin:"
		if [[ $admin == admin ]]; then
			echo "  listen: 127.0.0.1:0"
		else
			echo "  listen: off"
		fi
		echo "log:"
		echo "  level: info"
		[[ -n $extra ]] && printf '%s\n' "$extra"
	} > "$conf"
	: > "$log"
	taskset -c "$SERVER_CPU" env "${DAEMON_ENV[@]}" "$FEEDGUARDD" -c "$conf" 2>> "$log" &
	FG_PID=$!
	PIDS+=("$FG_PID")
	for i in {1..100}; do
		grep -q 'event=ready' "$log" && break
		kill -0 "$FG_PID" 2>/dev/null || die "feedguardd ($target) exited: $(tail -5 "$log")"
		sleep 0.05
	done
	port=$(sed -n 's/.*event=listening addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
	[[ -n $port ]] || die "feedguardd ($target) did not say where it listens: $(tail -5 "$log")"
	PORT[$target]=$port
	CPU_PIDS[$target]=$FG_PID
	if [[ $admin == admin ]]; then
		port=$(sed -n 's/.*event=admin_listening addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
		[[ -n $port ]] || die "feedguardd ($target) did not say where its admin endpoint listens: $(tail -5 "$log")"
		ADMIN_PORT[$target]=$port
	fi
}

# start_redis: a redis-server of our own for the screen-time state, on a
# free port, nothing persisted, pinned to the client's core unless
# --redis-cpu says otherwise (the servers' core is what is measured; a real
# Redis is on another machine, and at -c1 the client's core is idle while
# the call is away).  Its CPU is nobody's cost in the tables.  Sets
# REDIS_PORT, REDIS_PID.
start_redis() {
	local i sched=()
	(( REDIS_IDLE )) && sched=(chrt --idle 0)
	REDIS_PORT=$(free_port)
	# taskset and chrt exec: $! is redis-server's own PID
	taskset -c "$REDIS_CPU" "${sched[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
		--dir "$WORK" --logfile "$WORK/redis.log" --daemonize no > /dev/null 2>&1 &
	REDIS_PID=$!
	PIDS+=("$REDIS_PID")
	for i in {1..100}; do
		[[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && break
		kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited: $(tail -5 "$WORK/redis.log" 2>/dev/null)"
		sleep 0.05
	done
	[[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] ||
		die "redis-server does not answer PING on port $REDIS_PORT: $(tail -5 "$WORK/redis.log" 2>/dev/null)"
}

# The exposure counter of fg-state's one user (every call carries the same
# user.user_id) grows by the 20 body_image items of each page, and
# per_day's largest value (100000) is 5000 calls: at thousands of calls a
# second the limit would fire within a second and the bench would measure
# pages with the body_image items removed.  So the counter's field is
# dropped every 50 ms (one redis-cli, on the client's core), which leaves
# every call's state work as it was: the read finds the user's record,
# the filter applies the allowance, the update adds to the counter.  Each
# time it writes the value it dropped to redis-reset.txt: the updates'
# work, seen from Redis.
start_exposure_reset() {
	taskset -c "$CLIENT_CPU" redis-cli -p "$REDIS_PORT" -r -1 -i 0.05 EVAL \
		"local m = 0
		 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do
		   m = math.max(m, tonumber(redis.call('HGET', k, ARGV[2]) or '0') or 0)
		   redis.call('HDEL', k, ARGV[2])
		 end
		 return m" \
		0 'fg:*' 'x:body_image' > "$WORK/redis-reset.txt" 2> "$WORK/redis-reset.log" &
	RESET_PID=$!
	PIDS+=("$RESET_PID")
}

# redis_rtt: "median p99" µs of 2000 PINGs to our Redis from the servers'
# core, where feedguardd runs, one every 200 µs or so (back to back they
# would be cheaper than a call's single round trip: nothing goes idle).
redis_rtt() {
	taskset -c "$SERVER_CPU" "$PYTHON" - "$REDIS_PORT" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
t = []
for _ in range(2000):
    time.sleep(0.0002)
    a = time.perf_counter_ns()
    s.sendall(b"PING\r\n")
    r = b""
    while not r.endswith(b"\r\n"):
        r += s.recv(64)
    t.append((time.perf_counter_ns() - a) / 1000)
t.sort()
print("%.0f %.0f" % (t[len(t) // 2], t[len(t) * 99 // 100]))
PY
}

# fetch_metrics TARGET FILE: the target's admin /metrics into FILE.
fetch_metrics() {
	"$PYTHON" -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
		"http://127.0.0.1:${ADMIN_PORT[$1]}/metrics" > "$2"
}

# metric FILE NAME [FILTER]: the sum of NAME's samples in FILE (every
# label set, or those whose line matches the regular expression FILTER).
metric() {
	awk -v n="$2" -v f="${3:-}" '
		/^#/ { next }
		{ name = $1; sub(/\{.*/, "", name) }
		name == n && (f == "" || $0 ~ f) { s += $NF }
		END { printf "%.0f\n", s }' "$1"
}

# redis_latency FILE0 FILE1: mean µs of feedguardd's Redis commands between
# two /metrics snapshots, and how many.
redis_latency() {
	local s0 c0 s1 c1
	s0=$(awk '$1 == "feedguard_redis_latency_seconds_sum" { print $2 }' "$1")
	c0=$(awk '$1 == "feedguard_redis_latency_seconds_count" { print $2 }' "$1")
	s1=$(awk '$1 == "feedguard_redis_latency_seconds_sum" { print $2 }' "$2")
	c1=$(awk '$1 == "feedguard_redis_latency_seconds_count" { print $2 }' "$2")
	awk -v s0="${s0:-0}" -v c0="${c0:-0}" -v s1="${s1:-0}" -v c1="${c1:-0}" \
		'BEGIN { n = c1 - c0; if (n > 0) printf "%.0f %d\n", (s1 - s0) * 1e6 / n, n; else print "- 0" }'
}

# upstream_stats REQS_VAR BYTES_VAR: the upstream's running totals of
# requests answered and request DATA bytes received, which bench-upstream
# writes to its log on SIGUSR1.
upstream_stats() {
	local -n _reqs=$1 _bytes=$2
	local n0 n line
	_reqs=0 _bytes=0
	n0=$(grep -c '^stats ' "$WORK/upstream.log")
	kill -USR1 "$UP_PID" 2>/dev/null || return 1
	for _ in {1..300}; do
		n=$(grep -c '^stats ' "$WORK/upstream.log")
		(( n > n0 )) && break
		sleep 0.01
	done
	(( n > n0 )) || return 1
	line=$(grep '^stats ' "$WORK/upstream.log" | tail -1)
	_reqs=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<< "$line")
	_bytes=$(sed -n 's/.*request_bytes=\([0-9]*\).*/\1/p' <<< "$line")
}

alive() {
	local pid
	for pid in "$@"; do
		kill -0 "$pid" 2>/dev/null || return 1
	done
}

# --- one load run ---------------------------------------------------------

# h2load_args TARGET: sets H2ARGS to the request options every run of
# TARGET uses (body, headers) and H2URL to its URL.
h2load_args() {
	local target=$1 h
	H2ARGS=(-d "$REQUEST" -H 'content-type: application/grpc' -H 'te: trailers')
	while IFS= read -r h; do
		[[ -n $h ]] && H2ARGS+=(-H "$h")
	done <<< "${HDRS[$target]:-}"
	H2URL="http://127.0.0.1:${PORT[$target]}$URL_PATH"
}

# within_1pct VALUE EXPECTED OVERHEAD: true when VALUE is within 1% of
# EXPECTED, or of EXPECTED + OVERHEAD.
within_1pct() {
	awk -v v="$1" -v e="$2" -v o="$3" 'BEGIN { d = v - e; if (d > o) d -= o; else if (d > 0) d = 0
		if (d < 0) d = -d; exit !(e > 0 && d <= e / 100) }'
}

# FG_BENCH_SYSCALLS=1: count the proxy's system calls and loop wakeups
# (epoll_wait) and page faults in the measured phase with perf stat, per call, on each
# round's line: what a change in batching does, beside its CPU.
SYSCALLS_PID=""
syscalls_start() {
	local tag=$1; shift
	[[ ${FG_BENCH_SYSCALLS:-0} == 1 && $tag != *-direct-* ]] || return 0
	perf stat -x, -o "$WORK/syscalls-$tag.txt" -e raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,page-faults \
		-p "$(IFS=,; echo "$*")" > /dev/null 2>&1 &
	SYSCALLS_PID=$!
	PIDS+=("$SYSCALLS_PID")
}
syscalls_stop() {
	[[ -n $SYSCALLS_PID ]] || return 0
	kill -INT "$SYSCALLS_PID" 2>/dev/null
	wait "$SYSCALLS_PID" 2>/dev/null
	SYSCALLS_PID=""
}
syscalls_per_call() {
	local f=$WORK/syscalls-$1.txt
	[[ -s $f && $2 -gt 0 ]] || return 0
	awk -F, -v n="$2" '$3 ~ /sys_enter$/ { s = $1 } $3 ~ /epoll_wait/ { w = $1 } $3 ~ /page-faults/ { f = $1 }
		END { printf "  syscalls %.2f/call, wakeups %.2f/call, page faults %.2f/call", s / n, w / n, f / n }' "$f"
}

# p50_p99 LOG: nearest-rank p50 and p99 of the latencies (µs, third
# column) of an h2load --log-file.
p50_p99() {
	cut -f3 "$1" | LC_ALL=C sort -n | awk '
		{ v[NR] = $1 }
		END { if (NR) { a = int((NR * 50 + 99) / 100); b = int((NR * 99 + 99) / 100); print v[a], v[b] } }'
}

# run_load TARGET ROUND SHAPE  (SHAPE is c16, c1 or rate)
# Appends one line to $RESULTS: shape target round req/s p50_us p99_us
# proxy_cpu_us_per_req upstream_cpu_us_per_req succeeded errors short
# response_bytes_per_call upstream_request_bytes_per_call check.
run_load() {
	local target=$1 round=$2 shape=$3
	local conc streams tag out lat fifo hpid line c0=0 c1=0 u0=0 u1=0 marks=0
	local rps="" succ=0 failed=0 errored=0 tmo=0 bytes=0 p50=- p99=- cpu=- ucpu=- err short
	local r0 b0 r1 b1 resp=- upreq=- check=ok
	local -a pids
	read -ra pids <<< "${CPU_PIDS[$target]}"
	case $shape in
	c16) conc=16; streams=32 ;;
	c1) conc=1; streams=1 ;;
	rate) conc=16; streams=32 ;;
	esac
	tag=$shape-$target-r$round
	out=$WORK/h2load-$tag.txt
	lat=$SHM/lat-$tag.log
	fifo=$WORK/fifo
	rm -f "$fifo"
	mkfifo "$fifo"
	h2load_args "$target"
	upstream_stats r0 b0
	taskset -c "$CLIENT_CPU" timeout $((DURATION + WARMUP + 60)) \
		h2load -c"$conc" -m"$streams" -t1 -D "$DURATION" --warm-up-time="$WARMUP" \
		$( [[ $shape == rate ]] && echo "--rps=$((RATE / 16))") \
		"${H2ARGS[@]}" --log-file="$lat" "$H2URL" > "$fifo" 2>&1 &
	hpid=$!
	PIDS+=("$hpid")
	# CPU is sampled when h2load announces the start and the end of the
	# measured phase, so warm-up work is not charged to measured requests.
	while IFS= read -r line; do
		printf '%s\n' "$line" >> "$out"
		case $line in
		"Main benchmark duration is started"*)
			cpu_ns c0 "${pids[@]}"; cpu_ns u0 "$UP_PID"; marks=$((marks + 1))
			syscalls_start "$tag" "${pids[@]}" ;;
		"Main benchmark duration is over"*)
			cpu_ns c1 "${pids[@]}"; cpu_ns u1 "$UP_PID"; marks=$((marks + 1))
			syscalls_stop ;;
		"finished in "*)
			rps=$(sed -n 's/.*, \([0-9.]*\) req\/s.*/\1/p' <<< "$line") ;;
		"requests: "*)
			read -r succ failed errored tmo < <(sed -n \
				's/.* \([0-9]*\) succeeded, \([0-9]*\) failed, \([0-9]*\) errored, \([0-9]*\) timeout.*/\1 \2 \3 \4/p' <<< "$line") ;;
		"traffic: "*)
			bytes=$(sed -n 's/traffic: [^(]*(\([0-9]*\)) total.*/\1/p' <<< "$line") ;;
		esac
	done < "$fifo"
	wait "$hpid"
	rm -f "$fifo"
	upstream_stats r1 b1

	[[ -n $rps ]] || { note "h2load failed for $tag: $(tail -3 "$out")"; rps=0; }
	[[ -s $lat ]] && read -r p50 p99 < <(p50_p99 "$lat")
	rm -f "$lat"
	if (( marks == 2 && succ > 0 )); then
		[[ $target != direct ]] && cpu=$(awk -v d=$((c1 - c0)) -v n="$succ" 'BEGIN { printf "%.2f", d / 1000 / n }')
		ucpu=$(awk -v d=$((u1 - u0)) -v n="$succ" 'BEGIN { printf "%.2f", d / 1000 / n }')
	fi
	# h2load reads no trailers: a gRPC error in a 200 looks like a success.
	# A good reply carries EXPECT_RESP bytes of DATA, so h2load's traffic
	# total (measured phase; its "data" figure counts the warm-up too) is at
	# least that per call; count the shortfall (1% slack for replies cut at
	# the phase boundaries).
	err=$((failed + errored + tmo))
	short=$(awk -v b="${bytes:-0}" -v n="$succ" -v r="${EXPECT_RESP[$target]}" \
		'BEGIN { s = n - b / r; print (n > 0 && s > n / 100) ? int(s) : 0 }')
	# What the policy did, seen from both ends: bytes per call at the client
	# (h2load's total: the DATA plus some 30-60 bytes of frame and header
	# overhead) and request DATA bytes per call at the upstream (its own
	# counters, whole run).  Both must match the expected sizes within 1%
	# (plus 64 bytes of overhead at the client).
	(( succ > 0 )) && resp=$(( ${bytes:-0} / succ ))
	(( r1 > r0 )) && upreq=$(( (b1 - b0) / (r1 - r0) ))
	if ! within_1pct "$resp" "${EXPECT_RESP[$target]}" 64 || ! within_1pct "$upreq" "${EXPECT_REQ[$target]}" 0; then
		check=FAIL
		note "CHECK FAILED for $tag: $resp bytes per call at the client (expected ${EXPECT_RESP[$target]}" \
			"of DATA + framing), $upreq request bytes per call at the upstream (expected ${EXPECT_REQ[$target]})"
		CHECK_FAILED+=("$tag")
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$shape" "$target" "$round" "$rps" "$p50" \
		"$p99" "$cpu" "$ucpu" "$succ" "$err" "$short" "$resp" "$upreq" "$check" >> "$RESULTS"
	printf '  %-3s %-10s round %s: %9.0f req/s  p50 %6s us  p99 %6s us  cpu %5s us/req  upstream %5s us/req  bytes resp %s req %s  errors %s%s%s\n' \
		"$shape" "$target" "$round" "$rps" "$p50" "$p99" "$cpu" "$ucpu" "$resp" "$upreq" "$err" \
		"$( ((short > 0)) && echo " short-replies $short")" "$(syscalls_per_call "$tag" "$succ")" >&2
	if ! alive "${pids[@]}" "$UP_PID"; then
		note "a server died during $tag; see $WORK/*.log"
		DIED+=("$tag")
	fi
}

# preflight: 2048 calls in the shape of the load (-c16 -m32) to every target
# before anything is measured.  Every call must complete (a call that stalls
# hangs h2load -n) and carry exactly the expected bytes at both ends (the
# child's messages edited, everyone else's untouched), or we stop.
preflight() {
	local t n=2048 out succ data r0 b0 r1 b1 bad=0
	for t in "${TARGETS[@]}"; do
		h2load_args "$t"
		upstream_stats r0 b0
		out=$(taskset -c "$CLIENT_CPU" timeout 30 h2load -n "$n" -c16 -m32 -t1 "${H2ARGS[@]}" "$H2URL" 2>&1)
		upstream_stats r1 b1
		printf '%s\n' "$out" > "$WORK/h2load-preflight-$t.txt"
		succ=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' <<< "$out")
		data=$(sed -n 's/^traffic: .*(\([0-9]*\)) data.*/\1/p' <<< "$out")
		if [[ ${succ:-0} != "$n" || ${data:-0} != $((n * ${EXPECT_RESP[$t]})) ||
		      $((r1 - r0)) != "$n" || $((b1 - b0)) != $((n * ${EXPECT_REQ[$t]})) ]]; then
			note "CHECK FAILED: $t: $n calls: ${succ:-0} succeeded, ${data:-0} response bytes at the client" \
				"(expected $((n * ${EXPECT_RESP[$t]}))), $((r1 - r0)) requests with $((b1 - b0)) bytes at the" \
				"upstream (expected $((n * ${EXPECT_REQ[$t]})))"
			bad=1
		else
			note "check $t: ${EXPECT_RESP[$t]} response bytes per call at the client," \
				"${EXPECT_REQ[$t]} request bytes per call at the upstream: ok"
		fi
	done
	(( bad == 0 )) || die "the targets do not pass the calls on as expected (see above and $WORK); nothing measured"
}

# --- idle connections -----------------------------------------------------

# idle_test TARGET: RSS of the proxy before and with IDLE_CONNS idle clients.
idle_test() {
	local target=$1 before after line opened=0 done_line
	local -a pids
	read -ra pids <<< "${CPU_PIDS[$target]}"
	sleep 0.5
	before=$(rss_kb "${pids[@]}")
	# exec: OPENER_PID is then the opener itself (taskset execs it too).
	coproc OPENER { exec taskset -c "$CLIENT_CPU" "$PYTHON" "$HERE/idle-conns.py" 127.0.0.1 \
		"${PORT[$target]}" "$IDLE_CONNS"; }
	PIDS+=("$OPENER_PID")
	# Own copies of the pipes: bash drops OPENER[] as soon as the opener exits.
	local opener_pid=$OPENER_PID opener_in opener_out
	local coproc_in=${OPENER[1]}
	exec {opener_in}>&"${OPENER[1]}" {opener_out}<&"${OPENER[0]}"
	exec {coproc_in}>&-
	if ! IFS= read -r -t 180 line <&"$opener_out"; then
		line="ready opened=0 (no answer from idle-conns.py)"
	fi
	opened=$(sed -n 's/.*opened=\([0-9]*\).*/\1/p' <<< "$line")
	sleep 2         # let the proxy finish whatever the handshakes started
	after=$(rss_kb "${pids[@]}")
	alive "${pids[@]}" || { note "$target died during the idle test"; DIED+=("idle-$target"); }
	exec {opener_in}>&-
	IFS= read -r -t 30 done_line <&"$opener_out" || done_line="(no final line)"
	exec {opener_out}<&-
	wait "$opener_pid" 2>/dev/null
	printf '%s\t%s\t%s\t%s\t%s\n' "$target" "$before" "$after" "${opened:-0}" "$done_line" >> "$IDLE_RESULTS"
	printf '  idle %-10s: RSS %d -> %d KiB with %s connections (%s; %s)\n' "$target" "$before" "$after" \
		"${opened:-0}" "$line" "$done_line" >&2
}

# Warns when something else keeps the CPUs busy: the figures would be noise.
check_quiet() {
	local a b busy
	read -r _ a < <(awk '/^cpu / { print "x", $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)
	sleep 1
	read -r _ b < <(awk '/^cpu / { print "x", $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)
	busy=$(( (b - a) * 100 / $(getconf CLK_TCK) ))
	if (( busy > 10 )); then
		note "warning: the machine is busy before we start ($busy% of a CPU in use by other"
		note "processes); the results will be noisy.  Busiest now:"
		ps -eo pcpu,pid,args --sort=-pcpu | sed -n '2,4p' | cut -c1-100 >&2
	fi
}

# --- report -------------------------------------------------------------

# median SHAPE TARGET COLUMN: median of a RESULTS column over the rounds.
median() {
	awk -F'\t' -v s="$1" -v t="$2" -v c="$3" '$1 == s && $2 == t && $c != "-" { print $c }' "$RESULTS" |
		LC_ALL=C sort -g | awk '{ v[NR] = $1 } END {
			if (!NR) { print "-"; exit }
			if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

sum_col() {
	awk -F'\t' -v t="$1" -v c="$2" '$2 == t { s += $c } END { print s + 0 }' "$RESULTS"
}

ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'
}

ms() {
	awk -v u="$1" 'BEGIN { if (u == "-") print "-"; else printf "%.2f", u / 1000 }'
}

report() {
	local t rps p50 p99 l50 l99 cpu ucpu errs short direct_rps ng_cpu fg_cpu cratio
	direct_rps=$(median c16 direct 4)
	ng_cpu=$(median c16 nghttpx 7)
	fg_cpu=$(median c16 feedguardd 7)
	echo "| target | req/s | × direct | p50 ms | p99 ms | c1 p50 µs | c1 p99 µs | CPU µs/req | × nghttpx | c1 CPU µs/req | upstream µs/req | errors |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for t in direct nghttpx feedguardd; do
		rps=$(median c16 "$t" 4)
		p50=$(median c16 "$t" 5); p99=$(median c16 "$t" 6)
		l50=$(median c1 "$t" 5); l99=$(median c1 "$t" 6)
		cpu=$(median c16 "$t" 7); ucpu=$(median c16 "$t" 8)
		errs=$(sum_col "$t" 10); short=$(sum_col "$t" 11)
		cratio=-
		[[ $t == feedguardd ]] && cratio=$(ratio "$fg_cpu" "$ng_cpu")
		[[ $t == nghttpx ]] && cratio=1.00
		printf '| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s%s |\n' "$t" "$rps" \
			"$(ratio "$rps" "$direct_rps")" "$(ms "$p50")" "$(ms "$p99")" "$l50" "$l99" "$cpu" "$cratio" \
			"$(median c1 "$t" 7)" "$ucpu" "$errs" "$( ((short > 0)) && echo " ($short short)")"
	done
}

report_idle() {
	[[ -s $IDLE_RESULTS ]] || return 0
	echo
	echo "| target | RSS before MB | RSS with $IDLE_CONNS idle conns MB | growth MB | KiB per conn | conns held |"
	echo "|---|---:|---:|---:|---:|---:|"
	awk -F'\t' '{ printf "| %s | %.1f | %.1f | %.1f | %.1f | %d |\n", $1, $2 / 1024, $3 / 1024,
		($3 - $2) / 1024, ($4 > 0) ? ($3 - $2) / $4 : 0, $4 }' "$IDLE_RESULTS"
}

# deltas TARGET BASE [SHAPE [COLUMN]]: "median r1 r2 ..." of the per-round
# differences of a RESULTS column (default: the c16 CPU per call), TARGET
# minus BASE (the same round: adjacent runs).
deltas() {
	awk -F'\t' -v t="$1" -v b="$2" -v s="${3:-c16}" -v c="${4:-7}" '
		$1 == s && $c != "-" && $2 == t { x[$3] = $c }
		$1 == s && $c != "-" && $2 == b { y[$3] = $c }
		END {
			n = 0
			for (r = 1; r in x || r in y; r++)
				if (r in x && r in y) { d[++n] = x[r] - y[r]; list = list sprintf(" %+.2f", d[n]) }
			if (!n) { print "-"; exit }
			for (i = 2; i <= n; i++)        # insertion sort: a handful of rounds
				for (j = i; j > 1 && d[j - 1] > d[j]; j--) { t = d[j]; d[j] = d[j - 1]; d[j - 1] = t }
			m = (n % 2) ? d[(n + 1) / 2] : (d[n / 2] + d[n / 2 + 1]) / 2
			printf "%+.2f%s\n", m, list
		}' "$RESULTS"
}

# measured T [T ...]: all of these targets are in this run (--only).
measured() {
	local t
	for t; do
		[[ " ${TARGETS[*]} " == *" $t "* ]] || return 1
	done
}

report_rankfeed() {
	local t rps p50 p99 cpu ucpu errs short direct_rps delta d d1 rest fails base
	direct_rps=$(median c16 direct 4)
	echo "| target | x-age-band | req/s | × direct | p50 ms | p99 ms | c1 p50 µs | c1 p99 µs | CPU µs/call | − no policy µs | upstream µs/call | upstream got B/call | client got B/call | errors |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for t in "${TARGETS[@]}"; do
		rps=$(median c16 "$t" 4)
		p50=$(median c16 "$t" 5); p99=$(median c16 "$t" 6)
		cpu=$(median c16 "$t" 7); ucpu=$(median c16 "$t" 8)
		errs=$(sum_col "$t" 10); short=$(sum_col "$t" 11)
		delta=-
		[[ $t == fg-child || $t == fg-adult || $t == fg-filter || $t == fg-state || $t == fg-capture ||
		   $t == fg-capture-off ]] &&
			{ read -r delta _ <<< "$(deltas "$t" fg-pass)"; }
		printf '| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %.0f | %.0f | %s%s |\n' "${LABEL[$t]}" \
			"$(sed -n 's/^x-age-band: //p' <<< "${HDRS[$t]}")" "$rps" "$(ratio "$rps" "$direct_rps")" \
			"$(ms "$p50")" "$(ms "$p99")" "$(median c1 "$t" 5)" "$(median c1 "$t" 6)" "$cpu" "$delta" "$ucpu" \
			"$(median c16 "$t" 13)" "$(median c16 "$t" 12)" "$errs" "$( ((short > 0)) && echo " ($short short)")"
	done
	echo
	measured fg-child fg-pass && { read -r d rest <<< "$(deltas fg-child fg-pass)"
	printf 'Intercepted call, band %s, minus the same call through feedguardd without a policy: %s µs of CPU per call\n' \
		"$CHILD_BAND" "$d"
	printf '(median of the rounds:%s); target under 5 µs: %s.\n' "$rest" \
		"$(awk -v d="$d" 'BEGIN { print (d != "-" && d + 0 < 5) ? "met" : "NOT MET" }')"; }
	measured fg-filter fg-child && { read -r d rest <<< "$(deltas fg-filter fg-child)"
	printf 'Filter (band under_13: the same strip, then 100 items with labels as messages, 10 excluded, 20 demoted): %s µs of CPU per call over the strip-only call (rounds:%s); target under 5 µs: %s.\n' \
		"$d" "$rest" "$(awk -v d="$d" 'BEGIN { print (d != "-" && d + 0 < 5) ? "met" : "NOT MET" }')"; }
	measured fg-state fg-filter && { read -r d rest <<< "$(deltas fg-state fg-filter)"
	printf 'State (band under_13: the filter, then a Redis read beside the ranker and an update after the response): %s µs of feedguardd CPU per call over the filter-only call (rounds:%s); target under 5 µs: %s.\n' \
		"$d" "$rest" "$(awk -v d="$d" 'BEGIN { print (d != "-" && d + 0 < 5) ? "met" : "NOT MET" }')"
	read -r d1 rest <<< "$(deltas fg-state fg-filter c1)"
	printf 'At one call in flight (-c1 -m1, nothing batched) the same difference is %s µs of CPU per call (rounds:%s): nothing is batched there, so each call'"'"'s Redis replies (the read'"'"'s, the update'"'"'s) are events of their own.\n' \
		"$d1" "$rest"
	rate_line fg-state fg-filter
	pair_line fg-state fg-filter
	report_state_latency "$d"; }
	measured fg-capture fg-capture-off fg-filter && { read -r d rest <<< "$(deltas fg-capture fg-filter)"
	base=$(median c16 fg-filter 7)
	printf 'Capture (the filter'"'"'s call recorded whole, every call sampled, the writer thread included): %s µs of CPU per call over the filter-only call (rounds:%s), %s of that call'"'"'s %s µs; target under 10%%: %s.\n' \
		"$d" "$rest" "$(awk -v d="$d" -v b="$base" 'BEGIN { printf "%.1f%%", (b > 0 ? 100 * d / b : 0) }')" "$base" \
		"$(awk -v d="$d" -v b="$base" 'BEGIN { print (d != "-" && b > 0 && d / b < 0.10) ? "met" : "NOT MET" }')"
	read -r d rest <<< "$(deltas fg-capture-off fg-filter)"
	printf 'Capture on, the call not sampled (sample 0.000001: the capture pseudonym computed, the sampling decided, nothing kept): %s µs of CPU per call over the filter-only call (rounds:%s), %s of it; target under 10%%: %s.\n' \
		"$d" "$rest" "$(awk -v d="$d" -v b="$base" 'BEGIN { printf "%.1f%%", (b > 0 ? 100 * d / b : 0) }')" \
		"$(awk -v d="$d" -v b="$base" 'BEGIN { print (d != "-" && b > 0 && d / b < 0.10) ? "met" : "NOT MET" }')"
	rate_line fg-capture fg-filter
	rate_line fg-capture-off fg-filter
	pair_line fg-capture fg-filter
	pair_line fg-capture-off fg-filter
	capture_mix_line
	[[ -n $CAPTURE_LINE ]] && echo "$CAPTURE_LINE"; }
	measured fg-adult fg-pass && { read -r d rest <<< "$(deltas fg-adult fg-pass)"
	printf 'Intercepted, band adult (no rule block: nothing stripped, messages forwarded as they came): %s µs (rounds:%s).\n' "$d" "$rest"; }
	[[ -n $STATE_LINE ]] && echo "$STATE_LINE"
	[[ -n $STATE_BENCH_LINE ]] && echo "$STATE_BENCH_LINE"
	[[ -n $STATE_FAILED ]] && echo "**STATE CHECK FAILED**: $STATE_FAILED"
	if [[ -n $EDIT_LINE ]]; then
		echo "$EDIT_LINE"
		echo "The difference is smaller than the edit because the edited call moves fewer bytes: its socket and HTTP/2 work shrinks with the stripped fields."
	fi
	fails=$(awk -F'\t' '$14 == "FAIL"' "$RESULTS" | wc -l)
	if (( fails == 0 )); then
		printf 'Checked before the rounds (exact DATA bytes of 2048 calls per target) and in every run (within 1%%): band %s edited, the others untouched.\n' \
			"$CHILD_BAND"
	else
		printf '**CHECK FAILED** in %d runs: the calls did not carry the expected bytes (see results.tsv).\n' "$fails"
	fi
}

# run_pair A B ROUND SHAPE: A and B under the same load at the same time,
# each with its own h2load on the client's core: SHAPE "pair" is -c16 -m32
# --rps at PAIR_RATE/2 calls a second each (CPU per call), "pair1" is -c1
# -m1 (latency at one call in flight: both calls pay the same spells of
# the machine).  Each one's CPU is sampled when both measured phases have
# started and when both are over.  Rows SHAPE in RESULTS: CPU per call in
# column 7, p50 and p99 (µs) in 5 and 6.
run_pair() {
	local a=$1 b=$2 round=$3 shape=$4 t i n ok c p50 p99
	local -A out lat cpu0 cpu1
	local -a pids hp=() load
	if [[ $shape == pair ]]; then
		load=(-c16 -m32 "--rps=$((PAIR_RATE / 32))")
	else
		load=(-c1 -m1)
	fi
	for t in "$a" "$b"; do
		h2load_args "$t"
		out[$t]=$WORK/h2load-$shape-$t-r$round.txt
		lat[$t]=$SHM/lat-$shape-$t-r$round.log
		taskset -c "$CLIENT_CPU" timeout $((DURATION + WARMUP + 60)) \
			h2load "${load[@]}" -t1 -D "$DURATION" --warm-up-time="$WARMUP" \
			"${H2ARGS[@]}" --log-file="${lat[$t]}" "$H2URL" > "${out[$t]}" 2>&1 &
		hp+=($!)
		PIDS+=($!)
	done
	for phase in started over; do
		for ((i = 0; i < (DURATION + WARMUP + 30) * 100; i++)); do
			ok=1
			for t in "$a" "$b"; do
				grep -q "Main benchmark duration is $phase" "${out[$t]}" 2>/dev/null || ok=0
			done
			(( ok )) && break
			sleep 0.01
		done
		for t in "$a" "$b"; do
			read -ra pids <<< "${CPU_PIDS[$t]}"
			if [[ $phase == started ]]; then cpu_ns "cpu0[$t]" "${pids[@]}"; else cpu_ns "cpu1[$t]" "${pids[@]}"; fi
		done
	done
	wait "${hp[@]}"
	for t in "$a" "$b"; do
		n=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "${out[$t]}")
		n=${n:-0}
		c=- p50=- p99=-
		(( n > 0 )) && c=$(awk -v d=$((cpu1[$t] - cpu0[$t])) -v n="$n" 'BEGIN { printf "%.2f", d / 1000 / n }')
		[[ -s ${lat[$t]} ]] && read -r p50 p99 < <(p50_p99 "${lat[$t]}")
		rm -f "${lat[$t]}"
		# the shape names the pair: a target in two pairs (fg-filter beside
		# fg-state and beside fg-capture) has rows of each, never mixed
		printf '%s\t%s\t%s\t-\t%s\t%s\t%s\t-\t%s\t-\t0\t-\t-\tok\n' "$shape:$a:$b" "$t" "$round" "$p50" "$p99" "$c" "$n" >> "$RESULTS"
		printf '  %-5s %-14s round %s: %6s calls  p50 %6s us  p99 %6s us  cpu %5s us/call (beside %s)\n' "$shape" "$t" \
			"$round" "$n" "$p50" "$p99" "$c" "$([[ $t == "$a" ]] && echo "$b" || echo "$a")" >&2
	done
}

# pair_line A B: the side-by-side rounds' differences A − B.
# pair_shape SHAPE A B: the RESULTS shape of A and B's side-by-side rounds
# (SHAPE pair or pair1), in the order --pair named them.
pair_shape() {
	if awk -F'\t' -v s="$1:$3:$2" '$1 == s { found = 1 } END { exit !found }' "$RESULTS"; then
		echo "$1:$3:$2"
	else
		echo "$1:$2:$3"
	fi
}

pair_line() {
	local d rest base p p1
	p=$(pair_shape pair "$1" "$2")
	p1=$(pair_shape pair1 "$1" "$2")
	read -r d rest <<< "$(deltas "$1" "$2" "$p")"
	if [[ $d != - ]]; then
		base=$(median "$p" "$2" 7)
		printf 'Side by side (both loaded at the same time, %s calls a second each): %s − %s = %s µs of CPU per call (rounds:%s; %s: %s µs a call, %s of it).\n' \
			"$((PAIR_RATE / 2))" "$1" "$2" "$d" "$rest" "$2" "$base" \
			"$(awk -v d="$d" -v b="$base" 'BEGIN { printf "%.1f%%", (b > 0 ? 100 * d / b : 0) }')"
	fi
	read -r d rest <<< "$(deltas "$1" "$2" "$p1" 5)"
	if [[ $d != - ]]; then
		printf 'Side by side at one call in flight each (-c1 -m1, both at the same time): %s − %s = %s µs of p50 latency (rounds:%s; %s p50 %s µs), ' \
			"$1" "$2" "$d" "$rest" "$2" "$(median "$p1" "$2" 5)"
		read -r d rest <<< "$(deltas "$1" "$2" "$p1")"
		printf '%s µs of CPU per call (rounds:%s).\n' "$d" "$rest"
	fi
}

# capture_mix_line: what capture costs an intercepted call as shipped
# (capture.sample 0.01 of users).  Sampling is per user and a call is either
# recorded whole or not at all, so the cost per call is the mix of the two
# targets' differences: (1 - s) * fg-capture-off + s * fg-capture.  From the
# side-by-side rounds when there are any, else from the alternating ones.
capture_mix_line() {
	local s=0.01 on off bon boff how="side by side"
	local pon poff
	pon=$(pair_shape pair fg-capture fg-filter)
	poff=$(pair_shape pair fg-capture-off fg-filter)
	read -r on _ <<< "$(deltas fg-capture fg-filter "$pon")"
	read -r off _ <<< "$(deltas fg-capture-off fg-filter "$poff")"
	bon=$(median "$pon" fg-filter 7)
	boff=$(median "$poff" fg-filter 7)
	if [[ $on == - || $off == - ]]; then
		how="alternating rounds"
		read -r on _ <<< "$(deltas fg-capture fg-filter)"
		read -r off _ <<< "$(deltas fg-capture-off fg-filter)"
		bon=$(median c16 fg-filter 7)
		boff=$bon
	fi
	[[ $on == - || $off == - || $bon == - || $boff == - ]] && return 0
	# each difference as a share of the filter's call it ran beside: the
	# shares move less than the µs when the whole machine slows down
	awk -v s="$s" -v on="$on" -v off="$off" -v bon="$bon" -v boff="$boff" -v how="$how" 'BEGIN {
		if (bon <= 0 || boff <= 0) exit
		son = on / bon; soff = off / boff; mix = (1 - s) * soff + s * son
		printf "Capture as shipped (capture.sample %s: %.0f%% of users recorded whole, the rest not at all; %s): (1 − %s) × %.1f%% + %s × %.1f%% = %.2f%% of the filter'"'"'s call (%+.2f µs); target under 10%%: %s", \
			s, 100 * s, how, s, 100 * soff, s, 100 * son, 100 * mix, (1 - s) * off + s * on, (mix < 0.10 ? "met" : "NOT MET")
		if (son < 0.10 && soff < 0.10)
			printf "; it holds at any capture.sample"
		else if (son > soff && soff < 0.10)
			printf "; it holds up to capture.sample %.2f", (0.10 - soff) / (son - soff)
		printf ".\n"
	}'
}

# rate_line A B: with --rate, A's CPU per call minus B's at the same fixed
# load, where neither is at its capacity, so both batch alike.
rate_line() {
	local d rest base
	(( RATE > 0 )) || return 0
	read -r d rest <<< "$(deltas "$1" "$2" rate)"
	base=$(median rate "$2" 7)
	printf 'At a fixed %s calls a second (h2load --rps, both below capacity): %s − %s = %s µs of CPU per call (rounds:%s; %s: %s µs a call, %s of it).\n' \
		"$RATE" "$1" "$2" "$d" "$rest" "$2" "$base" \
		"$(awk -v d="$d" -v b="$base" 'BEGIN { printf "%.1f%%", (b > 0 ? 100 * d / b : 0) }')"
}

# report_state_latency STATE_CPU_DELTA: the c1 lines.  The state read goes
# out beside the ranker's call, so a call waits for it only when Redis
# answers after the ranker: the target is nothing added when the ranker
# takes longer than a Redis round trip, at most one round trip otherwise.
# What the state work costs in CPU on the call's path (sending the read,
# taking its reply, the update after the response) is in the difference
# either way; with a slow ranker it is all there is, so that is the bound
# the difference is held to (noise of a few µs shows in it all the same).
report_state_latency() {
	local cpu=$1 d rest ranker verdict rtt=${REDIS_RTT[0]}
	[[ $rtt =~ ^[0-9]+$ ]] || rtt=0
	read -r d rest <<< "$(deltas fg-state fg-filter c1 5)"
	if (( RANKER_DELAY > 0 )); then
		ranker="the upstream answers after $RANKER_DELAY µs (--ranker-delay)"
	else
		ranker="the upstream answers at once: direct c1 p50 $(median c1 direct 5) µs, the whole call"
	fi
	printf 'added p50 at one call in flight: fg-state − fg-filter = %s µs (rounds:%s; a local Redis round trip is about %s µs: median of 2000 PINGs from the servers'"'"' core, p99 %s µs; feedguardd'"'"'s own Redis commands during the c1 runs: %s µs on average over %s); %s.\n' \
		"$d" "$rest" "${REDIS_RTT[0]}" "${REDIS_RTT[1]}" "${REDIS_C1_LAT[0]}" "${REDIS_C1_LAT[1]}" "$ranker"
	if (( RANKER_DELAY > rtt )); then
		verdict=$(awk -v d="$d" -v c="$cpu" 'BEGIN { if (d == "-") { print "-"; exit }
			if (c == "-" || c + 0 < 0) c = 0; print (d + 0 <= c + 0) ? "met" : "NOT MET" }')
		printf 'Target (the ranker is slower than a Redis round trip): nothing added beyond the state work'"'"'s own CPU (%s µs per call, above): %s.\n' \
			"$cpu" "$verdict"
	else
		verdict=$(awk -v d="$d" -v r="${REDIS_RTT[0]}" 'BEGIN { if (d == "-") print "-"; else print (d + 0 <= r + 0) ? "met" : "NOT MET" }')
		printf 'Target (a ranker not slower than a Redis round trip): at most one round trip (%s µs): %s.\n' \
			"${REDIS_RTT[0]}" "$verdict"
	fi
}

# --- main ---------------------------------------------------------------

check_tools
find_daemon
check_quiet
(( IDLE_CONNS > 0 )) && [[ $SCENARIO == passthrough ]] && raise_nofile
taskset -pc "$CLIENT_CPU" $$ >/dev/null     # this script and its helpers stay off the servers' core

if [[ -n $OUT ]]; then
	mkdir -p "$OUT" || die "cannot create $OUT"
	WORK=$(cd "$OUT" && pwd)
else
	WORK=$(mktemp -d /tmp/feedguard-bench.XXXXXX)
fi
# Latency logs get one line per request: keep them in memory when we can.
if [[ -d /dev/shm && -w /dev/shm ]]; then
	SHM=$(mktemp -d /dev/shm/feedguard-bench.XXXXXX)
else
	SHM=$(mktemp -d "$WORK/lat.XXXXXX")
fi
RESULTS=$WORK/results.tsv
IDLE_RESULTS=$WORK/idle.tsv
: > "$RESULTS"
: > "$IDLE_RESULTS"
DIED=()
CHECK_FAILED=()
declare -A LABEL=([direct]=direct [nghttpx]=nghttpx [feedguardd]=feedguardd
	[fg-pass]="feedguardd, no policy" [fg-child]="feedguardd + policy" [fg-adult]="feedguardd + policy"
	[fg-filter]="feedguardd + policy + filter" [fg-state]="feedguardd + policy + filter + state"
	[fg-capture]="feedguardd + policy + filter + capture"
	[fg-capture-off]="feedguardd + policy + filter + capture, user not sampled")

make -s -C "$HERE" O="$WORK" >/dev/null || die "cannot build bench-upstream"
# The binary measured is a copy: a rebuild during the run cannot swap it.
cp "$FEEDGUARDD" "$WORK/feedguardd" || die "cannot copy $FEEDGUARDD"
FEEDGUARDD_SRC=$(cd "$(dirname "$FEEDGUARDD")" && pwd)/$(basename "$FEEDGUARDD")
note "results in $WORK; feedguardd is $FEEDGUARDD (run from a copy there)"
FEEDGUARDD=$WORK/feedguardd

if [[ $SCENARIO == passthrough ]]; then
	# Request: one gRPC message, 5-byte prefix (uncompressed, length 200) + 200 bytes.
	{ printf '\0\0\0\0\310'; head -c 200 /dev/zero | tr '\0' 'q'; } > "$WORK/request.bin"
	REQUEST=$WORK/request.bin
	TARGETS=(direct nghttpx feedguardd)
	SHAPES=(c16 c1)
	for t in "${TARGETS[@]}"; do
		EXPECT_REQ[$t]=205
		EXPECT_RESP[$t]=4101    # bench-upstream's default reply: 5 + 4096
	done
	CMDLINE="contrib/bench/run-bench.sh --rounds $ROUNDS --duration $DURATION --warm-up $WARMUP --idle-conns $IDLE_CONNS"
	(( RANKER_DELAY > 0 )) && CMDLINE+=" --ranker-delay $RANKER_DELAY"
	[[ $UPSTREAM_CPU != "$SERVER_CPU" ]] && CMDLINE+=" --upstream-cpu $UPSTREAM_CPU"
	start_upstream
	start_nghttpx
	start_feedguardd feedguardd feedguardd.log
	PERF_TARGET=feedguardd
else
	# The messages, the sizes a correct feedguardd produces, the policy.
	cp "$DESCRIPTOR_SET" "$WORK/ranking.pb" || die "cannot copy $DESCRIPTOR_SET"
	"$PYTHON" "$HERE/rankfeed-messages.py" "$WORK/ranking.pb" "$WORK" || die "cannot build the RankFeed messages"
	declare -A SIZE
	while read -r k v; do SIZE[$k]=$v; done < "$WORK/expected.txt"
	head -c 32 /dev/urandom > "$WORK/bench.key"
	# policies/demo.yaml's bands and RankFeed rules; StreamFeed is not called.
	cat > "$WORK/policy.yaml" <<'POLICY'
# run-bench.sh --scenario rankfeed: policies/demo.yaml's RankFeed rules.
descriptor_set: ranking.pb
bands:
  - name: under_13
    match: [under_13, u13]
  - name: "13_15"
    match: ["13_15"]
  - name: "16_17"
    match: ["16_17"]
  - name: adult
    match: [adult, "18_plus"]
unknown_band: under_13
methods:
  /feedguard.ranking.v1.Ranker/RankFeed:
    user_id: {field: user.user_id}
    age_band: {header: x-age-band}
    request:
      - bands: [under_13, "13_15", "16_17"]
        keep_only:
          - user.user_id
          - user.age_band
          - context.surface
          - context.locale
          - context.time_zone
          - context.geo.latitude
          - context.geo.longitude
          - page_size
          - cursor
        coarsen:
          - {field: context.geo.latitude, precision: 0.1}
          - {field: context.geo.longitude, precision: 0.1}
        remove_headers: [x-device-id, x-advertising-id]
    response:
      - bands: [under_13, "13_15", "16_17"]
        remove:
          - items.explanations
          - items.inferred_interest_labels
          - items.feature_weights
          - items.debug_score
          - profile_segments
    # The filter: band under_13 only, so fg-filter minus fg-child is its cost.
    feed:
      items: items
      labels: {field: moderation, value: label, confidence: confidence}
      classes: {self_harm: self_harm, body_image: body_image}
    filter:
      - bands: [under_13]
        exclude: [primary_priority]
        demote: [body_image]
        unlabelled: allow
        prominence: {not_before: 3, spacing: 3, max_share: 0.34}
POLICY
	# fg-state: the same policy, plus screen time for the filter band.  The
	# rules do the whole state work on every call (read beside the ranker,
	# decide, the exposure allowance into the filter, the update after the
	# response) and never fire in a bench: a 24-hour daily cap with no
	# warning, no break or quiet hours, an exposure counter far from its
	# per_day (see start_exposure_reset).  The user id is the request's
	# user.user_id (the policy's user_id), the same on every call.
	{
		cat "$WORK/policy.yaml"
		cat <<'LIMITS'
# run-bench.sh fg-state: screen time for the filter band, rules that never fire.
time_zone: Europe/London
limits:
  - bands: [under_13]
    daily: {cap: 24h, warn_before: 0s}
    break: off
    quiet_hours: off
    exposure:
      - {classes: [body_image], per_day: 100000}
    fail_mode: open
LIMITS
	} > "$WORK/policy-state.yaml"
	REQUEST=$WORK/request.bin
	URL_PATH=$RANKFEED_PATH
	UP_ARGS=(-r "$WORK/response.msg")
	TARGETS=(direct nghttpx fg-pass fg-child fg-filter fg-state fg-capture fg-capture-off fg-adult)
	SHAPES=(c16 c1)
	for t in "${TARGETS[@]}"; do
		HDRS[$t]=$(printf 'x-age-band: %s\nx-device-id: dev-42' "$CHILD_BAND")
		EXPECT_REQ[$t]=$((5 + SIZE[request_len]))
		EXPECT_RESP[$t]=$((5 + SIZE[response_len]))
	done
	HDRS[fg-adult]=$(printf 'x-age-band: adult\nx-device-id: dev-42')
	HDRS[fg-filter]=$(printf 'x-age-band: under_13\nx-device-id: dev-42')
	HDRS[fg-state]=${HDRS[fg-filter]}
	HDRS[fg-capture]=${HDRS[fg-filter]}
	HDRS[fg-capture-off]=${HDRS[fg-filter]}
	EXPECT_REQ[fg-child]=$((5 + SIZE[request_child_len]))
	EXPECT_RESP[fg-child]=$((5 + SIZE[response_child_len]))
	EXPECT_REQ[fg-filter]=$((5 + SIZE[request_child_len]))
	EXPECT_RESP[fg-filter]=$((5 + SIZE[response_filter_len]))
	# Screen-time metadata is headers, not DATA: the same bytes as the filter.
	EXPECT_REQ[fg-state]=${EXPECT_REQ[fg-filter]}
	EXPECT_RESP[fg-state]=${EXPECT_RESP[fg-filter]}
	# Capture records the call beside it: the client gets the same bytes.
	EXPECT_REQ[fg-capture]=${EXPECT_REQ[fg-filter]}
	EXPECT_RESP[fg-capture]=${EXPECT_RESP[fg-filter]}
	EXPECT_REQ[fg-capture-off]=${EXPECT_REQ[fg-filter]}
	EXPECT_RESP[fg-capture-off]=${EXPECT_RESP[fg-filter]}
	CMDLINE="contrib/bench/run-bench.sh --scenario rankfeed --rounds $ROUNDS --duration $DURATION --warm-up $WARMUP"
	(( RANKER_DELAY > 0 )) && CMDLINE+=" --ranker-delay $RANKER_DELAY"
	[[ $REDIS_CPU != "$CLIENT_CPU" ]] && CMDLINE+=" --redis-cpu $REDIS_CPU"
	[[ $UPSTREAM_CPU != "$SERVER_CPU" ]] && CMDLINE+=" --upstream-cpu $UPSTREAM_CPU"
	start_upstream
	start_nghttpx
	start_redis
	start_exposure_reset
	start_feedguardd fg-pass fg-pass.log
	start_feedguardd fg-policy fg-policy.log "$(printf '%s\n' 'policy: policy.yaml' 'pseudonym_keys:' \
		'  - {id: bench, file: bench.key}')"
	PORT[fg-child]=${PORT[fg-policy]} CPU_PIDS[fg-child]=${CPU_PIDS[fg-policy]}
	PORT[fg-adult]=${PORT[fg-policy]} CPU_PIDS[fg-adult]=${CPU_PIDS[fg-policy]}
	PORT[fg-filter]=${PORT[fg-policy]} CPU_PIDS[fg-filter]=${CPU_PIDS[fg-policy]}
	# A process of its own (only its CPU is counted, not Redis's), with an
	# admin endpoint so the script can see its calls reached Redis.
	start_feedguardd fg-state fg-state.log "$(printf '%s\n' 'policy: policy-state.yaml' 'pseudonym_keys:' \
		'  - {id: bench, file: bench.key}' 'state:' "  redis: 127.0.0.1:$REDIS_PORT")" admin
	# fg-capture: the filter's process with capture on, every call sampled
	# (one user, sample 1): the writer thread's CPU is in its process's.
	# Files rotate at 64 MiB and the directory is held to 256 MiB.
	mkdir -p "$WORK/capture"
	head -c 32 /dev/urandom > "$WORK/capture.key"
	start_feedguardd fg-capture fg-capture.log "$(printf '%s\n' 'policy: policy.yaml' 'pseudonym_keys:' \
		'  - {id: bench, file: bench.key}' 'capture:' '  directory: capture' '  key: {id: cap, file: capture.key}' \
		'  sample: 1' '  rotate_size: 64MiB' '  max_total_size: 256MiB')" admin
	# fg-capture-off: capture on at sample 0.000001, where the bench's one
	# user is not sampled: what capture costs every call it does not keep
	# (identify's capture pseudonym, the sampling, the stages' hooks).
	mkdir -p "$WORK/capture-off"
	start_feedguardd fg-capture-off fg-capture-off.log "$(printf '%s\n' 'policy: policy.yaml' 'pseudonym_keys:' \
		'  - {id: bench, file: bench.key}' 'capture:' '  directory: capture-off' '  key: {id: cap, file: capture.key}' \
		'  sample: 0.000001')" admin
	PERF_TARGET=${FG_PERF_TARGET:-fg-child}
	note "RankFeed: request 5+${SIZE[request_len]} bytes (${SIZE[watch_history]} watch_history entries)," \
		"5+${SIZE[request_child_len]} after the $CHILD_BAND policy; response 5+${SIZE[response_len]}" \
		"bytes (${SIZE[items]} items), 5+${SIZE[response_child_len]} after it"
fi
(( RANKER_DELAY > 0 )) && note "the upstream answers every call after $RANKER_DELAY µs (bench-upstream -d)"

if [[ -n ${ONLY:-} ]]; then
	kept=()
	for t in "${TARGETS[@]}"; do
		[[ " $ONLY " == *" $t "* ]] && kept+=("$t")
	done
	(( ${#kept[@]} )) || die "--only names none of this scenario's targets (${TARGETS[*]})"
	TARGETS=("${kept[@]}")
	CMDLINE+=" --only \"$ONLY\""
fi

preflight

REDIS_RTT=(- -)
REDIS_C1_LAT=(- 0)
if [[ -n ${ADMIN_PORT[fg-state]:-} ]]; then
	# While nothing else runs: what one Redis round trip costs here.
	read -ra REDIS_RTT <<< "$(redis_rtt)"
	[[ ${#REDIS_RTT[@]} == 2 ]] || REDIS_RTT=(- -)
	note "Redis round trip (PING from CPU $SERVER_CPU): median ${REDIS_RTT[0]} µs, p99 ${REDIS_RTT[1]} µs"
	fetch_metrics fg-state "$WORK/fg-state-metrics-0.txt" || die "cannot read fg-state's /metrics"
fi

(( RATE > 0 )) && SHAPES+=(rate)
(( PAIR_ONLY )) && SHAPES=()
for shape in "${SHAPES[@]}"; do
	if [[ $shape == c16 ]]; then
		note "load h2load -c16 -m32 -t1, $ROUNDS rounds of ${WARMUP}s + ${DURATION}s"
	elif [[ $shape == rate ]]; then
		note "fixed rate h2load -c16 -m32 -t1 --rps=$((RATE / 16)) ($RATE calls a second), $ROUNDS rounds of ${WARMUP}s + ${DURATION}s"
	else
		note "latency h2load -c1 -m1 -t1, $ROUNDS rounds of ${WARMUP}s + ${DURATION}s"
	fi
	for ((r = 1; r <= ROUNDS; r++)); do
		for t in "${TARGETS[@]}"; do
			run_load "$t" "$r" "$shape"
		done
	done
	[[ -n ${ADMIN_PORT[fg-state]:-} ]] && fetch_metrics fg-state "$WORK/fg-state-metrics-$shape.txt"
done
for pair in "${PAIRS[@]}"; do
	read -r pa pb <<< "$pair"
	# The capture targets write hundreds of MB a second; what the kernel
	# has not written back yet would land in these rounds as its own CPU.
	sync
	[[ -n ${PORT[$pa]:-} && -n ${PORT[$pb]:-} ]] || die "--pair: '$pair' names a target this run did not start"
	note "side by side: $pa and $pb at the same time, $((PAIR_RATE / 2)) calls a second each, $ROUNDS rounds of ${WARMUP}s + ${DURATION}s"
	for ((r = 1; r <= ROUNDS; r++)); do
		run_pair "$pa" "$pb" "$r" pair
	done
	note "side by side at one call in flight each: $pa and $pb, $ROUNDS rounds of ${WARMUP}s + ${DURATION}s"
	for ((r = 1; r <= ROUNDS; r++)); do
		run_pair "$pa" "$pb" "$r" pair1
	done
done

# fg-state's calls must have reached Redis: its counters, after the rounds.
# More state failures than 1% of its calls would mean the bench measured
# the fail-open path; a limit that fired would mean it measured pages the
# state changed.  Either fails the run (after the tables).
STATE_LINE=""
STATE_FAILED=""
if [[ -n ${ADMIN_PORT[fg-state]:-} ]] && measured fg-state; then
	m=$WORK/fg-state-metrics.txt
	fetch_metrics fg-state "$m" || die "cannot read fg-state's /metrics"
	[[ -s $WORK/fg-state-metrics-c1.txt ]] &&
		read -ra REDIS_C1_LAT <<< "$(redis_latency "$WORK/fg-state-metrics-c16.txt" "$WORK/fg-state-metrics-c1.txt")"
	st_calls=$(metric "$m" feedguard_calls_total)
	st_cmds=$(metric "$m" feedguard_redis_commands_total)
	st_fail=$(metric "$m" feedguard_state_failures_total)
	st_errs=$(metric "$m" feedguard_redis_errors_total)
	st_limited=$(metric "$m" feedguard_filter_items_total 'action="limited"')
	st_answered=$(metric "$m" feedguard_screen_time_answered_total)
	st_notices=$(metric "$m" feedguard_screen_time_notices_total)
	# The user's record as the last update left it (the keys: one user).
	st_keys=$(redis-cli -p "$REDIS_PORT" --scan --pattern 'fg:*' 2>/dev/null | wc -l)
	st_record=$(redis-cli -p "$REDIS_PORT" --scan --pattern 'fg:*' 2>/dev/null | head -1 |
		xargs -r -I{} redis-cli -p "$REDIS_PORT" HGETALL {} 2>/dev/null | paste -d= - - | paste -sd' ' -)
	st_xmax=$(awk '$1 ~ /^[0-9]+$/ && $1 > m { m = $1 } END { print m + 0 }' "$WORK/redis-reset.txt")
	STATE_LINE=$(printf 'fg-state'"'"'s /metrics after the rounds: %s calls, feedguard_redis_commands_total %s (%s per call: a read and an update), feedguard_state_failures_total %s, feedguard_redis_errors_total %s; limits that fired: %s calls answered, %s items limited, %s notices.  In Redis after the rounds: %s user record(s), the first: %s; its x:body_image, dropped every 50 ms, was at most %s of per_day 100000 when dropped.' \
		"$st_calls" "$st_cmds" "$(awk -v a="$st_cmds" -v n="$st_calls" 'BEGIN { printf "%.2f", n ? a / n : 0 }')" \
		"$st_fail" "$st_errs" "$st_answered" "$st_limited" "$st_notices" "$st_keys" "${st_record:-none}" "$st_xmax")
	note "$STATE_LINE"
	if (( st_calls == 0 || st_fail * 100 > st_calls )); then
		STATE_FAILED="fg-state: $st_fail state failures in $st_calls calls (over 1%): the bench measured the fail-open path (see $m, $WORK/fg-state.log, $WORK/redis.log)"
	elif (( st_cmds < st_calls )); then
		STATE_FAILED="fg-state: $st_cmds Redis commands for $st_calls calls: the calls did not all reach Redis (see $m)"
	elif (( st_answered > 0 || st_limited > 0 )); then
		STATE_FAILED="fg-state: a limit fired ($st_answered calls answered, $st_limited items limited): the bench measured something else (see $m)"
	elif (( st_xmax == 0 )); then
		STATE_FAILED="fg-state: the exposure counter was never found in Redis (see $WORK/redis-reset.txt): the updates did not do their work"
	fi
fi

# The state backend alone (contrib/bench/state-bench.c), against this
# run's redis-server, on the servers' core: what a call's read and update
# cost without the call around them, as the floor under fg-state's figure.
# After the check above, which counts the records under fg:*: the tool's
# keys are under fgbench:.
STATE_BENCH_LINE=""
if [[ -n ${ADMIN_PORT[fg-state]:-} ]] && measured fg-state; then
	fg_build=$(dirname "$(dirname "$FEEDGUARDD_SRC")")
	if [[ -f $fg_build/libfeedguard.a && -f $fg_build/config.h ]] &&
	   make -s -C "$HERE" O="$WORK" FG_BUILD="$fg_build" state-bench >"$WORK/state-bench.log" 2>&1; then
		# A run that fails (an operation refused, timed out or in error)
		# prints nothing and exits 1: then no line at all.
		sb_ok=1
		: > "$WORK/state-bench.txt"
		for sb in "16 1048576" "16 0" "4 1048576"; do
			read -r sb_batch sb_thrash <<< "$sb"
			if sb_out=$(THRASH=$sb_thrash taskset -c "$SERVER_CPU" "$WORK/state-bench" "127.0.0.1:$REDIS_PORT" \
				"$sb_batch" 50000 both 2>>"$WORK/state-bench.log"); then
				echo "thrash=$sb_thrash $sb_out" >> "$WORK/state-bench.txt"
			else
				sb_ok=0
			fi
		done
		(( sb_ok )) && STATE_BENCH_LINE=$(awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
			c[v["batch"] "/" v["thrash"]] = v["cpu_us_per_call"] }
			END { if (c["16/1048576"] == "" || c["16/0"] == "" || c["4/1048576"] == "") exit 1
			      printf "The state backend alone (contrib/bench/state-bench.c: a read and an update a call through fg_state_redis to this run'"'"'s redis-server, on the servers'"'"' core, median of 5 runs): %s µs of CPU a call at 16 calls a loop turn with 1 MiB touched between turns (caches as cold as a loaded worker'"'"'s), %s µs with warm caches, %s µs at 4 calls a turn (cold): each turn'"'"'s write, read and wakeup are shared by fewer calls.", c["16/1048576"], c["16/0"], c["4/1048576"] }' \
			"$WORK/state-bench.txt") || STATE_BENCH_LINE=""
	fi
	[[ -n $STATE_BENCH_LINE ]] || note "state-bench not run (needs the build directory of $FEEDGUARDD_SRC; see $WORK/state-bench.log)"
fi

# fg-capture must have written its calls: records, and few dropped.
CAPTURE_LINE=""
if [[ -n ${ADMIN_PORT[fg-capture]:-} ]] && measured fg-capture; then
	m=$WORK/fg-capture-metrics.txt
	fetch_metrics fg-capture "$m" || die "cannot read fg-capture's /metrics"
	cp_calls=$(metric "$m" feedguard_calls_total)
	cp_recs=$(metric "$m" feedguard_capture_records_total)
	cp_bytes=$(metric "$m" feedguard_capture_bytes_total)
	cp_drop=$(metric "$m" feedguard_capture_dropped_total)
	cp_omit=$(metric "$m" feedguard_capture_omitted_messages_total)
	CAPTURE_LINE=$(printf 'fg-capture'"'"'s /metrics after the rounds: %s calls, %s records written (%s bytes, %s per record), %s dropped, %s messages left out.' \
		"$cp_calls" "$cp_recs" "$cp_bytes" "$(awk -v b="$cp_bytes" -v n="$cp_recs" 'BEGIN { printf "%.0f", n ? b / n : 0 }')" \
		"$cp_drop" "$cp_omit")
	note "$CAPTURE_LINE"
	(( cp_recs > 0 && cp_drop * 100 <= cp_calls )) ||
		CAPTURE_LINE+=" **CAPTURE CHECK FAILED**: no records, or over 1% dropped (see $m)"
fi

if (( PERF )) && command -v perf >/dev/null 2>&1; then
	note "perf: profiling $PERF_TARGET under -c16 -m32 for ${DURATION}s"
	perf record -e cpu-clock ${FG_PERF_CALLGRAPH:--g} -o "$WORK/perf.data" -p "${CPU_PIDS[$PERF_TARGET]}" -- sleep $((DURATION + WARMUP)) \
		> "$WORK/perf-record.log" 2>&1 &
	perf_pid=$!
	PIDS+=("$perf_pid")
	run_load "$PERF_TARGET" perf c16
	wait "$perf_pid"
	sed -i '/\tperf\t/d' "$RESULTS"
	{
		perf report -i "$WORK/perf.data" --stdio --no-children --sort dso -g none
		perf report -i "$WORK/perf.data" --stdio --no-children --sort dso,sym -g none
	} 2>/dev/null | grep -v -e '^$' -e '^#' | head -120 > "$WORK/perf.txt"
	note "profile in $WORK/perf.txt"
fi

# The edit alone, on the same messages and policy, on the servers' core
# while nothing else runs: what the rankfeed table's difference is made of.
EDIT_LINE=""
if [[ $SCENARIO == rankfeed ]]; then
	fg_build=$(dirname "$(dirname "$FEEDGUARDD_SRC")")
	if [[ -f $fg_build/libfeedguard.a && -f $fg_build/config.h ]] &&
	   make -s -C "$HERE" O="$WORK" FG_BUILD="$fg_build" pbwire-bench >"$WORK/pbwire-bench.log" 2>&1; then
		(cd "$WORK" && taskset -c "$SERVER_CPU" ./pbwire-bench policy.yaml "$RANKFEED_PATH" "$CHILD_BAND" \
			request.bin response.msg) > "$WORK/pbwire-bench.txt" 2>>"$WORK/pbwire-bench.log" &&
			EDIT_LINE=$(awk '{ t[$1] = $4; s[$1] = $2 " → " $3 " B" }
				END { printf "The wire edit alone (contrib/bench/pbwire-bench.c: same policy and messages, one core, median of 5 rounds): request %s µs (%s), response %s µs (%s).", t["request"], s["request"], t["response"], s["response"] }' \
				"$WORK/pbwire-bench.txt")
		(cd "$WORK" && taskset -c "$SERVER_CPU" ./pbwire-bench policy.yaml "$RANKFEED_PATH" under_13 \
			request.bin response.msg) > "$WORK/filter-bench.txt" 2>>"$WORK/pbwire-bench.log" &&
			EDIT_LINE+=$'\n'$(awk '$1 == "filter" { printf "The filter alone (the same tool, band under_13, on the stripped response): %s µs (%s → %s B, 100 items, 10 excluded, 20 demoted).", $4, $2, $3 }' \
				"$WORK/filter-bench.txt")
	fi
	[[ -n $EDIT_LINE ]] || note "pbwire-bench not run (needs the build directory of $FEEDGUARDD_SRC; see $WORK/pbwire-bench.log)"
fi

if [[ $SCENARIO == passthrough ]] && (( IDLE_CONNS > 0 )); then
	note "idle: $IDLE_CONNS idle h2c connections to each proxy, fresh processes"
	stop_pid "$NGHTTPX_PID"
	stop_pid "$FG_PID"
	start_nghttpx
	idle_test nghttpx
	stop_pid "$NGHTTPX_PID"
	start_feedguardd feedguardd feedguardd-idle.log
	idle_test feedguardd
fi

{
	echo "Command: $CMDLINE"
	echo "Machine: $(getconf _NPROCESSORS_ONLN) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), Linux $(uname -r);" \
	     "$(nghttpx --version | head -1); $(h2load --version | head -1)"
	echo "Load: h2load -t1 pinned to CPU $CLIENT_CPU; upstream pinned to CPU $UPSTREAM_CPU, proxy to CPU $SERVER_CPU;" \
	     "medians of $ROUNDS rounds of ${DURATION}s (after ${WARMUP}s warm-up)"
	(( ${#DAEMON_ENV[@]} )) && echo "feedguardd's environment (--daemon-env): ${DAEMON_ENV[*]}"
	if [[ $SCENARIO == rankfeed ]]; then
		echo "Call: $RANKFEED_PATH, h2load -c16 -m32, then -c1 -m1; request 5+${SIZE[request_len]} bytes" \
		     "(${SIZE[watch_history]} watch_history entries), response 5+${SIZE[response_len]} bytes" \
		     "(${SIZE[items]} items); band $CHILD_BAND edited to 5+${SIZE[request_child_len]} and" \
		     "5+${SIZE[response_child_len]}; the upstream answers" \
		     "$( ((RANKER_DELAY > 0)) && echo "after $RANKER_DELAY µs" || echo "at once")"
		echo "State: fg-state is a feedguardd of its own with the same policy plus screen-time limits for" \
		     "under_13 that never fire, state in a local redis-server (port $REDIS_PORT, no persistence," \
		     "pinned to CPU $REDIS_CPU, its CPU not counted)"
		echo
		report_rankfeed
	else
		echo
		report
		report_idle
	fi
} > "$WORK/results.md"
echo
cat "$WORK/results.md"
if (( ${#DIED[@]} )); then
	echo
	echo "Servers died during: ${DIED[*]} (logs in $WORK)"
fi
warns=$(cat "$WORK"/feedguardd*.log "$WORK"/fg-*.log 2>/dev/null | grep -cE 'level=(warn|error)')
(( warns > 0 )) && note "feedguardd logged $warns warn/error lines; see its logs in $WORK"
if (( ${#CHECK_FAILED[@]} )); then
	echo
	echo "CHECK FAILED: the calls did not carry the expected bytes in: ${CHECK_FAILED[*]}"
	exit 1
fi
[[ -n $STATE_FAILED ]] && die "STATE CHECK FAILED: $STATE_FAILED"
exit 0
