"""The upstream pool: more connections when the upstream's stream limit is
reached, a bounded queue past max_connections, and keepalive that drops a
connection whose peer went silent.  All need the daemon (proxy_only)."""
import asyncio
import re
import socket
import threading
import time
import urllib.request

import grpc
import pytest

from fgcommon import method
from harness import aio_channel, channel, poll_until, tf

pytestmark = pytest.mark.proxy_only

ADMIN_RE = re.compile(r"event=admin_listening addr=(127\.0\.0\.1:\d+)")


def gauge(m, name):
    addr = ADMIN_RE.search(m.stderr()).group(1)
    text = urllib.request.urlopen("http://%s/metrics" % addr, timeout=tf(5)).read().decode()
    found = re.search(r"^%s (\d+)$" % name, text, re.M)
    assert found, "no %s in /metrics" % name
    return int(found.group(1))


async def _concurrent(target, n, md):
    async with aio_channel(target) as ch:
        unary = ch.unary_unary(method("Unary"))
        calls = [unary(b"c%d" % i, timeout=tf(20), metadata=md) for i in range(n)]
        return await asyncio.gather(*calls, return_exceptions=True)


def test_stream_limit_opens_more_upstream_connections(middle, upstream_factory):
    """The upstream takes 4 streams per connection; 12 calls that must all be
    in its handler at once (a barrier) succeed only if the proxy opened at
    least 3 upstream connections."""
    up = upstream_factory("limited", max_streams=4)
    m = middle(up.addr, {"admin": {"listen": "127.0.0.1:0"}, "upstream": {"max_connections": 4}})
    res = asyncio.run(_concurrent(m.addr, 12, [("x-barrier", "pool12:12"),
                                               ("x-barrier-timeout-ms", str(int(tf(10) * 1000)))]))
    assert res == [b"c%d" % i for i in range(12)], res
    assert gauge(m, "feedguard_upstream_connections") >= 3


def test_queue_is_bounded_past_max_connections(middle, upstream_factory):
    """One upstream connection of 2 streams and a queue of 2: two calls run,
    two wait and then run, the fifth is refused at once with UNAVAILABLE and a
    message naming the bound."""
    up = upstream_factory("tiny", max_streams=2)
    m = middle(up.addr, {"upstream": {"max_connections": 1, "max_pending": 2}})
    with channel(m.addr) as ch:   # the one upstream connection is up and has its SETTINGS
        assert ch.unary_unary(method("Unary"))(b"warm", timeout=tf(10)) == b"warm"

    async def scenario():
        async with aio_channel(m.addr) as ch:
            unary = ch.unary_unary(method("Unary"))
            slow = [unary(b"s%d" % i, timeout=tf(20), metadata=[("x-sleep-ms", "1500")])
                    for i in range(4)]
            tasks = [asyncio.ensure_future(c) for c in slow]
            await asyncio.sleep(0.5)   # let the four reach the proxy
            t0 = time.monotonic()
            try:
                await unary(b"x", timeout=tf(20))
                fifth = None
            except grpc.aio.AioRpcError as e:
                fifth = (e.code(), e.details(), time.monotonic() - t0)
            return await asyncio.gather(*tasks), fifth
    done, fifth = asyncio.run(scenario())
    assert done == [b"s%d" % i for i in range(4)]
    assert fifth is not None, "the fifth call was not refused"
    code, details, elapsed = fifth
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "max_pending" in details and up.addr in details, details
    assert elapsed < tf(1), "refusal took %.2fs" % elapsed


class SilentPeer:
    """Accepts TCP connections; with <settings>, sends an empty HTTP/2
    SETTINGS frame first, then never sends or reads another byte: an
    upstream host that hung without closing its connections."""

    SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])   # RFC 9113 §6.5, no parameters

    def __init__(self, settings):
        self.settings = settings
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        self.conns = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    def _accept(self):
        self.lsock.settimeout(0.05)
        while not self.stop.is_set():
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)
            if self.settings:
                c.sendall(self.SETTINGS)

    def close(self):
        self.stop.set()
        self.t.join(5)
        for c in self.conns:
            c.close()
        self.lsock.close()


def test_upstream_that_never_speaks_http2_fails_fast(middle):
    """A peer that accepts TCP but sends no SETTINGS is a failed connect:
    UNAVAILABLE within upstream.connect_timeout, not at the client's deadline."""
    peer = SilentPeer(settings=False)
    try:
        m = middle(peer.addr, {"upstream": {"connect_timeout": "500ms"}})
        with channel(m.addr) as ch:
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary(method("Unary"))(b"x", timeout=60)
            elapsed = time.monotonic() - t0
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        assert peer.addr in e.value.details() and "SETTINGS" in e.value.details(), e.value.details()
        assert elapsed < 0.5 + tf(1.5), "ended after %.1fs" % elapsed
    finally:
        peer.close()


def test_keepalive_drops_a_silent_upstream(middle):
    """keepalive_time 10s (the minimum), keepalive_timeout 1s: a call stuck on
    a connection whose peer stopped answering ends with UNAVAILABLE shortly
    after the unanswered PING, not at the client's (long) deadline."""
    peer = SilentPeer(settings=True)
    try:
        m = middle(peer.addr, {"upstream": {"keepalive_time": "10s", "keepalive_timeout": "1s"}})
        with channel(m.addr) as ch:
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary(method("Unary"))(b"x", timeout=60)
            elapsed = time.monotonic() - t0
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        assert peer.addr in e.value.details() and "PING" in e.value.details(), e.value.details()
        assert 10 <= elapsed < 11 + tf(3), "ended after %.1fs" % elapsed
    finally:
        peer.close()
