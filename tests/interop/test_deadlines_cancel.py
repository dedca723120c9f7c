"""Deadlines, cancellation and resets, in both directions."""
import time

import grpc
import pytest

from fgcommon import method
from harness import channel, new_call_id, poll_until, tf
from rawh2 import RawClient, RawUpstream


def test_grpc_timeout_reaches_upstream(target, events):
    """The upstream sees a deadline no later than the client's (grpc-timeout
    was forwarded, possibly reduced by the time spent on the way) and not
    much earlier either."""
    cid = new_call_id("gto")
    deadline = 7.0
    with channel(target) as ch:
        t0 = time.monotonic()
        ch.unary_unary(method("Unary"))(b"x", metadata=[("x-call-id", cid)], timeout=deadline)
        elapsed = time.monotonic() - t0
    start = events.wait(cid, "start", tf(5))
    remaining = start["time_remaining"]
    assert remaining is not None, "the upstream saw no deadline: grpc-timeout was dropped"
    # grpc-timeout is rounded up when encoded (to 10 ms below 10 s, in grpc
    # core): allow that much and a re-encoding, not more.
    assert remaining <= deadline + 0.1, "the upstream got a later deadline than the client's"
    assert remaining >= deadline - elapsed - 0.5, "deadline shrank more than the call took"


def test_no_deadline_stays_no_deadline(target, events):
    cid = new_call_id("nodl")
    with channel(target) as ch:
        ch.unary_unary(method("Unary"))(b"x", metadata=[("x-call-id", cid)])
    assert events.wait(cid, "start", tf(5))["time_remaining"] is None


def test_deadline_with_client_that_never_gives_up(target, events):
    """A raw client sends grpc-timeout 300m and then waits forever, without
    a deadline of its own: it must get grpc-status 4 (DEADLINE_EXCEEDED)
    soon after 300 ms, and the upstream must see the call cancelled."""
    cid = new_call_id("dl")
    c = RawClient(target, timeout=tf(10))
    try:
        t0 = time.monotonic()
        sid = c.request(method("Unary"), messages=[b"zzz"], metadata=[
            ("grpc-timeout", "300m"), ("x-call-id", cid), ("x-sleep-ms", "30000")])
        st = c.streams[sid]
        c.wait(lambda: st.finished, 0.3 + tf(1), "grpc-status after grpc-timeout 300m")
        elapsed = time.monotonic() - t0
    finally:
        c.close()
    assert elapsed >= 0.25, "ended before its deadline (%.3fs)" % elapsed
    status = st.status_headers()
    assert status.get("grpc-status") == "4", "got %s / reset %s" % (status, st.reset)
    done = events.wait(cid, "done", tf(5))
    assert done["cancelled"] is True


@pytest.mark.proxy_only
def test_daemon_enforces_deadline_of_silent_upstream(middle):
    """The upstream never answers and ignores grpc-timeout (a raw h2 server):
    feedguardd itself must end the call with DEADLINE_EXCEEDED and cancel
    the upstream stream (RST_STREAM)."""
    raw = RawUpstream(mode="hang")
    try:
        target = middle(raw.addr).addr
        c = RawClient(target, timeout=tf(10))
        try:
            t0 = time.monotonic()
            sid = c.request(method("Unary"), messages=[b"zzz"],
                            metadata=[("grpc-timeout", "300m")])
            st = c.streams[sid]
            c.wait(lambda: st.finished, 0.3 + tf(1), "grpc-status after grpc-timeout 300m")
            elapsed = time.monotonic() - t0
        finally:
            c.close()
        assert elapsed >= 0.25, "ended before its deadline (%.3fs)" % elapsed
        assert st.status_headers().get("grpc-status") == "4", \
            "got %s / reset %s" % (st.status_headers(), st.reset)
        assert raw.find("request"), "the call never reached the upstream"
        poll_until(lambda: raw.find("reset_by_peer") or raw.find("conn_closed"), tf(5),
                   "feedguardd to cancel the upstream stream")
    finally:
        raw.close()


def test_client_cancel_reaches_upstream(target, events):
    cid = new_call_id("ccancel")
    with channel(target) as ch:
        fut = ch.unary_unary(method("Unary")).future(
            b"x", metadata=[("x-call-id", cid), ("x-sleep-ms", "30000")], timeout=tf(60))
        events.wait(cid, "start", tf(5))
        fut.cancel()
        with pytest.raises(grpc.FutureCancelledError):
            fut.result()
    done = events.wait(cid, "done", tf(5))
    assert done["cancelled"] is True


def test_client_reset_of_server_stream_reaches_upstream(target, events):
    """A raw client resets (RST_STREAM CANCEL) a server stream in progress."""
    cid = new_call_id("rst")
    c = RawClient(target, timeout=tf(10))
    try:
        sid = c.request(method("ServerStream"), messages=[b""], metadata=[
            ("x-call-id", cid), ("x-count", "1000"), ("x-size", "10"),
            ("x-interval-ms", "20")])
        st = c.streams[sid]
        c.wait(lambda: len(st.messages) >= 2, tf(10), "two messages")
        c.cancel(sid)
        done = events.wait(cid, "done", tf(5))
    finally:
        c.close()
    assert done["cancelled"] is True
    assert len(events.of(cid, "sent")) < 1000


def test_upstream_reset_reaches_client(middle):
    """The upstream sends headers and a message, then RST_STREAM(INTERNAL_ERROR):
    the client gets the message, then a non-OK status (never OK)."""
    raw = RawUpstream(mode="reset")
    try:
        target = middle(raw.addr).addr
        with channel(target) as ch:
            call = ch.unary_stream(method("ServerStream"))(b"", timeout=tf(10))
            assert next(call) == b"first"
            raw.release()
            with pytest.raises(grpc.RpcError) as ei:
                next(call)
        assert ei.value.code() not in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        raw.close()


def test_refused_stream_is_unavailable(middle):
    """An upstream that answers HEADERS with RST_STREAM(REFUSED_STREAM): the
    grpcio client sees UNAVAILABLE (not a hang until its deadline)."""
    raw = RawUpstream(mode="refuse")
    try:
        target = middle(raw.addr).addr
        with channel(target) as ch:
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as ei:
                ch.unary_unary(method("Unary"))(b"x", timeout=tf(10))
            elapsed = time.monotonic() - t0
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value.details()
        assert elapsed < tf(5)
        assert raw.find("request")
    finally:
        raw.close()

