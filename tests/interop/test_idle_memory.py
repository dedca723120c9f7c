"""What an idle client connection costs feedguardd in memory.

The proxy core's target (README "Performance"): 10,000 idle client
connections in under 100 MiB.  An idle connection's nghttp2 session holds a
2.9 KiB session block, a 4 KiB stream table and a 16 KiB frame buffer, of
which an idle connection touches the session, the table (nghttp2 reads it)
and the first bytes of the buffer; daemon/fg_mempool.h packs those into two
pages.  On a kernel that backs a page that is only read with a page of its
own (Linux 6.18 does; older ones map the shared zero page) they used to
cost three: 13.3 KiB a connection, 136 MiB for 10,000.

The clients are contrib/bench/idle-conns.py (the benchmark's): each sends
the preface and an empty SETTINGS, acknowledges the server's, then nothing.
"""
import resource
import subprocess

import pytest

from harness import SRCDIR, rss_factor, settled_rss, tf

pytestmark = pytest.mark.proxy_only

CONNS = 2000
PER_CONN_BOUND = 10 * 1024          # bytes of RSS an idle connection may add
OPENER = SRCDIR / "contrib" / "bench" / "idle-conns.py"


def raise_fd_limit(need):
    """Let this process and the opener it starts hold <need> sockets; skip
    when the hard limit does not allow it (feedguardd raises its own)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, need))
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def test_idle_connections_cost_under_10_kib_each(middle, upstream):
    """2000 idle client connections add less than 10 KiB of RSS each to a
    one-worker feedguardd (9.2 to 9.4 KiB measured; with a
    mapping per block on Linux 6.18: 13.3 to 13.5)."""
    d = middle(upstream.addr, {"workers": 1})
    if rss_factor(d.pid) > 1:
        pytest.skip("AddressSanitizer's shadow memory and redzones")
    raise_fd_limit(CONNS + 256)
    host, port = d.addr.rsplit(":", 1)
    before = settled_rss(d.pid, within_kib=64, gap=0.3, timeout=10)
    opener = subprocess.Popen(["/usr/bin/python3", str(OPENER), host, port, str(CONNS)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = opener.stdout.readline()
        assert line.startswith("ready opened=%d failed=0" % CONNS), \
            "the opener could not set up %d connections: %r" % (CONNS, line)
        after = settled_rss(d.pid, within_kib=64, gap=0.3, timeout=10)
        per_conn = (after - before) * 1024 / CONNS
        print("rss %.1f -> %.1f MiB with %d idle connections: %.0f bytes each"
              % (before / 1024, after / 1024, CONNS, per_conn))
        assert per_conn < PER_CONN_BOUND, \
            "%d idle connections took feedguardd from %.1f to %.1f MiB: %.0f bytes each, " \
            "over the bound of %d" \
            % (CONNS, before / 1024, after / 1024, per_conn, PER_CONN_BOUND)
        assert opener.poll() is None, "the opener ended early"
    finally:
        opener.stdin.close()
        try:
            opener.wait(tf(30))
        except subprocess.TimeoutExpired:
            opener.kill()
            opener.wait()
