"""The bytes intercepted calls hold have a budget: limits.connection_buffer
(per client connection) and limits.worker_buffer (all of a worker's
connections).

An intercepted call holds its request message until the whole message is
there (to edit it); a client that opens many intercepted streams and never
finishes a message must not make feedguardd hold more than the budget plus
what flow control lets through anyway.  Past limits.connection_buffer a
connection's intercepted streams get no more window (except the oldest one
in the middle of a message, which may finish it); past limits.worker_buffer
new intercepted streams are refused with UNAVAILABLE.  Metrics: feedguard_intercept_buffered_bytes
(gauge) and feedguard_intercept_refused_total{limit} (counter).

feedguardd runs with one worker and the policy intercepts fgtest.Echo/Unary
(band from x-age-band; 13_15 is edited, so such a call is intercepted) in
front of upstream.py, whose Unary echoes the (edited) request.
"""
import struct
import time
import urllib.parse

import grpc
import h2.errors
import h2.exceptions
import pytest

import echopolicy as ep
import policyhelp as ph
from fgcommon import KiB, MiB, grpc_frame, method
from harness import channel, deep_merge, new_call_id, poll_until, rss_factor, rss_kib, settled_rss, tf
from rawh2 import RawClient

pytestmark = pytest.mark.proxy_only

# The defaults, written out: the budget under test.
CONNECTION_BUFFER = 1 * MiB
WORKER_BUFFER = 64 * MiB
MAX_MESSAGE_SIZE = 4 * MiB          # limits.max_message_size (default)
STREAM_WINDOW = 1 * MiB             # limits.stream_window (default)
SLACK = 16 * MiB                    # allocator, nghttp2, one-time growth

CONFIG = {"workers": 1, "admin": {"listen": "127.0.0.1:0"}, "policy": "policy.yaml",
          "limits": {"connection_buffer": "1MiB", "worker_buffer": "64MiB"}}

BUFFERED = "feedguard_intercept_buffered_bytes"
REFUSED = "feedguard_intercept_refused_total"
RESOURCE_EXHAUSTED, UNAVAILABLE, OK = "8", "14", "0"
BAND = "13_15"
INTERCEPTED = method("Unary")        # in the policy
PASSTHROUGH = method("ServerStream")  # not in the policy: never intercepted


@pytest.fixture
def fg(tmp_path, middle, upstream):
    """fg(config=None): feedguardd (one worker, admin endpoint, the policy)
    in front of the shared upstream."""
    ep.write_echo_policy(tmp_path, {"Unary": "header"})

    def start(config=None):
        return middle(upstream.addr, deep_merge(CONFIG, config or {}))
    return start


def scrape(d, name, **labels):
    _, text = ph.http_get(ph.admin_addr(d), "/metrics")
    return ph.metric(text, name, **labels)


def buffered(d):
    v = scrape(d, BUFFERED)
    assert v is not None, "no %s in feedguardd's /metrics" % BUFFERED
    return v


def refused(d, limit):
    return scrape(d, REFUSED, limit=limit) or 0


def grpc_message(h):
    """The grpc-message of status headers <h>, percent-decoded."""
    return urllib.parse.unquote(h.get("grpc-message", ""))


def small_request(seed=0):
    return ph.profiled_request(user_id="user-%d" % seed, age_band=BAND)


def md(cid=None, band=BAND):
    return [("x-call-id", cid or new_call_id("budget")), ("x-age-band", band)]


def raw_call(c, path, req, cid=None, timeout=5.0):
    """One unary call with message <req> on RawClient <c>; returns its StreamResult."""
    sid = c.request(path, md(cid), [req.SerializeToString()])
    st = c.streams[sid]
    c.wait(lambda: st.finished, tf(timeout), "the end of call %d on %s" % (sid, path))
    return st


def assert_ok_echo(st, want, what):
    h = st.status_headers()
    assert h.get("grpc-status") == OK, "%s: grpc-status %r (%r), frames %s" \
        % (what, h.get("grpc-status"), h.get("grpc-message"), st.frames)
    assert st.messages == [want], "%s: the echo is not the expected message" % what


def push_unfinished(c, n_streams, send_bytes, declared=MAX_MESSAGE_SIZE, budget=5.0, idle=1.0):
    """Open <n_streams> intercepted streams on RawClient <c>, one more each
    round, and send on each the prefix of a <declared>-byte message and
    <send_bytes> bytes of it (never the rest, never END_STREAM), as far as
    flow control allows: a stream whose window is shut is left for the next
    round.  Stops when all is sent, after <budget> s, or once no window
    opened for <idle> s (both x FG_TIME_FACTOR).  Returns {stream id: bytes
    sent, prefix included}."""
    prefix = struct.pack(">BI", 0, declared)
    total = len(prefix) + send_bytes
    zeros = bytes(1 << 20)
    sent = {}
    to_open = n_streams
    now = time.monotonic()
    limit, last = now + tf(budget), now
    while now < limit and not c.closed:
        progress = False
        if to_open:
            sid = c.request(INTERCEPTED, md(new_call_id("push")), (), end_stream=False)
            sent[sid] = 0
            to_open -= 1
            progress = True
        for sid in sent:
            st = c.streams[sid]
            while sent[sid] < total and not st.finished:
                n = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size,
                        total - sent[sid])
                if n <= 0:
                    break
                off = sent[sid]
                piece = (prefix[off:] + zeros[:n])[:n] if off < len(prefix) else zeros[:n]
                try:
                    c.conn.send_data(sid, piece)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    break      # reset by the daemon (the pump below records it)
                sent[sid] += n
                progress = True
            c.flush()
            c.pump(0)
        now = time.monotonic()
        if progress:
            last = now
        elif to_open == 0 and all(sent[s] >= total or c.streams[s].finished for s in sent):
            break
        elif now - last > tf(idle):
            break
        else:
            c.pump(0.05)
    return sent


def warm_up(c):
    """One intercepted call on <c>: settings exchanged, upstream connected,
    the worker's intercept stage and buffers made."""
    req = small_request()
    assert_ok_echo(raw_call(c, INTERCEPTED, req), ep.stripped(req), "the warm-up call")


# ---------------------------------------------------------------- 1. amplification

@pytest.mark.parametrize("limits", ["defaults", "untrusted"])
def test_unfinished_messages_hold_bounded_memory(fg, limits):
    """100 intercepted streams on one connection, each sending 4 MiB - 1
    bytes of a declared 4 MiB message and never finishing: feedguardd grows
    by at most connection_buffer + max_message_size + streams x
    stream_window (+ slack): each waiting stream holds at most its own
    window, the connection window goes back on receipt (so the one stream
    allowed on past the budget is never starved of it).  With the defaults
    (1 MiB windows) that is about 100 MiB here, 405 MiB before the budget;
    with the README's limits for clients you do not trust (64 KiB
    windows), about 11 MiB.  The gauge says what it holds, then 0 once
    the client is gone."""
    d = fg(UNTRUSTED if limits == "untrusted" else None)
    window = UNTRUSTED_W if limits == "untrusted" else STREAM_WINDOW
    c = RawClient(d.addr, timeout=tf(10))
    try:
        warm_up(c)
        before = settled_rss(d.pid)
        sent = push_unfinished(c, 100, MAX_MESSAGE_SIZE - 1)
        after = settled_rss(d.pid)
        growth = (after - before) * KiB
        pushed = sum(sent.values())
        bound = CONNECTION_BUFFER + MAX_MESSAGE_SIZE + len(sent) * window
        # RSS, not the exact gauge checked below: ASan's overhead scales it
        factor = rss_factor(d.pid)
        assert growth < (bound + SLACK) * factor, \
            "feedguardd grew by %.1f MiB (RSS %.1f -> %.1f MiB) while one client pushed %.1f MiB of " \
            "unfinished messages on %d streams; bound %.0f MiB ((connection_buffer %d + " \
            "max_message_size %d MiB + %d streams x stream_window %d KiB + slack %d MiB) x %d for sanitizers)" \
            % (growth / MiB, before / KiB, after / KiB, pushed / MiB, len(sent), (bound + SLACK) * factor / MiB,
               CONNECTION_BUFFER // MiB, MAX_MESSAGE_SIZE // MiB, len(sent), window // KiB, SLACK // MiB, factor)
        held = buffered(d)
        print("rss %.1f -> %.1f MiB, pushed %.1f MiB, held %.1f MiB"
              % (before / KiB, after / KiB, pushed / MiB, held / MiB))
        assert 0 < held <= bound, "%s is %d while the client holds %d unfinished messages " \
            "(bound %d)" % (BUFFERED, held, len(sent), bound)
    finally:
        c.close()
    poll_until(lambda: buffered(d) == 0, tf(5), "%s back to 0 after the client left (now %s)"
               % (BUFFERED, scrape(d, BUFFERED)))


def test_memory_goes_back_when_the_calls_end(fg):
    """The same 100 unfinished 4 MiB messages, twice, then the client goes:
    with nothing in flight feedguardd is back within a few MiB of where it
    started (its allocator gives large buffers back), not holding what the
    client once made it hold ("Kept for reuse": at most 16 MiB per worker)."""
    d = fg()
    c = RawClient(d.addr, timeout=tf(10))
    try:
        warm_up(c)
        before = settled_rss(d.pid)
        if rss_factor(d.pid) > 1:
            pytest.skip("AddressSanitizer keeps freed memory in its quarantine")
    finally:
        c.close()
    for _ in range(2):
        c = RawClient(d.addr, timeout=tf(10))
        try:
            push_unfinished(c, 100, MAX_MESSAGE_SIZE - 1)
            peak = rss_kib(d.pid)
        finally:
            c.close()
        poll_until(lambda: buffered(d) == 0, tf(5), "%s back to 0" % BUFFERED)
    kept_bound = before + (16 * MiB + 4 * MiB) // KiB    # kept for reuse + slack
    after = poll_until(lambda: (lambda r: r if r <= kept_bound else None)(settled_rss(d.pid)), tf(10),
                       "feedguardd's RSS back under %.1f MiB once the calls ended (started at %.1f MiB, "
                       "peak %.1f MiB, now %.1f MiB)" % (kept_bound / KiB, before / KiB, peak / KiB,
                                                        rss_kib(d.pid) / KiB))
    print("rss %.1f -> peak %.1f -> %.1f MiB" % (before / KiB, peak / KiB, after / KiB))


# ---------------------------------------------------------------- 2. backpressure

def test_over_budget_connection_gets_backpressure_not_errors(fg):
    """Once a connection holds more than limits.connection_buffer, its
    intercepted streams get no more window except the oldest one in the
    middle of a message (as Envoy's per-connection buffer limit does); new
    intercepted calls on it are not refused: one whose message fits what
    flow control still lets through completes.  A pass-through call on the
    same connection and an intercepted call on another connection work."""
    d = fg()
    c = RawClient(d.addr, timeout=tf(10))
    try:
        warm_up(c)
        sids = push_unfinished(c, 4, MAX_MESSAGE_SIZE - 1)
        poll_until(lambda: buffered(d) > CONNECTION_BUFFER, tf(5),
                   "precondition: the connection holds more than limits.connection_buffer (%s: %s)"
                   % (BUFFERED, scrape(d, BUFFERED)))
        # Backpressure: the unfinished streams other than the one allowed to
        # finish its message are left with no window to send more.
        c.pump(0.3)
        open_windows = [sid for sid in sids if c.conn.local_flow_control_window(sid) > 0]
        assert len(open_windows) <= 1, \
            "over limits.connection_buffer, %d unfinished streams still have window: %s" \
            % (len(open_windows), open_windows)
        # A new intercepted call is not refused.
        req = small_request(1)
        st = raw_call(c, INTERCEPTED, req)
        assert_ok_echo(st, ep.stripped(req), "a new intercepted call on the over-budget connection")
        assert refused(d, "worker_buffer") == 0
        # A pass-through call on the same connection is not held: it works.
        req = small_request(2)
        need = len(grpc_frame(req.SerializeToString()))
        c.wait(lambda: c.conn.outbound_flow_control_window >= need, tf(5),
               "the connection window to let a %d-byte pass-through message through (it is %d)"
               % (need, c.conn.outbound_flow_control_window))
        st = raw_call(c, PASSTHROUGH, req)
        assert_ok_echo(st, req.SerializeToString(), "a pass-through call on the over-budget connection")
        # The budget is per connection: another one is not refused.
        other = RawClient(d.addr, timeout=tf(10))
        try:
            req = small_request(3)
            assert_ok_echo(raw_call(other, INTERCEPTED, req), ep.stripped(req),
                           "an intercepted call on a new connection")
        finally:
            other.close()
    finally:
        c.close()


# ---------------------------------------------------------------- 3. honest clients

def start_big_calls(ch, n=3, size=3 * MiB, timeout=30):
    """<n> concurrent intercepted calls of <size>-byte requests on channel
    <ch>, each with a deadline of <timeout> s: [(request, future)]."""
    f = ch.unary_unary(INTERCEPTED)
    out = []
    for i in range(n):
        r = small_request(i)
        r.user.user_id = ("call-%d-" % i) + "x" * size
        out.append((r, f.future(r.SerializeToString(), metadata=md(), timeout=tf(timeout))))
    return out


def check_big_calls(calls, what):
    """Each of start_big_calls' calls got OK and its own edited request back."""
    for i, (r, fut) in enumerate(calls):
        try:
            resp = fut.result()
        except grpc.RpcError as e:
            pytest.fail("%s %d: %s %r" % (what, i, e.code(), e.details()), pytrace=False)
        assert resp == ep.stripped(r), "%s %d: the response is not its edited request" % (what, i)


def test_many_concurrent_big_messages_on_one_connection_complete(fg):
    """40 concurrent 2 MB intercepted calls on one grpcio channel (one
    connection; grpcio spreads the connection window over every stream):
    all complete with their own edited message.  Before, the 16 MiB
    connection window went to the 39 streams waiting behind
    limits.connection_buffer, 420 KB each, and the one stream allowed on
    never got the bytes to finish: 9 to 13 of 40 completed, the rest hung
    until their deadline (or timeouts.stalled_stream, 5 minutes)."""
    d = fg()
    with channel(d.addr) as ch:
        check_big_calls(start_big_calls(ch, n=40, size=2 * MiB, timeout=20), "one of 40 concurrent 2 MB calls")


def test_concurrent_big_messages_within_budget_complete(fg):
    """Three concurrent 3 MiB intercepted calls on one grpcio channel (DATA
    frames interleaved, default windows), with connection_buffer at 1 MiB:
    no deadlock, each gets OK and its own edited message back."""
    d = fg()
    with channel(d.addr) as ch:
        check_big_calls(start_big_calls(ch), "concurrent 3 MiB call")
    poll_until(lambda: buffered(d) == 0, tf(5), "%s back to 0 (now %s)" % (BUFFERED, scrape(d, BUFFERED)))


# ---------------------------------------------------------------- 4. worker budget

def test_worker_budget_refuses_other_connections(fg):
    """limits.worker_buffer 1 MiB, connection_buffer 64 MiB: while client A
    holds 2 MiB of an unfinished message, client B's intercepted call is
    refused with UNAVAILABLE (feedguardd overloaded, limits.worker_buffer);
    once A is gone, B's next call works."""
    # A stream window larger than what A sends: A needs no window update.
    d = fg({"limits": {"worker_buffer": "1MiB", "connection_buffer": "64MiB", "stream_window": "4MiB"}})
    a = RawClient(d.addr, timeout=tf(10))
    clients = [a]
    try:
        warm_up(a)
        sent = push_unfinished(a, 1, 2 * MiB)
        assert list(sent.values()) == [5 + 2 * MiB], "client A could not send its 2 MiB: %s" % sent
        poll_until(lambda: buffered(d) > 1 * MiB, tf(5),
                   "precondition: feedguardd holds more than limits.worker_buffer (%s: %s)"
                   % (BUFFERED, scrape(d, BUFFERED)))
        was = refused(d, "worker_buffer")
        b = RawClient(d.addr, timeout=tf(10))
        clients.append(b)
        st = raw_call(b, INTERCEPTED, small_request(1))
        h = st.status_headers()
        msg = grpc_message(h)
        assert h.get("grpc-status") == UNAVAILABLE, \
            "an intercepted call while the worker is over its budget: grpc-status %r (%r), expected " \
            "UNAVAILABLE; frames %s" % (h.get("grpc-status"), msg, st.frames)
        assert "overloaded" in msg and "limits.worker_buffer" in msg, msg
        assert refused(d, "worker_buffer") >= was + 1, "%s{limit=\"worker_buffer\"} did not go up" % REFUSED
        assert refused(d, "connection_buffer") == 0
        a.close()
        poll_until(lambda: buffered(d) == 0, tf(5), "%s back to 0 after client A left (now %s)"
                   % (BUFFERED, scrape(d, BUFFERED)))
        req = small_request(2)
        assert_ok_echo(raw_call(b, INTERCEPTED, req), ep.stripped(req),
                       "client B's call once client A is gone")
    finally:
        for c in clients:
            c.close()


# ---------------------------------------------------------------- 5. stalled partial messages
STALL = 0.3            # timeouts.stalled_stream in these tests, seconds
STALLED = "feedguard_client_stalled_streams_total"


def test_request_stopped_mid_message_is_cut(fg):
    """An intercepted request that stops in the middle of a message holds
    its bytes against the budgets; a client that could send the rest (its
    windows are open) and sends nothing for timeouts.stalled_stream has the
    stream reset with CANCEL (counted as a stalled stream), the bytes are
    released, and the connection keeps serving.  A call that is merely
    quiet between whole messages is not cut."""
    d = fg({"timeouts": {"stalled_stream": "%dms" % int(STALL * 1000)}})
    c = RawClient(d.addr, timeout=tf(10))
    try:
        warm_up(c)
        was = scrape(d, STALLED) or 0
        # the first 12 KiB of a 64 KiB message, then nothing
        sid = c.request(INTERCEPTED, md(), (), end_stream=False)
        c.conn.send_data(sid, struct.pack(">BI", 0, 64 * KiB) + bytes(12 * KiB))
        c.flush()
        poll_until(lambda: buffered(d) > 0, tf(2), "the partial message held (%s)" % BUFFERED)
        start = time.monotonic()
        st = c.streams[sid]
        c.wait(lambda: st.finished, tf(STALL * 4 + 2), "the stalled partial request to be cut")
        took = time.monotonic() - start
        assert st.reset == h2.errors.ErrorCodes.CANCEL, \
            "a request stopped mid-message: expected RST_STREAM(CANCEL), got frames %s" % st.frames
        assert took >= STALL * 0.9, "cut after %.3fs, before timeouts.stalled_stream (%.1fs)" % (took, STALL)
        poll_until(lambda: buffered(d) == 0, tf(2), "%s back to 0 after the cut (now %s)"
                   % (BUFFERED, scrape(d, BUFFERED)))
        assert (scrape(d, STALLED) or 0) >= was + 1, "%s did not count the cut" % STALLED
        # a quiet request between whole messages (stream left open; the
        # unary upstream answers, and the reset that may follow is NO_ERROR)
        # is not cut
        quiet = c.request(INTERCEPTED, md(), (), end_stream=False)
        c.conn.send_data(quiet, grpc_frame(small_request(5).SerializeToString()))
        c.flush()
        c.pump(STALL * 3)
        assert c.streams[quiet].reset != h2.errors.ErrorCodes.CANCEL, \
            "a quiet request with no partial message was cut: %s" % c.streams[quiet].frames
        # and the connection still serves
        req = small_request(6)
        assert_ok_echo(raw_call(c, INTERCEPTED, req), ep.stripped(req), "a call after the cut")
    finally:
        c.close()


# ---------------------------------------------------------------- 5. untrusted clients

# README, "Clients you do not trust": the block it recommends.
UNTRUSTED = {"limits": {"max_concurrent_streams": 100, "stream_window": "64KiB", "connection_window": "1MiB",
                        "max_header_list_size": "16KiB"},
             "timeouts": {"stalled_stream": "30s"}}
UNTRUSTED_S, UNTRUSTED_W = 100, 64 * KiB


def test_untrusted_client_limits_serve_big_messages(fg):
    """The README's limits for untrusted clients (64 KiB stream windows,
    1 MiB connection windows) still carry the biggest messages a call may
    have: three concurrent 3 MiB intercepted calls come back edited, and a
    pass-through stream of two 3 MiB messages arrives whole."""
    d = fg(UNTRUSTED)
    with channel(d.addr) as ch:
        calls = start_big_calls(ch)
        stream = ch.unary_stream(PASSTHROUGH)(b"x", metadata=md() + [("x-sizes", "%d,%d" % (3 * MiB, 3 * MiB))],
                                              timeout=tf(30))
        try:
            got = [len(m) for m in stream]
        except grpc.RpcError as e:
            pytest.fail("pass-through stream under the untrusted limits: %s %r" % (e.code(), e.details()),
                        pytrace=False)
        assert got == [3 * MiB, 3 * MiB], "pass-through stream: message sizes %r" % got
        check_big_calls(calls, "3 MiB call under the untrusted limits")


def test_untrusted_client_limits_bound_a_client_that_reads_nothing(fg):
    """A client that opens max_concurrent_streams pass-through streams of
    large responses and never reads: with the README's limits for untrusted
    clients feedguardd holds about S x W (100 x 64 KiB), where the defaults
    (1000 streams, 1 MiB windows) let it hold 100 MiB on these 100 streams;
    and the ranker's connection, shared with other clients, keeps serving
    them meanwhile."""
    d = fg(UNTRUSTED)
    c = RawClient(d.addr, timeout=tf(10), ack_data=False)
    try:
        warm_up(c)
        before = settled_rss(d.pid)
        sids = [c.request(PASSTHROUGH, md() + [("x-count", "4"), ("x-size", str(MiB))], [b"x"])
                for _ in range(UNTRUSTED_S)]
        # what the client's own windows took (64 KiB a stream, 64 KiB in all: it
        # never acknowledges), then nothing more moves
        c.wait(lambda: c.received_bytes >= 60 * KiB, tf(10), "the first response bytes")
        after = settled_rss(d.pid)
        growth = (after - before) * KiB
        bound = (UNTRUSTED_S * UNTRUSTED_W + 8 * MiB) * rss_factor(d.pid)
        print("rss %.1f -> %.1f MiB with %d streams unread" % (before / KiB, after / KiB, len(sids)))
        assert growth < bound, \
            "feedguardd grew by %.1f MiB (RSS %.1f -> %.1f MiB) for %d pass-through streams whose client " \
            "reads nothing; bound %.1f MiB (S x W = %d x %d KiB, + 8 MiB slack)" \
            % (growth / MiB, before / KiB, after / KiB, len(sids), bound / MiB, UNTRUSTED_S, UNTRUSTED_W // KiB)
        with channel(d.addr) as ch:
            try:
                msgs = list(ch.unary_stream(PASSTHROUGH)(b"y", metadata=md() + [("x-count", "2"),
                                                                                  ("x-size", str(MiB))],
                                                         timeout=tf(10)))
            except grpc.RpcError as e:
                pytest.fail("another client, beside the one reading nothing: %s %r" % (e.code(), e.details()),
                            pytrace=False)
            assert [len(m) for m in msgs] == [MiB, MiB]
    finally:
        c.close()
