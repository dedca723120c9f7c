"""Metadata (request, response headers, trailers, -bin) and statuses
(codes, messages, non-ASCII, trailers-only) arrive unchanged."""
import base64

import grpc
import pytest

from fgcommon import grpc_timeout_header, method, payload
from harness import channel, md_values, new_call_id, tf
from rawh2 import RawClient, headers_dict

ALL_BYTES = bytes(range(256))
UNICODE = "\u00fcn\u00efc\u00f6d\u00e9 \u2713 \u65e5\u672c"   # "ünïcödé ✓ 日本"

REQUEST_MD = [
    ("x-plain", "hello"),
    ("x-multi", "first"),
    ("x-multi", "second"),
    ("x-multi", "third"),
    ("x-spaces", "a value with  spaces, commas; and = signs"),
    ("x-printable", "".join(chr(c) for c in range(0x20, 0x7f)).strip()),
    ("x-long", "L" * 4000),
    ("x-data-bin", ALL_BYTES),
    ("x-empty-bin", b""),
    ("x-zeros-bin", b"\x00" * 64),
]


def _b64(v):
    return "b64:" + base64.b64encode(v).decode()


def test_request_metadata_reaches_upstream_unchanged(target, events):
    cid = new_call_id("reqmd")
    with channel(target) as ch:
        ch.unary_unary(method("Unary"))(b"x", metadata=[("x-call-id", cid)] + REQUEST_MD,
                                        timeout=tf(10))
    start = events.wait(cid, "start", tf(5))
    keys = {k for k, _ in REQUEST_MD}
    seen = [(k, v) for k, v in start["md"] if k in keys]
    want = [(k, _b64(v) if k.endswith("-bin") else v) for k, v in REQUEST_MD]
    assert seen == want


@pytest.mark.parametrize("kind", ["unary", "server_stream", "bidi"])
def test_response_headers_and_trailers_unchanged(target, kind):
    """The upstream echoes each request entry as echo-KEY, in its response
    headers and again in its trailers: both must reach the client as sent."""
    with channel(target) as ch:
        if kind == "unary":
            _, call = ch.unary_unary(method("Unary")).with_call(
                b"x", metadata=REQUEST_MD, timeout=tf(10))
        elif kind == "server_stream":
            call = ch.unary_stream(method("ServerStream"))(
                b"", metadata=REQUEST_MD + [("x-count", "2")], timeout=tf(10))
            assert list(call) == [b"", b""]
        else:
            call = ch.stream_stream(method("Bidi"))(iter([b"a", b"b"]), metadata=REQUEST_MD,
                                                    timeout=tf(10))
            assert list(call) == [b"a", b"b"]
        assert call.code() == grpc.StatusCode.OK
        initial, trailing = call.initial_metadata(), call.trailing_metadata()
    for key in dict(REQUEST_MD):
        want = [v for k, v in REQUEST_MD if k == key]
        assert md_values(initial, "echo-" + key) == want, "header echo-" + key
        assert md_values(trailing, "echo-" + key) == want, "trailer echo-" + key


def test_all_status_codes_unchanged(target):
    codes = [c for c in grpc.StatusCode if c != grpc.StatusCode.OK]
    with channel(target) as ch:
        stub = ch.unary_unary(method("Unary"))
        for code in codes:
            msg = "status %s from upstream" % code.name
            with pytest.raises(grpc.RpcError) as ei:
                stub(b"", timeout=tf(10),
                     metadata=[("x-status", str(code.value[0])), ("x-message", msg)])
            assert (ei.value.code(), ei.value.details()) == (code, msg)


@pytest.mark.parametrize("trailers_only", [False, True], ids=["headers+trailers", "trailers-only"])
@pytest.mark.parametrize("kind", ["unary", "server_stream"])
def test_non_ascii_status_message(target, kind, trailers_only):
    md = [("x-status", "13"), ("x-message-bin", UNICODE.encode()), ("x-tag", "t1")]
    if trailers_only:
        md.append(("x-trailers-only", "1"))
    with channel(target) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            if kind == "unary":
                ch.unary_unary(method("Unary"))(b"", metadata=md, timeout=tf(10))
            else:
                list(ch.unary_stream(method("ServerStream"))(b"", metadata=md, timeout=tf(10)))
    err = ei.value
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == UNICODE
    assert md_values(err.trailing_metadata(), "echo-x-tag") == ["t1"]
    # trailers-only: no response headers of the upstream's own
    assert md_values(err.initial_metadata(), "echo-x-tag") == ([] if trailers_only else ["t1"])


def test_error_after_messages(target):
    """Messages first, then a non-OK status in the trailers: the client gets both."""
    with channel(target) as ch:
        call = ch.unary_stream(method("ServerStream"))(
            b"", timeout=tf(10), metadata=[("x-count", "2"), ("x-size", "10"),
                                           ("x-status", "8"), ("x-message", "quota gone")])
        got = []
        with pytest.raises(grpc.RpcError) as ei:
            for m in call:
                got.append(m)
    assert got == [payload(10, 0), payload(10, 1)]
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ei.value.details() == "quota gone"


def test_trailers_only_response_shape(target):
    """On the wire, a trailers-only response stays one HEADERS frame with
    END_STREAM, :status 200, content-type and grpc-status / grpc-message
    (percent-encoded UTF-8, as the upstream sent it)."""
    c = RawClient(target, timeout=tf(10))
    try:
        sid = c.request(method("Unary"), messages=[b""], metadata=[
            ("grpc-timeout", grpc_timeout_header(tf(10))),
            ("x-status", "5"), ("x-message", "no such thing: 100% gone"),
            ("x-trailers-only", "1")])
        st = c.streams[sid]
        c.wait(lambda: st.finished, tf(10), "the response")
    finally:
        c.close()
    assert st.reset is None
    assert len(st.frames) == 1, "expected a lone HEADERS frame, got %s" % [
        f[0] for f in st.frames]
    kind, hdrs, end_stream = st.frames[0]
    assert kind == "headers" and end_stream
    h = headers_dict(hdrs)
    assert h[":status"] == "200"
    assert h["content-type"].startswith("application/grpc")
    assert h["grpc-status"] == "5"
    assert h["grpc-message"] == "no such thing: 100%25 gone"
