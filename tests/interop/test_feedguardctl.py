"""feedguardctl, the operators' tool: shows and erases one user's
screen-time state in a real redis-server, the user id on standard input.

Records are seeded the way feedguardd writes them (fg_state_redis.h): a
hash at <prefix>{<key id>:<hex HMAC-SHA256(key file, id)>} with the fields
last, sess, day, act, night, qact and x:<counter>.  The ring has two keys,
k2 (newest) and k1 (older); the policy is policies/uk-children.yaml with
one more exposure counter for under_13, so the bands count different
counters (wellbeing for 13-17, stunts for under 13).  Needs redis-server
on PATH (skipped otherwise) and the build's feedguardctl (proxy_only).
"""
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

import policyhelp as ph
from harness import DEFAULT_CONFIG, SRCDIR, closed_port, deep_merge, poll_until, run_feedguardctl, tf, to_yaml

pytestmark = [pytest.mark.proxy_only,
              pytest.mark.skipif(not shutil.which("redis-server"), reason="no redis-server on PATH")]

USER = "zoë-7f3a9c support test"     # distinctive, so a leak into any output is found
PREFIX = "fgt:"
DAY = 20454                          # 2026-01-01
LAST_MS = 1767225600123              # 2026-01-01T00:00:00.123Z
SESS_MS = 1767220000000              # 2025-12-31T22:26:40.000Z
UNDER_13_BLOCK = '    quiet_hours: {from: "21:00", to: "07:00", warn_before: 30m, action: empty}\n'
EXTRA_COUNTER = "    exposure:\n      - {classes: [dangerous_stunts], per_day: 10, name: stunts}\n"


# ---------------------------------------------------------------- a Redis of the test's own

def resp(sock, *args):
    """Send one command (RESP array of bulk strings) on <sock> and return
    its reply: int, bytes, None, a list, or an Exception for an error."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    sock.sendall(out)
    return _reply(sock.makefile("rb"))


def _reply(f):
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        return RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_reply(f) for _ in range(n)]
    raise AssertionError("bad RESP line %r" % line)


class Redis:
    """redis-server on a free loopback port, no persistence, stopped by PID."""

    def __init__(self, workdir, password=None):
        self.dir = workdir
        self.password = password
        self.port = closed_port()
        self.proc = None

    def start(self):
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")]
        if self.password:
            cmd += ["--requirepass", self.password]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        poll_until(self._answers, tf(10), "redis-server on port %d" % self.port)
        return self

    def _answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                return resp(s, "PING") is not None
        except OSError:
            return False

    def call(self, *args, db=0):
        with socket.create_connection(("127.0.0.1", self.port), timeout=tf(5)) as s:
            if self.password:
                assert resp(s, "AUTH", self.password) == b"OK"
            if db:
                assert resp(s, "SELECT", db) == b"OK"
            r = resp(s, *args)
        if isinstance(r, Exception):
            raise r
        return r

    def stop(self):
        if not self.proc:
            return
        os.kill(self.proc.pid, signal.SIGCONT)
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=tf(10))
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path).start()
    yield r
    r.stop()


# ---------------------------------------------------------------- config, keys, records

class Setup:
    """The config file, the ring's key bytes, and the user's Redis keys."""

    def __init__(self, tmp_path, redis_addr, state_extra=None):
        self.dir = tmp_path
        self.secrets = {}
        for kid in ("k1", "k2"):
            self.secrets[kid] = os.urandom(32)
            (tmp_path / ("%s.key" % kid)).write_bytes(self.secrets[kid])
        policy = (SRCDIR / "policies" / "uk-children.yaml").read_text()
        assert UNDER_13_BLOCK in policy
        ph.write_policy(tmp_path, policy.replace(UNDER_13_BLOCK, UNDER_13_BLOCK + EXTRA_COUNTER, 1))
        state = dict({"redis": redis_addr, "key_prefix": PREFIX}, **(state_extra or {}))
        cfg = deep_merge(DEFAULT_CONFIG, {"upstream": {"address": "127.0.0.1:%d" % closed_port()},
                                          "policy": "policy.yaml",
                                          "pseudonym_keys": [{"id": "k2", "file": "k2.key"},
                                                             {"id": "k1", "file": "k1.key"}],
                                          "state": state})
        self.config = tmp_path / "feedguard.yaml"
        self.config.write_text(to_yaml(cfg))

    def hexdigest(self, kid, user=USER):
        return hmac.new(self.secrets[kid], user.encode(), hashlib.sha256).hexdigest()

    def key(self, kid, user=USER):
        return "%s{%s:%s}" % (PREFIX, kid, self.hexdigest(kid, user))

    def seed(self, redis, kid, user=USER, act_ms=2759999, wellbeing=7, stunts=3, db=0):
        redis.call("HSET", self.key(kid, user), "last", LAST_MS, "sess", SESS_MS, "day", DAY,
                   "act", act_ms, "night", DAY - 1, "qact", 600000, "x:wellbeing", wellbeing,
                   "x:stunts", stunts, db=db)

    def ctl(self, *args, stdin=None, config=None):
        res = run_feedguardctl(["-c", str(config or self.config)] + list(args),
                               stdin=(USER + "\n").encode() if stdin is None else stdin)
        self.check_no_leak(res)
        return res

    def check_no_leak(self, res):
        """Neither the raw id nor any pseudonym's hex in any output."""
        both = res.stdout + res.stderr
        assert USER.encode() not in both, both
        for kid in self.secrets:
            assert self.hexdigest(kid).encode() not in both, both


def out_json(res):
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")
    lines = res.stdout.decode().splitlines()
    assert len(lines) == 1, res.stdout
    return json.loads(lines[0])


@pytest.fixture
def setup(tmp_path, redis):
    return Setup(tmp_path, "127.0.0.1:%d" % redis.port)


# ---------------------------------------------------------------- show

def test_show_finds_the_record_under_the_older_key(setup, redis):
    """A record written before the ring's newest key was added is found
    under it, with every field converted for a person to read."""
    setup.seed(redis, "k1")
    rec = out_json(setup.ctl("show"))
    assert rec == {"found": True, "key": "k1", "last": "2026-01-01T00:00:00.123Z",
                   "session_start": "2025-12-31T22:26:40.000Z", "day": "2026-01-01",
                   "active_minutes": 45, "night": "2025-12-31", "quiet_minutes": 10,
                   "exposure": {"stunts": 3, "wellbeing": 7}}


def test_show_prefers_the_newest_key(setup, redis):
    setup.seed(redis, "k1", act_ms=60000)
    setup.seed(redis, "k2", act_ms=20 * 60000, wellbeing=0)
    rec = out_json(setup.ctl("show"))
    assert (rec["key"], rec["active_minutes"], rec["exposure"]["wellbeing"]) == ("k2", 20, 0)


def test_show_unknown_user(setup, redis):
    setup.seed(redis, "k1", user="someone else")
    assert out_json(setup.ctl("show")) == {"found": False}


def test_show_reads_the_id_as_one_line(setup, redis):
    """A CR before the newline is not part of the id, nor is a missing
    newline a problem; an id of 1024 bytes is accepted (feedguardd keys
    nothing under one over 511 bytes now; the tool still erases what an
    earlier version kept)."""
    setup.seed(redis, "k2")
    for stdin in (USER + "\r\n", USER):
        assert out_json(setup.ctl("show", stdin=stdin.encode()))["key"] == "k2"
    assert out_json(setup.ctl("show", stdin=b"u" * 1024 + b"\n")) == {"found": False}


# ---------------------------------------------------------------- erase

def test_erase_removes_the_user_under_every_key(setup, redis):
    setup.seed(redis, "k1")
    setup.seed(redis, "k2")
    setup.seed(redis, "k2", user="someone else")
    assert out_json(setup.ctl("erase")) == {"erased": True, "keys": 2}
    assert redis.call("EXISTS", setup.key("k1"), setup.key("k2")) == 0
    assert redis.call("EXISTS", setup.key("k2", user="someone else")) == 1
    assert out_json(setup.ctl("show")) == {"found": False}
    # Erasing nobody is not an error: the operator's request is done.
    assert out_json(setup.ctl("erase")) == {"erased": True, "keys": 2}


def test_password_file_and_db(tmp_path):
    """AUTH and SELECT come from the config's state section."""
    r = Redis(tmp_path, password="s3cret-pass").start()
    try:
        (tmp_path / "redis.pass").write_text("s3cret-pass\n")
        s = Setup(tmp_path, "127.0.0.1:%d" % r.port, {"password_file": "redis.pass", "db": 3})
        s.seed(r, "k1", db=3)
        assert out_json(s.ctl("show"))["key"] == "k1"
        assert out_json(s.ctl("erase")) == {"erased": True, "keys": 2}
        assert r.call("EXISTS", s.key("k1"), db=3) == 0
    finally:
        r.stop()


# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize("cmd", ["show", "erase"])
def test_id_in_argv_is_refused(setup, redis, cmd):
    setup.seed(redis, "k1")
    res = run_feedguardctl(["-c", str(setup.config), cmd, "someone"], stdin=(USER + "\n").encode())
    assert res.returncode == 2, res.stderr
    assert b"standard input" in res.stderr
    assert res.stdout == b""
    assert redis.call("EXISTS", setup.key("k1")) == 1


@pytest.mark.parametrize("stdin,words", [(b"", b"no user id"), (b"\n", b"no user id"), (b"\r\n", b"no user id"),
                                         (b"a\nb\n", b"one line"), (b"a\n\n", b"one line"),
                                         (b"u" * 1025 + b"\n", b"longer than 1024")])
def test_bad_standard_input_is_a_usage_error(setup, redis, stdin, words):
    setup.seed(redis, "k1")
    res = setup.ctl("erase", stdin=stdin)
    assert res.returncode == 2, res.stderr
    assert words in res.stderr, res.stderr
    assert res.stdout == b""
    assert redis.call("EXISTS", setup.key("k1")) == 1


def test_usage_help_version(setup):
    res = run_feedguardctl(["-h"])
    assert res.returncode == 0 and b"standard input" in res.stdout
    assert run_feedguardctl(["-v"]).stdout.startswith(b"feedguardctl ")
    for args in ([], ["frobnicate"], ["--bogus", "show"]):
        assert run_feedguardctl(["-c", str(setup.config)] + args).returncode == 2, args


def test_redis_down_fails_fast(tmp_path):
    s = Setup(tmp_path, "127.0.0.1:%d" % closed_port())
    for cmd in ("show", "erase"):
        t0 = time.monotonic()
        res = s.ctl(cmd)
        assert res.returncode == 1
        assert time.monotonic() - t0 < tf(3)
        assert b"cannot reach Redis at 127.0.0.1:" in res.stderr, res.stderr
        assert res.stdout == b""


def test_redis_paused_fails_within_the_connect_timeout(tmp_path, redis):
    """A stopped Redis still completes TCP connects in the kernel: only the
    handshake's timeout notices it."""
    s = Setup(tmp_path, "127.0.0.1:%d" % redis.port, {"connect_timeout": "300ms"})
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        res = s.ctl("erase")
        assert res.returncode == 1
        assert time.monotonic() - t0 < tf(2)
        assert b"cannot reach Redis" in res.stderr and b"timed out" in res.stderr, res.stderr
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)


def test_not_a_record_is_an_error(setup, redis):
    redis.call("SET", setup.key("k2"), "not a hash")
    res = setup.ctl("show")
    assert res.returncode == 1
    assert b"not a feedguard record" in res.stderr, res.stderr


def test_config_without_state_or_keys(setup, tmp_path):
    text = setup.config.read_text()
    head = text[:text.index("state:")]
    (tmp_path / "nostate.yaml").write_text(head.replace("policy: policy.yaml\n", ""))
    res = setup.ctl("show", config=tmp_path / "nostate.yaml")
    assert res.returncode == 1
    assert b"has no state.redis" in res.stderr, res.stderr
    nokeys = text[:text.index("pseudonym_keys:")] + text[text.index("state:"):]
    (tmp_path / "nokeys.yaml").write_text(nokeys.replace("policy: policy.yaml\n", ""))
    res = setup.ctl("show", config=tmp_path / "nokeys.yaml")
    assert res.returncode == 1
    assert b"has no pseudonym_keys" in res.stderr, res.stderr


def test_policy_that_does_not_compile_blocks_neither_show_nor_erase(setup, redis):
    """A typo in the policy (which a running daemon refuses on reload) does
    not block support or erasure: the policy's error is printed with its
    file:line:column, show gives everything but the exposure counters, and
    erase erases."""
    setup.seed(redis, "k1")
    policy = setup.dir / "policy.yaml"
    text = policy.read_text()
    policy.write_text(text + "bogus_policy_key: 1\n")
    line = len(text.splitlines()) + 1
    res = setup.ctl("show")
    err = res.stderr.decode()
    assert err.startswith("%s:%d:1: " % (policy, line)), err
    assert "policy does not compile; going on without it (no exposure counters shown)" in err, err
    rec = out_json(res)
    assert (rec["found"], rec["key"], rec["active_minutes"]) == (True, "k1", 45), rec
    assert not rec.get("exposure"), rec
    res = setup.ctl("erase")
    assert "going on without it" in res.stderr.decode()
    assert out_json(res) == {"erased": True, "keys": 2}
    assert redis.call("EXISTS", setup.key("k1")) == 0


def test_config_error_is_file_line_column(setup, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(setup.config.read_text() + "bogus_key: 1\n")
    res = setup.ctl("show", config=bad)
    assert res.returncode == 1
    line = len(setup.config.read_text().splitlines()) + 1
    assert res.stderr.decode().startswith("%s:%d:1: unknown key 'bogus_key'" % (bad, line)), res.stderr
