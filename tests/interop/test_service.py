"""feedguardd as a service: the readiness protocol systemd's Type=notify
reads (sd_notify: READY=1 once every worker takes connections, RELOADING=1
and READY=1 around a reload, STOPPING=1 at a stop), the unit file
(contrib/systemd/feedguardd.service.in, checked with systemd-analyze
verify and security), and the example config and policies working as
written from the source tree.  README, "Installing and running as a
service".  All need the daemon (proxy_only)."""
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from fgcommon import method, payload
from harness import (SRCDIR, FEEDGUARDD, Daemon, channel, new_call_id, poll_until,
                     run_feedguardd, tf)

pytestmark = pytest.mark.proxy_only

UNIT_IN = SRCDIR / "contrib" / "systemd" / "feedguardd.service.in"
EXAMPLE = SRCDIR / "contrib" / "feedguard.example.yaml"


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.env = address if isinstance(address, str) else "@" + address[1:].decode()

    def next(self, timeout):
        """The next message as a dict of its assignments (None: nothing came)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        return dict(line.split("=", 1) for line in data.decode().split("\n") if line)

    def wait_for(self, key, timeout):
        """Messages until one sets <key>; returns (that message, those before)."""
        before = []
        limit = time.monotonic() + timeout
        while time.monotonic() < limit:
            msg = self.next(max(0.01, limit - time.monotonic()))
            if msg is None:
                break
            if key in msg:
                return msg, before
            before.append(msg)
        raise AssertionError("no %s= on NOTIFY_SOCKET within %.1fs (got %r)" % (key, timeout, before))

    def close(self):
        self.sock.close()


@pytest.fixture
def notify(tmp_path, monkeypatch):
    ns = NotifySocket(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", ns.env)
    yield ns
    ns.close()


@contextlib.contextmanager
def running(tmp_path, upstream_addr, config=None):
    """A feedguardd for the block; it must stop cleanly after it."""
    m = Daemon(tmp_path, upstream_addr, config, "feedguardd").start()
    try:
        yield m
    finally:
        problems = m.stop()
    assert not problems, problems


def unary_ok(addr):
    with channel(addr) as ch:
        body = payload(64)
        got = ch.unary_unary(method("Unary"))(body, metadata=(("x-call-id", new_call_id("svc")),),
                                              timeout=tf(10))
        assert got == body


def test_ready_once_every_worker_runs(tmp_path, upstream, notify):
    with running(tmp_path, upstream.addr, {"workers": 3}) as m:
        msg, before = notify.wait_for("READY", tf(10))
        assert before == [], "something came before READY=1: %r" % before
        assert msg["READY"] == "1"
        assert msg.get("STATUS") == "serving with 3 workers"
        # When READY=1 is out, calls are served.
        unary_ok(m.addr)
        assert notify.next(0.2) is None, "a second message without a reason"


def test_reload_is_reloading_then_ready(tmp_path, upstream, notify):
    with running(tmp_path, upstream.addr) as m:
        notify.wait_for("READY", tf(10))
        t0 = time.monotonic()
        m.proc.send_signal(signal.SIGHUP)
        msg, before = notify.wait_for("RELOADING", tf(10))
        assert before == []
        # MONOTONIC_USEC is CLOCK_MONOTONIC, as Type=notify-reload requires.
        usec = int(msg["MONOTONIC_USEC"])
        assert t0 * 1e6 - 1e6 <= usec <= time.monotonic() * 1e6 + 1e6, (usec, t0)
        ready, before = notify.wait_for("READY", tf(10))
        assert before == [] and ready.get("STATUS") == "serving; reloaded"
        poll_until(lambda: "event=reloaded" in m.stderr(), tf(5), "event=reloaded")
        unary_ok(m.addr)


def test_failed_reload_stays_ready_and_says_why(tmp_path, upstream, notify):
    with running(tmp_path, upstream.addr) as m:
        notify.wait_for("READY", tf(10))
        good = m.config_path.read_text()
        m.config_path.write_text(good + "bogus_key: 1\n")
        m.proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING", tf(10))
        ready, _ = notify.wait_for("READY", tf(10))
        status = ready.get("STATUS", "")
        assert status.startswith("serving; reload failed: "), status
        assert "%s:" % m.config_path in status and "bogus_key" in status, status
        unary_ok(m.addr)


def test_stop_is_stopping(tmp_path, upstream, notify):
    with running(tmp_path, upstream.addr) as m:
        notify.wait_for("READY", tf(10))
        m.sigterm()
        msg, before = notify.wait_for("STOPPING", tf(10))
        assert before == [] and msg["STOPPING"] == "1" and msg.get("STATUS") == "draining"


def test_abstract_notify_socket(tmp_path, upstream, monkeypatch):
    name = "\0feedguard-test-%d-%d" % (os.getpid(), time.monotonic_ns())
    ns = NotifySocket(name.encode())
    monkeypatch.setenv("NOTIFY_SOCKET", ns.env)
    try:
        with running(tmp_path, upstream.addr):
            msg, _ = ns.wait_for("READY", tf(10))
            assert msg["READY"] == "1"
    finally:
        ns.close()


def test_reload_while_stopping_says_nothing(tmp_path, upstream, notify):
    """A SIGHUP during a drain (a logrotate's, say) reloads but sends no
    READY=1, which would tell systemd the stop was over."""
    with running(tmp_path, upstream.addr, {"timeouts": {"readiness_delay": "2s"}}) as m:
        notify.wait_for("READY", tf(10))
        m.sigterm()
        notify.wait_for("STOPPING", tf(10))
        m.proc.send_signal(signal.SIGHUP)
        poll_until(lambda: "event=reloaded" in m.stderr(), tf(5), "event=reloaded")
        assert notify.next(0.3) is None, "a notification after STOPPING=1"


@pytest.mark.parametrize("where", ["gone", "relative"])
def test_unusable_notify_socket_is_logged_and_serving_goes_on(tmp_path, upstream, monkeypatch, where):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody.sock") if where == "gone" else "rel.sock")
    with running(tmp_path, upstream.addr) as m:
        poll_until(lambda: "event=notify_failed" in m.stderr(), tf(5), "event=notify_failed")
        unary_ok(m.addr)


# ---- the unit file ------------------------------------------------------

def unit_for_this_build(tmp_path):
    """The unit as `make` writes it, naming this build's feedguardd."""
    text = UNIT_IN.read_text()
    text = (text.replace("@sbindir@", os.path.dirname(os.path.abspath(FEEDGUARDD)))
            .replace("@sysconfdir@", "/etc").replace("@localstatedir@", "/var"))
    assert not re.search(r"@[a-z]+@", text), "an unsubstituted @var@"
    path = tmp_path / "feedguardd.service"
    path.write_text(text)
    return path


def unit_settings(path):
    """{(section, key): [values]}: read by lines, since systemd repeats keys
    (ExecReload, SystemCallFilter) where an INI parser keeps one."""
    settings = {}
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, v = line.split("=", 1)
        settings.setdefault((section, k), []).append(v)
    return settings


def seconds(text):
    m = re.fullmatch(r"(\d+)(s|min)?", text)
    assert m, text
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


def test_unit_verifies(tmp_path):
    """systemd-analyze verify, with the manual pages this build made on
    MANPATH: every Documentation=man: page must exist."""
    path = unit_for_this_build(tmp_path)
    built = Path(FEEDGUARDD).resolve().parent.parent     # the build dir: daemon/feedguardd
    pages = sorted(built.glob("*.[158]"))
    assert pages, "no manual pages in %s (make builds them)" % built
    for p in pages:
        d = tmp_path / "man" / ("man" + p.suffix[1:])
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(str(p), str(d / p.name))
    env = dict(os.environ, MANPATH=str(tmp_path / "man"))
    res = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, timeout=60, env=env)
    out = (res.stdout + res.stderr).decode("utf-8", "replace")
    assert res.returncode == 0 and "feedguardd.service" not in out, out


def test_unit_exposure_score(tmp_path):
    """The score the README quotes; --threshold fails the check above it."""
    path = unit_for_this_build(tmp_path)
    res = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(path)],
                         capture_output=True, timeout=60)
    out = res.stdout.decode("utf-8", "replace")
    m = re.search(r"Overall exposure level for feedguardd\.service: (\d+\.\d+) (\w+)", out)
    assert res.returncode == 0 and m, out + res.stderr.decode("utf-8", "replace")
    readme = (SRCDIR / "README.md").read_text()
    assert "exposure level %s (%s)" % (m.group(1), m.group(2)) in readme, \
        "the README must quote the score systemd-analyze gives now: %s %s" % m.groups()


def test_unit_is_what_the_readme_says(tmp_path):
    s = unit_settings(unit_for_this_build(tmp_path))
    svc = lambda k: s.get(("Service", k), [])
    assert svc("Type") == ["notify"]
    assert svc("ExecReload")[-1] == "/bin/kill -HUP $MAINPID"
    assert any(" -t " in v for v in svc("ExecReload")), "a reload checks the file first"
    assert s[("Unit", "ConditionPathExists")] == ["/etc/feedguard/feedguard.yaml"]
    assert svc("User") == ["feedguard"] and svc("NoNewPrivileges") == ["yes"]
    assert svc("ProtectSystem") == ["strict"] and svc("PrivateTmp") == ["yes"]
    assert svc("RestrictAddressFamilies") == ["AF_UNIX AF_INET AF_INET6"]
    assert int(svc("LimitNOFILE")[0]) >= 65536
    # The stop timeout covers the example config's drain and readiness delay.
    example = EXAMPLE.read_text()
    drain = re.search(r"^  drain: (\d+)s", example, re.M)
    assert drain, "the example config states timeouts.drain"
    delay = re.search(r"^  readiness_delay: (\d+)s", example, re.M)
    assert seconds(svc("TimeoutStopSec")[0]) > int(drain.group(1)) + (int(delay.group(1)) if delay else 0)


# ---- the examples, as written --------------------------------------------

def test_policies_work_from_the_source_tree(tmp_path):
    """The policies name their descriptor set beside them (policies/ranking.pb)."""
    for policy in ("demo.yaml", "uk-children.yaml"):
        key = tmp_path / "k.key"
        key.write_bytes(os.urandom(32))
        cfg = tmp_path / ("%s.conf.yaml" % policy)
        cfg.write_text("listen: 127.0.0.1:0\nupstream: {address: 127.0.0.1:50051}\n"
                       "policy: %s\npseudonym_keys:\n  - {id: k1, file: %s}\n"
                       "state: {redis: 127.0.0.1:6379}\n" % (SRCDIR / "policies" / policy, key))
        res = run_feedguardd(["-t", "-c", str(cfg)])
        assert res.returncode == 0, res.stderr.decode("utf-8", "replace")


def test_example_config_as_written(tmp_path):
    """contrib/feedguard.example.yaml, untouched, beside the policies as in
    the source tree, once its key exists (the one step it asks for)."""
    contrib = tmp_path / "contrib"
    contrib.mkdir()
    shutil.copy(str(EXAMPLE), str(contrib / "feedguard.example.yaml"))
    os.symlink(str(SRCDIR / "policies"), str(tmp_path / "policies"))
    res = run_feedguardd(["-t", "-c", str(contrib / "feedguard.example.yaml")])
    err = res.stderr.decode("utf-8", "replace")
    assert res.returncode == 1 and "keys/k1.key" in err, err
    (contrib / "keys").mkdir()
    (contrib / "keys" / "k1.key").write_bytes(os.urandom(32))
    res = run_feedguardd(["-t", "-c", str(contrib / "feedguard.example.yaml")])
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")
