"""Message sizes (8 MiB and more, empty) and concurrency."""
import asyncio
import json

import grpc
import pytest

from fgcommon import MiB, method, payload, sha256
from harness import aio_channel, channel, new_call_id, tf


@pytest.mark.parametrize("size", [8 * MiB, 20 * MiB + 3], ids=["8MiB", "20MiB"])
def test_unary_large_both_ways(target, events, size):
    cid = new_call_id("bigu")
    req = payload(size, seed=7)
    with channel(target) as ch:
        resp = ch.unary_unary(method("Unary"))(req, metadata=[("x-call-id", cid)],
                                               timeout=tf(30))
    assert len(resp) == size
    assert resp == req
    recv = events.wait(cid, "recv", tf(5))
    assert (recv["bytes"], recv["sha256"]) == (size, sha256(req))


def test_server_stream_large(target):
    sizes = [8 * MiB, 1, 9 * MiB, 8 * MiB]
    with channel(target) as ch:
        call = ch.unary_stream(method("ServerStream"))(
            b"", metadata=[("x-sizes", ",".join(map(str, sizes)))], timeout=tf(30))
        got = list(call)
        assert call.code() == grpc.StatusCode.OK
    assert [len(m) for m in got] == sizes
    for i, m in enumerate(got):
        assert m == payload(sizes[i], seed=i), "message %d differs" % i


def test_client_stream_large(target):
    reqs = [payload(8 * MiB, seed=1), payload(5, seed=2), payload(9 * MiB, seed=3)]
    with channel(target) as ch:
        resp = ch.stream_unary(method("ClientStream"))(iter(reqs), timeout=tf(30))
    got = json.loads(resp)
    assert got["sizes"] == [len(r) for r in reqs]
    assert got["sha256"] == sha256(b"".join(reqs))


def test_bidi_large(target):
    reqs = [payload(8 * MiB, seed=11), payload(8 * MiB + 1, seed=12)]
    with channel(target) as ch:
        call = ch.stream_stream(method("Bidi"))(iter(reqs), timeout=tf(30))
        got = list(call)
        assert call.code() == grpc.StatusCode.OK
    assert [len(m) for m in got] == [len(r) for r in reqs]
    assert got == reqs


def test_empty_messages(target):
    """Zero-length messages are messages: counted, forwarded, never dropped."""
    with channel(target) as ch:
        assert ch.unary_unary(method("Unary"))(b"", timeout=tf(10)) == b""

        call = ch.unary_stream(method("ServerStream"))(
            b"", metadata=[("x-count", "3"), ("x-size", "0")], timeout=tf(10))
        assert list(call) == [b"", b"", b""]
        assert call.code() == grpc.StatusCode.OK

        resp = ch.stream_unary(method("ClientStream"))(iter([b"", b"", b"", b""]),
                                                       timeout=tf(10))
        assert json.loads(resp)["sizes"] == [0, 0, 0, 0]

        call = ch.stream_stream(method("Bidi"))(iter([b"", b"x", b""]), timeout=tf(10))
        assert list(call) == [b"", b"x", b""]
        assert call.code() == grpc.StatusCode.OK


def test_500_concurrent_calls_one_channel(target):
    """500 unary calls at once on one grpc.aio channel.  The upstream holds
    each call until all 500 are in its handlers at the same time (a barrier),
    so they really are concurrent end to end; each gets its own payload."""
    n = 500
    group = new_call_id("barrier")

    async def run():
        async with aio_channel(target) as ch:
            stub = ch.unary_unary(method("Unary"))

            async def one(i):
                req = b"call %d " % i + payload(100 + i, seed=i)
                resp = await stub(req, timeout=tf(60), metadata=[
                    ("x-call-id", "%s-%d" % (group, i)),
                    ("x-barrier", "%s:%d" % (group, n)),
                    ("x-barrier-timeout-ms", str(int(tf(30) * 1000)))])
                return req, resp
            return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)

    results = asyncio.run(run())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, "%d of %d calls failed, first: %r" % (len(errors), n, errors[0])
    mismatched = [i for i, (req, resp) in enumerate(results) if req != resp]
    assert not mismatched, "calls got another call's payload: %s" % mismatched[:10]


def test_many_connections_two_workers(middle, upstream):
    """Several client connections at once, spread over two workers."""
    target = middle(upstream.addr, {"workers": 2}).addr
    n = 8
    channels = [channel(target) for _ in range(n)]
    try:
        futs = [ch.unary_stream(method("ServerStream"))(
            b"", metadata=[("x-count", "20"), ("x-size", "1000"), ("x-interval-ms", "5")],
            timeout=tf(30)) for ch in channels]
        for f in futs:
            msgs = list(f)
            assert msgs == [payload(1000, seed=i) for i in range(20)]
            assert f.code() == grpc.StatusCode.OK
    finally:
        for ch in channels:
            ch.close()
