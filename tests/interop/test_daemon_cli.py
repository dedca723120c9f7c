"""feedguardd as a program: -t (config check), --version, --help, and a
graceful stop on SIGTERM.  All need the daemon (proxy_only)."""
import os
import re
import time

import grpc
import pytest

from fgcommon import method, payload
from harness import DEFAULT_CONFIG, FEEDGUARDD, channel, deep_merge, run_feedguardd, tf, to_yaml

pytestmark = pytest.mark.proxy_only


def _check(tmp_path, text):
    path = tmp_path / "feedguard.yaml"
    path.write_text(text)
    res = run_feedguardd(["-t", "-c", str(path)])
    return path, res


def _location(path, res):
    """(line, column, message) of the 'FILE:LINE:COLUMN: message' line."""
    err = res.stderr.decode("utf-8", "replace")
    pat = re.compile(r"^%s:(\d+):(\d+): (.+)$" % re.escape(str(path)))
    for line in err.splitlines():
        m = pat.match(line.strip())
        if m:
            return int(m.group(1)), int(m.group(2)), m.group(3)
    raise AssertionError("no '%s:LINE:COLUMN: message' line in stderr:\n%s" % (path, err))


def test_check_good_config(tmp_path):
    path, res = _check(tmp_path, "listen: 127.0.0.1:0\nupstream:\n  address: 127.0.0.1:50051\n")
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")


def test_check_the_suites_own_config(tmp_path):
    """The config every other test writes (DEFAULT_CONFIG) is valid."""
    cfg = deep_merge(DEFAULT_CONFIG, {"upstream": {"address": "127.0.0.1:50051"}})
    path, res = _check(tmp_path, to_yaml(cfg))
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")


def test_check_unknown_key(tmp_path):
    lines = ["listen: 127.0.0.1:0",
             "workers: 1",
             "upstream:",
             "  address: 127.0.0.1:50051",
             "  bogus_key: 1",
             "log:",
             "  level: info"]
    path, res = _check(tmp_path, "\n".join(lines) + "\n")
    assert res.returncode == 1
    line, col, msg = _location(path, res)
    assert (line, col) == (5, 3), msg
    assert "bogus_key" in msg


@pytest.mark.parametrize("key,value", [("connect_timeout", "1sec"), ("connect_timeout", "10"),
                                       ("idle", "5 parsecs")])
def test_check_bad_unit(tmp_path, key, value):
    lines = ["listen: 127.0.0.1:0",
             "upstream:",
             "  address: 127.0.0.1:50051",
             "  connect_timeout: 1s",
             "timeouts:",
             "  idle: 5m"]
    at = next(i for i, l in enumerate(lines) if l.strip().startswith(key + ":"))
    lines[at] = "  %s: %s" % (key, value)
    path, res = _check(tmp_path, "\n".join(lines) + "\n")
    assert res.returncode == 1
    line, col, msg = _location(path, res)
    assert (line, col) == (at + 1, lines[at].index(value) + 1), msg
    assert "unit" in msg.lower()


def test_check_missing_upstream_address(tmp_path):
    """The error points at the 'upstream' key whose mapping lacks 'address'."""
    lines = ["listen: 127.0.0.1:0",
             "upstream:",
             "  connect_timeout: 1s",
             "log:",
             "  level: info"]
    path, res = _check(tmp_path, "\n".join(lines) + "\n")
    assert res.returncode == 1
    line, col, msg = _location(path, res)
    assert (line, col) == (2, 1), msg
    assert "address" in msg


def test_check_missing_upstream_section(tmp_path):
    path, res = _check(tmp_path, "listen: 127.0.0.1:0\nlog:\n  level: info\n")
    assert res.returncode == 1
    _line, _col, msg = _location(path, res)
    assert "upstream" in msg


@pytest.mark.parametrize("value,want", [
    ("false", "is not off, - or a file path"),          # made a file named "false" before
    ("yes", "is not off, - or a file path"),
    ("nodir/access.log", "cannot open 'nodir/access.log' for appending: No such file or directory"),
    (".", "Is a directory"),
])
def test_check_access_log_that_cannot_be_written(tmp_path, value, want):
    """-t refuses an access log the daemon could not write (it used to say
    "configuration ok", then run without one) and a YAML boolean, at the
    value's position; a file in a directory that exists passes, and is
    not left behind (root's -t must not leave a root-owned log)."""
    lines = ["listen: 127.0.0.1:0", "upstream:", "  address: 127.0.0.1:50051", "log:",
             "  access_log: %s" % value]
    path, res = _check(tmp_path, "\n".join(lines) + "\n")
    assert res.returncode == 1, res.stderr.decode("utf-8", "replace")
    line, col, msg = _location(path, res)
    assert (line, col) == (5, 15) and want in msg, (line, col, msg)
    lines[-1] = "  access_log: ok/access.log"
    (tmp_path / "ok").mkdir()
    path, res = _check(tmp_path, "\n".join(lines) + "\n")
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")
    assert not (tmp_path / "ok" / "access.log").exists()


@pytest.mark.parametrize("listen,admin", [("127.0.0.1:9901", None), ("\"*:19955\"", "127.0.0.1:19955"),
                                          ("127.0.0.1:19956", "0.0.0.0:19956")])
def test_check_admin_on_a_listen_port(tmp_path, listen, admin):
    """The admin endpoint on a port a listen address takes (the default
    admin.listen 127.0.0.1:9901 included) fails -t, instead of the start
    ("Address already in use"); both on port 0 pass."""
    lines = ["listen: %s" % listen, "upstream:", "  address: 127.0.0.1:50051"]
    if admin:
        lines += ["admin:", "  listen: %s" % admin]
    path, res = _check(tmp_path, "\n".join(lines) + "\n")
    assert res.returncode == 1, res.stderr.decode("utf-8", "replace")
    _line, _col, msg = _location(path, res)
    assert "are on one port" in msg, msg
    path, res = _check(tmp_path, "listen: 127.0.0.1:0\nupstream: {address: 127.0.0.1:50051}\n"
                                 "admin: {listen: 127.0.0.1:0}\n")
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")


def test_check_missing_file(tmp_path):
    path = tmp_path / "no-such.yaml"
    res = run_feedguardd(["-t", "-c", str(path)])
    assert res.returncode == 1
    assert str(path) in res.stderr.decode("utf-8", "replace")


def test_version():
    res = run_feedguardd(["--version"])
    assert res.returncode == 0
    first = res.stdout.decode("utf-8", "replace").splitlines()[0]
    assert first.startswith("feedguardd "), first
    # The allocator the daemon runs on is named (daemon/fg_alloc.h).
    assert re.search(r", (jemalloc|glibc|AddressSanitizer)[^,]*\)$", first), first


def test_help():
    res = run_feedguardd(["--help"])
    assert res.returncode == 0
    assert (res.stdout + res.stderr).strip(), "--help printed nothing"


def test_default_config_is_where_this_build_installs_it():
    """The default -c is configure's sysconfdir, as the unit and the manual
    page this build made say: under a plain ./configure the daemon looked
    in /etc/feedguard while make install put the example, and the unit
    looked, in /usr/local/etc/feedguard."""
    res = run_feedguardd(["--help"])
    m = re.search(r"configuration file \(default (\S+)\)", res.stdout.decode() + res.stderr.decode())
    assert m, "--help names no default configuration file"
    build = os.path.dirname(os.path.dirname(os.path.abspath(FEEDGUARDD)))
    unit = os.path.join(build, "feedguardd.service")
    man = os.path.join(build, "feedguardd.8")
    if os.path.exists(unit):
        want = re.search(r"^ConditionPathExists=(\S+)$", open(unit).read(), re.M).group(1)
    elif os.path.exists(man):
        want = re.search(r"\(default (\S+)\)", open(man).read()).group(1)
    else:
        pytest.skip("no feedguardd.service or feedguardd.8 beside this build's daemon")
    assert m.group(1) == want, (m.group(1), want)


def test_sigterm_drains_calls_in_progress(middle, upstream):
    """SIGTERM during a call: the call still completes OK (timeouts.drain 5s),
    then the daemon exits 0."""
    m = middle(upstream.addr)
    with channel(m.addr) as ch:
        call = ch.unary_stream(method("ServerStream"))(b"", timeout=tf(30), metadata=[
            ("x-count", "10"), ("x-size", "100"), ("x-interval-ms", "100")])
        got = [next(call)]
        m.sigterm()
        t0 = time.monotonic()
        got += list(call)
        assert call.code() == grpc.StatusCode.OK
        assert got == [payload(100, seed=i) for i in range(10)]
    rc = m.proc.wait(timeout=5 + tf(10))
    assert rc == 0
    assert time.monotonic() - t0 < 5 + tf(10)
