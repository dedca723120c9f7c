"""Policy edge cases from review: what must never slip past the stage or
blow up, each a regression test.  Needs the daemon (proxy_only)."""
import gzip
import socket
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.events
import pytest

import harness
import policyhelp as ph
from fgcommon import grpc_frame
from harness import tf
from policyhelp import RANK
from rawh2 import RawClient

pytestmark = pytest.mark.proxy_only


@pytest.fixture
def fg(tmp_path, middle):
    def start(policy_text, upstream, config=None):
        ph.write_policy(tmp_path, policy_text)
        cfg = harness.deep_merge({"policy": "policy.yaml"}, config or {})
        return middle(upstream, cfg)
    return start


class SilentUpstream:
    """h2c upstream that takes the request HEADERS and then never reads again."""
    def __init__(self):
        self.lsock = socket.socket(); self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0)); self.lsock.listen(8)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        self.socks = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            self.socks.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection(); s.sendall(conn.data_to_send())
        while True:
            data = s.recv(65536)
            if not data:
                return
            evs = conn.receive_data(data)
            s.sendall(conn.data_to_send())
            if any(isinstance(e, h2.events.RequestReceived) for e in evs):
                return          # stop reading: the socket stays open


def rss_kb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS"):
            return int(line.split()[1])


def test_gzip_stream_memory_is_bounded(fg):
    """300 gzip messages that each inflate to 3 MiB, to an upstream that never
    reads: feedguardd holds the compressed bytes (and their window), not the
    inflated ones."""
    up = SilentUpstream()
    d = fg(ph.demo_policy_text(), up.addr)
    req = ph.profiled_request(user_id="a" * (3 << 20) + "z")   # ~3 MiB inflated, signals to strip
    packed = gzip.compress(req.SerializeToString(), 9)
    frame = b"\x01" + len(packed).to_bytes(4, "big") + packed
    n = 300
    before = rss_kb(d.pid)
    c = RawClient(d.addr, timeout=tf(5))
    sid = c.request(RANK, [("x-age-band", "under_13"), ("grpc-encoding", "gzip")], (), end_stream=False)
    sent, stuck = 0, 0
    while sent < n and stuck < 20:
        if c.conn.local_flow_control_window(sid) < len(frame):
            c.pump(0.2); stuck += 1
            continue
        c.conn.send_data(sid, frame); c.flush(); sent += 1; stuck = 0
    time.sleep(3)
    after = rss_kb(d.pid)
    c.close()
    assert after - before < 64 << 10, "one stream grew feedguardd by %d MiB" % ((after - before) >> 10)


def test_edited_response_drops_content_length(fg, tmp_path):
    """An edited response is shorter than the upstream's content-length said;
    keeping that header would make a strict client (nghttp) reset the stream."""
    Resp = ph.messages()["RankFeedResponse"]
    r = Resp()
    it = r.items.add(); it.item_id = 7; it.debug_score = 0.5
    body = grpc_frame(r.SerializeToString())
    up = ph.CaptureUpstream(lambda req: ([("content-length", str(len(body)))], body))
    try:
        d = fg(ph.demo_policy_text(), up.addr)
        f = tmp_path / "req.bin"
        f.write_bytes(grpc_frame(ph.profiled_request().SerializeToString()))
        out = {}
        for band in ("adult", "under_13"):
            p = subprocess.run(["nghttp", "-v", "-d", str(f), "-H", ":method: POST", "-H", "content-type: application/grpc",
                                "-H", "te: trailers", "-H", "x-age-band: " + band,
                                "http://%s%s" % (d.addr, RANK)], capture_output=True, timeout=20)
            out[band] = (p.stdout + p.stderr).decode("latin-1")
            assert p.returncode == 0, out[band]
        assert "RST_STREAM" not in out["under_13"], out["under_13"]
        # the child's response was edited (debug_score gone), so it is shorter
        assert "content-length" not in out["under_13"].split("recv HEADERS")[-1].lower() or \
            "content-length: %d" % len(body) not in out["under_13"], out["under_13"]
    finally:
        up.close()


def test_request_trailers_lose_removed_headers(fg):
    """remove_headers applies to request trailers too."""
    up = ph.CaptureUpstream(lambda req: ([], grpc_frame(b"")))
    try:
        d = fg(ph.demo_policy_text(), up.addr)
        cid = ph.call_id()
        c = RawClient(d.addr, timeout=tf(5))
        try:
            sid = c.request(RANK, [("x-call-id", cid), ("x-age-band", "under_13")], (), end_stream=False)
            c.conn.send_data(sid, grpc_frame(ph.profiled_request().SerializeToString()))
            c.conn.send_headers(sid, [("x-device-id", "dev-5521")], end_stream=True)
            c.flush()
            c.wait(lambda: c.streams[sid].finished, tf(5), "the response")
        finally:
            c.close()
        got = up.wait(cid)
        assert not any(k == "x-device-id" for k, _ in (got["trailers"] or [])), got["trailers"]
    finally:
        up.close()

