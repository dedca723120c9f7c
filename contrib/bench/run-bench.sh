#!/usr/bin/env bash
# contrib/bench/run-bench.sh - feedguardd against nghttpx and against no proxy
# at all, side by side in one run.  See contrib/bench/README.md.
#
# Rounds alternate the targets (direct, nghttpx, feedguardd, direct, ...) so
# that a slow spell of the machine hits all of them alike; each figure in
# the table is the median over the rounds.  h2load runs on CPU 0; the
# upstream and the proxy under test share CPU 1.
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
CLIENT_CPU=0
SERVER_CPU=1
URL_PATH=/bench.Bench/Call
REPLY_BYTES=4101        # 5-byte gRPC prefix + 4096, see bench-upstream.c

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
  --perf              also profile feedguardd under the c16/m32 load (perf record -g)
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
	--perf) PERF=1; shift ;;
	-h|--help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
for v in ROUNDS DURATION WARMUP IDLE_CONNS UP_STREAMS; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "--${v,,} wants a whole number, not '${!v}'"
done
(( ROUNDS >= 1 && DURATION >= 1 )) || die "need at least one round of at least one second"

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
	if [[ ${#missing[@]} -gt 0 ]]; then
		die "missing tools; install them with: apt-get install ${missing[*]}"
	fi
	taskset -c "$SERVER_CPU" true 2>/dev/null ||
		die "CPU $SERVER_CPU is not available: the benchmark needs two cores (h2load on one, the servers on the other)"
}

find_daemon() {
	if [[ -n $BUILD ]]; then
		FEEDGUARDD=$BUILD/daemon/feedguardd
	elif [[ -z ${FEEDGUARDD:-} ]]; then
		FEEDGUARDD=$TOP/daemon/feedguardd
	fi
	[[ -x $FEEDGUARDD ]] || die "no feedguardd at $FEEDGUARDD: build it (see README.md) or pass --build DIR"
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

declare -A PORT CPU_PIDS

start_upstream() {
	rm -f "$WORK/upstream.port"       # a stale one from an earlier run would be read at once
	# taskset execs the server, so $! is the server's own PID.
	taskset -c "$SERVER_CPU" "$WORK"/bench-upstream -s "$UP_STREAMS" 0 \
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

# start_feedguardd LOGNAME
start_feedguardd() {
	local log=$WORK/$1 i port
	cat > "$WORK/feedguardd.yaml" <<EOF
listen: 127.0.0.1:0
workers: 1
upstream:
  address: 127.0.0.1:$UP_PORT
admin:
  listen: off
log:
  level: info
EOF
	: > "$log"
	taskset -c "$SERVER_CPU" "$FEEDGUARDD" -c "$WORK/feedguardd.yaml" 2>> "$log" &
	FG_PID=$!
	PIDS+=("$FG_PID")
	for i in {1..100}; do
		grep -q 'event=ready' "$log" && break
		kill -0 "$FG_PID" 2>/dev/null || die "feedguardd exited: $(tail -5 "$log")"
		sleep 0.05
	done
	port=$(sed -n 's/.*event=listening addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
	[[ -n $port ]] || die "feedguardd did not say where it listens: $(tail -5 "$log")"
	PORT[feedguardd]=$port
	CPU_PIDS[feedguardd]=$FG_PID
}

alive() {
	local pid
	for pid in "$@"; do
		kill -0 "$pid" 2>/dev/null || return 1
	done
}

# --- one load run ---------------------------------------------------------

# run_load TARGET ROUND SHAPE  (SHAPE is c16 or c1)
# Appends one line to $RESULTS: shape target round req/s p50_us p99_us
# proxy_cpu_us_per_req upstream_cpu_us_per_req succeeded errors short.
run_load() {
	local target=$1 round=$2 shape=$3
	local conc streams tag out lat fifo hpid line c0=0 c1=0 u0=0 u1=0 marks=0
	local rps="" succ=0 failed=0 errored=0 tmo=0 bytes=0 p50=- p99=- cpu=- ucpu=- err short
	local -a pids
	read -ra pids <<< "${CPU_PIDS[$target]}"
	case $shape in
	c16) conc=16; streams=32 ;;
	c1) conc=1; streams=1 ;;
	esac
	tag=$shape-$target-r$round
	out=$WORK/h2load-$tag.txt
	lat=$SHM/lat-$tag.log
	fifo=$WORK/fifo
	rm -f "$fifo"
	mkfifo "$fifo"
	taskset -c "$CLIENT_CPU" timeout $((DURATION + WARMUP + 60)) \
		h2load -c"$conc" -m"$streams" -t1 -D "$DURATION" --warm-up-time="$WARMUP" \
		-d "$WORK/request.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
		--log-file="$lat" "http://127.0.0.1:${PORT[$target]}$URL_PATH" > "$fifo" 2>&1 &
	hpid=$!
	PIDS+=("$hpid")
	# CPU is sampled when h2load announces the start and the end of the
	# measured phase, so warm-up work is not charged to measured requests.
	while IFS= read -r line; do
		printf '%s\n' "$line" >> "$out"
		case $line in
		"Main benchmark duration is started"*)
			cpu_ns c0 "${pids[@]}"; cpu_ns u0 "$UP_PID"; marks=$((marks + 1)) ;;
		"Main benchmark duration is over"*)
			cpu_ns c1 "${pids[@]}"; cpu_ns u1 "$UP_PID"; marks=$((marks + 1)) ;;
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

	[[ -n $rps ]] || { note "h2load failed for $tag: $(tail -3 "$out")"; rps=0; }
	if [[ -s $lat ]]; then
		read -r p50 p99 < <(cut -f3 "$lat" | LC_ALL=C sort -n | awk '
			{ v[NR] = $1 }
			END { if (NR) { a = int((NR * 50 + 99) / 100); b = int((NR * 99 + 99) / 100); print v[a], v[b] } }')
	fi
	rm -f "$lat"
	if (( marks == 2 && succ > 0 )); then
		[[ $target != direct ]] && cpu=$(awk -v d=$((c1 - c0)) -v n="$succ" 'BEGIN { printf "%.2f", d / 1000 / n }')
		ucpu=$(awk -v d=$((u1 - u0)) -v n="$succ" 'BEGIN { printf "%.2f", d / 1000 / n }')
	fi
	# h2load reads no trailers: a gRPC error in a 200 looks like a success.
	# A good reply carries at least REPLY_BYTES of DATA; count the shortfall
	# (1% slack for replies cut at the phase boundaries).
	err=$((failed + errored + tmo))
	short=$(awk -v b="$bytes" -v n="$succ" -v r=$REPLY_BYTES \
		'BEGIN { s = n - b / r; print (n > 0 && s > n / 100) ? int(s) : 0 }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$shape" "$target" "$round" "$rps" "$p50" \
		"$p99" "$cpu" "$ucpu" "$succ" "$err" "$short" >> "$RESULTS"
	printf '  %-3s %-10s round %s: %9.0f req/s  p50 %6s us  p99 %6s us  cpu %5s us/req  upstream %5s us/req  errors %s%s\n' \
		"$shape" "$target" "$round" "$rps" "$p50" "$p99" "$cpu" "$ucpu" "$err" \
		"$( ((short > 0)) && echo " short-replies $short")" >&2
	if ! alive "${pids[@]}" "$UP_PID"; then
		note "a server died during $tag; see $WORK/*.log"
		DIED+=("$tag")
	fi
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

# --- main ---------------------------------------------------------------

check_tools
find_daemon
check_quiet
raise_nofile
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

make -s -C "$HERE" O="$WORK" >/dev/null || die "cannot build bench-upstream"
# Request: one gRPC message, 5-byte prefix (uncompressed, length 200) + 200 bytes.
{ printf '\0\0\0\0\310'; head -c 200 /dev/zero | tr '\0' 'q'; } > "$WORK/request.bin"

CMDLINE="contrib/bench/run-bench.sh --rounds $ROUNDS --duration $DURATION --warm-up $WARMUP --idle-conns $IDLE_CONNS"
note "results in $WORK; feedguardd is $FEEDGUARDD"
start_upstream
start_nghttpx
start_feedguardd feedguardd.log

for shape in c16 c1; do
	if [[ $shape == c16 ]]; then
		note "load h2load -c16 -m32 -t1, $ROUNDS rounds of ${WARMUP}s + ${DURATION}s"
	else
		note "latency h2load -c1 -m1 -t1, $ROUNDS rounds of ${WARMUP}s + ${DURATION}s"
	fi
	for ((r = 1; r <= ROUNDS; r++)); do
		for t in direct nghttpx feedguardd; do
			run_load "$t" "$r" "$shape"
		done
	done
done

if (( PERF )) && command -v perf >/dev/null 2>&1; then
	note "perf: profiling feedguardd under -c16 -m32 for ${DURATION}s"
	perf record -e cpu-clock -g -o "$WORK/perf.data" -p "$FG_PID" -- sleep $((DURATION + WARMUP)) \
		> "$WORK/perf-record.log" 2>&1 &
	perf_pid=$!
	PIDS+=("$perf_pid")
	run_load feedguardd perf c16
	wait "$perf_pid"
	sed -i '/\tperf\t/d' "$RESULTS"
	{
		perf report -i "$WORK/perf.data" --stdio --no-children --sort dso -g none
		perf report -i "$WORK/perf.data" --stdio --no-children --sort dso,sym -g none
	} 2>/dev/null | grep -v -e '^$' -e '^#' | head -120 > "$WORK/perf.txt"
	note "profile in $WORK/perf.txt"
fi

if (( IDLE_CONNS > 0 )); then
	note "idle: $IDLE_CONNS idle h2c connections to each proxy, fresh processes"
	stop_pid "$NGHTTPX_PID"
	stop_pid "$FG_PID"
	start_nghttpx
	idle_test nghttpx
	stop_pid "$NGHTTPX_PID"
	start_feedguardd feedguardd-idle.log
	idle_test feedguardd
fi

{
	echo "Command: $CMDLINE"
	echo "Machine: $(getconf _NPROCESSORS_ONLN) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), Linux $(uname -r);" \
	     "$(nghttpx --version | head -1); $(h2load --version | head -1)"
	echo "Load: h2load -t1 pinned to CPU $CLIENT_CPU; upstream and proxy pinned to CPU $SERVER_CPU;" \
	     "medians of $ROUNDS rounds of ${DURATION}s (after ${WARMUP}s warm-up)"
	echo
	report
	report_idle
} > "$WORK/results.md"
echo
cat "$WORK/results.md"
if (( ${#DIED[@]} )); then
	echo
	echo "Servers died during: ${DIED[*]} (logs in $WORK)"
fi
warns=$(grep -cE 'level=(warn|error)' "$WORK/feedguardd.log")
(( warns > 0 )) && note "feedguardd logged $warns warn/error lines; see $WORK/feedguardd.log"
exit 0
