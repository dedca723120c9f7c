"""Every way a client can end a request reaches the policy stage, and the
call then goes upstream and gets the upstream's answer, as it would
without a policy.

A request ends with END_STREAM on (a) its HEADERS (no DATA at all), (b) an
empty DATA frame, (c) trailers after a message, (d) trailers and no DATA.
Each is sent with raw HTTP/2 through feedguardd three ways: pass-through
(no policy: the control), intercepted with the band read from a request
FIELD (the call waits for its first message, which may never come), and
intercepted with the band from a HEADER.  Each call must end promptly
(well before its grpc-timeout) with the status the pass-through control
gets, and the upstream must have seen it.  The pass-through controls also
run in direct mode (no daemon), which checks what they expect of the
upstreams.

Upstreams:
  upstream.py, method Bidi   echoes each message; answers a request with no
                             message at once with OK (it logs start/recv/done)
  CaptureUpstream, Unary     raw h2; records the request (headers, DATA,
                             trailers) and answers when it ends: OK and the
                             request's DATA echoed
upstream.py does not answer a unary (or server-streaming) call that carries
no message at all: grpc.aio never runs the handler (no "start" event) and
the call stays open until its deadline, when the client gets
DEADLINE_EXCEEDED.  test_unary_without_message_upstream_py pins that down:
through feedguardd, intercepted or not, such a call ends the same way.
"""
import time

import pytest

import echopolicy as ep
import policyhelp as ph
from fgcommon import grpc_frame, grpc_timeout_header, method, sha256
from harness import new_call_id, tf
from rawh2 import RawClient

OK, DEADLINE_EXCEEDED = "0", "4"
VARIANTS = {
    "a": "HEADERS with END_STREAM, no DATA",
    "b": "HEADERS, then an empty DATA frame with END_STREAM",
    "c": "HEADERS, one message in DATA, then trailers with END_STREAM",
    "d": "HEADERS, then trailers with END_STREAM, no DATA",
}
# The pass-through control also runs in direct mode (FG_INTEROP_DIRECT=1),
# against the upstream itself: that validates what it expects.
MODES = ("passthrough", pytest.param("field", marks=pytest.mark.proxy_only),
         pytest.param("header", marks=pytest.mark.proxy_only))
BAND = "13_15"          # a child band: the default request block edits it
DEADLINE = 10.0         # grpc-timeout of every prompt call, x FG_TIME_FACTOR
PROMPT = 2.0            # "ends promptly": within this, x FG_TIME_FACTOR


@pytest.fixture
def fg(tmp_path, middle):
    """fg(mode, upstream_addr, method_name): feedguardd in front of
    <upstream_addr>, without a policy (passthrough) or with one that
    intercepts <method_name> with the band from a field or a header."""
    def start(mode, upstream_addr, name):
        if mode == "passthrough":
            return middle(upstream_addr)
        ep.write_echo_policy(tmp_path, {name: mode})
        return middle(upstream_addr, {"policy": "policy.yaml"})
    return start


@pytest.fixture
def capture():
    up = ph.CaptureUpstream(lambda req: ([], req["data"]))
    yield up
    up.close()


def request_message():
    return ph.profiled_request(age_band=BAND)


def start_request(c, path, md, variant, body):
    """Open a stream on RawClient <c> and end its request the <variant> way
    (body: the message of variant c).  Returns the stream id."""
    if variant == "a":
        return c.request(path, md, (), end_stream=True)
    sid = c.request(path, md, (), end_stream=False)
    if variant == "b":
        c.conn.send_data(sid, b"", end_stream=True)
    elif variant == "c":
        c.conn.send_data(sid, grpc_frame(body))
        c.conn.send_headers(sid, [("x-trailer", "t-%s" % variant)], end_stream=True)
    elif variant == "d":
        c.conn.send_headers(sid, [("x-trailer", "t-%s" % variant)], end_stream=True)
    c.flush()
    return sid


def call(addr, path, variant, cid, body):
    """One call through <addr>, ended the <variant> way; returns (its
    StreamResult, seconds it took).  Fails if it does not end promptly."""
    md = [("grpc-timeout", grpc_timeout_header(tf(DEADLINE))), ("x-call-id", cid),
          ("x-age-band", BAND)]
    c = RawClient(addr, timeout=tf(5))
    try:
        t0 = time.monotonic()
        sid = start_request(c, path, md, variant, body)
        st = c.streams[sid]
        try:
            c.wait(lambda: st.finished, tf(PROMPT), "the end of the call")
        except AssertionError:
            raise AssertionError(
                "request ended with %s: no end of the call within %.1fs (grpc-timeout %.0fs); "
                "frames received: %s" % (VARIANTS[variant], tf(PROMPT), tf(DEADLINE), st.frames)) \
                from None
        return st, (st.end_time or time.monotonic()) - t0
    finally:
        c.close()


def expected_message(mode, body):
    """What reaches the upstream (and, echoed, the client) of message <body>."""
    return body if mode == "passthrough" else ep.stripped(request_message())


def check_response(st, mode, variant, body):
    h = st.status_headers()
    assert st.reset is None, "the call was reset (%s) instead of answered: %s" % (st.reset, st.frames)
    assert h.get("grpc-status") == OK, \
        "%s, %s: grpc-status %r (%r), pass-through gets %s; frames %s" \
        % (mode, VARIANTS[variant], h.get("grpc-status"), h.get("grpc-message"), OK, st.frames)
    want = [expected_message(mode, body)] if variant == "c" else []
    assert st.messages == want, "%s, %s: the echo is %s, expected %s" \
        % (mode, VARIANTS[variant], [len(m) for m in st.messages], [len(m) for m in want])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_request_end_upstream_py_bidi(fg, upstream, mode, variant):
    """upstream.py's Bidi: OK at once whatever the number of messages; the
    upstream logs the call (start, one recv per message, done ok)."""
    d = fg(mode, upstream.addr, "Bidi")
    body = request_message().SerializeToString()
    cid = new_call_id("end-%s-%s" % (mode, variant))
    st, _ = call(d.addr, method("Bidi"), variant, cid, body)
    check_response(st, mode, variant, body)
    ev = upstream.events
    ev.wait(cid, "start", tf(5))
    done = ev.wait(cid, "done", tf(5))
    assert done["outcome"] == "ok", done
    recv = ev.of(cid, "recv")
    if variant == "c":
        want = expected_message(mode, body)
        assert [(r["bytes"], r["sha256"]) for r in recv] == [(len(want), sha256(want))], recv
    else:
        assert recv == [], "the upstream received messages the client never sent: %s" % recv


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_request_end_unary_raw_upstream(fg, capture, mode, variant):
    """A unary method on a raw h2 upstream that answers OK (echoing the
    request's DATA) once the request ends: the request arrives ended, with
    exactly the DATA the client sent (edited) and its trailers."""
    d = fg(mode, capture.addr, "Unary")
    body = request_message().SerializeToString()
    cid = new_call_id("end-%s-%s" % (mode, variant))
    st, _ = call(d.addr, method("Unary"), variant, cid, body)
    check_response(st, mode, variant, body)
    got = capture.wait(cid)
    assert got["ended"]
    want = grpc_frame(expected_message(mode, body)) if variant == "c" else b""
    assert got["data"] == want, "the upstream got %d DATA bytes, expected %d" % (len(got["data"]), len(want))
    if variant in ("c", "d"):
        assert ("x-trailer", "t-%s" % variant) in (got["trailers"] or []), \
            "the request trailers did not reach the upstream: %s" % got["trailers"]


@pytest.mark.parametrize("mode", MODES)
def test_unary_without_message_upstream_py(fg, upstream, mode):
    """upstream.py never answers a unary call with no request message (its
    handler never runs), so such a call ends at its deadline with
    DEADLINE_EXCEEDED, intercepted or not: feedguardd adds no answer of its
    own.  The three ways of ending a request without a message, on one
    connection at once, with a short deadline."""
    d = fg(mode, upstream.addr, "Unary")
    deadline = tf(1.0)
    c = RawClient(d.addr, timeout=tf(5))
    try:
        sids = {}
        t0 = time.monotonic()
        for variant in ("a", "b", "d"):
            cid = new_call_id("nomsg-%s-%s" % (mode, variant))
            md = [("grpc-timeout", grpc_timeout_header(deadline)), ("x-call-id", cid),
                  ("x-age-band", BAND)]
            sids[variant] = (start_request(c, method("Unary"), md, variant, b""), cid)
        c.wait(lambda: all(c.streams[s].finished for s, _ in sids.values()), deadline + tf(PROMPT),
               "the end of the three calls")
        for variant, (sid, cid) in sids.items():
            st = c.streams[sid]
            took = st.end_time - t0
            h = st.status_headers()
            assert h.get("grpc-status") == DEADLINE_EXCEEDED, \
                "%s, %s: grpc-status %r (%r), expected DEADLINE_EXCEEDED; frames %s" \
                % (mode, VARIANTS[variant], h.get("grpc-status"), h.get("grpc-message"), st.frames)
            assert took >= deadline * 0.9, "%s: ended after %.2fs, before its %.2fs deadline" \
                % (VARIANTS[variant], took, deadline)
            assert st.messages == []
            assert upstream.events.of(cid) == [], upstream.events.of(cid)
    finally:
        c.close()
