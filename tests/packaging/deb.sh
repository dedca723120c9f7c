#!/usr/bin/env bash
# The Debian package, checked the way an operator meets it (README, "The
# Debian package"):
#  1. builds it from HEAD (git archive: what a clean clone holds) in a temp
#     dir, with dpkg-buildpackage -us -uc -b, and the source package too so
#     lintian sees debian/ itself;
#  2. checks the .deb's files, modes, control fields, conffiles and
#     maintainer scripts, and that the daemon in it is a release build;
#  3. runs lintian on the source and binary packages: any error fails;
#  4. as root with FG_DEB_INSTALL=1 (a throwaway machine: CI), installs it,
#     checks the user, the key and `feedguardd -t`, runs the installed
#     daemon the way its unit does (user, umask, directories, NOTIFY_SOCKET)
#     with a python3-grpcio upstream, checks READY=1, /readyz, a call, a
#     reload with a call in flight, a stop, then purges and checks what
#     is left.
# systemd is not PID 1 in CI, so the unit itself is never started: its
# ExecStartPre/ExecStart/ExecReload lines are run as it would run them,
# without its sandboxing.
#
# Usage: tests/packaging/deb.sh     (FG_DEB_INSTALL=1 as root for step 4)
# DEB_BUILD_OPTIONS defaults to "parallel=<nproc>", so debian/rules' own
# tests run too (the unit tests: about 10 s more); "nocheck" skips them.
# One line per check; exits 1 at the first failure.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-/usr/bin/python3}
pkg=feedguard
unit=feedguardd.service
conf=/etc/feedguard/feedguard.yaml
example=/etc/feedguard/feedguard.example.yaml

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fg-deb.XXXXXX")
pids=()             # every process started here, stopped by PID at exit
installed=""        # set once dpkg -i ran: the exit trap purges
wrote_conf=""       # set once $conf is ours: the exit trap removes it
made_user=""        # the user did not exist before: the exit trap removes it

cleanup() {
	local rc=$? p
	set +e
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	if [ -n "$installed" ] && dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qv not-installed; then
		dpkg --purge "$pkg" >/dev/null 2>&1
	fi
	if [ -n "$wrote_conf" ]; then
		rm -f "$conf"
		rmdir /etc/feedguard 2>/dev/null
	fi
	if [ -n "$made_user" ] && getent passwd feedguard >/dev/null; then
		deluser --system --quiet feedguard >/dev/null 2>&1
		getent group feedguard >/dev/null && delgroup --system --quiet feedguard >/dev/null 2>&1
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ok() { printf 'ok   %s\n' "$*"; }
fail() {
	printf 'FAIL %s\n' "$*" >&2
	exit 1
}
# show FILE: the tail of a log, for a failure's context
show() { [ -f "$1" ] && sed 's/^/     | /' "$1" | tail -n "${2:-30}" >&2 || true; }

# ---------------------------------------------------------------- build
for t in dpkg-buildpackage dh lintian; do
	command -v "$t" >/dev/null || fail "no $t here (Debian 12: apt-get install dpkg-dev debhelper lintian)"
done
mkdir "$tmp/src"
git -C "$top" archive --format=tar HEAD | tar -x -C "$tmp/src"
src_name=$(cd "$tmp/src" && dpkg-parsechangelog -S Source)
version=$(cd "$tmp/src" && dpkg-parsechangelog -S Version)
arch=$(dpkg --print-architecture)
src="$tmp/$src_name-$version" # a subdir: dpkg-buildpackage writes into its parent
mv "$tmp/src" "$src"
ok "source: $(git -C "$top" rev-parse --short HEAD) ($src_name $version)"

# The source package first, from the pristine tree (after a build it
# would hold the build's output).
(cd "$tmp" && dpkg-source -b "$(basename "$src")" >"$tmp/source.log" 2>&1) ||
	{ show "$tmp/source.log"; fail "dpkg-source -b"; }
ok "source package: ${src_name}_$version.dsc"

start=$(date +%s)
opts=${DEB_BUILD_OPTIONS-"parallel=$(nproc)"}
(cd "$src" && DEB_BUILD_OPTIONS=$opts dpkg-buildpackage -us -uc -b >"$tmp/build.log" 2>&1) ||
	{ show "$tmp/build.log" 40; fail "dpkg-buildpackage -us -uc -b"; }
deb="$tmp/${pkg}_${version}_$arch.deb"
changes="$tmp/${src_name}_${version}_$arch.changes"
[ -f "$deb" ] || fail "dpkg-buildpackage made no $(basename "$deb")"
ok "dpkg-buildpackage -us -uc -b: $(basename "$deb") in $(($(date +%s) - start))s (DEB_BUILD_OPTIONS=\"$opts\")"
# The package's own tests (debian/rules: the unit tests and
# check-ranking-pb.sh, not the interop suite) ran and passed.
case " $opts " in
*" nocheck "*) echo "skip the package's tests (DEB_BUILD_OPTIONS has nocheck)" ;;
*)
	pass=$(sed -n 's/^# PASS: *//p' "$tmp/build.log")
	grep -q '^# FAIL: *0$' "$tmp/build.log" && [ "${pass:-0}" -gt 0 ] ||
		{ show "$tmp/build.log" 40; fail "the package's tests: no '# FAIL:  0' summary"; }
	grep -q 'check-ranking-pb.sh' "$tmp/build.log" || fail "the package's tests: check-ranking-pb.sh did not run"
	grep -q 'interop/run.sh' "$tmp/build.log" && fail "the package's tests ran the interop suite"
	ok "the package's tests: $pass passed (unit tests, check-ranking-pb.sh; no interop)"
	;;
esac
grep -q '^#define FG_TEST_HOOKS' "$src/debian/build/config.h" &&
	fail "the package was built with --enable-test-hooks"
ok "configured without test hooks"

# ---------------------------------------------------------------- contents
# Every file and symlink the .deb holds, with its mode: exactly these.
# Directories aside.
expected="
0755 usr/sbin/feedguardd
0755 usr/sbin/feedguardctl
0755 usr/bin/feedguard-replay
0644 usr/share/feedguard/policies/uk-children.yaml
0644 usr/share/feedguard/policies/demo.yaml
0644 usr/share/feedguard/policies/ranking.pb
0644 usr/share/feedguard/proto/feedguard/ranking/v1/ranking.proto
0644 usr/share/feedguard/proto/feedguard/capture/v1/capture.proto
0644 etc/feedguard/feedguard.example.yaml
0644 etc/logrotate.d/feedguard
0644 lib/systemd/system/feedguardd.service
0644 usr/share/man/man8/feedguardd.8.gz
0644 usr/share/man/man5/feedguard.yaml.5.gz
0644 usr/share/man/man5/feedguard-policy.5.gz
0644 usr/share/man/man8/feedguardctl.8.gz
0644 usr/share/man/man1/feedguard-replay.1.gz
0644 usr/share/doc/feedguard/README.md.gz
0644 usr/share/doc/feedguard/changelog.gz
0644 usr/share/doc/feedguard/copyright
"
# dpkg-deb -c: "-rwxr-xr-x root/root 420160 2026-12-06 09:00 ./usr/sbin/feedguardd"
dpkg-deb -c "$deb" | "$py" -c '
import stat, sys
for line in sys.stdin:
    f = line.split(None, 5)
    mode, owner, path = f[0], f[1], f[5].rstrip("\n").split(" -> ")[0]
    if mode[0] == "d":
        continue
    bits = 0
    for i, c in enumerate(mode[1:10]):
        if c != "-":
            bits |= 1 << (8 - i)
    print("%04o %s %s" % (bits, owner, path[2:]))
' >"$tmp/files"
while read -r mode owner path; do
	[ "$owner" = root/root ] || fail "file list: $path is owned by $owner, not root/root"
	echo "$mode $path"
done <"$tmp/files" | sort >"$tmp/have"
missing=""
while read -r want; do
	[ -n "$want" ] || continue
	if grep -qxF "$want" "$tmp/have"; then
		grep -vxF "$want" "$tmp/have" >"$tmp/have.new" || true
		mv "$tmp/have.new" "$tmp/have"
	else
		missing="$missing
     $want"
	fi
done <<<"$expected"
[ -z "$missing" ] || fail "file list: missing or with another mode:$missing
     (the .deb holds:
$(sed 's/^/     /' "$tmp/files"))"
[ ! -s "$tmp/have" ] || fail "file list: unexpected:
$(sed 's/^/     /' "$tmp/have")"
ok "file list: $(wc -l <"$tmp/files") files, as expected, root-owned"

field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = "$pkg" ] && [ "$(field Version)" = "$version" ] &&
	[ "$(field Architecture)" = "$arch" ] ||
	fail "control: Package/Version/Architecture are $(field Package) $(field Version) $(field Architecture)"
depends=$(field Depends)
for dep in adduser procps tzdata 'libc6' 'libevent-2\.1-[0-9]+' 'libnghttp2-[0-9]+' \
	'libyaml-0-[0-9]+' zlib1g 'libssl3' 'libprotobuf-c1' 'libhiredis[0-9.]+' 'libjemalloc2'; do
	grep -Eq "(^|, )$dep( |,|$)" <<<"$depends" || fail "control: Depends lacks $dep: $depends"
done
grep -q redis-server <<<"$depends" && fail "control: Depends names redis-server (Redis may be remote): $depends"
[ "$(field Suggests)" = redis-server ] || fail "control: Suggests is '$(field Suggests)', not redis-server"
[ -z "$(field Recommends)" ] || fail "control: Recommends '$(field Recommends)'"
ok "control: $pkg $version $arch; Depends: $depends; Suggests: redis-server"

dpkg-deb -e "$deb" "$tmp/control"
dpkg-deb -x "$deb" "$tmp/root"
[ "$(sort "$tmp/control/conffiles" | tr '\n' ' ')" = "$example /etc/logrotate.d/feedguard " ] ||
	fail "conffiles: $(tr '\n' ' ' <"$tmp/control/conffiles"), not just $example and /etc/logrotate.d/feedguard"
ok "conffiles: $example, /etc/logrotate.d/feedguard"
for s in postinst prerm postrm; do
	[ -f "$tmp/control/$s" ] || fail "maintainer scripts: no $s"
	sh -n "$tmp/control/$s" || fail "maintainer scripts: $s is not valid sh"
done
grep -q "deb-systemd-helper enable '$unit'" "$tmp/control/postinst" ||
	fail "postinst: dh_installsystemd did not enable $unit"
grep -q "deb-systemd-invoke \$_dh_action '$unit'" "$tmp/control/postinst" ||
	fail "postinst: $unit is not started (a no-op until $conf exists) at install"
grep -q "deb-systemd-invoke stop '$unit'" "$tmp/control/prerm" ||
	fail "prerm: $unit is not stopped at removal"
grep -q "deb-systemd-helper purge '$unit'" "$tmp/control/postrm" ||
	fail "postrm: $unit's enablement is not purged"
ok "maintainer scripts: valid sh; $unit enabled and started at install, stopped at removal"

u="$tmp/root/lib/systemd/system/$unit"
grep -qx "ConditionPathExists=$conf" "$u" || fail "unit: no ConditionPathExists=$conf"
grep -qx "ExecStart=/usr/sbin/feedguardd -c $conf" "$u" || fail "unit: ExecStart is $(grep ^ExecStart= "$u")"
grep -qx 'Type=notify' "$u" && grep -qx 'User=feedguard' "$u" || fail "unit: not Type=notify as User=feedguard"
ok "unit: Type=notify, User=feedguard, ExecStart=/usr/sbin/feedguardd -c $conf, waits for $conf"
grep -qx 'policy: /usr/share/feedguard/policies/uk-children.yaml' "$tmp/root$example" ||
	fail "example config: policy line is $(grep '^policy:' "$tmp/root$example")"
ok "example config: policy: /usr/share/feedguard/policies/uk-children.yaml"
v=$("$tmp/root/usr/sbin/feedguardd" -v) || fail "feedguardd -v from the .deb"
grep -qi 'test hooks' <<<"$v" && fail "feedguardd in the .deb has test hooks: $v"
grep -q ', jemalloc ' <<<"$v" || fail "feedguardd in the .deb does not run on jemalloc (debian/rules: --with-jemalloc): $v"
ok "release build: $(head -n1 <<<"$v")"

# ---------------------------------------------------------------- lintian
# The source package (debian/ itself) and the binaries; an E: tag fails.
lintian --tag-display-limit 0 "$tmp/${src_name}_$version.dsc" "$changes" >"$tmp/lintian.log" 2>&1 || true
grep -v '^running with root privileges' "$tmp/lintian.log" >"$tmp/lintian.tags" || true
if grep -q '^E: ' "$tmp/lintian.tags"; then
	show "$tmp/lintian.tags" 60
	fail "lintian: $(grep -c '^E: ' "$tmp/lintian.tags") errors"
fi
grep -q '^[EW]: \|^[A-Z]: ' "$tmp/lintian.tags" && sed 's/^/     | /' "$tmp/lintian.tags"
ok "lintian $(lintian --version | awk '{print $2}'): 0 errors, $(grep -c '^W: ' "$tmp/lintian.tags" || true) warnings"

if [ "${FG_DEB_INSTALL:-0}" != 1 ] || [ "$(id -u)" -ne 0 ]; then
	echo "skip install, run and purge (they need root and FG_DEB_INSTALL=1)"
	exit 0
fi

# ---------------------------------------------------------------- install
state=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
[ -z "$state" ] || [ "$state" = not-installed ] ||
	fail "$pkg is already on this machine ($state): purge it first"
[ ! -e "$conf" ] || fail "$conf exists: not this script's to overwrite"
getent passwd feedguard >/dev/null || made_user=1
installed=1
dpkg -i "$deb" >"$tmp/install.log" 2>&1 || { show "$tmp/install.log"; fail "dpkg -i $(basename "$deb")"; }
ok "dpkg -i $(basename "$deb")"

IFS=: read -r _ _ uid _ _ home shell < <(getent passwd feedguard) || fail "no user feedguard"
[ "$uid" -lt 1000 ] && [ "$home" = /var/lib/feedguard ] && [ "$shell" = /usr/sbin/nologin ] ||
	fail "user feedguard: uid $uid home $home shell $shell"
getent group feedguard >/dev/null || fail "no group feedguard"
[ "$(id -gn feedguard)" = feedguard ] || fail "user feedguard's group is $(id -gn feedguard)"
ok "user feedguard: system user (uid $uid), group feedguard, home $home, no login"
[ "$(stat -c '%a %U %G' /etc/feedguard/keys)" = "750 root feedguard" ] ||
	fail "/etc/feedguard/keys is $(stat -c '%a %U %G' /etc/feedguard/keys)"
[ "$(stat -c '%a %U %G %s %F' /etc/feedguard/keys/k1.key)" = "640 root feedguard 32 regular file" ] ||
	fail "/etc/feedguard/keys/k1.key is $(stat -c '%a %U %G %s %F' /etc/feedguard/keys/k1.key)"
ok "key: /etc/feedguard/keys 0750 root:feedguard, k1.key 32 bytes 0640 root:feedguard"
dpkg-query -W -f='${Conffiles}\n' "$pkg" | grep -q "^ $example " || fail "dpkg does not hold $example as a conffile"
ok "dpkg holds $example as a conffile"

# As root, then as the unit's user (ExecStartPre runs as User=): the
# group must reach the key, the policy and its descriptor set.
out=$(feedguardd -t -c "$example" 2>&1) || fail "feedguardd -t -c $example (root): $out"
ok "feedguardd -t -c $example (root)"
out=$(setpriv --reuid=feedguard --regid=feedguard --init-groups -- /usr/sbin/feedguardd -t -c "$example" 2>&1) ||
	fail "feedguardd -t -c $example (as feedguard): $out"
ok "feedguardd -t -c $example (as feedguard)"
# No feedguard.yaml yet: plain `feedguardd -t` says what to do.
if out=$(/usr/sbin/feedguardd -t 2>&1); then
	fail "feedguardd -t passed with no /etc/feedguard/feedguard.yaml"
fi
case "$out" in
*"copy $example to /etc/feedguard/feedguard.yaml"*) ok "feedguardd -t without a config points at the example" ;;
*) fail "feedguardd -t without a config does not point at the example: $out" ;;
esac
for p in feedguardctl feedguard-replay; do
	"$p" -v >/dev/null || fail "$p -v"
done
ok "feedguardctl -v, feedguard-replay -v"

# Enabled offline: systemctl reads the unit files when systemd is not
# running; the symlink is what makes the unit start at boot either way.
wantedby=$(sed -n 's/^WantedBy=//p' /lib/systemd/system/$unit)
[ -L "/etc/systemd/system/$wantedby.wants/$unit" ] || fail "no /etc/systemd/system/$wantedby.wants/$unit"
en=$(systemctl is-enabled "$unit" 2>&1) || true
[ "$en" = enabled ] || fail "systemctl is-enabled $unit: $en"
ok "systemctl is-enabled $unit: enabled ($wantedby.wants)"

# ---------------------------------------------------------------- run
# Free ports for the clients, the admin endpoint, the upstream, and a
# Redis nobody listens on (the daemon connects lazily: readiness and
# pass-through calls do not need it).
read -r port admin up redis < <("$py" -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')

sed -e "s|^listen: .*|listen: \"127.0.0.1:$port\"|" \
	-e "/^upstream:/,/^[^ ]/s|^  address: .*|  address: 127.0.0.1:$up|" \
	-e "/^admin:/,/^[^ ]/s|^  listen: .*|  listen: 127.0.0.1:$admin|" \
	-e "/^state:/,/^[^ ]/s|^  redis: .*|  redis: 127.0.0.1:$redis|" "$example" >"$tmp/feedguard.yaml"
for want in "^listen: \"127.0.0.1:$port\"" "^  address: 127.0.0.1:$up" "^  listen: 127.0.0.1:$admin" "^  redis: 127.0.0.1:$redis"; do
	grep -q "$want" "$tmp/feedguard.yaml" || fail "writing $conf from the example: no line $want"
done
wrote_conf=1
install -m 0640 -o root -g feedguard "$tmp/feedguard.yaml" "$conf"
ok "wrote $conf from the example: listen :$port, admin :$admin, upstream :$up, redis :$redis (nobody there)"

# The notify socket: the service manager's side of sd_notify(3).  Each
# datagram's sender comes with SCM_CREDENTIALS, as systemd checks
# NotifyAccess=main.  The daemon, as feedguard, must reach the socket.
chmod 0711 "$tmp"
mkdir -m 0755 "$tmp/notify"
"$py" -c '
import os, socket, struct, sys
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
with open(out, "a", buffering=1) as f:
    f.write("listening\n")
    while True:
        msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = "?"
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", data[:12])[0]
        for line in msg.decode(errors="replace").split("\n"):
            if line:
                f.write("pid=%s %s\n" % (pid, line))
' "$tmp/notify/sock" "$tmp/notify.log" &
pids+=($!)

# The upstream: a python3-grpcio server echoing bytes on /fgtest.Echo/Echo
# (a method the policy does not name: it passes through); "sleep:S"
# answers after S seconds, a call to keep in flight across a reload.
"$py" -c '
import sys, time
from concurrent import futures
import grpc
def echo(req, ctx):
    print("call", req.decode(), flush=True)
    if req.startswith(b"sleep:"):
        time.sleep(float(req[6:]))
    return req
h = grpc.method_handlers_generic_handler("fgtest.Echo",
    {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
srv = grpc.server(futures.ThreadPoolExecutor(4))
srv.add_generic_rpc_handlers((h,))
srv.add_insecure_port("127.0.0.1:" + sys.argv[1])
srv.start()
print("serving", flush=True)
srv.wait_for_termination()
' "$up" >"$tmp/upstream.log" 2>&1 &
pids+=($!)

# call PAYLOAD: one call through the daemon; prints the reply or the code.
call_py='
import sys, grpc
ch = grpc.insecure_channel("127.0.0.1:" + sys.argv[1])
try:
    r = ch.unary_unary("/fgtest.Echo/Echo")(sys.argv[2].encode(), timeout=20)
    print(r.decode())
except grpc.RpcError as e:
    print("error", e.code(), e.details())
    sys.exit(1)
'
call() { "$py" -c "$call_py" "$port" "$1"; }
# http PATH: the admin endpoint's status and body
http() {
	"$py" -c '
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen("http://127.0.0.1:%s%s" % (sys.argv[1], sys.argv[2]), timeout=5)
    print(r.status, r.read().decode().strip())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode().strip())
' "$admin" "$1"
}
# wait_for FILE PATTERN [SECONDS]: until grep -E finds PATTERN in FILE
wait_for() {
	local i
	for ((i = 0; i < ${3:-10} * 10; i++)); do
		grep -Eq -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}
wait_for "$tmp/notify.log" '^listening$' || fail "the notify listener did not start"
wait_for "$tmp/upstream.log" '^serving$' || { show "$tmp/upstream.log"; fail "the upstream did not start (python3-grpcio)"; }

# The unit's settings, read from the installed unit: what is run, as
# whom, with which umask, limit and directories.
unit_get() { sed -n "s/^$1=//p" "/lib/systemd/system/$unit"; }
user=$(unit_get User)
group=$(unit_get Group)
umask_=$(unit_get UMask)
nofile=$(unit_get LimitNOFILE)
for d in StateDirectory:/var/lib LogsDirectory:/var/log; do
	names=$(unit_get "${d%%:*}")
	mode=$(unit_get "${d%%:*}Mode")
	for name in $names; do    # systemd makes each one listed, in order
		install -d -o "$user" -g "$group" -m "${mode:-0755}" "${d#*:}/$name"
	done
done
# unit_exec CMD...: become CMD, run as the unit runs its commands
# (systemd's environment); called in a ( subshell ) that it replaces, so
# that a background one's $! is CMD's pid, as $MAINPID is.
unit_exec() {
	cd /
	umask "${umask_:-0022}"
	[ -z "$nofile" ] || ulimit -n "$nofile" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
	exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
		USER="$user" LOGNAME="$user" HOME=/var/lib/feedguard SHELL=/usr/sbin/nologin \
		NOTIFY_SOCKET="$tmp/notify/sock" \
		setpriv --reuid="$user" --regid="$group" --init-groups --no-new-privs -- "$@"
}
# unit_cmd KEY [N]: the Nth KEY= line of the unit into the array cmd
# (split on blanks: the unit quotes nothing)
unit_cmd() { read -ra cmd <<<"$(unit_get "$1" | sed -n "${2:-1}p" | sed 's/^[-@:+!]*//')"; }

unit_cmd ExecStartPre
(unit_exec "${cmd[@]}") >"$tmp/pre.log" 2>&1 || { show "$tmp/pre.log"; fail "ExecStartPre: ${cmd[*]}"; }
ok "ExecStartPre as $user: ${cmd[*]}"
unit_cmd ExecStart
(unit_exec "${cmd[@]}") >"$tmp/daemon.log" 2>&1 &
daemon=$!
pids+=("$daemon")
wait_for "$tmp/notify.log" "^pid=$daemon READY=1" 10 || {
	show "$tmp/daemon.log"
	show "$tmp/notify.log"
	fail "no READY=1 from pid $daemon on NOTIFY_SOCKET within 10s"
}
ok "ExecStart as $user: READY=1 from the main pid ($daemon) on NOTIFY_SOCKET"
r=$(http /readyz)
[ "$r" = "200 ready" ] || fail "/readyz: $r"
ok "GET /readyz on :$admin: $r"
r=$(call hello) || fail "a call through the daemon: $r"
[ "$r" = hello ] || fail "a call through the daemon: $r"
ok "a call through the daemon to the upstream: $r"

# Reload the way `systemctl reload` does (each ExecReload line in turn),
# with a call in flight: it must end well, and a new call too.
"$py" -c "$call_py" "$port" sleep:1.5 >"$tmp/inflight.log" 2>&1 &
inflight=$!
pids+=("$inflight")
wait_for "$tmp/upstream.log" '^call sleep:1.5$' || fail "the in-flight call did not reach the upstream"
n=$(unit_get ExecReload | wc -l)
for ((i = 1; i <= n; i++)); do
	unit_cmd ExecReload "$i"
	cmd=("${cmd[@]//\$MAINPID/$daemon}")
	(unit_exec "${cmd[@]}") >"$tmp/reload.log" 2>&1 || { show "$tmp/reload.log"; fail "ExecReload: ${cmd[*]}"; }
done
wait_for "$tmp/daemon.log" 'event=reloaded' || { show "$tmp/daemon.log"; fail "no event=reloaded after SIGHUP"; }
wait_for "$tmp/notify.log" "^pid=$daemon RELOADING=1" ||
	{ show "$tmp/notify.log"; fail "no RELOADING=1 on NOTIFY_SOCKET"; }
[ "$(grep -c "^pid=$daemon READY=1" "$tmp/notify.log")" -ge 2 ] &&
	grep -A99 RELOADING=1 "$tmp/notify.log" | grep -q "^pid=$daemon READY=1" ||
	{ show "$tmp/notify.log"; fail "no READY=1 after RELOADING=1"; }
ok "ExecReload ($n lines): event=reloaded, RELOADING=1 then READY=1"
rc=0
wait "$inflight" || rc=$?
[ "$rc" -eq 0 ] && [ "$(cat "$tmp/inflight.log")" = sleep:1.5 ] ||
	fail "the call in flight across the reload: $(cat "$tmp/inflight.log")"
r=$(call after-reload) && [ "$r" = after-reload ] || fail "a call after the reload: $r"
ok "the call in flight across the reload ended OK, and a new one"

# Stop: SIGTERM (KillSignal=), STOPPING=1, exit 0 within TimeoutStopSec.
kill -TERM "$daemon"
wait_for "$tmp/notify.log" "^pid=$daemon STOPPING=1" || { show "$tmp/notify.log"; fail "no STOPPING=1"; }
stopsec=$(unit_get TimeoutStopSec)
stopsec=${stopsec%s}
for ((i = 0; i < ${stopsec:-90} * 10; i++)); do
	kill -0 "$daemon" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$daemon" 2>/dev/null && fail "still running ${stopsec}s after SIGTERM"
rc=0
wait "$daemon" || rc=$?
[ "$rc" -eq 0 ] || { show "$tmp/daemon.log"; fail "exit status $rc after SIGTERM"; }
grep -q 'event=exit status=0' "$tmp/daemon.log" || fail "no event=exit status=0 in the log"
ok "SIGTERM: STOPPING=1, exit 0"
grep 'level=error' "$tmp/daemon.log" >&2 && fail "the daemon logged errors (above)"
ok "no level=error in the daemon's log"

# ---------------------------------------------------------------- remove, purge
# Installed again (the postinst runs with the version before): the key
# is not made anew.  Removed: the programs go, configuration stays.
sum=$(sha256sum </etc/feedguard/keys/k1.key)
dpkg -i "$deb" >"$tmp/install.log" 2>&1 || { show "$tmp/install.log"; fail "dpkg -i again"; }
[ "$(sha256sum </etc/feedguard/keys/k1.key)" = "$sum" ] || fail "dpkg -i again: k1.key changed"
ok "dpkg -i again: k1.key kept"
dpkg -r "$pkg" >"$tmp/remove.log" 2>&1 || { show "$tmp/remove.log"; fail "dpkg -r $pkg"; }
for f in /usr/sbin/feedguardd "/lib/systemd/system/$unit" /usr/share/feedguard; do
	[ ! -e "$f" ] || fail "after dpkg -r: $f is still there"
done
for f in "$example" /etc/feedguard/keys/k1.key "$conf"; do
	[ -f "$f" ] || fail "after dpkg -r: $f is gone"
done
getent passwd feedguard >/dev/null || fail "after dpkg -r: user feedguard removed"
ok "dpkg -r: programs gone; $example, k1.key, $conf and the user stay"

dpkg --purge "$pkg" >"$tmp/purge.log" 2>&1 || { show "$tmp/purge.log"; fail "dpkg --purge $pkg"; }
for f in /usr/sbin/feedguardd /usr/sbin/feedguardctl /usr/bin/feedguard-replay /usr/share/feedguard \
	"$example" /etc/feedguard/keys "/lib/systemd/system/$unit" "/etc/systemd/system/$wantedby.wants/$unit" \
	/var/lib/feedguard /var/log/feedguard /usr/share/doc/feedguard; do
	[ ! -e "$f" ] && [ ! -L "$f" ] || fail "after purge: $f is still there"
done
state=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
[ -z "$state" ] || [ "$state" = not-installed ] || fail "after purge: $pkg is $state"
ok "dpkg --purge: programs, data, unit, example, the key and /var/lib/feedguard gone"
getent passwd feedguard >/dev/null || fail "after purge: user feedguard removed (Debian practice keeps it)"
[ -f "$conf" ] || fail "after purge: the operator's $conf removed"
ok "dpkg --purge: user feedguard and the operator's $conf stay (removed by this script)"
