"""Helpers of the policy tests (test_policy.py): the reference contract's
message classes, a wire-level protobuf reader/writer, the demo ranker as a
subprocess, a raw HTTP/2 upstream that shows every header and frame byte,
policy files, the admin endpoint.

Environment: FG_RANKING_PB (the build's proto/ranking.pb; make check sets
it), FEEDGUARDD and the rest as in conftest.py.
"""
import base64
import gzip
import importlib.util
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions

import harness
from harness import PYTHON, SRCDIR, Events, poll_until, spawn_serving, tail, tf

SERVICE = "feedguard.ranking.v1.Ranker"
RANK = "/%s/RankFeed" % SERVICE
STREAM = "/%s/StreamFeed" % SERVICE
RANKER_PY = SRCDIR / "contrib" / "demo-ranker" / "ranker.py"
DEMO_POLICY = SRCDIR / "policies" / "demo.yaml"
CHILD_BANDS = ("under_13", "13_15", "16_17")


def ranking_pb():
    """The reference contract's descriptor set: $FG_RANKING_PB (set by make
    check), else the one a build in the source tree made."""
    for p in (os.environ.get("FG_RANKING_PB"), SRCDIR / "proto" / "ranking.pb",
              SRCDIR / "build" / "proto" / "ranking.pb"):
        if p and os.path.isfile(p):
            return Path(p)
    raise AssertionError("no ranking.pb: set FG_RANKING_PB to the build's proto/ranking.pb")


# ---------------------------------------------------------------- messages

_CLASSES = {}


def messages():
    """{name: class} for RankFeedRequest, RankFeedResponse, FeedItem, built at
    run time from the descriptor set (no generated code) by the demo
    ranker's own loader."""
    if not _CLASSES:
        _CLASSES.update(load_ranker_module().load_messages(str(ranking_pb())))
    return _CLASSES

def profiled_request(user_id="user-8a41c2", age_band="13_15"):
    """A RankFeedRequest with every kind of field set: what a ranking client
    sends for a viewer with a rich behavioural profile."""
    r = messages()["RankFeedRequest"]()
    r.user.user_id = user_id
    r.user.age_band = age_band
    r.user.account_age_days = 400
    r.context.surface = 1
    r.context.locale = "en-GB"
    r.context.time_zone = "Europe/London"
    r.context.geo.latitude = 51.507351
    r.context.geo.longitude = -0.127758
    r.context.geo.accuracy_m = 12
    r.context.geo.city = "London"
    for i, (item, ms) in enumerate(((1007, 340000), (1019, 610000), (1023, 95000))):
        w = r.signals.watch_history.add()
        w.item_id, w.watch_ms = item, ms
        w.ts.seconds = 1700000000 + i
    e = r.signals.engagement_events.add()
    e.item_id, e.kind = 1019, 1
    e.ts.seconds = 1700000100
    r.signals.inferred_interests.extend(["dieting", "gaming"])
    r.signals.search_history.extend(["how to lose weight fast", "speedrun", "dog videos"])
    r.signals.advertising_id = "ad-3f9e-11aa"
    r.signals.device_fingerprint = "fp-77d0"
    r.signals.social_graph.extend(["u-1", "u-2", "u-3"])
    r.signals.features["affinity.fitness"] = 0.9
    r.signals.features["affinity.gaming"] = 0.4
    r.signals.features["session_depth"] = 3.0
    r.page_size = 6
    r.page_token = "o0"
    r.recently_shown_ids.extend([1001, 1002])
    return r


def parse(name, data):
    m = messages()[name]()
    m.ParseFromString(data)
    return m


# ---------------------------------------------------------------- wire format

VARINT, I64, LEN, I32 = 0, 1, 2, 5


def varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(num, wt):
    return varint((num << 3) | wt)


def f_varint(num, v):
    return tag(num, VARINT) + varint(v)


def f_len(num, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return tag(num, LEN) + varint(len(payload)) + payload


def f_double(num, x):
    return tag(num, I64) + struct.pack("<d", x)


def f_float(num, x):
    return tag(num, I32) + struct.pack("<f", x)


def _read_varint(buf, i):
    shift = v = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i
        if shift > 63:
            raise ValueError("varint too long")


def fields(buf):
    """The top-level fields of message <buf> in wire order, as
    (number, wire type, value, raw bytes of the whole field); value is an int
    for varints, the payload bytes otherwise."""
    out = []
    i = 0
    while i < len(buf):
        start = i
        key, i = _read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == VARINT:
            val, i = _read_varint(buf, i)
        elif wt == I64:
            val, i = buf[i:i + 8], i + 8
        elif wt == I32:
            val, i = buf[i:i + 4], i + 4
        elif wt == LEN:
            n, i = _read_varint(buf, i)
            val, i = buf[i:i + n], i + n
        else:
            raise ValueError("wire type %d" % wt)
        if i > len(buf):
            raise ValueError("truncated field %d" % num)
        out.append((num, wt, val, buf[start:i]))
    return out


def numbers(buf):
    """Field numbers present in <buf>, in wire order (repeats kept)."""
    return [f[0] for f in fields(buf)]


def values(buf, num):
    return [f[2] for f in fields(buf) if f[0] == num]


def one(buf, num):
    """The payload of the last occurrence of field <num> (None if absent)."""
    v = values(buf, num)
    return v[-1] if v else None


def at(buf, *path):
    """The payload of nested field <path> (numbers), or None."""
    for num in path:
        if buf is None:
            return None
        buf = one(buf, num)
    return buf


def drop(buf, *nums):
    """<buf> without fields <nums>, every other byte as it was."""
    return b"".join(f[3] for f in fields(buf) if f[0] not in nums)


def double_of(raw):
    return struct.unpack("<d", raw)[0]


def gunzip_frame(flag, payload):
    return gzip.decompress(payload) if flag == 1 else payload


# ---------------------------------------------------------------- grpc calls

def call_id(prefix="pol"):
    return harness.new_call_id(prefix)


def md(band=None, cid=None, extra=()):
    """Metadata for a call: x-call-id (to find its record at the ranker) and
    x-age-band (omitted when <band> is None)."""
    out = [("x-call-id", cid or call_id())]
    if band is not None:
        out.append(("x-age-band", band))
    return out + list(extra)


def unary(addr, method, body, metadata=(), compression=None, timeout=None):
    """One unary call with raw request bytes; returns (response bytes, call).
    Raises grpc.RpcError on a non-OK status."""
    with harness.channel(addr) as ch:
        f = ch.unary_unary(method)        # no (de)serializers: bytes both ways
        resp, c = f.with_call(body, metadata=list(metadata), compression=compression,
                              timeout=timeout or tf(10))
        return resp, c


def unary_error(addr, method, body, metadata=(), compression=None):
    """A unary call that must fail: returns the grpc.RpcError."""
    try:
        resp, _ = unary(addr, method, body, metadata, compression)
    except grpc.RpcError as e:
        return e
    raise AssertionError("the call succeeded (%d response bytes); an error was expected" % len(resp))


def stream(addr, method, body, metadata=()):
    """A server-streaming call; returns the list of raw response messages."""
    with harness.channel(addr) as ch:
        f = ch.unary_stream(method)
        return list(f(body, metadata=list(metadata), timeout=tf(10)))


# ---------------------------------------------------------------- the ranker

class Ranker:
    """contrib/demo-ranker/ranker.py as a subprocess with --record."""

    START_TIMEOUT = 30.0

    def __init__(self, workdir, name="ranker"):
        self.workdir = Path(workdir)
        self.record_path = self.workdir / ("%s-record.jsonl" % name)
        self.stderr_path = self.workdir / ("%s.stderr" % name)
        self.proc = None
        self.port = None
        self._record_reader = Events(self.record_path)

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        cmd = [PYTHON, str(RANKER_PY), "--port", "0", "--descriptor-set", str(ranking_pb()),
               "--record", str(self.record_path)]
        self.proc, self.port = spawn_serving(cmd, self.stderr_path, self.START_TIMEOUT, "the demo ranker")
        return self

    def records(self):
        return self._record_reader.all()

    def find(self, cid):
        return [r for r in self.records() if ["x-call-id", cid] in r["metadata"]]

    def wait(self, cid, timeout=None):
        """The record of call <cid>, with .raw (request bytes) and .md (dict)."""
        rec = poll_until(lambda: self.find(cid), timeout or tf(5),
                         "the ranker's record of call %s" % cid)
        assert len(rec) == 1, "the ranker saw call %s %d times" % (cid, len(rec))
        rec = dict(rec[0])
        rec["raw"] = base64.b64decode(rec["request_b64"])
        rec["md"] = {}
        for k, v in rec["metadata"]:
            rec["md"].setdefault(k, []).append(v)
        return rec

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc = None


def load_ranker_module():
    """contrib/demo-ranker/ranker.py imported as a module (to serve its
    ranking in-process with options its command line does not have)."""
    spec = importlib.util.spec_from_file_location("fg_demo_ranker", str(RANKER_PY))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class InProcessRanker:
    """The demo ranker's own Ranker class served by a grpcio server in this
    process, with server-side <compression> (the script has no flag for it)."""

    def __init__(self, workdir, compression=None):
        mod = load_ranker_module()
        self.ranker = mod.Ranker(mod.load_messages(str(ranking_pb())),
                                 str(Path(workdir) / "inproc-record.jsonl"))
        handlers = {
            "RankFeed": grpc.unary_unary_rpc_method_handler(self.ranker.rank_feed),
            "StreamFeed": grpc.unary_stream_rpc_method_handler(self.ranker.stream_feed),
        }
        from concurrent import futures
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), compression=compression)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.addr = "127.0.0.1:%d" % self.port
        self.server.start()

    def stop(self):
        self.server.stop(0).wait()
        if self.ranker.record:
            self.ranker.record.close()


# ---------------------------------------------------------------- raw upstream

class CaptureUpstream:
    """A raw h2c gRPC server (python3-h2, threads) that records every request
    exactly as it arrived (header list in order, pseudo-headers included;
    DATA bytes with their gRPC frame prefixes) and answers each with
    <respond>(request) -> (extra response headers, body bytes), then
    trailers grpc-status 0."""

    def __init__(self, respond):
        self.respond = respond
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        self.requests = []          # dicts: headers [(k, v)], data bytes, ended
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.stop_flag.is_set():
            if not select.select([self.lsock], [], [], 0.05)[0]:
                continue
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, sock):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                    header_encoding="utf-8"))
        conn.initiate_connection()
        streams = {}
        try:
            sock.sendall(conn.data_to_send())
            while not self.stop_flag.is_set():
                if not select.select([sock], [], [], 0.02)[0]:
                    continue
                data = sock.recv(1 << 16)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        req = {"headers": list(ev.headers), "data": b"", "ended": False, "trailers": None}
                        streams[ev.stream_id] = req
                        with self.lock:
                            self.requests.append(req)
                    elif isinstance(ev, h2.events.DataReceived):
                        streams[ev.stream_id]["data"] += ev.data
                        if ev.flow_controlled_length:
                            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.TrailersReceived):
                        streams[ev.stream_id]["trailers"] = list(ev.headers)
                    elif isinstance(ev, h2.events.StreamEnded):
                        req = streams[ev.stream_id]
                        req["ended"] = True
                        extra, body = self.respond(req)
                        conn.send_headers(ev.stream_id, [(":status", "200"),
                                                         ("content-type", "application/grpc")]
                                          + list(extra))
                        if body:
                            conn.send_data(ev.stream_id, body)
                        conn.send_headers(ev.stream_id, [("grpc-status", "0")], end_stream=True)
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            sock.close()

    def wait(self, cid, timeout=None):
        def find():
            with self.lock:
                got = [r for r in self.requests if r["ended"] and ("x-call-id", cid) in r["headers"]]
            return got
        got = poll_until(find, timeout or tf(5), "the raw upstream to receive call %s" % cid)
        assert len(got) == 1, "call %s arrived %d times" % (cid, len(got))
        return got[0]

    def close(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=5)
        self.lsock.close()


def frames(body):
    """gRPC length-prefixed messages of <body> as (flag, payload)."""
    out = []
    while body:
        assert len(body) >= 5, "a partial gRPC frame prefix: %r" % body
        flag, n = struct.unpack(">BI", body[:5])
        assert len(body) >= 5 + n, "a partial gRPC message"
        out.append((flag, body[5:5 + n]))
        body = body[5 + n:]
    return out


# ---------------------------------------------------------------- policies, daemon

def write_policy(dirpath, text, name="policy.yaml"):
    """Write policy <text> as <dirpath>/<name> with ranking.pb next to it;
    returns the policy's absolute path (what feedguardd names in messages)."""
    d = Path(dirpath)
    if not (d / "ranking.pb").exists():
        shutil.copy(str(ranking_pb()), str(d / "ranking.pb"))
    p = d / name
    p.write_text(text)
    return p.resolve()


def demo_policy_text():
    return DEMO_POLICY.read_text()


BANDS_HEADER = """\
descriptor_set: ranking.pb
bands:
  - name: under_13
    match: [under_13, u13]
  - name: "13_15"
    match: ["13_15"]
  - name: "16_17"
    match: ["16_17"]
  - name: adult
    match: [adult, "18_plus"]
"""


def rank_policy(request_block="", response_block="", extra_top="", method=RANK):
    """A policy over the demo's bands for <method>, band from x-age-band,
    with the given YAML rule-block lists (already indented 6 spaces)."""
    text = BANDS_HEADER + extra_top + "methods:\n  %s:\n    age_band: {header: x-age-band}\n" % method
    if request_block:
        text += "    request:\n" + request_block
    if response_block:
        text += "    response:\n" + response_block
    return text


def admin_addr(daemon):
    m = poll_until(lambda: re.search(r'event=admin_listening\b.*?\baddr="?([0-9.]+:\d+)', daemon.stderr()),
                   tf(5), "event=admin_listening in feedguardd's stderr")
    return m.group(1)


def http_get(addr, path):
    try:
        with urllib.request.urlopen("http://%s%s" % (addr, path), timeout=tf(5)) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def metric(text, name, **labels):
    """Value of sample <name>{labels} in a Prometheus text page (label order
    free), or None when absent."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if got == {k: str(v) for k, v in labels.items()}:
            return float(m.group(3))
    return None


def sighup_and_wait(daemon, event, since):
    """SIGHUP <daemon> and wait for a log line event=<event> after byte
    <since> of its stderr; returns that line."""
    import signal as _signal
    daemon.proc.send_signal(_signal.SIGHUP)

    def find():
        for line in daemon.stderr()[since:].splitlines():
            if re.search(r"\bevent=%s\b" % re.escape(event), line):
                return line
        return None
    return poll_until(find, tf(10), "event=%s after SIGHUP; stderr tail:\n%s"
                      % (event, tail(daemon.stderr_path)))


def marked(text, mark="@@"):
    """<text> without <mark>, and the 1-based (line, column) where it was."""
    i = text.index(mark)
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return text.replace(mark, "", 1), line, col
