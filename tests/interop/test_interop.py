"""The public gRPC interop test cases (grpc/grpc doc/interop-test-descriptions.md),
adapted to fgtest.Echo, plus the smoke test CI runs under valgrind."""
import json
import threading

import grpc
import pytest

from fgcommon import method, payload, sha256
from harness import channel, md_values, new_call_id, tf


@pytest.mark.smoke
def test_smoke_unary(target, events):
    """One unary call end to end: payload, headers, trailers, status, and the
    upstream saw the request."""
    cid = new_call_id("smoke")
    with channel(target) as ch:
        resp, call = ch.unary_unary(method("Unary")).with_call(
            b"hello feedguard", metadata=[("x-call-id", cid), ("x-smoke", "1")], timeout=tf(10))
    assert resp == b"hello feedguard"
    assert call.code() == grpc.StatusCode.OK
    assert md_values(call.initial_metadata(), "echo-x-smoke") == ["1"]
    assert md_values(call.trailing_metadata(), "echo-x-smoke") == ["1"]
    recv = events.wait(cid, "recv", tf(5))
    assert recv["sha256"] == sha256(b"hello feedguard")


def test_empty_unary(target):
    with channel(target) as ch:
        resp, call = ch.unary_unary(method("Unary")).with_call(b"", timeout=tf(10))
    assert resp == b""
    assert call.code() == grpc.StatusCode.OK


def test_large_unary(target, events):
    """271828 bytes up, 314159 bytes down."""
    cid = new_call_id("large")
    req = payload(271828, seed=3)
    with channel(target) as ch:
        resp = ch.unary_unary(method("Unary"))(
            req, metadata=[("x-call-id", cid), ("x-response-size", "314159")], timeout=tf(10))
    assert resp == payload(314159)
    recv = events.wait(cid, "recv", tf(5))
    assert (recv["bytes"], recv["sha256"]) == (271828, sha256(req))


def test_client_streaming(target):
    sizes = [27182, 8, 1828, 45904]
    reqs = [payload(s, seed=i) for i, s in enumerate(sizes)]
    with channel(target) as ch:
        resp = ch.stream_unary(method("ClientStream"))(iter(reqs), timeout=tf(10))
    got = json.loads(resp)
    assert got["bytes"] == 74922
    assert got["sizes"] == sizes
    assert got["sha256"] == sha256(b"".join(reqs))


def test_server_streaming(target):
    sizes = [31415, 9, 2653, 58979]
    with channel(target) as ch:
        call = ch.unary_stream(method("ServerStream"))(
            b"", metadata=[("x-sizes", ",".join(map(str, sizes)))], timeout=tf(10))
        msgs = list(call)
        assert call.code() == grpc.StatusCode.OK
    assert [len(m) for m in msgs] == sizes
    assert msgs == [payload(s, seed=i) for i, s in enumerate(sizes)]


def test_ping_pong(target):
    """Bidi: each request is answered before the next one is sent."""
    req_sizes = [27182, 8, 1828, 45904]
    resp_sizes = [31415, 9, 2653, 58979]
    send = threading.Semaphore(0)
    sent = []

    def requests():
        for i, s in enumerate(req_sizes):
            if i:
                assert send.acquire(timeout=tf(10)), "no response to request %d" % (i - 1)
            sent.append(i)
            yield payload(s, seed=100 + i)

    with channel(target) as ch:
        call = ch.stream_stream(method("Bidi"))(
            requests(), metadata=[("x-sizes", ",".join(map(str, resp_sizes)))], timeout=tf(10))
        got = []
        for msg in call:
            got.append(msg)
            # the answer to request i arrived while request i+1 was not yet sent
            assert len(sent) == len(got)
            send.release()
        assert call.code() == grpc.StatusCode.OK
    assert got == [payload(s, seed=i) for i, s in enumerate(resp_sizes)]


def test_empty_stream(target):
    """Bidi with no message either way ends OK."""
    with channel(target) as ch:
        call = ch.stream_stream(method("Bidi"))(iter(()), timeout=tf(10))
        assert list(call) == []
        assert call.code() == grpc.StatusCode.OK


def test_custom_metadata_unary(target):
    with channel(target) as ch:
        resp, call = ch.unary_unary(method("Unary")).with_call(
            payload(314159), timeout=tf(10), metadata=[
                ("x-grpc-test-echo-initial", "test_initial_metadata_value"),
                ("x-grpc-test-echo-trailing-bin", b"\x0a\x0b\x0a\x0b\x0a\x0b")])
    assert resp == payload(314159)
    assert md_values(call.initial_metadata(), "x-grpc-test-echo-initial") == \
        ["test_initial_metadata_value"]
    assert md_values(call.trailing_metadata(), "x-grpc-test-echo-trailing-bin") == \
        [b"\x0a\x0b\x0a\x0b\x0a\x0b"]


def test_custom_metadata_bidi(target):
    with channel(target) as ch:
        call = ch.stream_stream(method("Bidi"))(
            iter([payload(271828)]), timeout=tf(10), metadata=[
                ("x-grpc-test-echo-initial", "test_initial_metadata_value"),
                ("x-grpc-test-echo-trailing-bin", b"\x0a\x0b\x0a\x0b\x0a\x0b")])
        assert list(call) == [payload(271828)]
        assert md_values(call.initial_metadata(), "x-grpc-test-echo-initial") == \
            ["test_initial_metadata_value"]
        assert md_values(call.trailing_metadata(), "x-grpc-test-echo-trailing-bin") == \
            [b"\x0a\x0b\x0a\x0b\x0a\x0b"]


def test_status_code_and_message(target):
    md = [("x-status", "2"), ("x-message", "test status message")]
    with channel(target) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary(method("Unary"))(b"", metadata=md, timeout=tf(10))
        assert ei.value.code() == grpc.StatusCode.UNKNOWN
        assert ei.value.details() == "test status message"

        call = ch.stream_stream(method("Bidi"))(iter([b"x"]), metadata=md, timeout=tf(10))
        with pytest.raises(grpc.RpcError) as ei:
            list(call)
        assert ei.value.code() == grpc.StatusCode.UNKNOWN
        assert ei.value.details() == "test status message"


SPECIAL = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"


def test_special_status_message(target):
    md = [("x-status", "2"), ("x-message-bin", SPECIAL.encode("utf-8"))]
    with channel(target) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary(method("Unary"))(b"", metadata=md, timeout=tf(10))
    assert ei.value.code() == grpc.StatusCode.UNKNOWN
    assert ei.value.details() == SPECIAL


@pytest.mark.parametrize("path", ["/fgtest.Echo/NoSuchMethod", "/fgtest.NoSuchService/Unary"])
def test_unimplemented(target, path):
    with channel(target) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary(path)(b"", timeout=tf(10))
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_cancel_after_begin(target, events):
    """Client streaming call cancelled before any message: the client sees
    CANCELLED and the upstream handler sees the cancellation."""
    cid = new_call_id("cab")
    never = threading.Event()

    def requests():
        never.wait(tf(30))
        return
        yield  # pragma: no cover

    with channel(target) as ch:
        fut = ch.stream_unary(method("ClientStream")).future(
            requests(), metadata=[("x-call-id", cid)], timeout=tf(30))
        events.wait(cid, "start", tf(5))
        fut.cancel()
        with pytest.raises(grpc.FutureCancelledError):
            fut.result()
        assert fut.code() == grpc.StatusCode.CANCELLED
        never.set()
    done = events.wait(cid, "done", tf(5))
    assert done["cancelled"] is True


def test_cancel_after_first_response(target, events):
    cid = new_call_id("cafr")
    more = threading.Event()

    def requests():
        yield payload(27182)
        more.wait(tf(30))

    with channel(target) as ch:
        call = ch.stream_stream(method("Bidi"))(
            requests(), metadata=[("x-call-id", cid), ("x-sizes", "31415")], timeout=tf(30))
        assert next(call) == payload(31415)
        call.cancel()
        with pytest.raises(grpc.RpcError) as ei:
            next(call)
        assert ei.value.code() == grpc.StatusCode.CANCELLED
        more.set()
    done = events.wait(cid, "done", tf(5))
    assert done["cancelled"] is True


def test_timeout_on_sleeping_server(target, events):
    """A deadline shorter than the upstream's sleep: DEADLINE_EXCEEDED for the
    client, a cancelled call for the upstream."""
    cid = new_call_id("tosl")
    with channel(target) as ch:
        call = ch.stream_stream(method("Bidi"))(
            iter([payload(27182)]), timeout=0.5,
            metadata=[("x-call-id", cid), ("x-sleep-ms", "20000")])
        with pytest.raises(grpc.RpcError) as ei:
            list(call)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    done = events.wait(cid, "done", tf(5))
    assert done["cancelled"] is True
