"""Streams move message by message: no store-and-forward, no idle cut, and
end-to-end flow control (a client that does not read holds the upstream back,
and the daemon does not buffer the difference)."""
import queue
import time

import grpc
import pytest

from fgcommon import KiB, method, payload
from harness import WRAPPER, channel, new_call_id, rss_kib, tf
from rawh2 import RawClient


def test_server_stream_messages_forwarded_as_they_come(target, events, tmp_path):
    """The upstream sends message 1, then waits until the test creates a file
    before it sends message 2.  The client must get message 1 while the
    upstream waits (a proxy that held it back would make the upstream give up
    with FAILED_PRECONDITION)."""
    cid = new_call_id("asap")
    flag = tmp_path / "send-message-2"
    with channel(target) as ch:
        call = ch.unary_stream(method("ServerStream"))(b"", timeout=tf(30), metadata=[
            ("x-call-id", cid), ("x-count", "2"), ("x-size", "100"),
            ("x-wait-file", str(flag)), ("x-wait-timeout-ms", str(int(tf(10) * 1000)))])
        first = next(call)
        assert first == payload(100, seed=0)
        events.wait(cid, "sent", tf(5))   # logged just after the write returned
        assert not events.of(cid, "signal"), "message 2 was sent before the signal"
        assert [e["n"] for e in events.of(cid, "sent")] == [1]
        flag.touch()
        second = next(call)
        assert second == payload(100, seed=1)
        assert events.of(cid, "signal"), "message 2 arrived before the upstream sent it"
        assert list(call) == []
        assert call.code() == grpc.StatusCode.OK


def test_response_headers_forwarded_before_first_message(target, events):
    """The upstream sends its headers, then sleeps: the client sees them now."""
    cid = new_call_id("hdrs")
    with channel(target) as ch:
        call = ch.unary_stream(method("ServerStream"))(b"", timeout=tf(30), metadata=[
            ("x-call-id", cid), ("x-sleep-ms", "60000"), ("x-tag", "early")])
        t0 = time.monotonic()
        initial = call.initial_metadata()   # blocks until headers (or the end)
        waited = time.monotonic() - t0
        assert ("echo-x-tag", "early") in [(m[0], m[1]) for m in initial]
        assert waited < tf(5)
        call.cancel()
    assert events.wait(cid, "done", tf(5))["cancelled"] is True


def test_idle_bidi_stream_not_cut(middle, upstream):
    """timeouts.idle 1s closes connections without streams; an open bidi
    stream that carries nothing for 3 s is not such a connection."""
    target = middle(upstream.addr, {"timeouts": {"idle": "1s"}}).addr
    q = queue.Queue()

    def requests():
        while True:
            m = q.get()
            if m is None:
                return
            yield m

    with channel(target) as ch:
        call = ch.stream_stream(method("Bidi"))(requests(), timeout=tf(30) + 3)
        q.put(b"before the pause")
        assert next(call) == b"before the pause"
        time.sleep(3)   # the point of the test: 3 x timeouts.idle with nothing sent
        q.put(b"after the pause")
        assert next(call) == b"after the pause"
        q.put(None)
        assert list(call) == []
        assert call.code() == grpc.StatusCode.OK


@pytest.mark.proxy_only
def test_idle_connection_without_streams_is_closed(middle, upstream):
    """timeouts.idle 1s: a client connection that has no stream for 1 s gets
    a GOAWAY and is closed."""
    target = middle(upstream.addr, {"timeouts": {"idle": "1s"}}).addr
    c = RawClient(target, timeout=tf(10))
    try:
        sid = c.request(method("Unary"), messages=[b"x"])
        c.wait(lambda: c.streams[sid].finished, tf(10), "the unary response")
        assert c.streams[sid].status_headers().get("grpc-status") == "0"
        t0 = time.monotonic()
        while not c.closed and time.monotonic() - t0 < 1 + tf(5):
            c.pump(0.1)
        assert c.closed, "connection still open %.1fs after its last stream" % (
            time.monotonic() - t0)
        assert c.goaway is not None, "closed without GOAWAY"
    finally:
        c.close()


def test_flow_control_client_never_reads(middle, upstream, events):
    """A raw client asks for 64 MiB (1024 messages of 64 KiB) and never sends
    WINDOW_UPDATE.  The upstream must be held back (it cannot send more than
    a few windows' worth), the daemon's memory must stay bounded, and once the
    client opens its window the stream goes on."""
    m = middle(upstream.addr)
    total = 1024   # x 64 KiB = 64 MiB
    cid = new_call_id("flow")
    rss_before = None if m.pid is None else rss_kib(m.pid)
    c = RawClient(m.addr, timeout=tf(10), ack_data=False)
    try:
        sid = c.request(method("ServerStream"), messages=[b""], metadata=[
            ("x-call-id", cid), ("x-count", str(total)), ("x-size", str(64 * KiB))])
        st = c.streams[sid]
        events.wait(cid, "start", tf(5))
        # Wait until the upstream stops making progress (blocked by flow
        # control) for 1 s x FG_TIME_FACTOR, reading the socket meanwhile.
        last, since = -1, time.monotonic()
        limit = time.monotonic() + tf(20)
        while True:
            c.pump(0.05)
            sent = len(events.of(cid, "sent"))
            if sent != last:
                last, since = sent, time.monotonic()
            elif time.monotonic() - since >= tf(1):
                break
            assert sent < total, "the upstream sent all %d messages: nothing held it" % total
            assert time.monotonic() < limit, "the upstream never stopped (sent %d)" % sent
        assert last < total // 4, "the upstream sent %d of %d messages to a client that " \
                                  "reads nothing" % (last, total)
        assert c.received_bytes <= 65535, "more DATA than the client's window"
        assert not st.finished
        if m.pid is not None:
            rss = rss_kib(m.pid)
            grown = rss - rss_before
            assert grown < 32 * 1024, "feedguardd grew by %d KiB holding a blocked stream" % grown
            if not WRAPPER:
                assert rss < 64 * 1024, "feedguardd RSS %d KiB >= 64 MiB" % rss
        # Open the window: the stream must move again.
        c.open_windows()
        want = last + 64
        c.wait(lambda: len(st.messages) >= want, tf(20),
               "%d messages after opening the window" % want)
        assert st.messages[0] == payload(64 * KiB, seed=0)
        assert st.messages[want - 1] == payload(64 * KiB, seed=want - 1)
        c.cancel(sid)
        assert events.wait(cid, "done", tf(5))["cancelled"] is True
    finally:
        c.close()
