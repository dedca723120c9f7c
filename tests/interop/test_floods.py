"""HTTP/2 floods: the nghttp2 limits feedguardd turns on (rapid reset,
CVE-2023-44487; CONTINUATION flood, CVE-2024-28182) end the abusive
connection and nothing else.  Needs the daemon (proxy_only)."""
import socket
import urllib.parse

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.exceptions
import pytest

from fgcommon import method
from harness import channel, tf
from rawh2 import RawClient

pytestmark = pytest.mark.proxy_only


def goaway_code(c, timeout):
    """Pump until the peer sends GOAWAY or closes; return the GOAWAY code (or None)."""
    try:
        c.wait(lambda: c.goaway is not None, timeout, "GOAWAY")
    except AssertionError:
        pass
    return c.goaway


def test_rapid_reset_ends_only_that_connection(middle, upstream):
    m = middle(upstream.addr)
    bad = RawClient(m.addr, timeout=tf(5))
    headers = [(":method", "POST"), (":scheme", "http"), (":path", method("Unary")),
               (":authority", m.addr), ("content-type", "application/grpc"), ("te", "trailers"),
               ("x-sleep-ms", "5000")]
    try:
        for _ in range(3000):
            sid = bad.conn.get_next_available_stream_id()
            bad.conn.send_headers(sid, headers)
            bad.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        bad.flush()
    except (OSError, h2.exceptions.ProtocolError):
        pass                                    # the daemon may already have closed it
    code = goaway_code(bad, tf(5))
    # nghttp2's stream-reset rate limit terminates the session with a GOAWAY
    # carrying an error (INTERNAL_ERROR in 1.52's backport)
    assert (code is not None and code != h2.errors.ErrorCodes.NO_ERROR) or bad.closed, code
    bad.close()
    with channel(m.addr) as ch:
        assert ch.unary_unary(method("Unary"))(b"fine", timeout=tf(10)) == b"fine"


def test_continuation_flood_ends_only_that_connection(middle, upstream):
    m = middle(upstream.addr)
    host, port = m.addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=tf(5))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    # HEADERS without END_HEADERS on stream 1, then endless CONTINUATION frames
    # (RFC 9113 §6.10), each carrying one literal header: h2 cannot produce
    # this, so the frames are written by hand.
    block = b"\x40\x01a\x01b"                    # literal with incremental indexing: a: b
    s.sendall(len(block).to_bytes(3, "big") + b"\x01\x00" + (1).to_bytes(4, "big") + block)
    closed = False
    try:
        for _ in range(10000):
            s.sendall(len(block).to_bytes(3, "big") + b"\x09\x00" + (1).to_bytes(4, "big") + block)
    except OSError:
        closed = True
    s.settimeout(tf(5))
    try:
        while True:
            data = s.recv(65536)
            if not data:
                closed = True
                break
    except (socket.timeout, OSError):
        pass
    s.close()
    assert closed, "the daemon kept reading an endless CONTINUATION flood"
    with channel(m.addr) as ch:
        assert ch.unary_unary(method("Unary"))(b"fine", timeout=tf(10)) == b"fine"


def test_metadata_over_the_upstreams_limit_fails_only_that_call(middle, upstream):
    """grpcio's server advertises SETTINGS_MAX_HEADER_LIST_SIZE 8192 and
    drops the whole connection on a header block over it, with every call
    on it.  A call whose metadata is under feedguardd's own limit (16 KiB)
    but over the upstream's fails alone, with RESOURCE_EXHAUSTED and a
    message that says why; another client's call in flight on the same
    upstream connection completes, and later calls go on."""
    m = middle(upstream.addr, {"workers": 1, "limits": {"max_header_list_size": "16KiB"}})
    with channel(m.addr) as victim_ch, channel(m.addr) as big_ch:
        victim = victim_ch.unary_unary(method("Unary")).future(
            b"victim", metadata=[("x-sleep-ms", str(int(tf(1.5) * 1000)))], timeout=tf(10))
        with pytest.raises(grpc.RpcError) as e:
            big_ch.unary_unary(method("Unary"))(b"big", metadata=[("x-big", "a" * 9000)], timeout=tf(10))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
        assert "SETTINGS_MAX_HEADER_LIST_SIZE" in e.value.details(), e.value.details()
        assert victim.result() == b"victim", "the other client's call in flight must complete"
        assert big_ch.unary_unary(method("Unary"))(b"after", timeout=tf(10)) == b"after"


def test_request_trailers_share_the_header_limit(middle, upstream):
    """A request's headers and trailers together are held to
    limits.max_header_list_size: 7 KB of headers and 7 KB of trailers
    under a 12 KiB limit fail the call with RESOURCE_EXHAUSTED (each alone
    would fit, and fits the upstream's 8 KiB), and the connection goes on."""
    m = middle(upstream.addr, {"limits": {"max_header_list_size": "12KiB"}})
    c = RawClient(m.addr, timeout=tf(10))
    try:
        # the ranker takes its time, so its answer cannot come before the trailers
        sid = c.request(method("Unary"), metadata=[("x-pad", "h" * 7000), ("x-sleep-ms", "2000")],
                        messages=[b"x"], end_stream=False)
        c.conn.send_headers(sid, [("x-trailer-pad", "t" * 7000)], end_stream=True)
        c.flush()
        st = c.streams[sid]
        c.wait(lambda: st.finished, tf(10), "the call's end")
        h = st.status_headers()
        assert h.get("grpc-status") == "8", h
        assert "headers and trailers together" in urllib.parse.unquote(h.get("grpc-message", "")), h
        sid = c.request(method("Unary"), messages=[b"fine"])
        c.wait(lambda: c.streams[sid].finished, tf(10), "a later call on the same connection")
        assert c.streams[sid].status_headers().get("grpc-status") == "0"
    finally:
        c.close()


@pytest.mark.parametrize("where", ["headers", "trailers"])
def test_response_metadata_over_the_clients_limit_fails_only_that_call(middle, where):
    """A grpcio client advertises SETTINGS_MAX_HEADER_LIST_SIZE 8192 and
    drops its connection on a bigger header block, with every call it has
    on it (a gateway's many users).  A ranker's response headers (or
    trailers) over it fail that call alone with INTERNAL and a message
    that says why (the client used to get grpc's own error for it); the
    client's other calls on the same connection complete."""
    from feedranker import FeedRanker
    ranker = FeedRanker()
    try:
        m = middle(ranker.addr, {"workers": 1})
        big = (("x-big", "a" * 9000),)
        ranker.script("big", [b"page"], **({"initial": big} if where == "headers" else {"trailing": big}))
        ranker.script("fine", [b"page"])
        with channel(m.addr) as ch:
            call = ch.unary_unary(method("Unary"))
            fine = call.future(b"", metadata=[("x-call-id", "fine")], timeout=tf(10))
            with pytest.raises(grpc.RpcError) as e:
                call(b"", metadata=[("x-call-id", "big")], timeout=tf(10))
            assert e.value.code() == grpc.StatusCode.INTERNAL, e.value
            assert "SETTINGS_MAX_HEADER_LIST_SIZE" in e.value.details(), e.value.details()
            assert fine.result() == b"page"
            assert call(b"", metadata=[("x-call-id", "fine")], timeout=tf(10)) == b"page"
    finally:
        ranker.stop()
