"""Failures on either side: an upstream that is down, dies mid-call or comes
back; a client that breaks HTTP/2.  Each must fail only what it touches."""
import socket
import struct
import time

import grpc
import pytest

from fgcommon import method, payload
from harness import channel, closed_port, new_call_id, poll_until, tf
from rawh2 import RawClient


def _unary_ok(target, body=b"ping"):
    """One unary call on a fresh channel; True if it returned <body>."""
    with channel(target) as ch:
        try:
            return ch.unary_unary(method("Unary"))(body, timeout=tf(2)) == body
        except grpc.RpcError:
            return False


def test_upstream_down_then_back(middle, upstream_factory):
    """upstream.address is a closed port: calls end with UNAVAILABLE, a message
    that names the upstream address, within connect_timeout (1s) + slack.
    Once an upstream listens there, calls succeed again (reconnect)."""
    port = closed_port()
    addr = "127.0.0.1:%d" % port
    m = middle(addr)
    with channel(m.addr) as ch:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary(method("Unary"))(b"x", timeout=tf(10))
        elapsed = time.monotonic() - t0
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value.details()
    assert addr in ei.value.details()
    assert elapsed < 1.0 + tf(1), "UNAVAILABLE took %.2fs" % elapsed

    upstream_factory("revived", port=port)
    poll_until(lambda: _unary_ok(m.addr), tf(10), "calls to succeed once the upstream is up",
               interval=0.1)


def test_upstream_killed_mid_call(middle, upstream_factory):
    """kill -9 of the upstream during a server stream: the client's call ends
    promptly with a non-OK status; after a restart on the same port, new calls
    work."""
    up = upstream_factory("victim")
    m = middle(up.addr)
    with channel(m.addr) as ch:
        call = ch.unary_stream(method("ServerStream"))(b"", timeout=tf(30), metadata=[
            ("x-count", "1000"), ("x-size", "100"), ("x-interval-ms", "20")])
        got = [next(call), next(call)]
        up.kill()
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as ei:
            for msg in call:
                got.append(msg)
        elapsed = time.monotonic() - t0
    assert ei.value.code() not in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED), \
        ei.value.code()
    assert elapsed < tf(5)
    assert len(got) < 1000
    assert got == [payload(100, seed=i) for i in range(len(got))]

    up.start(port=up.port)
    poll_until(lambda: _unary_ok(m.addr), tf(10), "calls to succeed after the restart",
               interval=0.1)


def _frame(ftype, flags, stream_id, body):
    return struct.pack(">I", len(body))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream_id) + body


BROKEN = {
    # bytes sent after a valid preface + SETTINGS
    "garbage": b"this is not an HTTP/2 frame at all\r\n" * 4,
    "settings_bad_length": _frame(0x4, 0x0, 0, b"\x00" * 5),          # FRAME_SIZE_ERROR
    "window_update_0": _frame(0x8, 0x0, 0, struct.pack(">I", 0)),      # PROTOCOL_ERROR
    "continuation_alone": _frame(0x9, 0x4, 1, b"\x82"),                # PROTOCOL_ERROR
    "bad_hpack": _frame(0x1, 0x5, 1, b"\xff\xff\xff\xff\xff\xff\xff\xff"),
    # no preface at all
    "http1": None,
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_client_only_ends_its_own_connection(middle, upstream, events, kind):
    m = middle(upstream.addr, {"workers": 2})
    cid = new_call_id("bystander")
    with channel(m.addr) as ch:
        call = ch.unary_stream(method("ServerStream"))(b"", timeout=tf(30), metadata=[
            ("x-call-id", cid), ("x-count", "10"), ("x-size", "1000"),
            ("x-interval-ms", "30")])
        got = [next(call)]

        if BROKEN[kind] is None:
            bad = socket.create_connection(tuple_addr(m.addr), timeout=tf(10))
            try:
                bad.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _wait_eof(bad, tf(5)), "the non-HTTP/2 connection was not closed"
            finally:
                bad.close()
        else:
            bad = RawClient(m.addr, timeout=tf(10))
            try:
                bad.send_raw(BROKEN[kind])
                assert bad.wait_closed(tf(5)), "the broken connection was not closed"
            finally:
                bad.close()

        got += list(call)
        assert call.code() == grpc.StatusCode.OK
        assert got == [payload(1000, seed=i) for i in range(10)]
        assert ch.unary_unary(method("Unary"))(b"after", timeout=tf(10)) == b"after"


def tuple_addr(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def _wait_eof(sock, timeout):
    limit = time.monotonic() + timeout
    sock.settimeout(0.1)
    while time.monotonic() < limit:
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False
