"""Clients that stop taking what they asked for (timeouts.stalled_stream and
timeouts.write, both 300 ms here).

A stalled stream (response bytes queued, the client's HTTP/2 window stays
shut) is reset with CANCEL and cancelled upstream, and only that stream ends;
a quiet stream and a slow reader that keeps opening its window are left
alone; a client that stops reading its socket loses its connection.  The
stall and write-timeout tests need the daemon (proxy_only); the quiet and
slow-reader ones also run in direct mode, which validates them."""
import socket
import time

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import pytest

import harness
import policyhelp as ph
from fgcommon import KiB, MiB, grpc_frame, method, payload
from harness import (Daemon, channel, deep_merge, new_call_id, poll_until, run_feedguardd, tf,
                     to_yaml)
from rawh2 import RawClient

TIMEOUT = 0.3                      # both timeouts below, in seconds
CONFIG = {"timeouts": {"write": "300ms", "stalled_stream": "300ms"},
          "admin": {"listen": "127.0.0.1:0"}}

# A stalled stream asks for 16 MiB (256 x 64 KiB): far more than the windows
# on the way (1 MiB per stream on the daemon's upstream side), so the upstream
# is still blocked in a write when the daemon gives up, and the daemon holds
# queued bytes for the client.  The client's stream window (4 KiB) lets one
# DATA frame through and leaves most of its 64 KiB connection window for the
# calls that follow on the same connection.
STALL_COUNT, STALL_SIZE = 256, 64 * KiB
STALL_WINDOW = 4 * KiB

STALLED = "feedguard_client_stalled_streams_total"
WRITE_TIMEOUTS = "feedguard_client_write_timeouts_total"


def small_window_client(addr, window):
    """A RawClient that never acknowledges DATA by itself and whose
    SETTINGS_INITIAL_WINDOW_SIZE <window> the peer has acknowledged (h2
    enforces a new local window only once it is acknowledged, so the test
    waits for that before asking for data)."""
    c = RawClient(addr, timeout=tf(10), ack_data=False)
    c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    c.flush()
    c.wait(lambda: c.conn.local_settings.initial_window_size == window, tf(5),
           "the peer to acknowledge SETTINGS_INITIAL_WINDOW_SIZE %d" % window)
    return c


def scrape(m, name, **labels):
    """One sample of daemon <m>'s /metrics (None when absent)."""
    _, text = ph.http_get(ph.admin_addr(m), "/metrics")
    return ph.metric(text, name, **labels)


def start_stalled(c, cid):
    """Ask for the big server stream on RawClient <c> (which must not
    acknowledge DATA); returns (its StreamResult, the request time)."""
    sid = c.request(method("ServerStream"), messages=[b""], metadata=[
        ("x-call-id", cid), ("x-count", str(STALL_COUNT)), ("x-size", str(STALL_SIZE))])
    return c.streams[sid], time.monotonic()


def wait_stall_end(c, st, since):
    """Pump <c> until stream <st> ends; returns the seconds between the last
    DATA it received (or <since>, if none came) and its end."""
    last_len, last_t = len(st.data), since
    limit = time.monotonic() + TIMEOUT + tf(5)
    while not st.finished:
        assert not c.closed, "the connection closed instead of the stalled stream being reset"
        assert time.monotonic() < limit, "stalled stream %d still open %.1fs after its last " \
            "DATA (%d bytes received)" % (st.stream_id, time.monotonic() - last_t, len(st.data))
        c.pump(0.01)
        if len(st.data) != last_len:
            last_len, last_t = len(st.data), time.monotonic()
    return st.end_time - last_t


def assert_reset_in_time(st, gap):
    """<st> ended with RST_STREAM(CANCEL), no trailers, between
    timeouts.stalled_stream and twice that (the sweep runs every timeout/4)
    after its last DATA."""
    assert st.reset == h2.errors.ErrorCodes.CANCEL, \
        "stalled stream ended with reset %r, frames %r" % (st.reset, st.frames[-3:])
    assert st.trailers is None, "a stalled stream got trailers: %r" % (st.trailers,)
    assert st.headers is not None, "no response headers before the reset"
    assert 0 < len(st.data) <= STALL_WINDOW, "%d DATA bytes on a %d-byte window" \
        % (len(st.data), STALL_WINDOW)
    # the daemon's clock starts when its write left, a moment before the
    # client read it: allow 50 ms below the timeout
    assert gap >= TIMEOUT - 0.05, "reset %.3fs after the last DATA: before the timeout" % gap
    assert gap <= TIMEOUT + tf(TIMEOUT), "reset %.3fs after the last DATA (timeouts.stalled_stream " \
        "%.1fs)" % (gap, TIMEOUT)


def unary_on(c, body):
    """A unary call on RawClient <c> (acknowledging its DATA); returns its
    StreamResult once ended."""
    c.ack_data = True
    sid = c.request(method("Unary"), messages=[body])
    st = c.streams[sid]
    c.wait(lambda: st.finished, tf(10), "the unary call on stream %d" % sid)
    return st


def assert_unary_ok(st, body):
    assert st.reset is None, "unary call reset (%r)" % st.reset
    assert st.status_headers().get("grpc-status") == "0", st.status_headers()
    assert st.messages == [body]


# ------------------------------------------------------------------ stalled stream

@pytest.mark.proxy_only
def test_stalled_stream_reset_and_connection_kept(middle, upstream):
    """A client that never sends WINDOW_UPDATE: its stream is reset with
    CANCEL between 1x and 2x timeouts.stalled_stream after its last DATA, the counter
    and the log say so, the connection stays open and a call on it works."""
    m = middle(upstream.addr, CONFIG)
    assert scrape(m, STALLED) == 0
    c = small_window_client(m.addr, STALL_WINDOW)
    try:
        st, t0 = start_stalled(c, new_call_id("stall"))
        gap = wait_stall_end(c, st, t0)
        assert_reset_in_time(st, gap)
        assert not c.closed and c.goaway is None, "the stall cost the whole connection"
        after = unary_on(c, b"after the stall")
        assert_unary_ok(after, b"after the stall")
        assert not c.closed and c.goaway is None
    finally:
        c.close()
    poll_until(lambda: scrape(m, STALLED) == 1, tf(2), "%s to be 1" % STALLED)
    assert "event=stalled_stream" in m.stderr()
    assert scrape(m, WRITE_TIMEOUTS) == 0
    # README: a reset counts as the code a gRPC client reads (CANCEL -> CANCELLED)
    poll_until(lambda: scrape(m, "feedguard_calls_total", method="other", code="CANCELLED") == 1,
               tf(2), "calls_total{code=CANCELLED} to be 1")


@pytest.mark.proxy_only
def test_dripping_reader_is_cut(middle, upstream):
    """A client that opens its stream (and connection) window by 16 bytes
    every timeouts.stalled_stream / 6 (slowloris): it moves, but far less
    than a DATA frame's worth (16 KiB) per timeout, so its stream is reset
    with CANCEL like one that never reads, within a few timeouts.  (Any
    byte taken used to count as progress: such a stream was never cut.)"""
    m = middle(upstream.addr, CONFIG)
    c = small_window_client(m.addr, STALL_WINDOW)
    try:
        st, t0 = start_stalled(c, new_call_id("drip"))
        limit = t0 + 6 * TIMEOUT + tf(5)
        drips, next_drip = 0, time.monotonic()
        while not st.finished:
            assert time.monotonic() < limit, "dripping reader still open after %.1fs, %d drips, %d bytes" \
                % (time.monotonic() - t0, drips, len(st.data))
            c.pump(0.01)
            if len(st.data) >= STALL_WINDOW and not st.finished and time.monotonic() >= next_drip:
                next_drip = time.monotonic() + TIMEOUT / 6
                c.conn.increment_flow_control_window(16, stream_id=st.stream_id)
                c.conn.increment_flow_control_window(16)
                c.flush()
                drips += 1
    finally:
        c.close()
    assert st.reset == h2.errors.ErrorCodes.CANCEL, st.reset
    assert drips >= 3, "the client never dripped (%d): the test tests nothing" % drips
    assert len(st.data) > STALL_WINDOW, "no drip was ever served: %d bytes" % len(st.data)
    poll_until(lambda: scrape(m, STALLED) == 1, tf(2), "%s to be 1" % STALLED)


@pytest.mark.proxy_only
def test_stalled_stream_cancelled_upstream(middle, upstream, events):
    """The upstream handler, blocked writing to the stalled stream, sees its
    call cancelled (RST_STREAM CANCEL from the daemon) and stops sending."""
    m = middle(upstream.addr, CONFIG)
    cid = new_call_id("stallup")
    c = small_window_client(m.addr, STALL_WINDOW)
    try:
        st, t0 = start_stalled(c, cid)
        events.wait(cid, "start", tf(5))
        wait_stall_end(c, st, t0)
        assert st.reset == h2.errors.ErrorCodes.CANCEL, st.frames[-3:]
        done = events.wait(cid, "done", tf(5))
    finally:
        c.close()
    assert done["cancelled"] is True, done
    sent = len(events.of(cid, "sent"))
    assert sent < STALL_COUNT, "the upstream sent all %d messages to a stalled stream" % sent


# ------------------------------------------------------------------ not stalls

def test_quiet_stream_not_reset(middle, upstream):
    """An upstream that says nothing for 3x the timeouts, before its first
    message and between messages: nothing is queued, so nothing is cut."""
    m = middle(upstream.addr, CONFIG)
    pause_ms = int(TIMEOUT * 3 * 1000)
    with channel(m.addr) as ch:
        t0 = time.monotonic()
        call = ch.unary_stream(method("ServerStream"))(b"", timeout=tf(30), metadata=[
            ("x-count", "3"), ("x-size", "1000"), ("x-sleep-ms", str(pause_ms)),
            ("x-interval-ms", str(pause_ms))])
        got = list(call)
        elapsed = time.monotonic() - t0
        assert call.code() == grpc.StatusCode.OK, call.details()
    assert got == [payload(1000, seed=i) for i in range(3)]
    assert elapsed >= 3 * pause_ms / 1000.0 - 0.05, "the upstream did not pause (%.2fs)" % elapsed
    if not m.direct:
        assert scrape(m, STALLED) == 0


def test_slow_reader_not_reset(middle, upstream):
    """A reader with a 16 KiB window that re-opens what it took every
    timeouts.stalled_stream / 3: the 256 KiB call takes several timeouts and ends OK
    with every byte."""
    m = middle(upstream.addr, CONFIG)
    count, size, window, every = 8, 32 * KiB, 16 * KiB, TIMEOUT / 3
    c = small_window_client(m.addr, window)
    try:
        sid = c.request(method("ServerStream"), messages=[b""], metadata=[
            ("x-count", str(count)), ("x-size", str(size))])
        st = c.streams[sid]
        t0 = time.monotonic()
        limit = t0 + tf(30)
        grants = 0
        next_grant = t0 + every
        while not st.finished:
            assert not c.closed, "connection closed after %d bytes" % len(st.data)
            assert time.monotonic() < limit, "slow reader: %d of %d bytes after %.0fs" \
                % (len(st.data), count * (size + 5), tf(30))
            c.pump(max(0.0, next_grant - time.monotonic()))
            now = time.monotonic()
            if now < next_grant or st.finished:
                continue
            next_grant = now + every
            taken = c.unacked.pop(sid, 0)
            if taken:
                c.conn.increment_flow_control_window(taken, stream_id=sid)
                c.conn.increment_flow_control_window(taken)
                c.flush()
                grants += 1
        elapsed = time.monotonic() - t0
    finally:
        c.close()
    assert st.reset is None, "slow reader reset (%r) after %d bytes, %.2fs" \
        % (st.reset, len(st.data), time.monotonic() - t0)
    assert st.status_headers().get("grpc-status") == "0", st.status_headers()
    assert st.messages == [payload(size, seed=i) for i in range(count)]
    assert elapsed > 2 * TIMEOUT and grants >= 8, "the call was not slow (%.2fs, %d grants)" \
        % (elapsed, grants)
    if not m.direct:
        assert scrape(m, STALLED) == 0


# ------------------------------------------------------------------ write timeout

def open_non_reader(addr, rcvbuf):
    """A socket to <addr> with SO_RCVBUF <rcvbuf> (set before connect, so the
    TCP window is small from the start) and an h2 client session that grants
    the largest windows (RFC 9113 §6.9.1: 2^31-1): only the socket holds the
    daemon back."""
    host, port = addr.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(tf(10))
    s.connect((host, int(port)))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    max_window = 2 ** 31 - 1
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: max_window})
    conn.increment_flow_control_window(max_window - 65535)
    return s, conn


def ask_for_big_responses(s, conn, addr, streams):
    """Send <streams> ServerStream requests of 8 x 1 MiB each on <conn>:
    far more than the kernel buffers on loopback (tcp_wmem max is 4 MiB)."""
    for _ in range(streams):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                (":path", method("ServerStream")), (":authority", addr),
                                ("content-type", "application/grpc"), ("te", "trailers"),
                                ("x-count", "8"), ("x-size", str(1 * MiB))])
        conn.send_data(sid, grpc_frame(b""), end_stream=True)
    s.sendall(conn.data_to_send())


def drain_until_eof(s, conn, timeout):
    """Read <s> until the peer closes it; returns (closed, ended) where ended
    is the number of response streams that ended (END_STREAM or reset)."""
    ended = 0
    limit = time.monotonic() + timeout
    s.settimeout(0.2)
    while time.monotonic() < limit:
        try:
            data = s.recv(1 << 20)
        except socket.timeout:
            continue
        except OSError:
            return True, ended
        if not data:
            return True, ended
        try:
            for ev in conn.receive_data(data):
                if isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    ended += 1
                elif isinstance(ev, h2.events.DataReceived) and ev.flow_controlled_length:
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        except h2.exceptions.ProtocolError:
            pass
        # what we owe the peer (acks) is irrelevant now: never block on it
        conn.data_to_send()
    return False, ended


@pytest.mark.proxy_only
def test_client_that_stops_reading_loses_connection(middle, upstream):
    """A client with a 4 KiB SO_RCVBUF asks for 4 x 8 MiB with open HTTP/2
    windows and never reads its socket: the daemon's socket accepts nothing
    more, and after timeouts.write the daemon closes the connection."""
    m = middle(upstream.addr, CONFIG)
    assert scrape(m, WRITE_TIMEOUTS) == 0
    s, conn = open_non_reader(m.addr, 4 * KiB)
    streams = 4
    try:
        ask_for_big_responses(s, conn, m.addr, streams)
        t0 = time.monotonic()
        poll_until(lambda: scrape(m, WRITE_TIMEOUTS) == 1, TIMEOUT + tf(5),
                   "%s to be 1" % WRITE_TIMEOUTS)
        elapsed = time.monotonic() - t0
        assert elapsed >= TIMEOUT - 0.05, "write timeout %.3fs after the requests" % elapsed
        poll_until(lambda: scrape(m, "feedguard_client_connections") == 0, tf(2),
                   "feedguard_client_connections to drop to 0")
        closed, ended = drain_until_eof(s, conn, tf(10))
    finally:
        s.close()
    assert closed, "the daemon counted a write timeout but the connection stayed open"
    assert ended < streams, "all %d responses completed: nothing was cut" % streams


@pytest.mark.proxy_only
def test_busy_socket_streams_not_cut(middle, upstream):
    """64 streams share a socket the client drains at about 2 MB/s with
    every HTTP/2 window open.  8 MiB in all: once the kernel's buffers are
    full (up to 4 MiB on loopback) the daemon's queues hold the rest, and
    each stream waits its turn for a 16 KiB frame about half a second,
    longer than timeouts.write; but the client refuses nothing (its windows
    are open) and its socket keeps taking bytes, so neither the stream
    check nor the write timeout may cut anything."""
    m = middle(upstream.addr, CONFIG)
    s, conn = open_non_reader(m.addr, 64 * KiB)
    streams, count, size = 64, 2, 64 * KiB
    sids = []
    for _ in range(streams):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                (":path", method("ServerStream")), (":authority", m.addr),
                                ("content-type", "application/grpc"), ("te", "trailers"),
                                ("x-count", str(count)), ("x-size", str(size))])
        conn.send_data(sid, grpc_frame(b""), end_stream=True)
        sids.append(sid)
    s.sendall(conn.data_to_send())
    body = {sid: bytearray() for sid in sids}
    status, resets = {}, []
    t0 = time.monotonic()
    limit = t0 + tf(60)
    s.settimeout(tf(5))
    try:
        while len(status) + len(resets) < streams:
            assert time.monotonic() < limit, "busy socket: %d of %d streams ended" % (
                len(status) + len(resets), streams)
            got = 0
            while got < 200 * KiB and len(status) + len(resets) < streams:
                data = s.recv(16 * KiB)
                assert data, "the daemon closed the connection of a reading client"
                got += len(data)
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived):
                        body[ev.stream_id] += ev.data
                        if ev.flow_controlled_length:
                            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.TrailersReceived):
                        status[ev.stream_id] = dict(
                            (k.decode() if isinstance(k, bytes) else k,
                             v.decode() if isinstance(v, bytes) else v)
                            for k, v in ev.headers).get("grpc-status")
                    elif isinstance(ev, h2.events.StreamReset):
                        resets.append((ev.stream_id, ev.error_code))
            out = conn.data_to_send()
            if out:
                s.sendall(out)
            time.sleep(0.1)
    finally:
        s.close()
    elapsed = time.monotonic() - t0
    assert not resets, "streams reset after %.2fs: %r" % (elapsed, resets)
    assert all(status[sid] == "0" for sid in sids), status
    want = b"".join(grpc_frame(payload(size, seed=i)) for i in range(count))
    assert all(bytes(body[sid]) == want for sid in sids), "a stream lost bytes"
    assert scrape(m, STALLED) == 0
    assert scrape(m, WRITE_TIMEOUTS) == 0


# ------------------------------------------------------------------ config

def config_error(path, stderr):
    """(line, column) of the '<path>:LINE:COLUMN: message' line in <stderr>."""
    for line in stderr.splitlines():
        if line.strip().startswith("%s:" % path):
            rest = line.strip()[len(str(path)) + 1:].split(":", 2)
            if len(rest) == 3 and rest[0].isdigit() and rest[1].isdigit():
                return int(rest[0]), int(rest[1])
    raise AssertionError("no '%s:LINE:COLUMN: message' line in:\n%s" % (path, stderr))


CHECK_LINES = ["listen: 127.0.0.1:0",
               "upstream:",
               "  address: 127.0.0.1:50051",
               "timeouts:",
               "  idle: 5m",
               "  write: %s"]


@pytest.mark.proxy_only
@pytest.mark.parametrize("value", ["300ms", "1.5s", "30s"])
def test_check_accepts_write_timeout(tmp_path, value):
    path = tmp_path / "feedguard.yaml"
    path.write_text("\n".join(CHECK_LINES) % value + "\n")
    res = run_feedguardd(["-t", "-c", str(path)])
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")


@pytest.mark.proxy_only
@pytest.mark.parametrize("value", ["0s", "abc", "300", "-1s"])
def test_check_rejects_bad_write_timeout(tmp_path, value):
    """-t: exit 1 and file:line:column at the value."""
    path = tmp_path / "feedguard.yaml"
    path.write_text("\n".join(CHECK_LINES) % value + "\n")
    res = run_feedguardd(["-t", "-c", str(path)])
    err = res.stderr.decode("utf-8", "replace")
    assert res.returncode == 1, "timeouts.write %r accepted:\n%s" % (value, err)
    assert config_error(path, err) == (len(CHECK_LINES), CHECK_LINES[-1].index("%s") + 1), err


@pytest.mark.proxy_only
def test_start_rejects_bad_write_timeout(tmp_path, upstream):
    """A real start (not -t) with timeouts.write 0s exits 1 with the position."""
    d = Daemon(tmp_path, upstream.addr, {"timeouts": {"write": "0s"}})
    with pytest.raises(AssertionError) as e:
        d.start()
    assert d.proc.returncode == 1
    lines = d.config_path.read_text().splitlines()
    at = next(i for i, l in enumerate(lines) if l.strip() == "write: 0s")
    assert "%s:%d:%d:" % (d.config_path, at + 1, lines[at].index("0s") + 1) in str(e.value), \
        str(e.value)


@pytest.mark.proxy_only
def test_stalled_stream_reload(middle, upstream):
    """Start with timeouts.stalled_stream 30s and a connection; SIGHUP to
    300ms: the connection stays, and a new stall on it is reset after
    300 ms.  A bad value on the next SIGHUP is refused with its position and
    300ms stays."""
    m = middle(upstream.addr, deep_merge(CONFIG, {"timeouts": {"stalled_stream": "30s"}}))
    c = small_window_client(m.addr, STALL_WINDOW)
    try:
        assert_unary_ok(unary_on(c, b"before"), b"before")
        c.ack_data = False
        m.config = deep_merge(m.config, {"timeouts": {"stalled_stream": "300ms"}})
        m.config_path.write_text(to_yaml(m.config))
        ph.sighup_and_wait(m, "reloaded", len(m.stderr()))

        st, t0 = start_stalled(c, new_call_id("reload-stall"))
        assert_reset_in_time(st, wait_stall_end(c, st, t0))
        assert not c.closed and c.goaway is None

        m.config = deep_merge(m.config, {"timeouts": {"stalled_stream": "abc"}})
        m.config_path.write_text(to_yaml(m.config))
        line = ph.sighup_and_wait(m, "reload_failed", len(m.stderr()))
        lines = m.config_path.read_text().splitlines()
        at = next(i for i, l in enumerate(lines) if l.strip() == "stalled_stream: abc")
        assert "%s:%d:%d:" % (m.config_path, at + 1, lines[at].index("abc") + 1) in line, line

        st, t0 = start_stalled(c, new_call_id("reload-stall-2"))
        assert_reset_in_time(st, wait_stall_end(c, st, t0))
        assert_unary_ok(unary_on(c, b"after"), b"after")
        assert not c.closed and c.goaway is None
    finally:
        c.close()
    assert scrape(m, "feedguard_client_connections_accepted_total") == 1
    assert scrape(m, STALLED) == 2


@pytest.mark.proxy_only
def test_write_timeout_leaves_window_stalls_alone(middle, upstream):
    """The two timeouts are separate: with only timeouts.write at 300 ms
    (timeouts.stalled_stream at its 5m default), a client whose window is
    shut but whose socket takes every frame keeps its stream well past
    300 ms; a consumer of a server stream may pause that long."""
    m = middle(upstream.addr, {"timeouts": {"write": "300ms"}, "admin": {"listen": "127.0.0.1:0"}})
    c = small_window_client(m.addr, STALL_WINDOW)
    try:
        st, t0 = start_stalled(c, new_call_id("no-stall"))
        end = time.monotonic() + 5 * TIMEOUT
        while time.monotonic() < end:
            c.pump(0.05)
        assert st.reset is None and not st.finished, "a window stall was cut by timeouts.write"
        assert not c.closed and c.goaway is None
    finally:
        c.close()
    assert scrape(m, STALLED) == 0
    assert scrape(m, WRITE_TIMEOUTS) == 0


@pytest.mark.proxy_only
def test_write_timeout_reload_applies_to_open_connection(middle, upstream):
    """A connection accepted under timeouts.write 30s; SIGHUP to 300ms; then
    the client asks for big responses and stops reading: the new value
    applies (README: everything but listen, workers, admin.listen and
    metrics.methods takes effect on reload), so the daemon closes it within
    seconds, not after 30 s."""
    m = middle(upstream.addr, deep_merge(CONFIG, {"timeouts": {"write": "30s"}}))
    s, conn = open_non_reader(m.addr, 4 * KiB)
    try:
        poll_until(lambda: scrape(m, "feedguard_client_connections") == 1, tf(2),
                   "the daemon to count the connection")
        m.config = deep_merge(m.config, {"timeouts": {"write": "300ms"}})
        m.config_path.write_text(to_yaml(m.config))
        ph.sighup_and_wait(m, "reloaded", len(m.stderr()))
        ask_for_big_responses(s, conn, m.addr, 4)
        poll_until(lambda: scrape(m, WRITE_TIMEOUTS) == 1, TIMEOUT + tf(5),
                   "%s to be 1 on a connection opened before the reload" % WRITE_TIMEOUTS)
    finally:
        s.close()



@pytest.mark.proxy_only
def test_heap_memory_goes_back_after_a_burst_of_large_headers(middle):
    """400 streams with 60 KiB of request headers each (HPACK-indexed, a
    few bytes a stream on the wire) to an upstream that never answers (it
    never even reads), then the client goes.  The freed header buffers are
    small ones in the heaps, which free() does not give back; feedguardd's
    trim (every 10 s when 8 MiB or more are free there) returns them: RSS
    back within 8 MiB of where it started within two trims, from 16 MiB
    and more above it (a hostile run left 116 MB behind before)."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(8)                              # connects complete in the kernel; nothing reads
    try:
        m = middle("127.0.0.1:%d" % dead.getsockname()[1], {})
        if harness.rss_factor(m.pid) > 1:
            pytest.skip("AddressSanitizer keeps freed memory in its quarantine")
        before = harness.rss_kib(m.pid)
        pad = [("x-pad", "v" * 3900)] * 15
        c = RawClient(m.addr, timeout=tf(10))
        try:
            for i in range(400):
                c.request(method("Unary"), metadata=pad, messages=[b"x"])
                if i % 50 == 49:
                    c.pump(0)
            poll_until(lambda: c.pump(0.05) or harness.rss_kib(m.pid) > before + 16 * 1024, tf(10),
                       "the streams' headers to take room (RSS %d KiB, started %d)"
                       % (harness.rss_kib(m.pid), before))
        finally:
            c.close()
        poll_until(lambda: harness.rss_kib(m.pid) <= before + 8 * 1024, tf(25),
                   "RSS back within 8 MiB of %d KiB after the streams went (now %d KiB)"
                   % (before, harness.rss_kib(m.pid)))
    finally:
        dead.close()


# ------------------------------------------------------------------ log output

REFUSED_CONNECTIONS = "feedguard_client_connections_refused_total"


def refused_lines(m):
    return [l for l in m.stderr().splitlines() if "event=connection_refused" in l]


@pytest.mark.proxy_only
def test_refused_connections_are_logged_once_a_second(middle, upstream):
    """A client that reconnects in a loop past limits.max_connections: each
    connection is closed and counted, but the log gets one
    connection_refused line a second per worker (README, Logs), and the
    next line says how many it left out: a client cannot make feedguardd
    write a line per connection it opens."""
    m = middle(upstream.addr, deep_merge(CONFIG, {"workers": 1, "limits": {"max_connections": 1}}))
    keep = RawClient(m.addr, timeout=tf(10))
    try:
        assert_unary_ok(unary_on(keep, b"the one connection allowed"), b"the one connection allowed")
        host, port = m.addr.rsplit(":", 1)
        t0 = time.monotonic()
        for _ in range(300):
            socket.create_connection((host, int(port)), timeout=tf(5)).close()
        poll_until(lambda: scrape(m, REFUSED_CONNECTIONS) == 300, tf(5),
                   "%s to reach 300 (now %s)" % (REFUSED_CONNECTIONS, scrape(m, REFUSED_CONNECTIONS)))
        spent = time.monotonic() - t0
        lines = refused_lines(m)
        assert 1 <= len(lines) <= 2 + int(spent), "%d connection_refused lines for 300 refused connections " \
            "in %.1f s: at most one a second" % (len(lines), spent)
        assert "unlogged=0" in lines[0], lines[0]
        # a second later, the next refusal is logged with the count left out
        n = 300
        while len(refused_lines(m)) == len(lines):
            assert time.monotonic() - t0 < spent + tf(5), "no second connection_refused line"
            socket.create_connection((host, int(port)), timeout=tf(5)).close()
            n += 1
            poll_until(lambda: scrape(m, REFUSED_CONNECTIONS) == n, tf(5), "refusal %d counted" % n)
        lines = refused_lines(m)
        unlogged = [int(l.split("unlogged=")[1].split()[0]) for l in lines]
        assert unlogged[-1] > 0 and len(lines) + sum(unlogged) == n, "%d refusals, %d lines saying unlogged=%s: " \
            "every refusal is either logged or counted in the next line" % (n, len(lines), unlogged)
    finally:
        keep.close()


# ------------------------------------------------------------------ memory

# What a pass-through stream holds besides its window: the call, both
# HTTP/2 sessions' stream state and the header lists' copies and arrays
# (README, "Memory": 10 to 12 KiB of RSS a stream measured with jemalloc,
# 7 to 8 on glibc; 16 KiB leaves room for a slow spell's allocator state).
STREAM_BOOKKEEPING = 16 * KiB
OUTPUT_MAX = 144 * KiB             # a connection's unsent output (README)


def open_never_reader(addr, streams, count, size):
    """A connection whose client grants the largest windows and never reads
    its socket (4 KiB SO_RCVBUF), with <streams> ServerStream calls of
    <count> x <size> each."""
    s, conn = open_non_reader(addr, 4 * KiB)
    for _ in range(streams):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                (":path", method("ServerStream")), (":authority", addr),
                                ("content-type", "application/grpc"), ("te", "trailers"),
                                ("x-count", str(count)), ("x-size", str(size))])
        conn.send_data(sid, grpc_frame(b""), end_stream=True)
    s.sendall(conn.data_to_send())
    return s


@pytest.mark.proxy_only
def test_pass_through_clients_that_never_read_hold_their_windows(middle, upstream):
    """Three connections of 100 pass-through streams, each asking for 4 MiB
    that its client never reads: each stream holds what its upstream
    window (64 KiB here) let through and its bookkeeping, the connection
    its output: S x (W + bookkeeping) + output per connection.  An attack
    run measured 1.13 times S x W + output alone, which the README did not
    say."""
    conns, streams, window = 3, 100, 64 * KiB
    m = middle(upstream.addr, {"limits": {"stream_window": "64KiB", "max_concurrent_streams": streams},
                               "timeouts": {"stalled_stream": "60s", "write": "60s"}})
    factor = harness.rss_factor(m.pid)
    before = harness.settled_rss(m.pid)
    socks = []
    try:
        socks = [open_never_reader(m.addr, streams, 64, 64 * KiB) for _ in range(conns)]
        windows = conns * streams * window // KiB
        poll_until(lambda: harness.rss_kib(m.pid) - before >= windows * 9 // 10, tf(20),
                   "the streams to fill their windows (%d KiB)" % windows)
        grown = harness.settled_rss(m.pid, timeout=20) - before
        bound = conns * (streams * (window + STREAM_BOOKKEEPING) + OUTPUT_MAX) // KiB
        assert grown <= bound * factor, "grew %d KiB for %d KiB of windows: over the bound %d KiB" \
            % (grown, windows, bound)
    finally:
        for s in socks:
            s.close()
