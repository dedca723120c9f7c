"""HTTP/2 floods: the nghttp2 limits feedguardd turns on (rapid reset,
CVE-2023-44487; CONTINUATION flood, CVE-2024-28182) end the abusive
connection and nothing else.  Needs the daemon (proxy_only)."""
import socket

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
