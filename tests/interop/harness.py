"""Processes and helpers of the interop suite: the test upstream, the thing in
the middle (feedguardd, or nothing in direct mode), config files, polling.

Environment (see conftest.py for the full list): FEEDGUARDD, FG_SRCDIR,
FG_DAEMON_WRAPPER, FG_TIME_FACTOR, FG_INTEROP_DIRECT.
"""
import json
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc

from fgcommon import MAX_MESSAGE

HERE = Path(__file__).resolve().parent
SRCDIR = Path(os.environ.get("FG_SRCDIR") or HERE.parent.parent)
FEEDGUARDD = os.environ.get("FEEDGUARDD") or str(SRCDIR / "daemon" / "feedguardd")
# The operators' tool is built beside the daemon (Makefile.am).
FEEDGUARDCTL = os.environ.get("FEEDGUARDCTL") or str(Path(FEEDGUARDD).parent / "feedguardctl")
# So is the capture reader (README, "Capture and replay").
FEEDGUARD_REPLAY = (os.environ.get("FEEDGUARD_REPLAY")
                    or str(Path(FEEDGUARDD).parent / "feedguard-replay"))
WRAPPER = shlex.split(os.environ.get("FG_DAEMON_WRAPPER", ""))
TIME_FACTOR = float(os.environ.get("FG_TIME_FACTOR", "1") or "1")
DIRECT = os.environ.get("FG_INTEROP_DIRECT", "") not in ("", "0")
PYTHON = sys.executable or "/usr/bin/python3"


def tf(seconds):
    """<seconds> scaled by FG_TIME_FACTOR: for every wait that depends on
    the daemon's speed."""
    return seconds * TIME_FACTOR


def poll_until(fn, timeout, what, interval=0.02):
    """Call fn() until it returns something truthy and return that; fail
    after <timeout> seconds with a message naming <what>."""
    limit = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() >= limit:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def new_call_id(prefix="call"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def closed_port():
    """A loopback port that nothing listens on (just released by us)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def settled_rss(pid, within_kib=256, gap=0.2, timeout=5):
    """VmRSS (KiB) of <pid> once it stops growing (what is in the sockets
    has been read): two readings <gap> s apart within <within_kib> KiB;
    fails after <timeout> x FG_TIME_FACTOR seconds."""
    prev = [rss_kib(pid)]

    def stable():
        time.sleep(gap)
        cur = rss_kib(pid)
        same = abs(cur - prev[0]) < within_kib
        prev[0] = cur
        return cur if same else None
    return poll_until(stable, tf(timeout), "feedguardd's RSS to settle", interval=0)


def rss_factor(pid):
    """How much more RSS the daemon <pid> needs for the same work: 3 under
    AddressSanitizer (shadow memory, redzones and the quarantine of freed
    blocks), else 1.  Memory bounds in tests are multiplied by it."""
    with open("/proc/%d/maps" % pid) as f:
        return 3 if any("libasan" in line for line in f) else 1


def tail(path, n=60):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "(no %s)" % path
    return "\n".join(lines[-n:])


# ---------------------------------------------------------------- grpc helpers

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    # Every channel gets its own connection: no sharing of a subchannel (and
    # its reconnect backoff) between channels of one test or of two tests.
    ("grpc.use_local_subchannel_pool", 1),
]


def channel(target, options=()):
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS + list(options))


def aio_channel(target, options=()):
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS + list(options))


def md_values(metadata, key):
    """All values of <key> in a grpcio metadata sequence, in order."""
    return [m[1] for m in (metadata or ()) if m[0] == key]


# ---------------------------------------------------------------- events file

class Events:
    """Incremental reader of the upstream's JSON-lines events file."""

    def __init__(self, path):
        self.path = Path(path)
        self._pos = 0
        self._buf = b""
        self._all = []

    def all(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                chunk = f.read()
        except FileNotFoundError:
            return self._all
        self._pos += len(chunk)
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            if line.strip():
                self._all.append(json.loads(line))
        return self._all

    def of(self, call, ev=None):
        return [e for e in self.all() if e.get("call") == call and (ev is None or e["ev"] == ev)]

    def wait(self, call, ev, timeout, pred=None, what=None):
        """First event <ev> of <call> (matching pred) within <timeout> s."""
        def find():
            for e in self.of(call, ev):
                if pred is None or pred(e):
                    return e
            return None
        return poll_until(find, timeout, what or "upstream event %r of call %s (seen: %s)"
                          % (ev, call, [e["ev"] for e in self.of(call)]))


# ---------------------------------------------------------------- test upstream

def spawn_serving(cmd, stderr_path, timeout, what):
    """Start <cmd> (a test server that prints "PORT <n>" on stdout once it
    serves), stderr appended to <stderr_path>; returns (proc, port).  Fails
    with the server's stderr if it exits or stays silent for <timeout> s."""
    with open(stderr_path, "ab") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    line = b""
    limit = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while not line.endswith(b"\n"):
        left = limit - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            proc.kill()
            proc.wait(timeout=10)
            proc.stdout.close()
            raise AssertionError("%s did not start in %.0fs:\n%s" % (what, timeout, tail(stderr_path)))
        chunk = os.read(fd, 256)
        if not chunk:
            proc.wait()
            proc.stdout.close()
            raise AssertionError("%s exited (%s) before serving:\n%s"
                                 % (what, proc.returncode, tail(stderr_path)))
        line += chunk
    m = re.match(rb"PORT (\d+)", line)
    assert m, "%s printed %r" % (what, line)
    return proc, int(m.group(1))


class Upstream:
    """tests/interop/upstream.py as a subprocess."""

    START_TIMEOUT = 30.0  # python + grpcio start; not about the daemon

    def __init__(self, workdir, name="upstream"):
        self.workdir = Path(workdir)
        self.name = name
        self.events_path = self.workdir / ("%s-events.jsonl" % name)
        self.stderr_path = self.workdir / ("%s.stderr" % name)
        self.events = Events(self.events_path)
        self.proc = None
        self.port = None

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def start(self, port=0, max_streams=0):
        """Start on <port> (0: any free one) and wait until it serves.
        <max_streams>: SETTINGS_MAX_CONCURRENT_STREAMS it advertises (0: grpc's)."""
        cmd = [PYTHON, str(HERE / "upstream.py"), "--port", str(port),
               "--events", str(self.events_path), "--max-streams", str(max_streams)]
        self.proc, self.port = spawn_serving(cmd, self.stderr_path, self.START_TIMEOUT, "upstream")
        assert port in (0, self.port)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL, by PID, and reap."""
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)
            self.proc.stdout.close()

    def stop(self):
        if self.proc is None:
            return
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc = None


# ---------------------------------------------------------------- config files

DEFAULT_CONFIG = {
    "listen": "127.0.0.1:0",
    "workers": 1,
    "upstream": {"address": None, "connect_timeout": "1s"},
    "timeouts": {"idle": "5m", "drain": "5s"},
    "admin": {"listen": "off"},
    "log": {"level": "debug"},
}

DELETE = object()   # as an override value: remove that key


def deep_merge(base, over):
    out = dict(base)
    for k, v in (over or {}).items():
        if v is DELETE:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


_PLAIN = re.compile(r"^[A-Za-z0-9_*][A-Za-z0-9_./:@*+-]*$")


def _scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if _PLAIN.match(s) and not s.endswith(":"):
        return s
    return json.dumps(s)   # a JSON string is a valid YAML double-quoted scalar


def to_yaml(d, indent=0):
    """A tiny block-style YAML emitter for dicts of dicts, lists and scalars."""
    pad = " " * indent
    lines = []
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append("%s%s:" % (pad, k))
            lines.extend(to_yaml(v, indent + 2).splitlines())
        elif isinstance(v, (list, tuple)):
            lines.append("%s%s:" % (pad, k))
            # A dict item (e.g. pseudonym_keys: [{id, file}]) is a flow mapping.
            lines.extend("%s  - %s" % (pad, "{%s}" % ", ".join(
                "%s: %s" % (ik, _scalar(iv)) for ik, iv in x.items())
                if isinstance(x, dict) else _scalar(x)) for x in v)
        else:
            lines.append("%s%s: %s" % (pad, k, _scalar(v)))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the middle

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer",
                   "runtime error:", "ERROR: ThreadSanitizer")


def feedguardd_cmd(args):
    if not os.access(FEEDGUARDD, os.X_OK):
        raise AssertionError("feedguardd not found or not executable at %s (build it, set "
                             "FEEDGUARDD, or run with FG_INTEROP_DIRECT=1)" % FEEDGUARDD)
    return WRAPPER + [FEEDGUARDD] + list(args)


def run_feedguardd(args, timeout=None):
    """Run feedguardd to completion (for -t, --version, --help)."""
    return subprocess.run(feedguardd_cmd(args), stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout or tf(30))


def run_feedguardctl(args, stdin=b"", timeout=None):
    """Run feedguardctl to completion with <stdin> (bytes) on its standard
    input; under FG_DAEMON_WRAPPER too, so valgrind runs check it."""
    if not os.access(FEEDGUARDCTL, os.X_OK):
        raise AssertionError("feedguardctl not found or not executable at %s (build it or set "
                             "FEEDGUARDCTL)" % FEEDGUARDCTL)
    return subprocess.run(WRAPPER + [FEEDGUARDCTL] + list(args), input=stdin, capture_output=True,
                          timeout=timeout or tf(30))


def run_feedguard_replay(args, stdin=b"", timeout=None, cwd=None):
    """Run feedguard-replay (beside the daemon, or $FEEDGUARD_REPLAY) to
    completion; under FG_DAEMON_WRAPPER too."""
    if not os.access(FEEDGUARD_REPLAY, os.X_OK):
        raise AssertionError("feedguard-replay not found or not executable at %s (build it or "
                             "set FEEDGUARD_REPLAY)" % FEEDGUARD_REPLAY)
    return subprocess.run(WRAPPER + [FEEDGUARD_REPLAY] + [str(a) for a in args], input=stdin,
                          capture_output=True, timeout=timeout or tf(30), cwd=cwd)


class Direct:
    """Direct mode: nothing in the middle, the target is the upstream."""

    direct = True
    proc = None
    pid = None

    def __init__(self, upstream_addr):
        self.addr = upstream_addr

    def stop(self):
        return []


class Daemon:
    """feedguardd started with a config written from DEFAULT_CONFIG + overrides."""

    direct = False
    LISTEN_RE = re.compile(r'event=listening\b.*?\baddr="?(\d+\.\d+\.\d+\.\d+):(\d+)')

    def __init__(self, workdir, upstream_addr, config=None, name="feedguardd"):
        self.workdir = Path(workdir)
        self.name = name
        self.config = deep_merge(DEFAULT_CONFIG, {"upstream": {"address": upstream_addr}})
        self.config = deep_merge(self.config, config or {})
        self.config_path = self.workdir / ("%s.yaml" % name)
        self.stderr_path = self.workdir / ("%s.stderr" % name)
        self.stdout_path = self.workdir / ("%s.stdout" % name)
        self.proc = None
        self.addr = None
        self.listen_addrs = []
        self.stopping = False

    @property
    def pid(self):
        return self.proc.pid

    def stderr(self):
        return self.stderr_path.read_bytes().decode("utf-8", "replace")

    def start(self):
        self.config_path.write_text(to_yaml(self.config))
        cmd = feedguardd_cmd(["-c", str(self.config_path)])
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)

        def ready():
            if self.proc.poll() is not None:
                return "dead"
            return "ready" if "event=ready" in self.stderr() else None
        try:
            state = poll_until(ready, tf(10), "feedguardd to log event=ready")
            if state == "dead":
                raise AssertionError("feedguardd exited with %s before event=ready"
                                     % self.proc.returncode)
            self.listen_addrs = ["%s:%s" % m.groups() for m in
                                 (self.LISTEN_RE.search(l) for l in self.stderr().splitlines())
                                 if m]
            if not self.listen_addrs:
                raise AssertionError("feedguardd is ready but logged no "
                                     "'event=listening addr=HOST:PORT'")
        except AssertionError as e:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError("%s; stderr (%s):\n%s"
                                 % (e, self.stderr_path, tail(self.stderr_path))) from None
        self.addr = self.listen_addrs[0]
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def sigterm(self):
        """Ask for a graceful stop now (a test of stopping); stop() then only
        waits for it and checks the exit code."""
        self.stopping = True
        self.proc.send_signal(signal.SIGTERM)

    def stop(self):
        """SIGTERM, wait, and return a list of problems (empty when it exited 0
        with no sanitizer report)."""
        if self.proc is None:
            return []
        problems = []
        if self.proc.poll() is not None and not self.stopping:
            problems.append("feedguardd exited by itself during the test (exit %s)"
                            % self.proc.returncode)
        elif self.proc.poll() is None:
            if not self.stopping:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=tf(30))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
                problems.append("feedguardd did not exit within %.0fs of SIGTERM" % tf(30))
        if not problems and self.proc.returncode != 0:
            problems.append("feedguardd exited %s after SIGTERM" % self.proc.returncode)
        text = self.stderr()
        for mark in SANITIZER_MARKS:
            if mark in text:
                problems.append("sanitizer report in feedguardd stderr (%r)" % mark)
        if problems:
            problems.append("stderr tail (%s):\n%s" % (self.stderr_path, tail(self.stderr_path)))
        self.proc = None
        return problems


def start_middle(workdir, upstream_addr, config=None, name="feedguardd"):
    """THE place that starts what sits between the clients and <upstream_addr>.
    Returns an object with .addr (what clients dial), .pid (None if nothing
    runs), .direct and .stop().  To test another proxy, change only this."""
    if DIRECT:
        return Direct(upstream_addr)
    return Daemon(workdir, upstream_addr, config, name).start()
