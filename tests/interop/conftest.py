"""Fixtures of the feedguard interop suite.

Run with tests/interop/run.sh (always /usr/bin/python3: it has python3-grpcio,
python3-h2 and pytest from Debian).

Environment:
  FEEDGUARDD          the daemon binary (default $FG_SRCDIR/daemon/feedguardd)
  FEEDGUARDCTL        the operators' tool (default: feedguardctl beside FEEDGUARDD)
  FEEDGUARD_REPLAY    the capture reader (default: feedguard-replay beside FEEDGUARDD)
  FG_SRCDIR           the repository root (default: two levels above this file)
  FG_DAEMON_WRAPPER   a command put before the daemon's (shlex-split), e.g.
                      "valgrind --leak-check=full --error-exitcode=99
                       --errors-for-leak-kinds=definite"
  FG_TIME_FACTOR      float, default 1.  Multiplies every timeout and deadline
                      that depends on the daemon's speed (startup, shutdown,
                      "within N s" assertions).  CI uses 3 under sanitizers and
                      10 under valgrind.
  FG_INTEROP_DIRECT=1 direct mode: no daemon; the `target` fixture is the test
                      upstream itself and tests marked proxy_only are skipped.
                      Every other test must pass in this mode: that is how the
                      tests themselves are validated.
  FG_TEST_TIMEOUT     per-test watchdog in seconds (default 60), times
                      FG_TIME_FACTOR.

The one place that starts the thing in the middle is harness.start_middle(),
used through the `middle` fixture; to run the suite against another proxy,
change only that function.
"""
import os
import signal

import pytest

import harness
from harness import DIRECT, TIME_FACTOR, Upstream, start_middle

TEST_TIMEOUT = float(os.environ.get("FG_TEST_TIMEOUT", "60")) * TIME_FACTOR


def pytest_report_header(config):
    mode = "DIRECT (no daemon)" if DIRECT else "feedguardd %s" % harness.FEEDGUARDD
    extra = (" wrapper=%r" % " ".join(harness.WRAPPER)) if harness.WRAPPER else ""
    return "feedguard interop: %s, FG_TIME_FACTOR=%g%s" % (mode, TIME_FACTOR, extra)


def pytest_collection_modifyitems(config, items):
    if not DIRECT:
        return
    skip = pytest.mark.skip(reason="proxy_only: FG_INTEROP_DIRECT=1 (no daemon)")
    for item in items:
        if "proxy_only" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Watchdog: a hung test fails instead of hanging the suite."""
    def on_alarm(signum, frame):
        raise TimeoutError("test still running after %.0fs (FG_TEST_TIMEOUT x FG_TIME_FACTOR)"
                           % TEST_TIMEOUT)
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def upstream(tmp_path_factory):
    """The shared test upstream (upstream.py), for tests that do not kill it.
    Tests tell their calls apart by the x-call-id metadata."""
    up = Upstream(tmp_path_factory.mktemp("upstream")).start()
    yield up
    up.stop()


@pytest.fixture
def upstream_factory(tmp_path):
    """Private upstreams a test may kill and restart; all stopped at teardown."""
    started = []

    def make(name="upstream", port=0, max_streams=0):
        up = Upstream(tmp_path, name).start(port, max_streams)
        started.append(up)
        return up
    yield make
    for up in started:
        up.stop()


@pytest.fixture
def middle(tmp_path):
    """Factory: middle(upstream_addr, config_overrides=None) starts the thing in
    the middle (feedguardd, or nothing in direct mode) and returns an object
    with .addr to dial, .pid and .direct.  At teardown each one gets SIGTERM
    and must exit 0 within 30 s x FG_TIME_FACTOR with no sanitizer report."""
    started = []

    def make(upstream_addr, config=None, name=None):
        m = start_middle(tmp_path, upstream_addr, config,
                         name or "feedguardd-%d" % (len(started) + 1))
        started.append(m)
        return m
    yield make
    problems = []
    for m in started:
        problems += m.stop()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def target(middle, upstream):
    """Address a client dials to reach the shared upstream through the middle."""
    if not upstream.alive():
        pytest.fail("the shared test upstream is dead; its stderr:\n%s"
                    % harness.tail(upstream.stderr_path), pytrace=False)
    return middle(upstream.addr).addr


@pytest.fixture
def events(upstream):
    return upstream.events
