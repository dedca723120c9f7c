"""Raw HTTP/2 (python3-h2) peers for what grpcio cannot do on purpose:

RawClient    a gRPC client that never gives up, never sends WINDOW_UPDATE,
             or shows the frames of a response (trailers-only or not).
RawUpstream  a tiny h2c server in threads that refuses, resets or ignores
             streams, and records what its peer did to them.
"""
import select
import socket
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from fgcommon import grpc_frame, grpc_unframe

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _split(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def headers_dict(headers):
    """h2 header list (bytes) -> {str: str}, last value wins."""
    out = {}
    for k, v in headers or ():
        k = k.decode() if isinstance(k, bytes) else k
        v = v.decode("latin-1") if isinstance(v, bytes) else v
        out[k] = v
    return out


class StreamResult:
    """Everything one stream of a RawClient received, in order."""

    def __init__(self, stream_id):
        self.stream_id = stream_id
        self.frames = []          # ("headers", hdrs, end_stream) / ("data", n) / ("reset", code)
        self.headers = None       # first HEADERS block
        self.trailers = None      # second HEADERS block (or None)
        self.data = b""
        self.ended = False        # END_STREAM seen
        self.reset = None         # RST_STREAM error code, if any
        self.end_time = None

    @property
    def messages(self):
        return grpc_unframe(self.data)[0]

    @property
    def finished(self):
        return self.ended or self.reset is not None

    def status_headers(self):
        """The block that carries grpc-status (trailers, or trailers-only headers)."""
        if self.trailers is not None:
            return headers_dict(self.trailers)
        if self.headers is not None and self.ended:
            return headers_dict(self.headers)
        return {}


class RawClient:
    """A gRPC-over-h2c client driven by hand.  Not thread-safe: one test
    thread drives it with pump()/wait()."""

    def __init__(self, addr, timeout=5.0, ack_data=True):
        self.addr = addr
        self.sock = socket.create_connection(_split(addr), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.ack_data = ack_data
        self.streams = {}
        self.closed = False
        self.goaway = None
        self.received_bytes = 0   # DATA payload bytes received, all streams
        self.unacked = {}         # stream id -> flow-controlled bytes not acknowledged
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data):
        self.sock.sendall(data)

    def request(self, path, metadata=(), messages=(), end_stream=True, authority=None):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", "POST"), (":scheme", "http"), (":path", path),
                (":authority", authority or self.addr),
                ("content-type", "application/grpc"), ("te", "trailers")]
        hdrs += list(metadata)
        messages = list(messages)
        self.conn.send_headers(sid, hdrs, end_stream=end_stream and not messages)
        for i, m in enumerate(messages):
            self.conn.send_data(sid, grpc_frame(m),
                                end_stream=end_stream and i == len(messages) - 1)
        self.streams[sid] = StreamResult(sid)
        self.flush()
        return sid

    def open_windows(self):
        """Start acknowledging DATA (WINDOW_UPDATE), including what was held."""
        self.ack_data = True
        for sid, n in self.unacked.items():
            if n and not self.streams[sid].finished:
                self.conn.acknowledge_received_data(n, sid)
        self.unacked = {}
        self.flush()

    def cancel(self, sid):
        self.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        self.flush()

    def pump(self, timeout):
        """Read what arrives within <timeout> s (one recv) and process it."""
        if self.closed:
            return
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not r:
            return
        try:
            data = self.sock.recv(1 << 20)
        except (ConnectionResetError, OSError):
            data = b""
        if not data:
            self.closed = True
            return
        for ev in self.conn.receive_data(data):
            self._event(ev)
        self.flush()

    def _event(self, ev):
        sid = getattr(ev, "stream_id", None)
        st = self.streams.get(sid)
        if isinstance(ev, h2.events.ResponseReceived):
            st.headers = ev.headers
            st.frames.append(("headers", ev.headers, bool(ev.stream_ended)))
        elif isinstance(ev, h2.events.TrailersReceived):
            st.trailers = ev.headers
            st.frames.append(("headers", ev.headers, True))
        elif isinstance(ev, h2.events.DataReceived):
            st.data += ev.data
            self.received_bytes += len(ev.data)
            st.frames.append(("data", len(ev.data)))
            if ev.flow_controlled_length:
                if self.ack_data:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                else:
                    self.unacked[sid] = self.unacked.get(sid, 0) + ev.flow_controlled_length
        elif isinstance(ev, h2.events.StreamEnded):
            st.ended = True
            st.end_time = time.monotonic()
        elif isinstance(ev, h2.events.StreamReset):
            if st is not None:
                st.reset = ev.error_code
                st.frames.append(("reset", ev.error_code))
                st.end_time = time.monotonic()
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev.error_code

    def wait(self, pred, timeout, what="condition"):
        """pump() until pred() is true; AssertionError after <timeout> s."""
        limit = time.monotonic() + timeout
        while not pred():
            left = limit - time.monotonic()
            if left <= 0:
                raise AssertionError("raw h2 client: timed out after %.1fs waiting for %s"
                                     % (timeout, what))
            if self.closed:
                raise AssertionError("raw h2 client: connection closed while waiting for %s"
                                     % what)
            self.pump(min(left, 0.1))
        return True

    def wait_closed(self, timeout):
        """True once the peer closed the TCP connection (within <timeout> s)."""
        limit = time.monotonic() + timeout
        while not self.closed and time.monotonic() < limit:
            r, _, _ = select.select([self.sock], [], [], 0.1)
            if r:
                try:
                    data = self.sock.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    self.closed = True
        return self.closed

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class RawUpstream:
    """h2c server in threads.  Per stream, in the order asked by the request
    header x-raw-mode (or the server's default <mode>):

      refuse   answer HEADERS with RST_STREAM(REFUSED_STREAM)
      hang     never answer
      reset    send response headers and one message ("first"), then
               RST_STREAM(INTERNAL_ERROR) once release() is called

    events: list of (kind, stream_id, info, time) with kind in request,
    reset_by_peer, data, goaway, conn_closed.
    """

    def __init__(self, mode="hang"):
        self.mode = mode
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.events = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.released = threading.Event()
        self.threads = []
        self.conns = []
        t = threading.Thread(target=self._accept, name="rawh2-accept", daemon=True)
        t.start()
        self.threads.append(t)

    def record(self, kind, sid, info=None):
        with self.lock:
            self.events.append((kind, sid, info, time.monotonic()))

    def find(self, kind):
        with self.lock:
            return [e for e in self.events if e[0] == kind]

    def release(self):
        self.released.set()

    def _accept(self):
        while not self.stop_flag.is_set():
            r, _, _ = select.select([self.lsock], [], [], 0.05)
            if not r:
                continue
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.conns.append(c)
            t = threading.Thread(target=self._serve, args=(c,), name="rawh2-conn", daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, sock):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        pending_reset = []
        try:
            sock.sendall(conn.data_to_send())
            while not self.stop_flag.is_set():
                if pending_reset and self.released.is_set():
                    for sid in pending_reset:
                        try:
                            conn.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
                        except h2.exceptions.StreamClosedError:
                            pass
                    pending_reset = []
                    sock.sendall(conn.data_to_send())
                r, _, _ = select.select([sock], [], [], 0.02)
                if not r:
                    continue
                data = sock.recv(1 << 16)
                if not data:
                    self.record("conn_closed", None)
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        hd = headers_dict(ev.headers)
                        self.record("request", ev.stream_id, hd)
                        mode = hd.get("x-raw-mode", self.mode)
                        if mode == "refuse":
                            conn.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                        elif mode == "reset":
                            conn.send_headers(ev.stream_id, [(":status", "200"),
                                                             ("content-type", "application/grpc")])
                            conn.send_data(ev.stream_id, grpc_frame(b"first"))
                            pending_reset.append(ev.stream_id)
                    elif isinstance(ev, h2.events.DataReceived):
                        self.record("data", ev.stream_id, len(ev.data))
                        if ev.flow_controlled_length:
                            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamReset):
                        self.record("reset_by_peer", ev.stream_id, ev.error_code)
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        self.record("goaway", None, ev.error_code)
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
        except (OSError, h2.exceptions.ProtocolError) as e:
            self.record("conn_closed", None, repr(e))
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def close(self):
        self.stop_flag.set()
        for t in list(self.threads):
            t.join(timeout=5)
        try:
            self.lsock.close()
        except OSError:
            pass
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
