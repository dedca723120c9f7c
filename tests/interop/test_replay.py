"""End-to-end tests of `feedguard-replay` (README, "Capture and replay: what a
policy does to real traffic": the capture config and format, `dump`, `run`,
`summary` and `live`; proto/feedguard/capture/v1/capture.proto), written
from the README alone.

One capture per module: a real redis-server, feedguardd (a test-hooks
build: `feedguard-test-now` sets each call's time) with
policies/uk-children.yaml and capture on (sample 1, metadata x-age-band and
x-call-id), in front of the crafted-feed ranker (feedranker.FeedRanker).
The traffic is one winter day in London:

  - a 13_15 teen calling every 5 minutes from 10:00 to 11:10: past the
    daily cap (60m, notice), the break (60m, notice) and the wellbeing
    exposure allowance (body_image and depression, 20 a day);
  - a 16_17 teen with three calls (12 wellbeing items: under 20);
  - eight adults with two calls each (nothing filtered or limited);
  - an under_13 warm-up user (the call that shows the Redis link is up).

Every page has 60 items: 10 body_image, 2 violence, 48 sport (a topic:
no class), and the children's filter asks 60 for a page of 40.  Pages of adults carry
an unknown field 99 in their first item.

Expectations come from the README: what it says a dump line holds, what
the summary and calls file say, the file format (frames with a CRC-32 of
the length bytes and payload), shards by the pseudonym's first 64 bits.
Where the README is ambiguous a comment starting "READING:" says which
reading the test takes.
"""
import base64
import csv
import hashlib
import hmac
import json
import os
import re
import struct
import time
import zlib
from datetime import datetime, timezone

import grpc
import pytest

import harness
import test_capture as tc
import policyhelp as ph
from feedranker import FeedRanker, item, page
from harness import poll_until, run_feedguard_replay, start_middle, tf
from policyhelp import RANK, f_len, f_varint
from redisserver import RedisServer

pytestmark = pytest.mark.proxy_only

TEST_NOW = "feedguard-test-now"
UK_CHILDREN = harness.SRCDIR / "policies" / "uk-children.yaml"
CAPTURE_KEY_ID = "cap-t"
MIN = 60 * 1000
DAY0 = int(datetime(2031, 1, 15, 0, 0, tzinfo=timezone.utc).timestamp() * 1000)   # GMT = UTC
DATE0 = "2031-01-15"
PAGE_SIZE = 40

CALLS_COLUMNS = {"policy", "call", "time_ms", "date", "user_key", "band", "method", "status",
                 "answered", "action", "notices", "no_upstream", "class", "shown", "removed",
                 "demoted", "limited", "surplus", "trimmed"}
FATES = ("shown", "removed", "demoted", "limited", "surplus", "trimmed")


def at(hhmm):
    h, m = map(int, hhmm.split(":"))
    return DAY0 + (h * 60 + m) * MIN


# ---------------------------------------------------------------- requests and pages

def mod(label, conf=0.9):
    return (label, conf)


def feed_page(base, unknown=False):
    """60 items: body_image at 2, 8, ..., 56; violence at 5 and 21; sport
    elsewhere.  <unknown>: the first item carries an unknown field 99."""
    items = []
    for i in range(60):
        if i % 6 == 2:
            labels = [mod("body_image")]
        elif i in (5, 21):
            labels = [mod("violence")]
        else:
            labels = [mod("sport")]
        extra = f_varint(99, 7) if unknown and i == 0 else b""
        items.append(item(base + i, moderation=labels, unknown=extra))
    return page(items, tail=f_len(3, "model-7"))


def request(uid, band_field, page_size=PAGE_SIZE):
    """A RankFeedRequest: user {user_id, age_band}, context {surface HOME, locale}, page_size,
    and signals.search_history (a profiling signal)."""
    return (f_len(1, f_len(1, uid) + f_len(2, band_field)) + f_len(2, f_varint(1, 1) + f_len(2, "en-GB"))
            + f_len(3, f_len(4, "how to lose weight fast")) + f_varint(4, page_size))


def capture_pseudonym(key, uid):
    return "%s:%s" % (CAPTURE_KEY_ID, hmac.new(key, uid.encode(), hashlib.sha256).hexdigest())


# ---------------------------------------------------------------- the capture file format

MAGIC = b"\x89FGCAP\r\n"


def frames(data):
    """[(offset, payload)] of a capture file, checking the README's format:
    the 16-byte header, then length (LE uint32), CRC-32 of the length bytes
    and the payload (LE), payload."""
    assert data[:8] == MAGIC, "capture header %r" % data[:16]
    assert struct.unpack("<I", data[8:12])[0] in (1, 2) and data[12:16] == b"\0\0\0\0", data[:16]
    out, off = [], 16
    while off < len(data):
        n, crc = struct.unpack("<II", data[off:off + 8])
        payload = data[off + 8:off + 8 + n]
        assert len(payload) == n, "frame at %d cut short" % off
        assert zlib.crc32(data[off:off + 4] + payload) == crc, "frame at %d: CRC mismatch" % off
        out.append((off, payload))
        off += 8 + n
    return out


# ---------------------------------------------------------------- running the tool

def replay(*args, timeout=None):
    return run_feedguard_replay(list(args), timeout=timeout or tf(60))


def text(res):
    return res.stdout.decode("utf-8", "replace"), res.stderr.decode("utf-8", "replace")


def ok(res, what):
    out, err = text(res)
    assert res.returncode == 0, "%s: exit %s\nstdout:\n%s\nstderr:\n%s" % (what, res.returncode, out[-3000:],
                                                                           err[-3000:])
    return out, err


def json_lines(out, what):
    rows = []
    for i, line in enumerate(out.splitlines()):
        try:
            rows.append(json.loads(line))
        except ValueError as e:
            raise AssertionError("%s: line %d is not JSON (%s): %r" % (what, i + 1, e, line[:300]))
    return rows


def as_int(v):
    """A proto3-JSON 64-bit integer: a decimal string."""
    assert isinstance(v, str) and re.fullmatch(r"-?\d+", v), "64-bit integer not a string: %r" % (v,)
    return int(v)


def parse_tables(out):
    """The summary's tables: {first word of the title: (title, [row dicts])}.
    A table is a title line, a header line starting with "band", rows."""
    lines = out.splitlines()
    tables = {}
    i = 0
    while i < len(lines):
        if i + 1 < len(lines) and lines[i].strip() and lines[i + 1].split()[:1] == ["band"]:
            title, header = lines[i].strip(), lines[i + 1].split()
            rows, j = [], i + 2
            while j < len(lines) and lines[j].strip() and lines[j].strip() != "...":
                cells = lines[j].split()
                if len(cells) != len(header):
                    break
                rows.append(dict(zip(header, cells)))
                j += 1
            tables[title.split()[0]] = (title, header, rows)
            i = j
        else:
            i += 1
    return tables


def read_calls_csv(path):
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        return r.fieldnames, list(r)


# ---------------------------------------------------------------- the capture

class Capture:
    pass


def need_redis():
    if not RedisServer.available():
        pytest.skip("redis-server is not installed (Debian: redis-server; or set FG_REDIS_SERVER)")


def hooks_build():
    res = harness.run_feedguardd(["-v"])
    out = (res.stdout + res.stderr).decode("utf-8", "replace")
    if "test hooks: ON" not in out:
        pytest.fail("%s -v does not say 'test hooks: ON': build with --enable-test-hooks (%r)"
                    % (harness.FEEDGUARDD, out.strip()), pytrace=False)


def daemon_config(cap, redis, capture_dir=None, key_prefix="fg:"):
    cfg = {"policy": str(cap.policy_a),
           "pseudonym_keys": [{"id": "k1", "file": str(cap.dir / "k1.key")}],
           "state": {"redis": redis.addr, "timeout": "%dms" % min(10000, int(tf(1.0) * 1000)),
                     "stall_timeout": "%dms" % min(20000, int(tf(2.0) * 1000)),
                     "key_prefix": key_prefix}}
    if capture_dir is not None:
        cfg["capture"] = {"directory": str(capture_dir),
                          "key": {"id": CAPTURE_KEY_ID, "file": str(cap.dir / "cap.key")},
                          "sample": 1, "metadata": ["x-age-band", "x-call-id"]}
    return cfg


def do_call(cap, d, uid, band, t, resp):
    """One RankFeed call of <uid> (band header <band>) at test time <t>; the
    ranker answers <resp> (or what it returns, called with the request).  Returns (status code, response bytes, headers)."""
    cid = ph.call_id("rp")
    cap.ranker.script(cid, resp if callable(resp) else [resp])
    md = [("x-call-id", cid), ("x-age-band", band), (TEST_NOW, str(t))]
    try:
        with harness.channel(d.addr) as ch:
            msg, c = ch.unary_unary(RANK).with_call(request(uid, band), metadata=md, timeout=tf(10))
        return grpc.StatusCode.OK, msg, list(c.initial_metadata() or ()) + list(c.trailing_metadata() or ())
    except grpc.RpcError as e:
        return e.code(), b"", list(e.trailing_metadata() or ())


def settle(cap, redis, uid, t, prefix="fg:"):
    """Wait until Redis holds the update of <uid>'s call at <t> (updates are
    sent after the response)."""
    key = "%s{k1:%s}" % (prefix, hmac.new(cap.k1, uid.encode(), hashlib.sha256).hexdigest())

    def landed():
        with redis.client() as c:
            v = c.hget_int(key, "last")
        return v is not None and v >= t
    poll_until(landed, tf(5), "the state update of %s's call at %d" % (uid, t))


@pytest.fixture(scope="module")
def cap(tmp_path_factory):
    """The module's capture (see the module docstring), with the daemon
    stopped (gracefully) so every record is on disk."""
    hooks_build()
    need_redis()
    c = Capture()
    c.dir = tmp_path_factory.mktemp("replay")
    c.k1 = os.urandom(32)
    c.capkey = os.urandom(32)
    (c.dir / "k1.key").write_bytes(c.k1)
    (c.dir / "cap.key").write_bytes(c.capkey)
    c.capture_dir = c.dir / "capture"
    c.capture_dir.mkdir()
    policy = UK_CHILDREN.read_text()
    c.policy_a = ph.write_policy(c.dir, policy, "policy-a.yaml")
    # B: the wellbeing allowance 8 a day instead of 20.
    assert "{classes: [body_image, depression], per_day: 20, name: wellbeing}" in policy
    c.policy_b = ph.write_policy(c.dir, policy.replace("per_day: 20, name: wellbeing",
                                                      "per_day: 8, name: wellbeing"), "policy-b.yaml")
    c.redis = RedisServer(c.dir).start()
    c.ranker = FeedRanker()
    d = None
    try:
        d = start_middle(c.dir, c.ranker.addr, daemon_config(c, c.redis, c.capture_dir), "capturing")
        c.config = d.config_path
        c.uids = {}
        # Warm-up: an under_13 user at 09:00 until a call reads state.
        warm = "warmup-u13"
        c.uids[warm] = "under_13"

        def state_read():
            code, _, md = do_call(c, d, warm, "under_13", at("09:00"), feed_page(900000))
            return code == grpc.StatusCode.OK and any(k == "feedguard-screen-time" for k, _ in md)
        poll_until(state_read, tf(10), "a call that read screen-time state")
        settle(c, c.redis, warm, at("09:00"))
        teen, older = "teen-13", "teen-16"
        c.uids[teen], c.uids[older] = "13_15", "16_17"
        adults = ["adult-%d" % i for i in range(8)]
        for a in adults:
            c.uids[a] = "adult"
        plan = []
        for k in range(15):
            plan.append((at("10:00") + 5 * k * MIN, teen, "13_15"))
        for k in range(3):
            plan.append((at("10:01") + 5 * k * MIN, older, "16_17"))
        for i, a in enumerate(adults):
            plan.append((at("10:02") + i * MIN, a, "adult"))
            plan.append((at("10:32") + i * MIN, a, "adult"))
        plan.sort()
        c.sent = []
        for n, (t, uid, band) in enumerate(plan):
            code, _, _ = do_call(c, d, uid, band, t, feed_page(1000 * (n + 1), unknown=(band == "adult")))
            assert code == grpc.StatusCode.OK, "call %d (%s at %d): %s" % (n, uid, t, code)
            if band != "adult":
                settle(c, c.redis, uid, t)
            c.sent.append((t, uid, band))
        c.n_calls = len(plan)        # plus the warm-up calls, counted from the dump below
    finally:
        if d is not None:
            problems = d.stop()
            if problems:
                c.ranker.stop()
                c.redis.stop()
                pytest.fail("\n".join(problems), pytrace=False)
    c.files = sorted(c.capture_dir.glob("feedguard-*.fgcap"))
    assert c.files, "no feedguard-*.fgcap in %s after the daemon stopped: %s" % (
        c.capture_dir, os.listdir(c.capture_dir))
    c.pb = ph.ranking_pb()
    c.key_of = {uid: capture_pseudonym(c.capkey, uid) for uid in c.uids}
    c.uid_of = {v: k for k, v in c.key_of.items()}
    res = replay("dump", "--descriptor-set", c.pb, *c.files)
    out, _ = ok(res, "dump of the module's capture")
    c.dump = json_lines(out, "dump")
    c.n_all = len(c.dump)
    yield c
    c.ranker.stop()
    c.redis.stop()


def exposure_by_user(cap, calls):
    """{uid: body_image items delivered}, from dump records."""
    out = {}
    for rec in calls:
        n = sum(1 for it in rec.get("decisions", {}).get("items", [])
                if it.get("class") == "body_image" and it.get("fate", "KEPT") == "KEPT")
        uid = cap.uid_of.get(rec.get("user_key"))
        out[uid] = out.get(uid, 0) + n
    return out


# ================================================================ 1. dump

def md_values(rec, side, name):
    """The values of metadata <name> recorded on <side> ("request_metadata")
    as bytes.  READING: the README does not say how a record's Metadata
    list is rendered; both the proto3 form ([{name, value (base64)}]) and
    a map of name to values are accepted."""
    m = rec.get(side) or {}
    if isinstance(m, dict):
        return [v.encode() if isinstance(v, str) else v for v in m.get(name, [])]
    return [base64.b64decode(x["value"]) for x in m if x.get("name") == name]


def test_dump_decodes_each_call_as_one_json_line(cap):
    """dump --descriptor-set: one JSON object per call (the README's jq
    example: band, status, delivered_response[0].items at the top level),
    messages in the proto3 JSON mapping with the .proto's field names:
    64-bit integers as strings, enums by name, unknown fields by number
    under _unknown."""
    recs = cap.dump
    warmups = [r for r in recs if r.get("user_key") == cap.key_of["warmup-u13"]]
    assert warmups, "no record of the warm-up user"
    assert len(recs) == cap.n_calls + len(warmups), (
        "%d lines for %d calls (+%d warm-up calls)" % (len(recs), cap.n_calls, len(warmups)))
    by_user = {}
    for r in recs:
        assert r.get("method") == RANK, r.get("method")
        assert r.get("user_key") in cap.uid_of, "user_key %r is not a capture pseudonym of a sent user" % (
            r.get("user_key"),)
        uid = cap.uid_of[r["user_key"]]
        by_user.setdefault(uid, []).append(r)
        assert r.get("band") == cap.uids[uid], (uid, r.get("band"))
        # The README's example prints "status":0 for a served call.
        assert r.get("status") == 0 and not r.get("answered_by_feedguard", False), r.get("status")
        # One shape for every line: items there even where no filter ran (adults)
        assert isinstance(r.get("decisions", {}).get("items"), list), (uid, r.get("decisions"))
        # Privacy: the request carries the pseudonym, not the raw id, and
        # the redaction (the first band's request rules) strips signals
        # from every band's captured calls, adults' too.
        req = r["request"]
        assert isinstance(req, list) and len(req) == 1, req
        assert req[0]["user"]["user_id"] == r["user_key"], req[0]
        assert req[0]["context"]["locale"] == "en-GB", req[0]
        assert req[0]["context"]["surface"] == "SURFACE_HOME", req[0]        # an enum, by name
        assert "signals" not in req[0], "a captured request kept signals: %r" % req[0]
        assert md_values(r, "request_metadata", "x-age-band") == [cap.uids[uid].encode()], r.get(
            "request_metadata")
        delivered = r["delivered_response"][0]
        for it in delivered["items"]:
            as_int(it["item_id"])                     # int64: a string
            assert it["title"] == "item %d" % int(it["item_id"]), it
        assert delivered.get("model_version") == "model-7"
    got_times = sorted(int(r["start_unix_ms"]) for u, rs in by_user.items() if u != "warmup-u13"
                       for r in rs)
    assert got_times == sorted(t for t, _, _ in cap.sent), "start_unix_ms is not each call's test time"
    assert len(by_user["teen-13"]) == 15 and len(by_user["teen-16"]) == 3
    # An adult's page is delivered whole, the unknown field 99 listed under _unknown.
    adult = by_user["adult-0"][0]
    first = adult["delivered_response"][0]["items"][0]
    assert "_unknown" in first and "99" in json.dumps(first["_unknown"]), first
    assert len(adult["delivered_response"][0]["items"]) == 60
    # A child's page: filtered to the 40 asked, fates by name.
    teen = by_user["teen-13"][0]
    assert len(teen["delivered_response"][0]["items"]) == PAGE_SIZE
    fates = {it.get("fate", "KEPT") for it in teen["decisions"]["items"]}
    assert "REMOVED" in fates and fates <= {"KEPT", "REMOVED", "SURPLUS_DROPPED", "SURPLUS_END",
                                            "TRIMMED", "LIMITED"}, fates
    # The limits fired on the 13_15 teen: notices and limited items; the
    # wellbeing allowance (20 a day) was used exactly, the 16_17 teen's not.
    notices = [n for r in by_user["teen-13"] for n in r["decisions"]["screen_time"]["notices"]]
    for n in ("daily-limit", "take-a-break", "exposure-limit"):
        assert n in notices, "no %s notice recorded for the 13_15 teen: %s" % (n, notices)
    assert exposure_by_user(cap, by_user["teen-13"])["teen-13"] == 20
    assert exposure_by_user(cap, by_user["teen-16"])["teen-16"] == 12
    assert sum(1 for r in by_user["teen-13"] for it in r["decisions"]["items"] if it.get("fate") == "LIMITED")


def test_dump_bytes_as_base64(cap, tmp_path):
    """Bytes fields as base64: the same capture decoded with a descriptor
    set in which Context.locale is declared `bytes`."""
    from google.protobuf import descriptor_pb2
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(cap.pb.read_bytes())
    changed = 0
    for f in fds.file:
        if f.package != "feedguard.ranking.v1":
            continue
        for m in f.message_type:
            if m.name == "Context":
                for fld in m.field:
                    if fld.name == "locale":
                        fld.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                        changed += 1
    assert changed == 1
    pb = tmp_path / "ranking-bytes.pb"
    pb.write_bytes(fds.SerializeToString())
    recs = json_lines(ok(replay("dump", "--descriptor-set", pb, *cap.files), "dump")[0], "dump")
    assert len(recs) == cap.n_all
    for r in recs:
        assert r["request"][0]["context"]["locale"] == base64.b64encode(b"en-GB").decode(), r["request"][0]


def test_dump_item_decisions_name_the_deciding_class(cap):
    """decisions.items: class is "the class that decided ... "" when
    unlabelled or none": an item labelled only with a topic ("sport") has
    no class, whatever its fate; body_image and violence items name theirs."""
    want = {"sport": "", "body_image": "body_image", "violence": "violence_graphic"}
    wrong = []
    for r in cap.dump:
        if r["band"] == "adult":
            continue
        page_items = r["upstream_response"][0]["items"]
        for d in r["decisions"]["items"]:
            labels = [m["label"] for m in page_items[d.get("position", 0)]["moderation"]]
            if d.get("class", "") != want[labels[0]]:
                wrong.append((r["band"], r["time"] if "time" in r else r["start_unix_ms"], d.get("position", 0),
                              labels[0], d.get("fate", "KEPT"), d.get("class")))
    assert not wrong, "%d items recorded with another class than their label's, e.g. %s" % (
        len(wrong), wrong[:5])


def test_dump_with_config_and_without_descriptor_set(cap):
    """-c CONFIG decodes as --descriptor-set does; without either, messages
    are base64 strings of the wire bytes."""
    out_d, _ = ok(replay("dump", "--descriptor-set", cap.pb, *cap.files), "dump --descriptor-set")
    out_c, _ = ok(replay("dump", "-c", cap.config, *cap.files), "dump -c")
    assert out_c == out_d
    raw = json_lines(ok(replay("dump", *cap.files), "dump without a descriptor set")[0], "dump")
    assert len(raw) == cap.n_all
    for r, dec in zip(raw, cap.dump):
        assert r["user_key"] == dec["user_key"] and r["start_unix_ms"] == dec["start_unix_ms"]
        for side in ("request", "upstream_response", "delivered_response"):
            assert all(isinstance(m, str) for m in r.get(side, [])), (side, r.get(side))
        body = base64.b64decode(r["request"][0])
        assert ph.at(body, 2, 2) == b"en-GB", body
        assert ph.at(body, 1, 1) == r["user_key"].encode()
        resp = base64.b64decode(r["delivered_response"][0])
        assert len(ph.values(resp, 1)) == len(dec["delivered_response"][0]["items"])


def test_dump_file_info(cap):
    """--file-info adds each file's FileInfo record (writer, host, pid,
    capture key id, policy, sample)."""
    recs = json_lines(ok(replay("dump", "--file-info", "--descriptor-set", cap.pb, *cap.files),
                         "dump --file-info")[0], "dump --file-info")
    assert len(recs) == cap.n_all + len(cap.files), "%d lines for %d calls in %d files" % (
        len(recs), cap.n_all, len(cap.files))

    def info(r):
        return r.get("file_info", r) if isinstance(r.get("file_info"), dict) else (
            r if "capture_key_id" in r else None)
    infos = [info(r) for r in recs if info(r) is not None]
    assert len(infos) == len(cap.files), recs[:2]
    for i in infos:
        assert i.get("capture_key_id") == CAPTURE_KEY_ID, i
        assert i.get("format_version") == 2, i
        assert i.get("sample") == 1, i
        assert str(i.get("writer", "")).startswith("feedguardd"), i
        assert "policy-a.yaml" in str(i.get("policy_file")), i


def biggest(cap):
    """The capture file with the most frames, and its frames."""
    f = max(cap.files, key=lambda p: len(frames(p.read_bytes())))
    return f, frames(f.read_bytes())


def test_dump_torn_tail(cap, tmp_path):
    """A frame cut short at the end of a file is a torn tail: reported on
    stderr, the whole records before it printed, exit 0."""
    src, fr = biggest(cap)
    data = src.read_bytes()
    assert len(fr) >= 3, "the capture file holds %d frames" % len(fr)
    torn = tmp_path / src.name
    torn.write_bytes(data[:-7])
    res = replay("dump", "--descriptor-set", cap.pb, torn)
    out, err = ok(res, "dump of a torn file")
    n_calls = len(fr) - 2           # less the FileInfo and the torn frame
    assert len(json_lines(out, "dump")) == n_calls
    # READING: "M records" counts the frames before it, the FileInfo included.
    want = re.compile(r"^feedguard-replay: %s: torn tail at offset %d after %d records: \d+ bytes skipped \(.+\)$"
                      % (re.escape(str(torn)), fr[-1][0], len(fr) - 1), re.M)
    assert want.search(err), "stderr %r, expected %r" % (err, want.pattern)


def test_dump_corrupt_middle_frame(cap, tmp_path):
    """A flipped byte in a frame with data after it is corruption: that file
    stops there with its offset and the records read before it, the other
    files are still read, exit 1."""
    src, fr = biggest(cap)
    data = bytearray(src.read_bytes())
    mid = len(fr) // 2
    off, payload = fr[mid]
    data[off + 8 + len(payload) // 2] ^= 0x40
    bad = tmp_path / ("bad-" + src.name)
    bad.write_bytes(bytes(data))
    good = tmp_path / ("good-" + src.name)
    good.write_bytes(src.read_bytes())
    res = replay("dump", "--descriptor-set", cap.pb, bad, good)
    out, err = text(res)
    assert res.returncode == 1, "exit %s; stderr %r" % (res.returncode, err)
    lines = json_lines(out, "dump")
    # The whole records before it (calls: less the FileInfo), then all of the good file.
    assert len(lines) == (mid - 1) + (len(fr) - 1), "%d lines" % len(lines)
    # (A "feedguard-replay: " before FILE is allowed.)
    m = re.search(r"^feedguard-replay: %s: corrupt frame at offset (\d+) after (\d+) records: \S.*$"
                  % re.escape(str(bad)), err, re.M)
    assert m, "stderr %r" % err
    assert (int(m.group(1)), int(m.group(2))) == (off, mid), (m.group(0), off, mid)


def test_dump_damaged_length_is_corruption(cap, tmp_path):
    """A frame whose length was damaged to reach past the end of the file,
    with whole frames behind it, is corruption (exit 1, its offset and the
    records read before it), not a torn tail: the records after it are
    not dropped without an error."""
    src, fr = biggest(cap)
    data = bytearray(src.read_bytes())
    mid = len(fr) // 2
    off, payload = fr[mid]
    data[off:off + 4] = struct.pack("<I", len(data))
    bad = tmp_path / src.name
    bad.write_bytes(bytes(data))
    res = replay("dump", "--descriptor-set", cap.pb, bad)
    out, err = text(res)
    assert res.returncode == 1, "exit %s; stderr %r" % (res.returncode, err)
    assert len(json_lines(out, "dump")) == mid - 1, "the calls before the damaged frame"
    m = re.search(r"^feedguard-replay: %s: corrupt frame at offset (\d+) after (\d+) records: .*length is damaged$"
                  % re.escape(str(bad)), err, re.M)
    assert m, "stderr %r" % err
    assert (int(m.group(1)), int(m.group(2))) == (off, mid), (m.group(0), off, mid)


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def test_record_too_large_unpacked_is_corruption(tmp_path):
    """A frame with a good CRC whose Record would unpack to more than 256
    MiB (five million empty decisions.items: 10 MB on disk, 55 times that
    in protobuf-c's structs) is corruption, with its offset and the count
    read before it, for dump and run alike: before, dump held 3.3 GB for a
    60 MB frame of them."""
    items = b"\x12\x00" * 5000000                      # Decisions.items (2): empty Items
    decisions = b"\x7a" + varint(len(items)) + items   # Call.decisions (15)
    call = b"\x1a" + varint(len("/x.Y/Z")) + b"/x.Y/Z" + decisions     # Call.method (3)
    record = b"\x12" + varint(len(call)) + call          # Record.call (2)
    path = tmp_path / "huge.fgcap"
    path.write_bytes(MAGIC + struct.pack("<II", 2, 0) + tc.frame(record))
    res = replay("dump", path)
    out, err = text(res)
    assert res.returncode == 1, "exit %s; stderr %r" % (res.returncode, err)
    assert re.search(r"corrupt record at offset 16 after 0 records: .*256 MiB", err), err
    assert not out.strip(), out[:200]
    res = replay("run", "-p", UK_CHILDREN, path)
    out, err = text(res)
    assert res.returncode == 1 and re.search(r"corrupt record at offset 16 .*256 MiB", err), (res.returncode, err)


# ================================================================ 2. run, one policy

def summary_part(out):
    """The summary from its first table on (without the policy and calls
    header lines, which name the files and the shard)."""
    i = out.find("calls by band")
    assert i >= 0, "no 'calls by band' table in:\n%s" % out
    return out[i:]


def table(out, name):
    tables = parse_tables(out)
    assert name in tables, "no %r table in the summary:\n%s" % (name, out)
    return tables[name]


def test_run_check_same_policy_decides_as_recorded(cap):
    """Replayed under the policy that recorded it, a capture decides as
    recorded: `--check` prints "check: N calls, N decided as recorded, 0
    otherwise" and exits 0.  (Nothing here is state from before the
    capture, nor a stream cut while open.)"""
    res = replay("run", "-p", cap.policy_a, "--check", "--no-progress", *cap.files)
    out, err = text(res)
    want = "check: %d calls, %d decided as recorded, 0 otherwise" % (cap.n_all, cap.n_all)
    assert want in out + err and res.returncode == 0, (
        "expected %r and exit 0; exit %s, got %r; stderr:\n%s" % (
            want, res.returncode, re.findall(r"check: .*", out + err), err[-2500:]))


def test_run_check_replays_the_recorded_state_failures(cap, tmp_path):
    """With Redis down, the daemon decided by each band's fail_mode (open:
    served, deny: UNAVAILABLE) and recorded why.  Replay has the same
    failure on those calls (the state is the environment, like the ranker's
    answer), so `--check` under the recording policy finds every call
    decided as recorded.  A README-only trial saw 4 deny calls replayed as
    no_upstream: replay had read its own state and served them."""
    policy = UK_CHILDREN.read_text()
    block = "      - {classes: [body_image, depression], per_day: 20, name: wellbeing}\n"
    assert block in policy
    pol = ph.write_policy(tmp_path, policy.replace(block, block + "    fail_mode: deny\n"), "deny-teens.yaml")
    capdir = tmp_path / "capture"
    capdir.mkdir()
    down = type("Down", (), {"addr": "127.0.0.1:%d" % harness.closed_port()})()
    cfg = daemon_config(cap, down, capdir)
    cfg["policy"] = str(pol)
    cfg["state"]["timeout"] = "%dms" % min(5000, int(tf(0.2) * 1000))
    d = start_middle(tmp_path, cap.ranker.addr, cfg, "redis-down")
    got = {}
    try:
        for k, (uid, band) in enumerate([("down-u13", "under_13"), ("down-teen", "13_15"),
                                         ("down-adult", "adult"), ("down-teen", "13_15"),
                                         ("down-u13", "under_13")]):
            code, _, _ = do_call(cap, d, uid, band, at("10:00") + k * MIN, feed_page(70000 + 1000 * k))
            got.setdefault(band, []).append(code)
    finally:
        problems = d.stop()
    assert not problems, problems
    assert got == {"under_13": [grpc.StatusCode.OK] * 2, "13_15": [grpc.StatusCode.UNAVAILABLE] * 2,
                   "adult": [grpc.StatusCode.OK]}, got
    files = sorted(capdir.glob("feedguard-*.fgcap"))
    dump = json_lines(ok(replay("dump", "--descriptor-set", cap.pb, *files), "dump")[0], "dump")
    failures = sorted(c["decisions"]["screen_time"].get("state_failure", "") for c in dump
                      if c.get("decisions", {}).get("screen_time"))
    assert failures == ["down"] * 4, failures
    res = replay("run", "-p", pol, "--check", "--no-progress", *files)
    out, err = text(res)
    assert "check: 5 calls, 5 decided as recorded, 0 otherwise" in out + err and res.returncode == 0, (
        "exit %s, %r; stderr:\n%s" % (res.returncode, re.findall(r"check: .*", out + err), err[-2500:]))


def test_run_check_says_which_calls_another_policy_decided(cap, tmp_path):
    """A capture spans reloads: each captured call carries the id of the
    policy that decided it (policy_id, also in the daemon's ready and
    reloaded log lines).  `--check` under one policy says how many of the
    calls another policy decided, and how many of those it decides
    otherwise; their differences are marked.  A README-only trial's check
    counted calls of three policies against one without a word."""
    need_redis()
    polfile = tmp_path / "policy.yaml"
    polfile.write_text(cap.policy_a.read_text())
    saved_a = ph.write_policy(tmp_path, cap.policy_a.read_text(), "saved-a.yaml")
    saved_b = ph.write_policy(tmp_path, cap.policy_b.read_text(), "saved-b.yaml")
    capdir = tmp_path / "capture"
    capdir.mkdir()
    redis = RedisServer(tmp_path).start()
    try:
        cfg = daemon_config(cap, redis, capdir, key_prefix="pid:")
        cfg["policy"] = str(polfile)
        d = start_middle(tmp_path, cap.ranker.addr, cfg, "reloading")
        try:
            ready = poll_until(lambda: re.search(r"event=ready .*policy_id=([0-9a-f]{32})", d.stderr()), tf(5),
                               "policy_id in the ready line")
            id_a = ready.group(1)
            for k in range(3):
                code, _, _ = do_call(cap, d, "pid-teen", "13_15", at("10:00") + k * MIN, feed_page(80000 + k))
                assert code == grpc.StatusCode.OK, code
            since = len(d.stderr())
            polfile.write_text(cap.policy_b.read_text())
            line = ph.sighup_and_wait(d, "reloaded", since)
            id_b = re.search(r"policy_id=([0-9a-f]{32})", line).group(1)
            assert id_b != id_a, line
            for k in range(3, 5):
                code, _, _ = do_call(cap, d, "pid-teen", "13_15", at("10:00") + k * MIN, feed_page(80000 + k))
                assert code == grpc.StatusCode.OK, code
        finally:
            problems = d.stop()
        assert not problems, problems
    finally:
        redis.stop()
    files = sorted(capdir.glob("feedguard-*.fgcap"))
    dump = json_lines(ok(replay("dump", "--descriptor-set", cap.pb, *files), "dump")[0], "dump")
    assert [r.get("policy_id") for r in dump] == [id_a] * 3 + [id_b] * 2, [r.get("policy_id") for r in dump]
    third = ph.write_policy(tmp_path, cap.policy_a.read_text() + "\n# edited\n", "third.yaml")
    for pol, own, other, other_id in ((saved_a, 3, 2, id_b), (saved_b, 2, 3, id_a), (third, 0, 5, id_a)):
        res = replay("run", "-p", pol, "--check", "--no-progress", *files)
        out, err = text(res)
        # its own calls decide as recorded: the check passes, whatever the others do
        assert "check: %d calls, %d decided as recorded, 0 otherwise\n" % (own, own) in out + err, (
            pol, out, err[-2000:])
        m2 = re.search(r"check: (\d+) more calls were decided by another policy \(for example policy_id "
                       r"([0-9a-f]{32}); this one's is ([0-9a-f]{32})\), (\d+) of them otherwise than here: "
                       r"not counted above", out + err)
        assert m2 and int(m2.group(1)) == other and m2.group(2) == other_id, (pol, out + err)
        assert m2.group(3) not in (id_a, id_b) if pol == third else m2.group(3) != other_id, m2.group(0)
        # nothing of its own to compare is no pass
        assert res.returncode == (1 if own == 0 else 0), (pol, res.returncode, err[-2000:])
        named = re.findall(r"decided otherwise than recorded( \(by another policy\))?:", err)
        assert len(named) == int(m2.group(4)) and all(named), err


def test_run_check_overlapping_calls_of_one_user_decide_as_recorded(cap, tmp_path):
    """Three calls of one 13_15 teen in flight at once (the ranker holds
    each until all three reached it), under policy B (wellbeing 8 a day):
    each read the state before any update landed, so each delivered its 4
    wellbeing items, 12 in all (README, Concurrency).  Replay holds each
    update until its call's recorded end, so the three decide as recorded;
    applied at once (before), the third call's items were LIMITED."""
    import threading
    capdir = tmp_path / "capture"
    capdir.mkdir()
    cfg = daemon_config(cap, cap.redis, capdir, key_prefix="conc:")
    cfg["policy"] = str(cap.policy_b)
    d = start_middle(tmp_path, cap.ranker.addr, cfg, "overlapping")
    together = threading.Barrier(3, timeout=tf(10))

    def held(base):
        def answer(raw):
            together.wait()
            time.sleep(0.05)            # every call lasts a few ms past the others' start
            return [feed_page(base)]
        return answer
    results = [None] * 3

    def one(k):
        results[k] = do_call(cap, d, "conc-teen", "13_15", at("10:00"), held(90000 + 1000 * k))
    try:
        threads = [threading.Thread(target=one, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(tf(20))
        settle(cap, cap.redis, "conc-teen", at("10:00"), prefix="conc:")
    finally:
        problems = d.stop()
    assert not problems, problems
    assert [r[0] for r in results] == [grpc.StatusCode.OK] * 3, results
    files = sorted(capdir.glob("feedguard-*.fgcap"))
    dump = json_lines(ok(replay("dump", "--descriptor-set", cap.pb, *files), "dump")[0], "dump")
    assert len(dump) == 3
    assert {r["user_key"] for r in dump} == {capture_pseudonym(cap.capkey, "conc-teen")}
    delivered = [sum(1 for it in r["decisions"]["items"] if it.get("class") == "body_image"
                     and it.get("fate", "KEPT") == "KEPT") for r in dump]
    assert delivered == [4, 4, 4], "each call should have delivered 4 wellbeing items: %s" % delivered
    res = replay("run", "-p", cap.policy_b, "--check", "--no-progress", *files)
    out, err = text(res)
    assert "check: 3 calls, 3 decided as recorded, 0 otherwise" in out + err and res.returncode == 0, (
        res.returncode, out, err[-2000:])


def test_dump_counted_ms_is_the_time_the_account_wrote(cap):
    """Each call the account wrote time for says how long it counted
    (ScreenTime.counted_ms, which replay counts the call with): never more
    than the call's duration, and absent where nothing was written."""
    counted = 0
    for rec in cap.dump:
        st = (rec.get("decisions") or {}).get("screen_time")
        if not st:
            continue
        delivered = rec.get("status", 0) == 0 and not rec.get("answered_by_feedguard")
        assert "counted_ms" in st, "dump writes counted_ms (null when absent): %r" % st
        if st["counted_ms"] is not None:
            counted += 1
            assert 0 <= st["counted_ms"] * 1000 <= int(rec["duration_us"]), rec
        else:
            assert not delivered, "a delivered call without counted_ms: %r" % rec
    assert counted > 0, "no call carries counted_ms"


def test_run_check_other_policy_names_differences(cap):
    """--check under another policy (B: wellbeing 8 a day) than the one
    that recorded the capture (A): none of the calls is B's own (their
    policy_id is A's), so none counts in the check, which fails (nothing
    to compare is no pass); the calls that B decides otherwise are
    counted apart and named, at most ten, on stderr."""
    res = replay("run", "-p", cap.policy_b, "--check", "--no-progress", *cap.files)
    out, err = text(res)
    assert "check: 0 calls, 0 decided as recorded, 0 otherwise" in out + err, (out, err)
    m = re.search(r"check: (\d+) more calls were decided by another policy \(.*\), (\d+) of them otherwise "
                  r"than here", out + err)
    assert m, "no line for the other policy's calls:\n%s\n%s" % (out, err)
    n, other = map(int, m.groups())
    assert n == cap.n_all and 0 < other < n, m.group(0)
    assert res.returncode == 1, "exit %s" % res.returncode
    assert 1 <= len(re.findall(r"\bcall \d+", err)) <= 10, err
    # each says what differed first: under B the wellbeing allowance runs
    # out where A's did not, so the call tells a notice A did not
    # and that A decided those calls, not B (their policy_id)
    lines = [l for l in err.splitlines() if "decided otherwise than recorded (by another policy): " in l]
    assert lines and all(re.search(r"recorded \(by another policy\): (status|screen-time action|notices|\d+ items|item \d+ of page \d+)"
                                    r".* recorded.* replayed$", l) for l in lines), err
    assert any(l.endswith("screen-time action NONE recorded, NOTICE replayed") for l in lines), err
    # each names its record as dump does: file and offset (a README-only
    # trial could not trace a difference back to its record)
    by_place = {(r["file"], int(r["offset"])): r for r in cap.dump}
    for l in lines:
        m = re.search(r", (cap-t:[0-9a-f]{64}); (\S+) offset (\d+), as dump names it\)", l)
        assert m, l
        rec = by_place.get((m.group(2), int(m.group(3))))
        assert rec and rec["user_key"] == m.group(1), (l, rec and rec["user_key"])


def test_run_under_a_policy_without_the_recorded_method(cap, tmp_path):
    """A policy that names none of the capture's methods (the wrong policy
    for it): run says so on stderr, with the count and a method, instead of
    replaying every call as passed through in silence; calls the recording
    policy answered itself have no ranker answer to pass through and count
    as such (no_upstream, status CANCELLED), not as served."""
    text = UK_CHILDREN.read_text()
    start = text.index("  /feedguard.ranking.v1.Ranker/RankFeed:")
    end = text.index("  /feedguard.ranking.v1.Ranker/StreamPages:")
    other = ph.write_policy(tmp_path, text[:start] + text[end:], "no-rankfeed.yaml")
    calls = tmp_path / "calls.csv"
    out, err = ok(replay("run", "-p", other, "--calls", calls, *cap.files), "run under a policy without RankFeed")
    m = re.search(r"policy A names no method of (\d+) of the (\d+) calls \(for example "
                  r"/feedguard\.ranking\.v1\.Ranker/RankFeed\)", err)
    assert m, "stderr %r" % err
    assert int(m.group(1)) == int(m.group(2)) == cap.n_all, m.group(0)
    # A call the recording policy denied (no ranker answer recorded): under a
    # policy that passes it through there is nothing to pass through.
    C = tc.cap()
    info = C.Record()
    info.file_info.format_version = 2
    info.file_info.capture_key_id = CAPTURE_KEY_ID
    info.file_info.sample = 1
    rec = C.Record()
    rec.call.start_unix_ms = at("10:00")
    rec.call.method = "/feedguard.ranking.v1.Ranker/RankFeed"
    rec.call.band = "13_15"
    rec.call.user_key = CAPTURE_KEY_ID + ":" + "ab" * 32
    rec.call.request.append(request("denied", "13_15"))
    rec.call.answered_by_feedguard = True
    rec.call.status = 8
    denied = tmp_path / "denied.fgcap"
    denied.write_bytes(MAGIC + struct.pack("<II", 2, 0) + tc.frame(info.SerializeToString())
                       + tc.frame(rec.SerializeToString()))
    out, err = ok(replay("run", "-p", other, "--calls", calls, denied), "run of a denied call, passed through")
    assert "policy A: 1 calls had no ranker answer" in err, err
    _, rows = read_calls_csv(calls)
    assert {r["status"] for r in rows} == {"1"}, "the denied call replayed as %s" % sorted({r["status"] for r in rows})


def test_run_under_a_policy_without_a_recorded_band(cap, tmp_path):
    """A policy whose bands do not include a recorded one (renamed): its
    calls are replayed in the policy's unknown_band, as the README says,
    and run says so on stderr with the count and the band, instead of
    comparing a child's feed with an adult's in silence.  The recording
    policy itself draws no such line."""
    text = UK_CHILDREN.read_text()
    assert "13_15" in text
    other = ph.write_policy(tmp_path, text.replace("13_15", "teen_13_15"), "renamed-band.yaml")
    out, err = ok(replay("run", "-p", cap.policy_a, "-p", other, *cap.files), "run under a renamed band")
    m = re.search(r"policy B has no band of (\d+) of the (\d+) calls \(for example '13_15'\): they were "
                  r"replayed in its unknown_band, (\S+);", err)
    assert m, "stderr %r" % err
    assert 0 < int(m.group(1)) < int(m.group(2)), m.group(0)
    assert "policy A has no band" not in err, err


def run_calls(cap, tmp_path, *policies, fmt="csv", extra=()):
    calls = tmp_path / ("calls.%s" % ("csv" if fmt == "csv" else "jsonl"))
    args = ["run"]
    for p in policies:
        args += ["-p", p]
    args += ["--calls", calls, "--format", fmt, "--no-progress"] + list(extra) + list(cap.files)
    out, err = ok(replay(*args), "feedguard-replay %s" % " ".join(map(str, args[:8])))
    return out, err, calls


def by_time(cap):
    """The dump's records in time order (the calls' numbering)."""
    return sorted(cap.dump, key=lambda r: int(r["start_unix_ms"]))


def test_run_calls_csv(cap, tmp_path):
    """The calls file: the documented columns, one row per call and item
    class (one row with an empty class for a call with no items), the
    calls numbered in time order as recorded; its sums are the summary's
    items table."""
    out, _, calls = run_calls(cap, tmp_path, cap.policy_a)
    assert re.search(r"^policy A: .*policy-a\.yaml$", out, re.M), out[:300]
    assert re.search(r"^calls: %d$" % cap.n_all, out, re.M), out[:300]
    cols, rows = read_calls_csv(calls)
    assert set(cols) == CALLS_COLUMNS and len(cols) == len(CALLS_COLUMNS), cols
    assert {r["policy"] for r in rows} == {"A"}
    nums = sorted({int(r["call"]) for r in rows})
    assert len(nums) == cap.n_all and nums == list(range(nums[0], nums[0] + cap.n_all)), nums
    recs = by_time(cap)
    seen = set()
    for r in rows:
        key = (r["call"], r["class"])
        assert key not in seen, "two rows for call %s class %r" % key
        seen.add(key)
        rec = recs[int(r["call"]) - nums[0]]
        assert (int(r["time_ms"]), r["user_key"], r["band"], r["method"]) == (
            int(rec["start_unix_ms"]), rec["user_key"], rec["band"], rec["method"]), (r, rec["time"])
        assert r["date"] == DATE0
        assert r["status"] == "0" and r["no_upstream"] == "0", r
        for f in FATES:
            assert int(r[f]) >= 0
    # Adults: the filter sees no items (no filter for the band): one row, no class.
    adult_rows = [r for r in rows if r["band"] == "adult"]
    assert len(adult_rows) == 16 and all(r["class"] == "" for r in adult_rows), adult_rows[:3]
    # The notices column, "|"-separated in order, as the summary's notices table counts them.
    notices = {}
    for r in {r["call"]: r for r in rows}.values():
        for n in filter(None, r["notices"].split("|")):
            notices[(r["band"], n)] = notices.get((r["band"], n), 0) + 1
    _, _, nrows = table(out, "notices")
    assert {(x["band"], x["notice"]): int(x["calls"]) for x in nrows} == notices
    assert notices.get(("13_15", "daily-limit")) and notices.get(("13_15", "exposure-limit"))
    # Sums per band and class are the items table's; exposure max is the
    # largest per user-day sum of shown.
    _, _, irows = table(out, "items")
    for x in irows:
        cls = x["class"]
        mine = [r for r in rows if r["band"] == x["band"] and (r["class"] or "-") == cls]
        for f in FATES:
            assert sum(int(r[f]) for r in mine) == int(x[f]), (x, f)
        days = {}
        for r in mine:
            days[(r["user_key"], r["date"])] = days.get((r["user_key"], r["date"]), 0) + int(r["shown"])
        assert int(x["max"]) == max(days.values()), (x, days)
    bi = [x for x in irows if x["band"] == "13_15" and x["class"] == "body_image"]
    assert len(bi) == 1 and int(bi[0]["max"]) == 20 and int(bi[0]["limited"]) > 0, bi


def test_run_calls_jsonl(cap, tmp_path):
    """--format jsonl: one object per call and policy, its classes inside,
    the same numbers as the CSV."""
    _, _, calls = run_calls(cap, tmp_path, cap.policy_a)
    _, csv_rows = read_calls_csv(calls)
    _, _, jcalls = run_calls(cap, tmp_path, cap.policy_a, fmt="jsonl")
    objs = json_lines(jcalls.read_text(), "calls jsonl")
    assert len(objs) == cap.n_all, "%d objects for %d calls" % (len(objs), cap.n_all)
    assert len({o["call"] for o in objs}) == cap.n_all
    from_csv = {}
    for r in csv_rows:
        if r["class"]:
            from_csv.setdefault(int(r["call"]), {})[r["class"]] = {f: int(r[f]) for f in FATES}
    for o in objs:
        assert o["policy"] == "A"
        assert isinstance(o.get("classes"), dict), o
        got = {c: {f: int(v[f]) for f in FATES} for c, v in o["classes"].items()}
        assert got == from_csv.get(int(o["call"]), {}), (o["call"], got)


# ================================================================ 3. run, A against B

def test_run_a_against_b(cap, tmp_path):
    """B (wellbeing 8 a day instead of 20): more limited and fewer shown
    body_image items, exposure at most 8 per user-day for 13_15 and 16_17;
    adults and the calls table unchanged; exit 0."""
    out, _, calls = run_calls(cap, tmp_path, cap.policy_a, cap.policy_b)
    assert re.search(r"^policy A: .*policy-a\.yaml$", out, re.M) and re.search(
        r"^policy B: .*policy-b\.yaml$", out, re.M), out[:300]
    _, _, crows = table(out, "calls")
    per = {(x["band"], x["policy"]): x for x in crows}
    for band in ("under_13", "13_15", "16_17", "adult"):
        a, b = per[(band, "A")], per[(band, "B")]
        assert {k: v for k, v in a.items() if k != "policy"} == {k: v for k, v in b.items() if k != "policy"}
    assert (per[("adult", "A")]["calls"], per[("adult", "A")]["users"]) == ("16", "8")
    assert (per[("13_15", "A")]["calls"], per[("13_15", "A")]["users"]) == ("15", "1")
    _, _, irows = table(out, "items")
    items = {(x["band"], x["class"], x["policy"]): x for x in irows}
    for band in ("13_15", "16_17"):
        a, b = items[(band, "body_image", "A")], items[(band, "body_image", "B")]
        assert int(b["limited"]) > int(a["limited"]), (a, b)
        assert int(b["shown"]) < int(a["shown"]), (a, b)
        assert int(b["max"]) == 8 and int(b["p50"]) == 8, (band, a, b)
    # Under A the 13_15 teen reaches the allowance (20); the 16_17 teen's
    # three calls stay under it (nothing limited).
    assert int(items[("13_15", "body_image", "A")]["max"]) == 20
    assert int(items[("16_17", "body_image", "A")]["limited"]) == 0
    assert 8 < int(items[("16_17", "body_image", "A")]["max"]) < 20
    _, _, nrows = table(out, "notices")
    told = {(x["band"], x["policy"], x["notice"]): int(x["calls"]) for x in nrows}
    assert told.get(("16_17", "B", "exposure-limit"), 0) > 0 and ("16_17", "A", "exposure-limit") not in told
    assert told[("13_15", "B", "exposure-limit")] > told[("13_15", "A", "exposure-limit")]
    _, rows = read_calls_csv(calls)
    assert {r["policy"] for r in rows} == {"A", "B"}
    a_rows = {(r["call"], r["class"]): r for r in rows if r["policy"] == "A"}
    b_rows = {(r["call"], r["class"]): r for r in rows if r["policy"] == "B"}
    assert {c for c, _ in a_rows} == {c for c, _ in b_rows}, "A and B number the calls differently"
    for key, ra in a_rows.items():
        if ra["band"] == "adult":
            rb = b_rows.get(key)
            assert rb is not None and {k: v for k, v in ra.items() if k != "policy"} == \
                {k: v for k, v in rb.items() if k != "policy"}, (ra, rb)


def test_run_user_days_are_the_policys_local_days(cap, tmp_path):
    """Exposure per user-day counts the days the policy counts: the local
    date in the zone the call's limits used.  Replayed under the policy
    with time_zone Pacific/Chatham (UTC+13:45 in January), the 13_15
    teen's calls from 10:00 UTC straddle local midnight (10:15 UTC):
    three on the 15th, the rest on the 16th, each day's wellbeing
    allowance (20) met apart.  By UTC dates (before) the summary showed one
    user-day of 32 against an allowance of 20 (a README-only trial, in
    Tokyo)."""
    text = cap.policy_a.read_text()
    assert "\ntime_zone: Europe/London\n" in text
    chatham = ph.write_policy(tmp_path, text.replace("\ntime_zone: Europe/London\n",
                                                     "\ntime_zone: Pacific/Chatham\n"), "chatham.yaml")
    out, _, calls = run_calls(cap, tmp_path, chatham)
    _, rows = read_calls_csv(calls)
    teen = cap.key_of["teen-13"]
    dates = {}
    for r in rows:
        if r["user_key"] == teen and r["class"] == "body_image":
            dates.setdefault(r["date"], []).append(int(r["shown"]))
    assert sorted(dates) == ["2031-01-15", "2031-01-16"] and len(dates["2031-01-15"]) == 3, dates
    assert sum(dates["2031-01-16"]) == 20 and sum(dates["2031-01-15"]) <= 20, dates
    _, _, irows = table(out, "items")
    items = {(x["band"], x["class"]): x for x in irows}
    assert int(items[("13_15", "body_image")]["max"]) == 20, items[("13_15", "body_image")]
    # the calls file's dates are what summary counts from
    res = replay("summary", calls)
    sout, _ = ok(res, "summary")
    _, _, srows = table(sout, "items")
    assert int({(x["band"], x["class"]): x for x in srows}[("13_15", "body_image")]["max"]) == 20


def test_run_allowed_class_keeps_its_row(cap, tmp_path):
    """A class one policy demotes and the other allows is counted under its
    own name by both ("an item is counted under ... its first class"), not
    as class "-": with C allowing priority content (violence_graphic) for
    16_17, C shows the violence items A demoted, under violence_graphic."""
    policy = UK_CHILDREN.read_text()
    demote = "        - {classes: [priority], not_before: 5, spacing: 5, max_share: 0.2}\n"
    assert demote in policy
    policy_c = ph.write_policy(tmp_path, policy.replace(demote, ""), "policy-c.yaml")
    out, _, calls = run_calls(cap, tmp_path, cap.policy_a, policy_c)
    _, _, irows = table(out, "items")
    items = {(x["band"], x["class"], x["policy"]): x for x in irows}
    a, c = items[("16_17", "violence_graphic", "A")], items[("16_17", "violence_graphic", "B")]
    assert int(a["demoted"]) > 0 and int(c["demoted"]) == 0, (a, c)
    assert int(c["shown"]) >= int(a["shown"]) > 0, (a, c)
    # what moved into the class under C did not come from "-"
    assert items[("16_17", "-", "A")]["shown"] == items[("16_17", "-", "B")]["shown"]
    _, rows = read_calls_csv(calls)
    assert any(r["policy"] == "B" and r["band"] == "16_17" and r["class"] == "violence_graphic"
               and int(r["shown"]) > 0 for r in rows)


# ================================================================ 4. shards

def test_shards_partition_users_and_summary_adds_up(cap, tmp_path):
    """--shard I/3: every call in exactly one shard, a user's calls all in
    one, the share its pseudonym's first 64 bits modulo 3; `summary` of
    the three calls files prints the unsharded run's tables."""
    full_out, _, full_calls = run_calls(cap, tmp_path, cap.policy_a, cap.policy_b)
    _, full_rows = read_calls_csv(full_calls)

    def ident(r):
        return (r["policy"], r["user_key"], r["time_ms"], r["method"])
    # Calls of one user at one time share an ident (the warm-up repeats its
    # 09:00 call until one reads state): each ident maps to the numbers of
    # all its calls, and a shard must number them the same.
    number, in_shards = {}, {}
    for r in full_rows:
        number.setdefault(ident(r), []).append(r["call"])
    shard_files, owner, renumbered = [], {}, []
    for i in range(3):
        d = tmp_path / ("s%d" % i)
        d.mkdir()
        _, _, f = run_calls(cap, d, cap.policy_a, cap.policy_b, extra=("--shard", "%d/3" % i))
        shard_files.append(f)
        _, rows = read_calls_csv(f)
        for r in rows:
            prev = owner.setdefault(ident(r), i)
            assert prev == i, "call %s in shards %d and %d" % (ident(r), prev, i)
            # READING: "its first 64 bits" are the first 16 hex digits, big-endian.
            hexpart = r["user_key"].split(":", 1)[1]
            assert int(hexpart[:16], 16) % 3 == i, "user %s in shard %d" % (r["user_key"], i)
            in_shards.setdefault(ident(r), []).append((i, r["call"]))
    for k, got in in_shards.items():
        if sorted(c for _, c in got) != sorted(number.get(k, [])):
            renumbered.append((got[0][0], sorted(c for _, c in got), sorted(number.get(k, []))))
    assert set(owner) == set(number), "the shards do not cover every call"
    users = {}
    for r in full_rows:
        users.setdefault(r["user_key"], set()).add(owner[ident(r)])
    assert all(len(s) == 1 for s in users.values()), users
    assert len({next(iter(s)) for s in users.values()}) > 1, "every user in one shard: the test proves nothing"
    res = replay("summary", *shard_files)
    out, _ = ok(res, "summary of the shards")
    assert summary_part(out) == summary_part(full_out), "summary of shards:\n%s\nunsharded:\n%s" % (
        summary_part(out), summary_part(full_out))
    # the same tables, row for row, whatever order the files come in
    out_rev, _ = ok(replay("summary", *reversed(shard_files)), "summary of the shards, reversed")
    assert summary_part(out_rev) == summary_part(out), "summary depends on the files' order:\n%s\n%s" % (
        summary_part(out_rev), summary_part(out))
    # a file given twice, or a shard with the whole run: refused, not
    # counted twice (a README-only trial's summary showed 1950 calls of 1636)
    biggest = max(shard_files, key=lambda p: p.stat().st_size)     # a shard may hold no user
    for files in ([biggest, biggest], [full_calls, biggest]):
        res = replay("summary", *files)
        err = res.stderr.decode("utf-8", "replace")
        assert res.returncode == 1 and "is in the calls files twice" in err and not res.stdout, (
            files, res.returncode, err)
    # `call` is "the call's number in the capture (its place among all
    # calls, in time order)": a shard's file numbers a call as the whole run does.
    assert not renumbered, "%d calls of shard files number their call otherwise than the unsharded run " \
        "(shard, calls in the shard file, calls in the unsharded file), e.g. %s" % (len(renumbered), renumbered[:5])


# ================================================================ 5. live

def test_live_against_a_fresh_feedguardd(cap, tmp_path):
    """live --speed 0 against a fresh feedguardd with the same policy, in
    front of the same ranker (the capture kept x-call-id, so it answers
    each call as then): every call sent and answered, status as recorded
    for all (only notices fire: every status is OK), the documented report
    lines, exit 0.  Adults' pages come back byte for byte."""
    d = start_middle(tmp_path, cap.ranker.addr, daemon_config(cap, cap.redis, key_prefix="live:"), "live-target")
    try:
        res = replay("live", "--target", d.addr, "--speed", "0", *cap.files)
    finally:
        problems = d.stop()
    assert not problems, "\n".join(problems)
    out, err = ok(res, "feedguard-replay live")
    n = cap.n_all
    lines = out.splitlines()
    assert re.search(r"^target: %s, concurrency 16, speed 0, rate 0/s$" % re.escape(d.addr), out, re.M), out
    assert re.search(r"^calls: %d sent, %d answered in [0-9.]+ s, [0-9.]+ req/s$" % (n, n), out, re.M), out
    m = re.search(r"^latency ms: p50 ([0-9.]+)  p90 ([0-9.]+)  p99 ([0-9.]+)  p99\.9 ([0-9.]+)  max ([0-9.]+)$",
                  out, re.M)
    assert m, out
    pct = [float(x) for x in m.groups()]
    assert pct == sorted(pct) and pct[0] > 0, pct
    i = lines.index("latency histogram:")
    hist = []
    for line in lines[i + 1:]:
        h = re.match(r"^  <=\s+([0-9.]+) ms\s+(\d+)$", line)
        if not h:
            break
        hist.append((float(h.group(1)), int(h.group(2))))
    assert hist and sum(c for _, c in hist) == n, (hist, out)
    assert [b for b, _ in hist] == sorted(b for b, _ in hist)
    assert re.search(r"^status: OK %d$" % n, out, re.M), out
    m = re.search(r"^against the capture: status as recorded (\d+)/(\d+), "
                  r"response as recorded \(byte for byte\) (\d+)/(\d+)$", out, re.M)
    assert m, out
    st, n1, same, n2 = map(int, m.groups())
    assert (st, n1, n2) == (n, n, n), m.group(0)
    assert 16 <= same <= n, "%s: the 16 adult pages pass unfiltered, as recorded" % m.group(0)


def test_live_keeps_a_users_calls_in_order(cap, tmp_path):
    """live at --concurrency 64 --speed 0 --recorded-time against a fresh
    feedguardd: a user's call waits for the user's earlier call that had
    ended before it began, as recorded, so the target's state sees them in
    order and every call decides as recorded (the 13_15 teen's wellbeing
    allowance runs out on the same call).  The ranker holds the teen's
    first call 300 ms: the next ones used to overtake it (a README-only
    trial's 963 calls came back 960 as recorded)."""
    import time as _time
    teen = cap.key_of["teen-13"]
    first = min((r for r in cap.dump if r.get("user_key") == teen), key=lambda r: int(r["start_unix_ms"]))
    cid = md_values(first, "request_metadata", "x-call-id")[0].decode()
    with cap.ranker.lock:
        script = cap.ranker.scripts[cid]
    page_bytes = script.messages(b"")

    def slow(raw):
        _time.sleep(0.3)
        return page_bytes
    cap.ranker.script(cid, slow)
    try:
        d = start_middle(tmp_path, cap.ranker.addr, daemon_config(cap, cap.redis, key_prefix="order:"),
                         "live-order")
        try:
            res = replay("live", "--target", d.addr, "--speed", "0", "--concurrency", "64", "--recorded-time",
                         "-p", cap.policy_a, *cap.files)
        finally:
            problems = d.stop()
    finally:
        cap.ranker.script(cid, page_bytes)
    assert not problems, "\n".join(problems)
    out, _ = ok(res, "feedguard-replay live --concurrency 64")
    n = cap.n_all
    m = re.search(r"^against the capture: status as recorded (\d+)/(\d+), "
                  r"response as recorded \(byte for byte\) (\d+)/(\d+)$", out, re.M)
    assert m and tuple(map(int, m.groups())) == (n, n, n, n), (m and m.group(0), out)


def page_sizes_seen(cap, cid):
    """The page_size (RankFeedRequest field 4, the last occurrence) of each
    request the ranker got for call <cid>, in order."""
    out = []
    for rec in cap.ranker.find(cid):
        v = ph.values(rec["raw"], 4)
        out.append(v[-1] if v else None)
    return out


def test_live_sends_the_page_size_asked(cap, tmp_path):
    """A child's request is recorded as forwarded, with the page size the
    filter raised (decisions.page_size_asked keeps what the client asked).
    Against a fresh feedguardd with the same policy: without -p live sends
    the raised size, the target raises it again and says nothing of it but
    the report's line; with -p the target raises the size the client asked,
    so the ranker sees what it saw when recorded and the children's pages
    come back as recorded too."""
    raised = [r for r in cap.dump if (r.get("decisions") or {}).get("page_size_asked")]
    assert raised, "precondition: the capture has calls the filter over-fetched"
    outs = {}
    for name, extra in (("plain", ()), ("policy", ("-p", str(cap.policy_a)))):
        d = start_middle(tmp_path, cap.ranker.addr, daemon_config(cap, cap.redis, key_prefix="ps-%s:" % name),
                         "live-" + name)
        try:
            res = replay("live", "--target", d.addr, "--speed", "0", *extra, *cap.files)
        finally:
            problems = d.stop()
        assert not problems, "\n".join(problems)
        outs[name], _ = ok(res, "feedguard-replay live %s" % name)
        for r in raised:
            cid = md_values(r, "request_metadata", "x-call-id")[0].decode()
            seen = page_sizes_seen(cap, cid)
            first, last = seen[0], seen[-1]
            if name == "policy":
                assert last == first, "call %s: the ranker saw page_size %s when recorded, %s in the replay " \
                    "with -p" % (cid, first, last)
            else:
                assert last > first, "call %s: without -p the raised size is raised again: %s" % (cid, seen)
    n = len(raised)
    assert "over-fetched when recorded: 0 calls sent with the page size the client asked, %d with the " \
        "raised one (no --policy: a feedguardd target raises it again)" % n in outs["plain"], outs["plain"]
    assert "over-fetched when recorded: %d calls sent with the page size the client asked, 0 with the " \
        "raised one" % n in outs["policy"], outs["policy"]
    same = {}
    for name, out in outs.items():
        m = re.search(r"response as recorded \(byte for byte\) (\d+)/(\d+)$", out, re.M)
        same[name] = int(m.group(1))
    print("byte for byte: %s of %d calls, %d over-fetched when recorded" % (same, len(cap.dump), n))
    assert same["policy"] > same["plain"], "with -p more pages come back as recorded: %s" % same
    bad = replay("live", "--target", cap.ranker.addr, "-p", str(tmp_path / "nope.yaml"), *cap.files)
    assert bad.returncode == 1 and b"nope.yaml" in bad.stderr, bad


def test_live_user_header_and_recorded_time(cap):
    """--user-header sends each call's recorded user key (the capture
    pseudonym) in that header, --recorded-time its start_unix_ms in
    feedguard-test-now: straight at the ranker, which records what it got."""
    res = replay("live", "--target", cap.ranker.addr, "--speed", "0", "--user-header", "x-replay-user",
                 "--recorded-time", *cap.files)
    ok(res, "feedguard-replay live --user-header --recorded-time")
    for r in cap.dump:
        cid = md_values(r, "request_metadata", "x-call-id")[0].decode()
        md = cap.ranker.find(cid)[-1]["md"]         # this replay's: the ranker's last of the call
        assert md.get(TEST_NOW) == [str(r["start_unix_ms"])], (cid, md)
        want = [r["user_key"]] if r.get("user_key") else None
        assert md.get("x-replay-user") == want, (cid, md, r.get("user_key"))
    for bad in ("X-Upper", "grpc-foo", "te", "feedguard-test-now", "a b"):
        res = replay("live", "--target", cap.ranker.addr, "--user-header", bad, *cap.files)
        assert res.returncode == 2, (bad, res.returncode)
        assert b"--user-header" in res.stderr, res.stderr


def test_live_closed_port(cap):
    """A target nobody listens on: exit 1."""
    res = replay("live", "--target", "127.0.0.1:%d" % harness.closed_port(), "--speed", "0", *cap.files)
    out, err = text(res)
    assert res.returncode == 1, "exit %s\n%s\n%s" % (res.returncode, out, err)
    assert err.strip(), "nothing said on stderr"


# ================================================================ 6. usage


def test_run_says_when_max_users_was_too_few(cap, tmp_path):
    """Past --max-users the state backend refuses a new user and the
    bands' fail_mode applies: run said nothing of it and exited 0 (an
    attack run).  It still exits 0, with a line on stderr that says how
    often and what to do; with room for everyone, no such line."""
    out, err, _ = run_calls(cap, tmp_path, cap.policy_a, extra=["--max-users", "1"])
    m = re.search(r"policy A: (\d+) screen-time state operations found no room for another user "
                  r"\(--max-users 1\)", err)
    assert m and int(m.group(1)) > 0, err
    _, err, _ = run_calls(cap, tmp_path, cap.policy_a)
    assert "found no room" not in err, err


def test_run_prints_no_control_bytes_from_a_capture(cap, tmp_path):
    """A crafted capture put terminal escapes (a window title, a screen
    clear) and line breaks from its band, method and user key into the
    researcher's terminal, stderr and calls file, and a line break made the
    calls file one summary could not read (an attack run).  run prints them
    as '?'; summary reads its calls file back."""
    C = tc.cap()
    info = C.Record()
    info.file_info.format_version = 1
    info.file_info.writer = "feedguardd 0.1.0"
    info.file_info.capture_key_id = CAPTURE_KEY_ID
    info.file_info.sample = 1
    body = tc.MAGIC + struct.pack("<II", 1, 0) + tc.frame(info.SerializeToString())
    for band, method_ in (("\x1b]0;TITLE\x07\x1b[2J\u009b31m", RANK), ("13_15", "/x\x1b[1mY/Z\n\rfake: ok")):
        rec = C.Record()
        rec.call.method = method_
        rec.call.band = band
        rec.call.user_key = CAPTURE_KEY_ID + ":\x1b[31m" + "ab" * 30
        rec.call.start_unix_ms = 1796000000000
        body += tc.frame(rec.SerializeToString())
    f = tmp_path / "crafted.fgcap"
    f.write_bytes(body)
    calls = tmp_path / "calls.csv"
    res = replay("run", "-p", cap.policy_a, "--calls", calls, "--no-progress", f)
    for what, data in (("stdout", res.stdout), ("stderr", res.stderr), ("calls file", calls.read_bytes())):
        bad = [b for b in data if b < 0x20 and b not in (0x0a,)]
        assert not bad, "%s holds control bytes %r:\n%r" % (what, sorted(set(bad)), data[:2000])
        assert b"\xc2\x9b" not in data, "%s holds a C1 CSI (U+009B)" % what
    assert b"?]0;TITLE??[2J" in res.stderr and b"/x?[1mY/Z??fake: ok" in res.stderr, res.stderr
    fields, rows = read_calls_csv(calls)
    assert len(fields) == 19 and len(rows) == 2 and all(None not in r for r in rows), rows
    out, _ = ok(replay("summary", calls), "summary of run's calls file")
    assert "calls by band" in out


def test_run_says_why_calls_could_not_be_replayed(cap, tmp_path):
    """Records of calls with no method (a capture feedguardd did not write):
    run said only "N calls could not be replayed" (an attack run); it now
    says that they name no method."""
    C = tc.cap()
    info = C.Record()
    info.file_info.format_version = 1
    info.file_info.capture_key_id = CAPTURE_KEY_ID
    body = tc.MAGIC + struct.pack("<II", 1, 0) + tc.frame(info.SerializeToString())
    for i in range(3):
        rec = C.Record()
        rec.call.band = "13_15"
        rec.call.start_unix_ms = 1796000000000 + i
        body += tc.frame(rec.SerializeToString())
    f = tmp_path / "nomethod.fgcap"
    f.write_bytes(body)
    res = replay("run", "-p", cap.policy_a, "--no-progress", f)
    assert res.returncode == 1, res
    assert b"3 calls could not be replayed: 3 name no method" in res.stderr, res.stderr

@pytest.mark.parametrize("args", [
    ["run", "-p", "{missing}", "{cap}"],
    ["run", "-p", "{policy}", "{missing}"],
    ["summary", "{missing}"],
    ["live", "--target", "127.0.0.1:1", "-p", "{missing}", "{cap}"],
], ids=["run-policy-missing", "run-capture-missing", "summary-missing", "live-policy-missing"])
def test_missing_files_exit_1(cap, tmp_path, args):
    """A file that is not there: exit 1, the tool's name and the path on
    stderr, nothing on stdout (no summary of nothing)."""
    missing = str(tmp_path / "not-there")
    args = [str(cap.files[0]) if a == "{cap}" else str(cap.policy_a) if a == "{policy}" else
            missing if a == "{missing}" else a for a in args]
    res = replay(*args)
    out, err = text(res)
    assert res.returncode == 1, "%s: exit %s\n%s\n%s" % (args, res.returncode, out[-500:], err[-500:])
    assert not out.strip(), "%s: stdout %r" % (args, out[:300])
    assert err.startswith("feedguard-replay: ") and missing in err, "%s: stderr %r" % (args, err[:300])


@pytest.mark.parametrize("args", [
    ["frobnicate"],
    ["run", "{cap}"],
    ["run", "-p", "{policy}", "--shard", "3/3", "{cap}"],
    ["run", "-p", "{policy}", "--format", "xml", "{cap}"],
    ["live", "--speed", "0", "{cap}"],
    ["dump"],
    ["run", "-p", "{policy}", "-p", "{policy}", "--check", "{cap}"],
    ["run", "-p", "{policy}", "--max-users", "0", "{cap}"],
    ["live", "--target", "127.0.0.1:1", "--concurrency", "0", "{cap}"],
    ["live", "--target", "127.0.0.1:1", "--concurrency", "many", "{cap}"],
], ids=["unknown-subcommand", "run-without-p", "shard-3-of-3", "format-xml", "live-without-target",
        "dump-without-files", "check-with-two-policies", "max-users-0", "concurrency-0", "concurrency-word"])
def test_usage_errors_exit_2(cap, args):
    """Usage errors: exit 2, something said on stderr, nothing on stdout."""
    args = [str(cap.files[0]) if a == "{cap}" else str(cap.policy_a) if a == "{policy}" else a for a in args]
    res = replay(*args)
    out, err = text(res)
    assert res.returncode == 2, "%s: exit %s\n%s\n%s" % (args, res.returncode, out[-500:], err[-500:])
    assert err.strip() and not out.strip(), (out[:300], err[:300])
