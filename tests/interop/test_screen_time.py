"""End-to-end tests of screen time, breaks, quiet hours and exposure limits
(README, "Policy: screen time, breaks, quiet hours and exposure"), written
from the README alone, before the code: a real redis-server
(redisserver.RedisServer, one per module, and private ones for the tests
that kill or pause it), feedguardd in front of the crafted-feed ranker
(feedranker.FeedRanker, python3-grpcio in this process), and the tests
assert what a child's app sees: statuses and grpc-message, the
`feedguard-screen-time` and `feedguard-notice` metadata, which items came
back; and what Redis holds: pseudonymous keys with a TTL, the fields `last`,
`sess`, `act` and `x:<counter>`.

Time.  The daemon under test is built with --enable-test-hooks: every call
sends `feedguard-test-now: <ms since the epoch>`, so a day passes in a few
calls.  The test days are in 2031 (in the future, so that no TTL computed
from a test time can already be over): a winter day (GMT = UTC), a summer
day (BST = UTC+1) and the nights the clocks change.  Calls are at whole
minutes after a session's first call, so active time is exact to the
millisecond but for the last call's own (real, few ms) duration, and no
minute count sits on a rounding edge.

Updates are sent after the response (README): before a call that depends
on the previous one, the tests poll Redis until the previous call's `last`
is there (`settle`), so no test depends on how soon the update lands.

Where the README is ambiguous the tests take the most reasonable reading
and say so in a comment starting "READING:".
"""
import hashlib
import hmac
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest

import harness
import policyhelp as ph
from feedranker import STREAM_PAGES, FeedRanker, ids, item, page, page_items
from harness import poll_until, run_feedguardd, tf
from policyhelp import RANK, f_len, f_varint
from redisserver import RedisClient, RedisServer

pytestmark = pytest.mark.proxy_only

OK = grpc.StatusCode.OK
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE

ST = "feedguard-screen-time"
NOTICE = "feedguard-notice"
TEST_NOW = "feedguard-test-now"
REPORT = "x-feedguard-filter"
NOTICE_ORDER = ["daily-limit", "quiet-hours", "take-a-break", "exposure-limit", "daily-limit-soon",
                "quiet-hours-soon"]
STATE_FIELDS = {"last", "sess", "day", "act", "night", "qact"}

LONDON = "Europe/London"
ZONES = [LONDON, "America/New_York", "Australia/Sydney"]
MIN = 60 * 1000
SEC = 1000

WINTER = (2031, 1, 15)          # GMT
SUMMER = (2031, 7, 16)          # BST
SPRING_NIGHT = (2031, 3, 29)    # 22:00 GMT to 07:00 BST the next morning: 8 hours
AUTUMN_NIGHT = (2031, 10, 25)   # 22:00 BST to 07:00 GMT the next morning: 10 hours

# A generous state.timeout for the tests that are not about it: the
# README's 20ms default would let a slow CI machine fail calls open.
STATE_TIMEOUT = "%dms" % min(10000, int(tf(1.0) * 1000))
STALL_TIMEOUT = "%dms" % min(20000, int(tf(2.0) * 1000))       # at least state.timeout

REQ = f_len(1, f_len(2, "u13")) + f_len(2, f_len(2, "en-GB"))      # RankFeedRequest: user.age_band, locale


def local_ms(day, hhmm, zone=LONDON, plus_days=0, sec=0):
    """ms since the epoch of local time <hhmm> on <day> (+<plus_days>) in <zone>."""
    h, m = map(int, hhmm.split(":"))
    d = datetime(*day) + timedelta(days=plus_days)
    return int(datetime(d.year, d.month, d.day, h, m, sec, tzinfo=ZoneInfo(zone)).timestamp() * 1000)


# ---------------------------------------------------------------- pages

ACME = {"stunt": "dangerous_stunts", "porn": "pornography", "sad_content": "depression",
        "body_ideal": "body_image", "gore": "violence_graphic"}


def it(iid, *labels):
    """A FeedItem with moderation labels (label, confidence)."""
    return item(iid, moderation=[(l, c) for l, c in labels])


PAGE = page([it(1, ("sport", 0.9)), it(2, ("music", 0.8)), it(3)])
PAGE_IDS = [1, 2, 3]


def stunt_page(first_id, n):
    return page([it(first_id + i, ("stunt", 0.9)) for i in range(n)])


# ---------------------------------------------------------------- policies

def y(v):
    """A value as YAML flow text: strings that YAML would read as something
    else ("22:00", "13_15", "*") are quoted."""
    if isinstance(v, dict):
        return "{%s}" % ", ".join("%s: %s" % (k, y(x)) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[%s]" % ", ".join(y(x) for x in v)
    s = str(v)
    if ":" in s or s == "*" or (s[:1].isdigit() and "_" in s):
        return json.dumps(s)
    return s


def block(bands=("under_13",), **kw):
    """One `limits` block.  Keyword names are the README's keys (`brk` is
    `break`); a rule left out takes the README's default, "off" turns it
    off.  The tests pass every rule they do not test as "off", so the
    notices they assert are only the ones of the rule under test."""
    if "brk" in kw:
        kw["break"] = kw.pop("brk")
    out = "  - bands: %s\n" % ('"*"' if bands == "*" else y(list(bands)))
    for k, v in kw.items():
        if v is None:
            continue
        if k == "exposure":
            out += "    exposure:\n" + "".join("      - %s\n" % y(e) for e in v)
        else:
            out += "    %s: %s\n" % (k, y(v))
    return out


def only(**kw):
    """A block for under_13 with every rule off but those given."""
    base = {"idle_gap": "5m", "daily": "off", "brk": "off", "quiet_hours": "off"}
    base.update(kw)
    return block(**base)


FILTER = """\
    filter:
      - bands: [under_13, "13_15", "16_17"]
        exclude: [primary_priority]
        unlabelled: allow
%s"""


def policy(*blocks, tz=LONDON, zones=ZONES, filter_extra="", feed_extra="", stream_extra=""):
    """A policy over the demo's bands: RankFeed and StreamPages with a feed
    (moderation labels, the `acme` map), user id from x-user-id, zone from
    x-time-zone, a filter that excludes primary priority content only, and
    the given `limits` blocks."""
    text = ph.BANDS_HEADER
    if tz:
        text += "time_zone: %s\n" % tz
    if zones:
        text += "time_zones: %s\n" % y(list(zones))
    text += "label_maps:\n  acme:\n" + "".join("    %s: %s\n" % kv for kv in ACME.items())
    text += "methods:\n"
    for m, extra in ((RANK, ""), (STREAM_PAGES, stream_extra)):
        text += "  %s:\n" % m
        text += "    user_id: {header: x-user-id}\n    age_band: {header: x-age-band}\n"
        text += "    time_zone: {header: x-time-zone}\n" + extra
        text += ("    feed:\n      items: items\n"
                 "      labels: {field: moderation, value: label, confidence: confidence}\n"
                 "      classes: acme\n      report_header: %s\n%s" % (REPORT, feed_extra))
        text += FILTER % filter_extra
    return text + "limits:\n" + "".join(blocks)


# ---------------------------------------------------------------- the ranker

class StRanker(FeedRanker):
    """FeedRanker with per-call timing: <interval> seconds between the
    messages of a stream (cut short when the call ends), <delay> before the
    first answer."""

    def __init__(self):
        self.timing = {}
        self.initial_md = {}
        super().__init__()

    def script(self, cid, responses, gzip=False, code=None, interval=0.0, delay=0.0):
        with self.lock:
            self.timing[cid] = (interval, delay)
        return super().script(cid, responses, gzip, code)

    def _timing(self, context):
        cid = next((v for k, v in context.invocation_metadata() if k == "x-call-id"), None)
        with self.lock:
            return self.timing.get(cid, (0.0, 0.0))

    def find_method_calls(self, method, uid):
        """Records of calls of <method> for user <uid> (x-user-id)."""
        with self.lock:
            return [r for r in self.records if r["method"] == method and ("x-user-id", uid) in r["metadata"]]

    @staticmethod
    def _ended(context):
        ended = threading.Event()
        context.add_callback(ended.set)
        return ended

    def unary(self, method):
        inner = FeedRanker.unary(self, method)

        def handle(raw, context):
            _, delay = self._timing(context)
            if delay and self._ended(context).wait(delay):
                return b""
            cid = next((v for k, v in context.invocation_metadata() if k == "x-call-id"), None)
            with self.lock:
                md = self.initial_md.get(cid)
            if md:
                context.send_initial_metadata(md)
                context.set_trailing_metadata(md)
            return inner(raw, context)
        return handle

    def server_stream(self, method):
        def handle(raw, context):
            s = self._begin(method, raw, context)
            interval, delay = self._timing(context)
            ended = self._ended(context)
            if delay and ended.wait(delay):
                return
            for i, m in enumerate(s.messages(raw)):
                if i and interval and ended.wait(interval):
                    return
                yield m
            if s.code is not None:
                context.abort(s.code, "feedranker: scripted status")
        return handle


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def hooks():
    """The daemon must be a --enable-test-hooks build: these tests walk
    through days with feedguard-test-now."""
    res = run_feedguardd(["-v"])
    out = (res.stdout + res.stderr).decode("utf-8", "replace")
    if "test hooks: ON" not in out:
        msg = ("%s -v does not say 'test hooks: ON' (it says %r): build it with ./configure "
               "--enable-test-hooks to run test_screen_time.py" % (harness.FEEDGUARDD, out.strip()))
        if os.environ.get("FG_ST_SKIP_WITHOUT_HOOKS"):
            pytest.skip(msg)
        pytest.fail(msg, pytrace=False)


@pytest.fixture(scope="module")
def ranker():
    r = StRanker()
    yield r
    r.stop()


def need_redis():
    if not RedisServer.available():
        pytest.skip("redis-server is not installed (Debian: redis-server; or set FG_REDIS_SERVER)")


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    """The module's Redis; tests keep apart by user id (a fresh one each)."""
    need_redis()
    r = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield r
    r.stop()


@pytest.fixture
def redis_factory(tmp_path):
    """Private Redis servers a test may kill, pause or restart."""
    need_redis()
    started = []

    def make(name=None, **kw):
        r = RedisServer(tmp_path, name or "redis-%d" % (len(started) + 1), **kw)
        started.append(r)
        return r
    yield make
    for r in started:
        r.stop()


@pytest.fixture
def keys(tmp_path):
    """Two pseudonym keys of 32 random bytes, written as k1.key and k2.key."""
    out = {}
    for kid in ("k1", "k2"):
        out[kid] = os.urandom(32)
        (tmp_path / ("%s.key" % kid)).write_bytes(out[kid])
    return out


def pseudonym(keys, kid, uid):
    return "%s:%s" % (kid, hmac.new(keys[kid], uid.encode(), hashlib.sha256).hexdigest())


def new_user(prefix="kid"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


@pytest.fixture
def fg(tmp_path, middle, ranker, keys, hooks):
    """fg(policy_text, redis, state=None, config=None, ring=("k1",), wait=True):
    feedguardd in front of the ranker with <policy_text>, its state in
    <redis> (a RedisServer, or an address string), the pseudonym key ring
    <ring> (newest first).  With <wait>, returns once a call has read state
    (the worker connects to Redis after the daemon is ready)."""
    def start(policy_text, redis, state=None, config=None, ring=("k1",), wait=True):
        ph.write_policy(tmp_path, policy_text)
        addr = redis if isinstance(redis, str) else redis.addr
        cfg = {"policy": "policy.yaml",
               "pseudonym_keys": [{"id": k, "file": "%s.key" % k} for k in ring],
               "state": harness.deep_merge({"redis": addr, "timeout": STATE_TIMEOUT,
                                            "stall_timeout": STALL_TIMEOUT}, state or {})}
        d = middle(ranker.addr, harness.deep_merge(cfg, config or {}))
        d.ranker = ranker
        d.redis = None if isinstance(redis, str) else redis
        d.keys = keys
        d.ring = list(ring)
        d.prefix = ((state or {}).get("key_prefix") or "fg:")
        if wait:
            wait_state(d)
        return d
    return start


def redis_key(d, uid, kid=None):
    return "%s{%s}" % (d.prefix, pseudonym(d.keys, kid or d.ring[0], uid))


# ---------------------------------------------------------------- calls and what they return

class Result:
    """What the client got from one call."""

    def __init__(self, kind, code, details, msgs, headers, trailers, elapsed, t):
        self.kind = kind                  # "unary" or "stream"
        self.code = code
        self.details = details
        self.msgs = msgs                  # response messages (bytes)
        self.headers = list(headers or ())
        self.trailers = list(trailers or ())
        self.elapsed = elapsed
        self.t = t

    def __repr__(self):
        return "<%s call at %s: %s %r msgs=%d headers=%s trailers=%s>" % (
            self.kind, self.t, self.code, self.details, len(self.msgs), self.headers, self.trailers)

    def meta(self, key):
        """The one value of <key>, from where the README puts feedguard's
        metadata: the response headers of a unary call that is answered OK
        (served, or `empty`), the trailers of everything else (streams,
        trailers-only answers).  Fails if it is in the other place."""
        in_headers = self.kind == "unary" and self.code == OK
        want, other = (self.headers, self.trailers) if in_headers else (self.trailers, self.headers)
        stray = harness.md_values(other, key)
        assert not stray, "%s is in the %s, expected in the %s: %r" % (
            key, "trailers" if in_headers else "response headers",
            "response headers" if in_headers else "trailers", self)
        vals = harness.md_values(want, key)
        assert len(vals) <= 1, "%s sent %d times: %r" % (key, len(vals), self)
        return vals[0] if vals else None

    @property
    def st(self):
        v = self.meta(ST)
        if v is None:
            return None
        assert re.fullmatch(r"[a-z_]+=\d+(,[a-z_]+=\d+)*", v), "%s: %r is not name=<n>,..." % (ST, v)
        out = {}
        for part in v.split(","):
            k, n = part.split("=")
            assert k not in out, "%s names %s twice: %r" % (ST, k, v)
            out[k] = int(n)
        return out

    @property
    def notices(self):
        v = self.meta(NOTICE)
        if v is None:
            return []
        kinds = v.split(",")
        assert all(k in NOTICE_ORDER for k in kinds), "%s: unknown kind in %r" % (NOTICE, v)
        return kinds

    @property
    def report(self):
        v = self.meta(REPORT)
        if v is None:
            return None
        assert re.fullmatch(r"[a-z]+=\d+(,[a-z]+=\d+)*", v), "%s: %r" % (REPORT, v)
        return {k: int(n) for k, n in (p.split("=") for p in v.split(","))}

    @property
    def items(self):
        """Item ids the client got: of the one message of a unary call, of
        every page of a stream."""
        return [i for m in self.msgs for i in ids(page_items(m))]

    @property
    def delivered(self):
        """Served with a feed (not answered by a limit, not failed)."""
        return self.code == OK and any(self.msgs)


def metadata(uid, t, band, cid, tz=None, extra=()):
    md = [("x-call-id", cid), ("x-age-band", band)]
    if t is not None:
        md.append((TEST_NOW, str(int(t))))
    if uid is not None:
        md.append(("x-user-id", uid))
    if tz is not None:
        md.append(("x-time-zone", tz))
    return md + list(extra)


def rank(d, uid, t, band="under_13", resp=PAGE, tz=None, body=REQ, code=None, delay=0.0, settle=True,
         extra=()):
    """One RankFeed call for user <uid> at test time <t> (ms); the ranker
    answers <resp> (or fails with <code>).  With <settle>, waits until a
    delivered call's update is in Redis; settle="cap" also waits for a
    daily cap's answer's."""
    cid = ph.call_id("st")
    scripts_before = evalsha_calls(d) if settle == "cap" else None
    d.ranker.script(cid, [resp], code=code, delay=delay)
    start = time.monotonic()
    try:
        with harness.channel(d.addr) as ch:
            msg, c = ch.unary_unary(RANK).with_call(body, metadata=metadata(uid, t, band, cid, tz, extra),
                                                    timeout=tf(10))
        r = Result("unary", OK, c.details(), [msg], c.initial_metadata(), c.trailing_metadata(),
                   time.monotonic() - start, t)
    except grpc.RpcError as e:
        r = Result("unary", e.code(), e.details(), [], e.initial_metadata(), e.trailing_metadata(),
                   time.monotonic() - start, t)
    if settle:
        settle_call(d, uid, r, settle, scripts_before)
    return r


def evalsha_calls(d):
    if d.redis is None:
        return None
    with d.redis.client() as c:
        return c.calls("evalsha")


def stream(d, uid, t, pages, band="under_13", interval=0.0, tz=None, body=REQ, settle=True, timeout=None):
    """One StreamPages call; the ranker sends <pages> <interval> s apart."""
    cid = ph.call_id("sts")
    d.ranker.script(cid, pages, interval=interval)
    start = time.monotonic()
    msgs = []
    with harness.channel(d.addr) as ch:
        c = ch.unary_stream(STREAM_PAGES)(body, metadata=metadata(uid, t, band, cid, tz),
                                          timeout=timeout or tf(20))
        try:
            for m in c:
                msgs.append(m)
        except grpc.RpcError:
            pass
        r = Result("stream", c.code(), c.details(), msgs, c.initial_metadata(), c.trailing_metadata(),
                   time.monotonic() - start, t)
    if settle:
        settle_call(d, uid, r)
    return r


def settle_call(d, uid, r, settle=True, scripts_before=None):
    """After a call that wrote state: poll until Redis holds its `last`
    (at least its test time).  A delivered call writes; so does a daily
    cap's answer (the gap before it, up to the cap; `last` stays the last
    page's), which the caller says with settle="cap" since the client
    cannot tell which rule answered: then poll until Redis has run the
    call's two scripts, its read and its update (<scripts_before>: the
    EVALSHA count before the call).  Without this, the next call's read or
    the test's own HGET may run before the write lands."""
    if uid is None or d.redis is None or r.meta(ST) is None:
        return
    if not r.delivered and settle != "cap":
        return
    if not r.delivered:
        poll_until(lambda: evalsha_calls(d) >= scripts_before + 2, tf(5),
                   "the update of the answered call at %d (EVALSHA count)" % r.t)
        return
    key = redis_key(d, uid)

    def landed():
        with d.redis.client() as c:
            v = c.hget_int(key, "last")
        return v is not None and v >= r.t
    poll_until(landed, tf(5), "the update of the call at %d (HGET %s last)" % (r.t, key))


def wait_state(d, band="under_13"):
    """Poll with a throwaway user until a call reads state (carries
    feedguard-screen-time): the worker's Redis link is up."""
    uid = new_user("warmup")
    t = local_ms(WINTER, "10:00")

    def seen():
        r = rank(d, uid, t, band=band, settle=False)
        return r if (r.headers and harness.md_values(r.headers, ST)) or harness.md_values(r.trailers, ST) \
            else None
    return poll_until(seen, tf(10), "a call that read screen-time state (feedguard-screen-time); "
                      "feedguardd stderr:\n%s" % harness.tail(d.stderr_path, 20), interval=0.05)


def check(r, what, code=OK, st=None, keys=None, notices=(), items=None, empty=False, details=None):
    """Assert what the client saw.  <st>: the feedguard-screen-time values
    given must be these; <keys>: exactly these names in it; <notices>: the
    exact feedguard-notice list (None: not checked); <items>: the item ids
    of a served call; <empty>: the one empty message of `empty`."""
    assert r.code == code, "%s: expected %s, got %s (%r); %r" % (what, code, r.code, r.details, r)
    if details is not None:
        assert r.details == details, "%s: grpc-message %r, expected %r" % (what, r.details, details)
    if st is not None or keys is not None:
        got = r.st
        assert got is not None, "%s: no %s; %r" % (what, ST, r)
        if st is not None:
            assert {k: got.get(k) for k in st} == st, "%s: %s %s, expected %s" % (what, ST, got, st)
        if keys is not None:
            assert set(got) == set(keys), "%s: %s has %s, expected exactly %s" % (what, ST, sorted(got),
                                                                                 sorted(keys))
    if notices is not None:
        assert r.notices == list(notices), "%s: %s %s, expected %s" % (what, NOTICE, r.notices, list(notices))
    if empty:
        assert r.kind != "unary" or r.msgs == [b""], \
            "%s: `empty` must answer one empty message (no items), got %r" % (what, r.msgs)
        assert r.kind != "stream" or r.msgs == [], "%s: `empty` on a new stream sends no messages" % what
    if items is not None:
        assert r.items == items, "%s: items %s, expected %s" % (what, r.items, items)


def daily_message(used, cap, zone=LONDON):
    return "daily feed time limit reached: %d of %d minutes used today (resets at midnight, %s)" \
        % (used, cap, zone)


def hget(d, uid, field, kid=None):
    with d.redis.client() as c:
        return c.hget_int(redis_key(d, uid, kid), field)


def metrics(d):
    _, text = ph.http_get(ph.admin_addr(d), "/metrics")
    return text


def msum(text, name, **labels):
    """Sum of the samples of <name> whose labels include <labels> (0 when
    there is none: see has_sample)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == str(v) for k, v in labels.items()):
            total += float(m.group(3))
    return total


ADMIN = {"admin": {"listen": "127.0.0.1:0"}}


# ================================================================ 1. the daily cap

@pytest.mark.parametrize("action", ["deny", "empty", "notice"])
def test_daily_cap(fg, redis, action):
    """cap 60m, warn 10m, idle_gap 5m: calls every 4 minutes from 10:00
    accumulate active time (used/left/session in whole minutes);
    daily-limit-soon once less than 10 minutes are left; at 60 minutes
    the action; the next local day starts from zero."""
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "10m", "action": action})), redis)
    uid = new_user()
    t0 = local_ms(WINTER, "10:00")
    for m in list(range(0, 49, 4)) + [49, 51, 55, 59]:
        r = rank(d, uid, t0 + m * MIN)
        # READING: the values are those of the call's own time (the gap up
        # to this call counted), as in the README's used=52,left=8.
        check(r, "call at +%dm" % m, st={"used": m, "left": 60 - m, "session": m},
              keys={"used", "left", "session"}, notices=["daily-limit-soon"] if 60 - m < 10 else [],
              items=PAGE_IDS)
    assert hget(d, uid, "sess") == t0, "sess is the start of the session (the first call's time)"
    act = hget(d, uid, "act")
    assert 59 * MIN <= act < 59 * MIN + tf(2) * SEC, "act %d ms after 59 minutes of calls" % act

    r = rank(d, uid, t0 + 60 * MIN, settle="cap")
    what = "call at +60m (the cap, %s)" % action
    if action == "deny":
        check(r, what, code=EXHAUSTED, details=daily_message(60, 60), st={"used": 60, "left": 0},
              notices=["daily-limit"])
    elif action == "empty":
        check(r, what, st={"used": 60, "left": 0}, notices=["daily-limit"], empty=True)
    else:
        check(r, what, st={"used": 60, "left": 0, "session": 60}, notices=["daily-limit"], items=PAGE_IDS)
    r = rank(d, uid, t0 + 62 * MIN, settle="cap")
    what = "call at +62m (%s)" % action
    if action == "deny":
        check(r, what, code=EXHAUSTED, st={"left": 0}, notices=["daily-limit"])
        assert r.details.startswith("daily feed time limit reached: "), r.details
    elif action == "empty":
        check(r, what, st={"left": 0}, notices=["daily-limit"], empty=True)
    else:
        check(r, what, st={"used": 62, "left": 0}, notices=["daily-limit"], items=PAGE_IDS)
    if action != "notice":
        # The answered calls are not use, but the cap's answer writes the gap
        # before it up to the cap (README): the minute to +60m; the answer
        # at +62m adds nothing more.
        assert hget(d, uid, "act") == 60 * MIN, \
            "act %d ms after two answers of the cap: the gap to the first counts up to the cap (%d ms), " \
            "nothing more" % (hget(d, uid, "act"), 60 * MIN)

    r = rank(d, uid, local_ms(WINTER, "00:05", plus_days=1))
    check(r, "the next day at 00:05", st={"used": 0, "left": 60, "session": 0}, items=PAGE_IDS)


def test_daily_cap_stays_reached_after_idle_gap(fg, redis):
    """Regression: the cap is reached by the gap before a call (59 minutes
    written, +60m asked): denied; a call after more than idle_gap is still
    denied (the gap the first answer counted was written), it is not served
    as a new session under the cap."""
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"})), redis)
    uid = new_user()
    t0 = local_ms(WINTER, "10:00")
    for m in list(range(0, 57, 4)) + [57, 59]:
        check(rank(d, uid, t0 + m * MIN), "call at +%dm" % m, items=PAGE_IDS)
    r = rank(d, uid, t0 + 63 * MIN, settle="cap")   # the 4-minute gap takes the day to 63 minutes
    check(r, "call at +63m", code=EXHAUSTED, notices=["daily-limit"])
    r = rank(d, uid, t0 + 180 * MIN)        # two hours later: far past idle_gap
    check(r, "call at +180m", code=EXHAUSTED, notices=["daily-limit"])


def test_denied_retries_do_not_add_up(fg, redis):
    """Regression: a child who keeps asking once the cap is reached is not
    charged each answer's gap again (the deny message grew to "64 of 30
    minutes used").  cap 30m, idle_gap 10m: pages every 4 minutes to +28m,
    then a call every 2 to 3 minutes: every one is the cap's answer, its
    message says at most idle_gap more than the cap (README), and the
    day's use in Redis stays at the cap."""
    d = fg(policy(only(idle_gap="10m", daily={"cap": "30m", "warn_before": "0s", "action": "deny"})), redis)
    uid = new_user()
    t0 = local_ms(WINTER, "10:00")
    for m in range(0, 29, 4):
        check(rank(d, uid, t0 + m * MIN), "call at +%dm" % m, items=PAGE_IDS)
    said = []
    for m in (30, 32, 35, 37, 40, 42, 45, 47, 50):
        r = rank(d, uid, t0 + m * MIN, settle="cap")
        check(r, "call at +%dm" % m, code=EXHAUSTED, notices=["daily-limit"])
        used = re.match(r"daily feed time limit reached: (\d+) of 30 minutes used today", r.details)
        assert used, "call at +%dm: grpc-message %r" % (m, r.details)
        said.append(int(used.group(1)))
        assert hget(d, uid, "act") == 30 * MIN, \
            "after the answer at +%dm the day's use is %d ms, not the cap" % (m, hget(d, uid, "act"))
    assert all(30 <= u <= 40 for u in said), "the deny messages said %s of 30 minutes" % said
    assert said[-1] == 30, "past idle_gap since the last page the gap is not use: %s" % said


def test_gap_longer_than_idle_gap_starts_a_new_session(fg, redis):
    d = fg(policy(only(idle_gap="5m", daily={"cap": "120m", "warn_before": "0s", "action": "deny"})), redis)
    uid = new_user()
    t0 = local_ms(WINTER, "15:00")
    steps = [(0, 0, 0), (4, 4, 4), (8, 8, 8),
             (20, 8, 0),       # 12 minutes away: a new session, the day's use kept
             (24, 12, 4),
             (29, 17, 9),      # a gap of exactly idle_gap is use ("up to this long")
             (40, 17, 0)]
    for m, used, session in steps:
        r = rank(d, uid, t0 + m * MIN)
        check(r, "call at +%dm" % m, st={"used": used, "session": session}, items=PAGE_IDS)
        # READING: `used` counts the last call's own (real) milliseconds,
        # so `left` rounded down is 120 - used, or one less once a call
        # took a millisecond (as test_stream_pages_metadata_in_trailers).
        assert r.st["left"] in (120 - used, 119 - used), "call at +%dm: %s" % (m, r.st)
        if m == 20:
            assert hget(d, uid, "sess") == t0 + 20 * MIN, "sess must be the new session's start"


def test_failed_calls_are_not_use(fg, redis):
    """A call the ranker fails is not a heartbeat: 0 then 8 minutes later
    (the failed call at 4 in between) is a new session."""
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"})), redis)
    uid = new_user()
    t0 = local_ms(WINTER, "11:00")
    check(rank(d, uid, t0), "call at 0", st={"used": 0, "session": 0}, items=PAGE_IDS)
    r = rank(d, uid, t0 + 4 * MIN, code=grpc.StatusCode.UNAVAILABLE)
    assert r.code == UNAVAILABLE, r
    check(rank(d, uid, t0 + 8 * MIN), "call at +8m", st={"used": 0, "session": 0}, items=PAGE_IDS)


def test_session_across_midnight(fg, redis):
    """A session that goes on past local midnight: the session goes on, the
    day's counter restarts."""
    d = fg(policy(only(daily={"cap": "180m", "warn_before": "0s", "action": "deny"})), redis)
    uid = new_user()
    t0 = local_ms(WINTER, "23:50")
    for m in (0, 4, 8):
        check(rank(d, uid, t0 + m * MIN), "call at 23:%d" % (50 + m), st={"used": m, "session": m})
    r = rank(d, uid, t0 + 12 * MIN)
    # READING: "the day's counters restart at local midnight": of the gap
    # 23:58-00:02, the 2 minutes after midnight are the new day's.
    check(r, "call at 00:02", st={"used": 2, "left": 178, "session": 12})


def test_daily_reset_at_local_midnight_in_summer(fg, redis):
    """In BST the day ends at 23:00 UTC: a call at 00:30 BST (23:30 UTC, the
    same UTC date) is a new day."""
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"})), redis)
    uid = new_user()
    for hhmm, used in (("23:30", 0), ("23:34", 4), ("23:38", 8)):
        check(rank(d, uid, local_ms(SUMMER, hhmm)), "%s BST" % hhmm, st={"used": used})
    r = rank(d, uid, local_ms(SUMMER, "00:30", plus_days=1))
    check(r, "00:30 BST the next day", st={"used": 0, "left": 60, "session": 0})


def test_defaults_of_a_block_that_names_only_its_bands(fg, redis):
    """The README's defaults: daily 60m with a 10-minute warning and notice,
    break after 60m with notice, quiet hours 22:00-07:00 with a 30-minute
    warning and notice, idle_gap 5m."""
    d = fg(policy(block(bands=["under_13"])), redis)
    uid = new_user()
    t0 = local_ms(WINTER, "09:00")
    for m in list(range(0, 57, 4)) + [58]:
        r = rank(d, uid, t0 + m * MIN)
        want = ["daily-limit-soon"] if 60 - m < 10 else []
        check(r, "call at +%dm" % m, st={"used": m, "left": 60 - m, "session": m}, notices=want, items=PAGE_IDS)
    r = rank(d, uid, t0 + 62 * MIN)
    check(r, "call at +62m", st={"used": 62, "left": 0, "session": 62}, notices=["daily-limit", "take-a-break"],
          items=PAGE_IDS)

    night = new_user()
    check(rank(d, night, local_ms(WINTER, "21:29")), "21:29", notices=[], items=PAGE_IDS)
    r = rank(d, night, local_ms(WINTER, "21:31"))
    check(r, "21:31", st={"quiet_in": 29}, notices=["quiet-hours-soon"], items=PAGE_IDS)
    r = rank(d, night, local_ms(WINTER, "22:01"))
    check(r, "22:01", notices=["quiet-hours"], items=PAGE_IDS)


# ================================================================ 2. breaks

@pytest.mark.parametrize("action", ["empty", "deny"])
def test_break_after_continuous_use(fg, redis, action):
    """break.after 45m, idle_gap 5m.  At 45 minutes of session the action;
    refreshing during the break is not use (the session does not go on,
    `last` stays); 6 minutes after the last delivered call the break is
    over and a new session starts."""
    d = fg(policy(only(idle_gap="5m", brk={"after": "45m", "action": action})), redis)
    uid = new_user()
    t0 = local_ms(WINTER, "14:00")
    for m in range(0, 45, 4):
        check(rank(d, uid, t0 + m * MIN), "call at +%dm" % m, st={"used": m, "session": m},
              keys={"used", "session"}, items=PAGE_IDS)
    last = hget(d, uid, "last")
    for m in (45, 47, 49):   # 49: 5 minutes after the last delivered call, still not away long enough
        r = rank(d, uid, t0 + m * MIN)
        what = "call at +%dm (on a break, %s)" % (m, action)
        if action == "deny":
            check(r, what, code=EXHAUSTED, notices=["take-a-break"])
            # READING: "45 minutes" is break.after or the session so far
            # (the README's example is a call at exactly 45): both are read
            # as right on a later call.
            ok = ["time for a break: %d minutes of continuous use (back after a 5-minute break)" % n
                  for n in sorted({45, m})]
            assert r.details in ok, "%s: grpc-message %r, expected one of %s" % (what, r.details, ok)
        else:
            check(r, what, notices=["take-a-break"], empty=True)
        assert hget(d, uid, "last") == last, "%s: a call answered by a limit moved `last`" % what
    r = rank(d, uid, t0 + 50 * MIN)
    check(r, "call at +50m (away for 6 minutes since +44m)", st={"used": 44, "session": 0}, items=PAGE_IDS)


# ================================================================ 3. quiet hours

SEASONS = {
    # the date of the evening; its night runs to 07:00 local the next morning
    "winter": WINTER,
    "summer": SUMMER,
    "spring_forward": SPRING_NIGHT,
    "autumn_back": AUTUMN_NIGHT,
}


@pytest.mark.parametrize("season", sorted(SEASONS))
def test_quiet_hours_in_the_policy_zone(fg, redis, season):
    """22:00 to 07:00 Europe/London, warning 30 minutes before, deny; on
    the nights the clocks change the night is 8 or 10 hours long and still
    ends at 07:00 local."""
    d = fg(policy(only(quiet_hours={"from": "22:00", "to": "07:00", "warn_before": "30m", "action": "deny"})),
           redis)
    day = SEASONS[season]
    uid = new_user()
    check(rank(d, uid, local_ms(day, "21:29")), "21:29 local", notices=[], items=PAGE_IDS)
    r = rank(d, uid, local_ms(day, "21:45"))
    check(r, "21:45 local", st={"quiet_in": 15}, notices=["quiet-hours-soon"], items=PAGE_IDS)
    assert "left" not in r.st, "daily: off, yet %s has left: %s" % (ST, r.st)
    for hhmm, plus in (("22:00", 0), ("23:59", 0), ("03:00", 1), ("06:59", 1)):
        r = rank(d, uid, local_ms(day, hhmm, plus_days=plus))
        check(r, "%s local (%s)" % (hhmm, season), code=EXHAUSTED, notices=["quiet-hours"],
              details="quiet hours until 07:00 (Europe/London)")
    r = rank(d, new_user(), local_ms(day, "07:00", plus_days=1))
    check(r, "07:00 local the next morning (%s)" % season, notices=[], items=PAGE_IDS)


def test_quiet_hours_allowance(fg, redis):
    """allowance 20m, action empty: inside quiet hours the calls are served
    with the notice quiet-hours and quiet_left until 20 minutes of use
    inside them are spent; use before 22:00 does not count; the next
    night has its own allowance."""
    d = fg(policy(only(idle_gap="5m", quiet_hours={"from": "22:00", "to": "07:00", "allowance": "20m",
                                                   "warn_before": "0s", "action": "empty"})), redis)
    uid = new_user()
    t = lambda hhmm, plus=0: local_ms(WINTER, hhmm, plus_days=plus)   # noqa: E731
    for hhmm in ("21:50", "21:54"):
        check(rank(d, uid, t(hhmm)), hhmm, notices=[], items=PAGE_IDS)
    # READING: the gap 21:58-22:03 counts 3 minutes inside quiet hours.
    for hhmm, left in (("21:58", None), ("22:03", 17), ("22:07", 13), ("22:11", 9), ("22:15", 5), ("22:19", 1)):
        r = rank(d, uid, t(hhmm))
        if left is None:
            check(r, hhmm, notices=[], items=PAGE_IDS)
        else:
            check(r, hhmm, st={"quiet_left": left}, notices=["quiet-hours"], items=PAGE_IDS)
            assert "quiet_in" not in r.st, "warn_before 0: no quiet_in; %s" % r.st
    act = hget(d, uid, "act")
    r = rank(d, uid, t("22:23"))
    check(r, "22:23 (23 minutes used inside quiet hours)", st={"quiet_left": 0}, notices=["quiet-hours"],
          empty=True)
    # The allowance stays spent for the night however the user spaces the
    # calls: the answer wrote the gap that spent it (22:19-22:23), to the
    # night's quiet use only. Before, 22:27 (8 minutes after the last page,
    # past idle_gap) was served and every other call after it.
    poll_until(lambda: hget(d, uid, "qact") == 23 * 60000, tf(5),
               "qact 23 minutes after the answer at 22:23 (now %s)" % hget(d, uid, "qact"))
    for hhmm in ("22:27", "22:31", "22:50", "23:59", "06:58"):
        plus = 1 if hhmm < "12:00" else 0
        check(rank(d, uid, t(hhmm, plus)), hhmm + " (the allowance spent)", st={"quiet_left": 0},
              notices=["quiet-hours"], empty=True)
    assert hget(d, uid, "act") == act, "the night's answers were charged as daily feed time: act %s, " \
        "was %s" % (hget(d, uid, "act"), act)
    check(rank(d, uid, t("07:01", plus=1)), "07:01 (quiet hours over)", notices=[], items=PAGE_IDS)
    r = rank(d, uid, t("22:05", plus=1))
    check(r, "22:05 the next night", st={"quiet_left": 20}, notices=["quiet-hours"], items=PAGE_IDS)


def zone_body(tz):
    """A RankFeedRequest whose context.time_zone is <tz> (None: not set)."""
    ctx = f_len(2, "en-GB") + (f_len(3, tz) if tz is not None else b"")
    return f_len(1, f_len(2, "u13")) + f_len(2, ctx)


@pytest.mark.parametrize("source", ["header", "field"])
def test_request_zone_counts_only_when_listed(fg, redis, source):
    """time_zones lists London, New York and Sydney.  At 22:30 UTC in
    January it is quiet hours in London, 17:30 in New York (not), 07:30 in
    Tokyo (not listed: London's quiet hours apply); at 12:00 UTC it is
    23:00 in Sydney (quiet).  The zone comes from the header x-time-zone,
    or from the request field context.time_zone."""
    text = policy(only(quiet_hours={"from": "22:00", "to": "07:00", "warn_before": "0s", "action": "deny"}))
    if source == "field":
        text = text.replace("time_zone: {header: x-time-zone}", "time_zone: {field: context.time_zone}")
    d = fg(text, redis)

    def call(t, tz):
        if source == "header":
            return rank(d, new_user(), t, tz=tz)
        return rank(d, new_user(), t, body=zone_body(tz))
    late = local_ms(WINTER, "22:30")
    msg = "quiet hours until 07:00 (%s)"
    check(call(late, None), "no zone", code=EXHAUSTED, details=msg % LONDON, notices=["quiet-hours"])
    check(call(late, "America/New_York"), "zone America/New_York", notices=[], items=PAGE_IDS)
    for tz in ("Asia/Tokyo", "Nowhere/Atlantis", "america/new_york", ""):
        check(call(late, tz), "zone %r (not listed)" % tz, code=EXHAUSTED, details=msg % LONDON,
              notices=["quiet-hours"])
    noon = local_ms(WINTER, "12:00")
    check(call(noon, None), "noon in London", notices=[], items=PAGE_IDS)
    # READING: the message names the zone that applied.
    check(call(noon, "Australia/Sydney"), "zone Australia/Sydney (23:00 there)", code=EXHAUSTED,
          details=msg % "Australia/Sydney", notices=["quiet-hours"])


# ================================================================ 4. several rules at once

def test_strongest_action_wins_and_notices_in_order(fg, redis):
    """daily (cap 60m, empty) and break (after 60m, deny) fire on the same
    call: deny wins with the break's message (daily does not deny), and
    both notices are listed, strongest first.  With both denying, the
    daily message comes first."""
    for daily_action, want_msg in (("empty", "time for a break: 60 minutes of continuous use "
                                             "(back after a 5-minute break)"),
                                   ("deny", daily_message(60, 60))):
        d = fg(policy(only(daily={"cap": "60m", "warn_before": "10m", "action": daily_action},
                           brk={"after": "60m", "action": "deny"})), redis)
        uid = new_user()
        t0 = local_ms(WINTER, "08:00")
        for m in range(0, 57, 4):
            rank(d, uid, t0 + m * MIN)
        r = rank(d, uid, t0 + 58 * MIN)
        check(r, "58m", st={"used": 58, "left": 2, "session": 58}, notices=["daily-limit-soon"], items=PAGE_IDS)
        r = rank(d, uid, t0 + 60 * MIN)
        check(r, "60m (daily %s, break deny)" % daily_action, code=EXHAUSTED, details=want_msg,
              notices=["daily-limit", "take-a-break"])
        problems = d.stop()
        assert not problems, problems


def test_exposure_limit_and_daily_warning_together(fg, redis):
    d = fg(policy(only(daily={"cap": "30m", "warn_before": "10m", "action": "deny"},
                       exposure=[{"classes": ["dangerous_stunts"], "per_day": 1}])), redis)
    uid = new_user()
    t0 = local_ms(WINTER, "16:00")
    # READING: a page that spends the allowance exactly, removing nothing,
    # may or may not carry exposure-limit: not asserted.
    check(rank(d, uid, t0, resp=stunt_page(1, 1)), "first stunt", items=[1], notices=None)
    r = rank(d, uid, t0 + 4 * MIN, resp=page([it(5, ("stunt", 0.9)), it(6)]))
    check(r, "second stunt", items=[6], notices=["exposure-limit"])
    for m in range(8, 25, 4):
        rank(d, uid, t0 + m * MIN)
    r = rank(d, uid, t0 + 24 * MIN + MIN, resp=page([it(7, ("stunt", 0.9)), it(8)]))
    check(r, "25m, a stunt over the limit", st={"used": 25, "left": 5}, items=[8],
          notices=["exposure-limit", "daily-limit-soon"])


# ================================================================ 5. exposure

EXPOSURE = [{"classes": ["dangerous_stunts"], "per_day": 3},
            {"classes": ["non_designated"], "per_day": 2, "name": "nd"}]


def test_exposure_per_day(fg, redis):
    """Counters per local day of items delivered: dangerous_stunts (3 a day,
    counter x:dangerous_stunts) and non_designated (2 a day, x:nd).  Items
    the filter excluded and labels under the threshold (0.5) do not count;
    an item with two labels of one counter counts once; past the
    allowance items are removed (limited=N in the report header,
    exposure-limit notice); the next day starts again."""
    d = fg(policy(only(exposure=EXPOSURE)), redis, config=ADMIN)
    uid = new_user()
    t0 = local_ms(WINTER, "17:00")
    p1 = page([it(1, ("stunt", 0.9)), it(2, ("sport", 0.9)),
               it(3, ("stunt", 0.9), ("porn", 0.9)),          # excluded by the filter: not delivered, not counted
               it(4, ("stunt", 0.3)),                          # under the threshold: not of the class
               it(5, ("sad_content", 0.8), ("body_ideal", 0.8)),   # one item, counted once
               it(6, ("stunt", 0.7))])
    r = rank(d, uid, t0, resp=p1)
    check(r, "page 1", items=[1, 2, 4, 5, 6], notices=[])
    assert r.report.get("removed") == 1 and r.report.get("limited", 0) == 0, r.report
    key = redis_key(d, uid)
    poll_until(lambda: hget(d, uid, "x:dangerous_stunts") == 2 and hget(d, uid, "x:nd") == 1, tf(5),
               "x:dangerous_stunts 2 and x:nd 1 after page 1 (got %s)" % RedisClient(redis.addr).hgetall(key))

    p2 = page([it(11, ("stunt", 0.9)), it(12, ("sport", 0.9)), it(13, ("stunt", 0.9)),
               it(14, ("sad_content", 0.9)), it(15, ("stunt", 0.9)), it(16, ("body_ideal", 0.9)),
               it(17, ("stunt", 0.9), ("sad_content", 0.9))])
    r = rank(d, uid, t0 + MIN, resp=p2)
    check(r, "page 2: one stunt and one non_designated item left", items=[11, 12, 14],
          notices=["exposure-limit"])
    assert r.report == {"removed": 0, "demoted": 0, "surplus": 0, "limited": 4}, r.report
    poll_until(lambda: hget(d, uid, "x:dangerous_stunts") == 3 and hget(d, uid, "x:nd") == 2, tf(5),
               "x:dangerous_stunts 3 and x:nd 2 (got %s)" % RedisClient(redis.addr).hgetall(key))

    r = rank(d, uid, t0 + 2 * MIN, resp=page([it(21, ("stunt", 0.9)), it(22)]))
    check(r, "page 3", items=[22], notices=["exposure-limit"])
    assert r.report.get("limited") == 1, r.report
    assert hget(d, uid, "x:dangerous_stunts") == 3

    r = rank(d, uid, local_ms(WINTER, "09:00", plus_days=1), resp=page([it(31, ("stunt", 0.9)), it(32)]))
    check(r, "the next day", items=[31, 32], notices=[])
    poll_until(lambda: hget(d, uid, "x:dangerous_stunts") == 1, tf(5), "x:dangerous_stunts 1 on the new day")

    # 13, 15 and 17 (page 2) and 21 (page 3) were limited by the stunts
    # counter, 16 by non_designated (body_image): each counted under its
    # first class that a counter counts.
    text = metrics(d)
    limited = {c: ph.metric(text, "feedguard_filter_items_total", method=RANK, band="under_13",
                            **{"class": c, "action": "limited"}) for c in ("dangerous_stunts", "body_image")}
    assert limited == {"dangerous_stunts": 4, "body_image": 1}, \
        "%s\n%s" % (limited, "\n".join(l for l in text.splitlines() if "limited" in l))


def overfetch_stunts_policy():
    """Stunts: 10 a day for under_13, 1 for 13_15; the page size read from
    the request and over-fetched twice (the two trimming tests below)."""
    return policy(only(exposure=[{"classes": ["dangerous_stunts"], "per_day": 10}]),
                  block(bands=["13_15"], idle_gap="5m", daily="off", brk="off", quiet_hours="off",
                        exposure=[{"classes": ["dangerous_stunts"], "per_day": 1}]),
                  feed_extra="      page_size: page_size\n",
                  filter_extra="        overfetch: {factor: 2, max: 100}\n")


def test_exposure_counts_what_was_delivered_after_trimming(fg, redis):
    """Over-fetch asks the ranker for 8 items for a page of 4: the stunts
    trimmed off the page are not counted; with one stunt allowed, a second
    is removed and the page fills from the over-fetched items."""
    d = fg(overfetch_stunts_policy(), redis)
    body = REQ + f_varint(4, 4)
    sent = page([it(1, ("stunt", 0.9), ("porn", 0.9)), it(2, ("stunt", 0.9)), it(3), it(4, ("stunt", 0.9)),
                 it(5), it(6, ("stunt", 0.9)), it(7, ("stunt", 0.9)), it(8)])
    uid = new_user()
    r = rank(d, uid, local_ms(WINTER, "12:00"), resp=sent, body=body)
    check(r, "under_13", items=[2, 3, 4, 5], notices=[])
    poll_until(lambda: hget(d, uid, "x:dangerous_stunts") == 2, tf(5),
               "x:dangerous_stunts 2 (the 2 stunts delivered, not the 5 the ranker sent)")
    assert hget(d, uid, "x:dangerous_stunts") == 2
    teen = new_user()
    r = rank(d, teen, local_ms(WINTER, "12:00"), band="13_15", resp=sent, body=body)
    check(r, "13_15, one stunt a day", items=[2, 3, 5, 8], notices=["exposure-limit"])
    poll_until(lambda: hget(d, teen, "x:dangerous_stunts") == 1, tf(5), "x:dangerous_stunts 1")


def test_exposure_limit_spent_only_by_delivered_items(fg, redis):
    """Regression: an allowance is spent by what the page delivers, in its
    order: stunts the page trims (asked for 2, over-fetched 4) use none of
    it, so nothing is limited and no exposure-limit notice is given (they
    were limited in the ranker's order before, and the notice came with no
    stunt delivered)."""
    d = fg(overfetch_stunts_policy(), redis)
    body = REQ + f_varint(4, 2)
    sent = page([it(1), it(2), it(3, ("stunt", 0.9)), it(4, ("stunt", 0.9))])
    teen = new_user()
    r = rank(d, teen, local_ms(WINTER, "12:00"), band="13_15", resp=sent, body=body)
    check(r, "13_15, stunts only past the page", items=[1, 2], notices=[])
    assert r.report.get("limited", 0) == 0, r.report
    # With the allowance at 1 and two stunts on the page, one is delivered
    # and the other limited, whatever their order.
    sent = page([it(5, ("stunt", 0.9)), it(6, ("stunt", 0.9)), it(7), it(8)])
    r = rank(d, new_user(), local_ms(WINTER, "12:00"), band="13_15", resp=sent, body=body)
    check(r, "13_15, two stunts in the page", items=[5, 7], notices=["exposure-limit"])
    assert r.report.get("limited") == 1, r.report


# ================================================================ 6. streaming feeds

def test_stream_pages_metadata_in_trailers(fg, redis):
    """StreamPages: screen time and notices in the trailers (never the
    headers); exposure counts over the stream's pages; at the cap a deny is
    trailers-only RESOURCE_EXHAUSTED, an empty is OK with no message."""
    d = fg(policy(only(daily={"cap": "10m", "warn_before": "5m", "action": "deny"},
                       exposure=[{"classes": ["dangerous_stunts"], "per_day": 3}])), redis)
    uid = new_user()
    t0 = local_ms(WINTER, "13:00")
    pages = [page([it(1, ("stunt", 0.9)), it(2)]), page([it(3, ("stunt", 0.9)), it(4, ("stunt", 0.9))]),
             page([it(5, ("stunt", 0.9)), it(6)])]
    r = stream(d, uid, t0, pages)
    check(r, "stream at 0", st={"used": 0, "session": 0}, items=[1, 2, 3, 4, 6], notices=["exposure-limit"])
    assert r.report.get("limited") == 1, r.report
    assert not harness.md_values(r.headers, ST) and not harness.md_values(r.headers, NOTICE), r.headers
    poll_until(lambda: hget(d, uid, "x:dangerous_stunts") == 3, tf(5), "x:dangerous_stunts 3")
    # READING: a stream's trailers may count its own (real, few ms) time,
    # so `left` is cap - used or one less (rounded down); used and session
    # are exact.
    for m, soon in ((4, False), (8, True)):
        r = stream(d, uid, t0 + m * MIN, [PAGE])
        check(r, "stream at +%dm" % m, st={"used": m, "session": m}, items=PAGE_IDS, notices=None)
        assert r.st["left"] in (10 - m, 10 - m - 1), "stream at +%dm: %s" % (m, r.st)
        assert ("daily-limit-soon" in r.notices) == soon, "stream at +%dm: notices %s" % (m, r.notices)
        assert "daily-limit" not in r.notices
    r = stream(d, uid, t0 + 10 * MIN, [PAGE, PAGE])
    # READING: the spent exposure counter may add exposure-limit (after
    # daily-limit) even though nothing was removed.
    check(r, "stream at +10m", code=EXHAUSTED, details=daily_message(10, 10), st={"used": 10, "left": 0},
          notices=None)
    assert r.notices in (["daily-limit"], ["daily-limit", "exposure-limit"]), r.notices
    assert r.msgs == [], r
    assert not harness.md_values(r.headers, ST), "trailers-only: %r" % r

    d2 = fg(policy(only(daily={"cap": "10m", "warn_before": "0s", "action": "empty"})), redis)
    uid = new_user()
    for m in (0, 4, 8):
        rank(d2, uid, t0 + m * MIN)
    r = stream(d2, uid, t0 + 10 * MIN, [PAGE, PAGE])
    check(r, "empty at the cap", st={"used": 10, "left": 0}, notices=["daily-limit"], empty=True)


STREAM_CASES = {
    # rule/action: (limits block, first call's time, the stream's time: the rule fires 2 s into it)
    "daily-deny": (only(daily={"cap": "1m", "warn_before": "0s", "action": "deny"}), "10:00", 58),
    "daily-empty": (only(daily={"cap": "1m", "warn_before": "0s", "action": "empty"}), "10:00", 58),
    "daily-notice": (only(daily={"cap": "1m", "warn_before": "0s", "action": "notice"}), "10:00", 58),
    "break-deny": (only(brk={"after": "1m", "action": "deny"}), "10:00", 58),
    "quiet-empty": (only(quiet_hours={"from": "22:00", "to": "07:00", "warn_before": "0s", "action": "empty"}),
                    "21:58", 118),
    # warned at the stream's start, the limit reached in it: the notice is
    # the limit's alone, not beside its own warning
    "dailywarn-deny": (only(daily={"cap": "1m", "warn_before": "30s", "action": "deny"}), "10:00", 58),
    "quietwarn-notice": (only(quiet_hours={"from": "22:00", "to": "07:00", "warn_before": "30m",
                                           "action": "notice"}), "21:58", 118),
}


@pytest.mark.parametrize("case", sorted(STREAM_CASES))
def test_open_stream_is_ended_when_a_rule_fires(fg, redis, case):
    """A StreamPages call opened 2 s before a rule fires (the cap used up,
    the session reaching break.after, quiet hours beginning): the stream's
    time moves on with the real clock from its feedguard-test-now, and the
    rule ends it about 2 s in, by its action; `notice` lets it run to its
    end and puts the notice in its trailers."""
    limits, first, offset_s = STREAM_CASES[case]
    rule, action = case.split("-")
    d = fg(policy(limits), redis)
    uid = new_user()
    t0 = local_ms(WINTER, first)
    before = {"dailywarn": [], "quietwarn": ["quiet-hours-soon"]}.get(rule, [])
    check(rank(d, uid, t0), "the call before the stream", notices=before, items=PAGE_IDS)
    latest = 2.0 + tf(1.5)                        # when the stream must have ended, at the latest
    # 100 ms apart: 2.6 s, or (if nothing ends it) 3 s past <latest>
    n = 26 if action == "notice" else int(10 * (latest + 3))
    # each page: one item to show, one the filter removes
    pages = [page([it(100 + i), it(900 + i, ("porn", 0.9))]) for i in range(n)]
    r = stream(d, uid, t0 + offset_s * SEC, pages, interval=0.1)
    notice = {"daily": "daily-limit", "dailywarn": "daily-limit", "break": "take-a-break", "quiet": "quiet-hours",
              "quietwarn": "quiet-hours"}[rule]
    what = "%s: stream opened 2 s before the rule fires" % case
    if action == "notice":
        check(r, what, notices=[notice])
        assert r.items == [100 + i for i in range(n)], "%s: the stream was cut: %s" % (what, r.items)
        # quiet_in comes with quiet-hours-soon only: not "quiet_in=0" once
        # quiet hours have begun
        assert r.st is not None and "quiet_in" not in r.st, "%s: %s %s" % (what, ST, r.st)
        return
    assert 1.5 <= r.elapsed <= latest, "%s: the stream ended after %.2f s, expected about 2 s (%r)" \
        % (what, r.elapsed, r)
    if action == "deny" and rule.startswith("daily"):
        # the figures as of the cap, never a millisecond short of it ("0 of 1")
        check(r, what, code=EXHAUSTED, details=daily_message(1, 1), st={"used": 1, "left": 0}, notices=[notice])
    elif action == "deny":
        check(r, what, code=EXHAUSTED, notices=[notice])
        assert r.details.startswith("time for a break: "), r.details
    else:
        check(r, what, code=OK, notices=[notice])
    got = r.items
    assert 8 <= len(got) <= 10 * latest + 5 and got == [100 + i for i in range(len(got))], \
        "%s: the pages before the rule fired should have come through in order: %s" % (what, got)
    # the filter's counts come with feedguard's answer, as at a stream's end
    # (a page filtered as the rule fired may not have gone out)
    rep = r.report
    assert rep is not None and rep["demoted"] == 0 and rep["surplus"] == 0, "%s: report %r" % (what, r)
    assert len(got) <= rep["removed"] <= len(got) + 1, "%s: removed=%d for %d pages" % (what, rep["removed"], len(got))


def test_stream_duration_counts(fg, redis):
    """A stream open for ~1.5 s of real time adds that to the day's active
    milliseconds (`act`), on top of the gap before it."""
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"})), redis)
    uid = new_user()
    t0 = local_ms(WINTER, "10:00")
    rank(d, uid, t0)
    r = stream(d, uid, t0 + MIN, [page([it(200 + i)]) for i in range(16)], interval=0.1)
    check(r, "the stream", st={"used": 1, "session": 1})
    assert r.elapsed >= 1.5
    act = poll_until(lambda: (hget(d, uid, "act") or 0) >= MIN + 1400 and hget(d, uid, "act"), tf(5),
                     "act to include the stream's 1.5 s (got %s)" % hget(d, uid, "act"))
    assert act <= MIN + (r.elapsed + tf(1.0)) * SEC, "act %d: more than the stream lasted (%.2f s)" \
        % (act, r.elapsed)
    assert hget(d, uid, "last") >= t0 + MIN + 1400, "last is the end of the stream"


def test_overlapping_calls_count_their_time_once(fg, redis):
    """A stream open for ~1.5 s and a refresh while it is open (its test
    time inside the stream's): the active time is the span they cover
    together, not the sum."""
    d = fg(policy(only(idle_gap="5m", daily={"cap": "60m", "warn_before": "0s", "action": "deny"})), redis)
    uid = new_user()
    t0 = local_ms(WINTER, "10:00")
    rank(d, uid, t0)
    t1 = t0 + MIN
    out = {}

    def streamer():
        out["stream"] = stream(d, uid, t1, [page([it(300 + i)]) for i in range(15)], interval=0.1, settle=False)
    th = threading.Thread(target=streamer)
    th.start()
    try:
        poll_until(lambda: d.ranker.find_method_calls(STREAM_PAGES, uid), tf(5), "the stream to reach the ranker")
        r = rank(d, uid, t1 + 300, settle=False)
        check(r, "a refresh while the stream is open", st={"used": 1}, items=PAGE_IDS)
    finally:
        th.join(timeout=tf(20))
    s_ = out["stream"]
    assert s_.code == OK and len(s_.items) == 15, s_
    # from t0 to the end of the stream: 60 s + its 1.5 s; counted twice
    # it would be about 60 s more.
    act = poll_until(lambda: (hget(d, uid, "last") or 0) >= t1 + 1400 and hget(d, uid, "act"), tf(5),
                     "the stream's update")
    assert MIN + 1400 <= act <= MIN + (s_.elapsed + tf(1.0)) * SEC, \
        "act %d ms for calls spanning %.2f s after the first minute" % (act, s_.elapsed)


# ================================================================ 7. what is in Redis

def test_redis_keys_pseudonymous_with_ttl(fg, redis, keys):
    """Keys are <key_prefix>{<key id>:<64 hex>}, the HMAC-SHA256 of the user
    id under the newest key; no key or value holds the raw id; every key
    expires (PTTL > 0, at most the end of the local day plus idle_gap);
    only the README's fields; an unlimited band (adult) has no state and
    no metadata."""
    prefix = "st.%s:" % uuid.uuid4().hex[:6]
    d = fg(policy(only(idle_gap="5m", daily={"cap": "60m", "warn_before": "10m", "action": "deny"},
                       quiet_hours={"from": "22:00", "to": "07:00", "allowance": "30m", "warn_before": "0s",
                                    "action": "deny"},
                       exposure=[{"classes": ["dangerous_stunts"], "per_day": 5}])),
           redis, state={"key_prefix": prefix})
    uid = "raw-id-%s-secret" % uuid.uuid4().hex[:8]
    t0 = local_ms(WINTER, "21:40")
    for m in range(0, 30, 4):
        rank(d, uid, t0 + m * MIN, resp=stunt_page(10 * m, 2))
    last_t = t0 + 28 * MIN
    adult = "raw-adult-%s" % uuid.uuid4().hex[:8]
    r = rank(d, adult, last_t, band="adult", settle=False)
    assert r.code == OK and r.st is None and r.notices == [], "an unlimited band gets no screen time: %r" % r

    key = "%s{k1:%s}" % (prefix, hmac.new(keys["k1"], uid.encode(), hashlib.sha256).hexdigest())
    with redis.client() as c:
        ours = [k.decode() for k in c.keys() if k.startswith(prefix.encode())]
        # this test's child and the daemon's warm-up user (see wait_state)
        assert key in ours and len(ours) == 2, "keys under %s: %s, expected %s and the warm-up user's" \
            % (prefix, ours, key)
        for k in ours:
            assert re.fullmatch(re.escape(prefix) + r"\{k1:[0-9a-f]{64}\}", k), "key %r" % k
        for k in c.keys():
            assert uid.encode() not in k and adult.encode() not in k, "a key holds a raw user id: %r" % k
            if c.cmd("TYPE", k) == "hash":
                for f, v in c.hgetall(k).items():
                    assert uid not in f and adult not in f and uid.encode() not in v and adult.encode() not in v, \
                        "key %r holds a raw user id in %s=%r" % (k, f, v)
            pttl = c.cmd("PTTL", k)
            assert pttl > 0, "key %r has no TTL (PTTL %d)" % (k, pttl)
        fields = c.hgetall(key)
        extra = {f for f in fields if f not in STATE_FIELDS and not f.startswith("x:")}
        assert not extra, "fields the README does not list: %s" % extra
        assert {"last", "sess", "day", "act", "x:dangerous_stunts"} <= set(fields), fields
        assert int(fields["x:dangerous_stunts"]) == 5
        adult_hex = pseudonym(keys, "k1", adult).split(":")[1].encode()
        assert not [k for k in c.keys() if adult_hex in k], "the adult (a band without limits) has state"
    assert uid not in d.stderr() and adult not in d.stderr(), "a raw user id is in feedguardd's log"
    with redis.client() as c:
        # READING: the expiry is set relative to the call's (test) time:
        # this key counts a day and a night that end by 07:00 the next
        # morning, plus idle_gap.
        end = local_ms(WINTER, "07:00", plus_days=1) + 5 * MIN
        pttl = c.cmd("PTTL", key)
        assert 0 < pttl <= end - last_t + 60 * SEC, "PTTL %d ms, the state can matter for at most %d ms" \
            % (pttl, end - last_t)


@pytest.mark.parametrize("how", ["reload", "restart"])
def test_key_rotation_keeps_the_days_use(fg, redis, how):
    """Ring [k1], 8 minutes used; then ring [k2, k1] (by SIGHUP, or a new
    daemon): the next call goes on from 8 minutes and the state moves to
    the k2 key."""
    pol = policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"}))
    d = fg(pol, redis)
    uid = new_user()
    t0 = local_ms(WINTER, "10:00")
    for m in (0, 4, 8):
        check(rank(d, uid, t0 + m * MIN), "+%dm under k1" % m, st={"used": m, "session": m})
    old_key = redis_key(d, uid, "k1")
    ring = [{"id": "k2", "file": "k2.key"}, {"id": "k1", "file": "k1.key"}]
    if how == "reload":
        d.config["pseudonym_keys"] = ring
        d.config_path.write_text(harness.to_yaml(d.config))
        ph.sighup_and_wait(d, "reloaded", len(d.stderr()))
        d.ring = ["k2", "k1"]
    else:
        problems = d.stop()
        assert not problems, problems
        d = fg(pol, redis, ring=("k2", "k1"))
    r = rank(d, uid, t0 + 12 * MIN)
    check(r, "+12m after the rotation", st={"used": 12, "left": 48, "session": 12}, items=PAGE_IDS)
    new_key = redis_key(d, uid, "k2")
    assert new_key != old_key
    with redis.client() as c:
        assert c.hget_int(new_key, "act") is not None, "no state under the newest key %s" % new_key
    poll_until(lambda: not redis.cmd("EXISTS", old_key), tf(5),
               "the state under the old key to be moved (%s still exists)" % old_key)
    check(rank(d, uid, t0 + 16 * MIN), "+16m", st={"used": 16, "session": 16})


def test_redis_auth_db_and_unix_socket(fg, redis_factory, tmp_path):
    """password_file (AUTH), db (SELECT) and a unix socket path: the state
    lands in that database; the password is never logged."""
    sockdir = tempfile.mkdtemp(prefix="fgst-")        # a short path: sun_path is 108 bytes
    try:
        password = "pw-%s" % uuid.uuid4().hex
        r = redis_factory(password=password, unixsocket=os.path.join(sockdir, "redis.sock")).start()
        (tmp_path / "redis.pass").write_text(password + "\n")
        d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"})),
               os.path.join(sockdir, "redis.sock"), state={"password_file": "redis.pass", "db": 3})
        d.redis = r
        uid = new_user()
        rank(d, uid, local_ms(WINTER, "10:00"), settle=False)
        key = redis_key(d, uid)
        with RedisClient(r.addr, password=password, db=3) as c:
            poll_until(lambda: c.hget_int(key, "last") is not None, tf(5), "the state in db 3")
        with RedisClient(r.addr, password=password) as c:
            assert not c.cmd("EXISTS", key), "the state is in db 0, not the configured db 3"
        assert password not in d.stderr(), "the Redis password is in feedguardd's log"
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


# ================================================================ 8. Redis down, slow or lost

FAST_STATE = {"timeout": "100ms", "connect_timeout": "200ms", "stall_timeout": "300ms",
              "backoff_initial": "20ms", "backoff_max": "100ms"}


def has_sample(text, name):
    return re.search(r"^%s(\{[^}]*\})?\s" % re.escape(name), text, re.M) is not None


def redis_connected(d):
    """feedguard_redis_connected summed over its series; None when absent."""
    text = metrics(d)
    return msum(text, "feedguard_redis_connected") if has_sample(text, "feedguard_redis_connected") else None


@pytest.mark.parametrize("mode", ["open", "empty", "deny"])
def test_redis_down_fail_mode(fg, redis_factory, mode):
    """Redis killed: `open` serves with no limit (the user is past a 1m cap
    with action deny, and no metadata); `empty` gives an empty feed;
    `deny` UNAVAILABLE with the README's message."""
    r = redis_factory().start()
    d = fg(policy(only(daily={"cap": "1m", "warn_before": "0s", "action": "deny"}, fail_mode=mode)), r,
           state=FAST_STATE, config=ADMIN)
    uid = new_user()
    t0 = local_ms(WINTER, "10:00")
    rank(d, uid, t0)
    check(rank(d, uid, t0 + 2 * MIN), "past the cap", code=EXHAUSTED, notices=["daily-limit"])
    r.kill()
    poll_until(lambda: redis_connected(d) == 0, tf(5), "feedguard_redis_connected 0 after Redis was killed")
    res = rank(d, uid, t0 + 3 * MIN, settle=False)
    what = "Redis down, fail_mode %s" % mode
    if mode == "open":
        check(res, what, items=PAGE_IDS, notices=[])
        assert res.st is None, "%s: no state was read, yet %s" % (what, res.st)
    elif mode == "empty":
        check(res, what, empty=True, notices=None)
    else:
        check(res, what, code=UNAVAILABLE, details="screen-time state unavailable, try again later",
              notices=None)
    assert res.elapsed < tf(1.0), "%s: the call took %.2f s" % (what, res.elapsed)
    text = metrics(d)
    assert msum(text, "feedguard_state_failures_total", band="under_13", reason="down", mode=mode) >= 1, \
        "\n".join(l for l in text.splitlines() if "state_failures" in l)


@pytest.mark.parametrize("mode", ["open", "deny"])
def test_call_without_user_id_is_a_state_failure(fg, redis, mode):
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"}, fail_mode=mode)), redis,
           config=ADMIN)
    r = rank(d, None, local_ms(WINTER, "10:00"), settle=False)
    if mode == "open":
        check(r, "no x-user-id, open", items=PAGE_IDS, notices=[])
        assert r.st is None
    else:
        check(r, "no x-user-id, deny", code=grpc.StatusCode.INVALID_ARGUMENT,
              details="screen-time limits need the user id, which the call does not carry",
              notices=None)
    assert ph.metric(metrics(d), "feedguard_state_failures_total", band="under_13", reason="no_user",
                     mode=mode) == 1


def test_a_user_id_over_511_bytes_is_no_id(fg, redis):
    """feedguardctl takes ids of up to 511 bytes to show and erase; a
    longer one, here from a header (the daemon hashed any length before),
    keys nothing the tool could never erase: the call carries no user id
    and its band's fail mode applies.  511 bytes is still an id."""
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"}, fail_mode="deny")), redis,
           config=ADMIN)
    t0 = local_ms(WINTER, "10:00")
    check(rank(d, "u" * 512, t0, settle=False), "a 512-byte id", code=grpc.StatusCode.INVALID_ARGUMENT,
          details="screen-time limits need the user id, which the call does not carry", notices=None)
    with redis.client() as c:
        assert c.cmd("EXISTS", redis_key(d, "u" * 512)) == 0, "a 512-byte id keyed state"
    uid = "u" * 511
    check(rank(d, uid, t0), "a 511-byte id", items=PAGE_IDS, notices=[])
    check(rank(d, uid, t0 + 2 * MIN), "a 511-byte id's second page", items=PAGE_IDS, notices=[])
    with redis.client() as c:
        assert c.cmd("EXISTS", redis_key(d, uid)) == 1, "no state for a 511-byte id"


def test_redis_error_answers_log_at_most_a_line_a_second(fg, redis):
    """A user's record damaged in Redis (a string where the hash should be)
    makes every read and update answer WRONGTYPE: each call gets the fail mode, and the
    log holds at most one state_redis_answer line a second per worker
    (with the count not logged), not one per call."""
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"}, fail_mode="open")), redis,
           config=ADMIN)
    uid = new_user()
    with redis.client() as c:
        c.cmd("SET", redis_key(d, uid), "not a hash")
    start = time.monotonic()
    n = 0
    while n < 40 or time.monotonic() - start < 1.2:
        r = rank(d, uid, local_ms(WINTER, "10:00"), settle=False)
        check(r, "damaged record, open", items=PAGE_IDS, notices=[])
        n += 1
    took = time.monotonic() - start
    lines = [l for l in d.stderr().splitlines() if "event=state_redis_answer" in l]
    assert lines and all("error=\"WRONGTYPE\"" in l for l in lines), lines
    # one worker (the harness's default config)
    assert 1 <= len(lines) <= int(took) + 2, "%d lines for %d calls in %.1fs" % (len(lines), n, took)
    assert len(lines) < n
    # each call's read fails, and its update (the call was served: open);
    # what the last second did not log is in no line yet
    assert sum(int(re.search(r"unlogged=(\d+)", l).group(1)) for l in lines) + len(lines) <= 2 * n
    assert ph.metric(metrics(d), "feedguard_state_failures_total", band="under_13", reason="error",
                     mode="open") >= n


def test_redis_paused_calls_do_not_wait(fg, redis_factory):
    """Redis stopped with SIGSTOP: no call waits much past state.timeout
    (100ms); the link is dropped after stall_timeout; after SIGCONT the
    daemon reconnects and counting goes on from the stored totals."""
    r = redis_factory().start()
    d = fg(policy(only(idle_gap="10m", daily={"cap": "60m", "warn_before": "0s", "action": "deny"})), r,
           state=FAST_STATE, config=ADMIN)
    uid = new_user()
    t0 = local_ms(WINTER, "10:00")
    for m in (0, 4):
        check(rank(d, uid, t0 + m * MIN), "+%dm" % m, st={"used": m})
    r.pause()
    try:
        for m in (6, 7):
            res = rank(d, uid, t0 + m * MIN, settle=False)
            check(res, "+%dm, Redis paused" % m, items=PAGE_IDS, notices=[])
            assert res.st is None, res
            assert res.elapsed < 0.1 + tf(0.9), "a call waited %.2f s for a paused Redis (state.timeout " \
                "100ms)" % res.elapsed
        poll_until(lambda: redis_connected(d) == 0, tf(5),
                   "the stalled link to be dropped (stall_timeout 300ms): feedguard_redis_connected 0")
        for m in (8, 9):
            res = rank(d, uid, t0 + m * MIN, settle=False)
            check(res, "+%dm, Redis paused, link dropped" % m, items=PAGE_IDS, notices=[])
            assert res.elapsed < 0.1 + tf(0.9), "a call waited %.2f s" % res.elapsed
        text = metrics(d)
        assert msum(text, "feedguard_state_failures_total", band="under_13", mode="open") >= 4, \
            "\n".join(l for l in text.splitlines() if "state_failures" in l)
        assert msum(text, "feedguard_state_failures_total", band="under_13", reason="timeout") >= 1
    finally:
        r.resume()
    # idle_gap 10m: whether the updates of the calls during the pause were
    # lost or reached Redis late, the session runs from 0 to 10.  Wait for
    # the link first: a +10m call served open while it reconnects is use
    # too (its update may land), and the next +10m call would count its
    # few milliseconds (left 49).
    poll_until(lambda: redis_connected(d) == 1, tf(10), "the link back after SIGCONT: feedguard_redis_connected 1")
    got = rank(d, uid, t0 + 10 * MIN)
    check(got, "+10m after SIGCONT", st={"used": 10, "left": 50, "session": 10}, items=PAGE_IDS)


def test_max_pending_bounds_operations_in_flight(fg, redis_factory):
    """max_pending 2, a paused Redis and a long stall_timeout: timed-out
    operations stay pending, and past 2 the fail mode applies at once
    (reason busy)."""
    r = redis_factory().start()
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"})), r,
           state={"timeout": "50ms", "stall_timeout": "10s", "max_pending": 2}, config=ADMIN)
    uid = new_user()
    r.pause()
    try:
        for k in range(4):
            res = rank(d, uid, local_ms(WINTER, "10:00") + k * MIN, settle=False)
            check(res, "call %d, Redis paused" % k, items=PAGE_IDS, notices=[])
            assert res.elapsed < 0.05 + tf(0.9), res.elapsed
        text = metrics(d)
        dump = "\n".join(l for l in text.splitlines() if "state_failures" in l)
        assert msum(text, "feedguard_state_failures_total", reason="timeout", mode="open") >= 1, dump
        assert msum(text, "feedguard_state_failures_total", reason="busy", mode="open") >= 1, dump
    finally:
        r.resume()


def test_redis_restarted_daemon_reconnects(fg, redis_factory):
    """Redis killed and started again (empty) on its port: the daemon
    reconnects, loads its scripts again, and the day starts again (the
    README: a Redis restarted empty starts everyone's day again)."""
    r = redis_factory().start()
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"})), r,
           state=FAST_STATE, config=ADMIN)
    reconnects = ph.metric(metrics(d), "feedguard_redis_reconnects_total") or 0
    uid = new_user()
    t0 = local_ms(WINTER, "10:00")
    for m in (0, 4):
        rank(d, uid, t0 + m * MIN)
    r.kill()
    res = rank(d, uid, t0 + 6 * MIN, settle=False)
    check(res, "Redis down (fail_mode open by default)", items=PAGE_IDS, notices=[])
    r.start()
    got = poll_until(lambda: (lambda x: x if x.st else None)(rank(d, uid, t0 + 8 * MIN)), tf(10),
                     "a call that reads state after Redis came back")
    check(got, "+8m, Redis restarted empty", st={"used": 0, "session": 0}, items=PAGE_IDS)
    check(rank(d, uid, t0 + 12 * MIN), "+12m", st={"used": 4, "session": 4})
    assert (ph.metric(metrics(d), "feedguard_redis_reconnects_total") or 0) > reconnects


def test_script_flush_scripts_are_loaded_again(fg, redis_factory):
    """SCRIPT FLUSH (what a restart does to the scripts, without losing the
    data): the daemon gets NOSCRIPT, loads its scripts again, and goes on
    from the stored totals."""
    r = redis_factory().start()
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"})), r, state=FAST_STATE)
    uid = new_user()
    t0 = local_ms(WINTER, "10:00")
    for m in (0, 4):
        rank(d, uid, t0 + m * MIN)
    assert r.cmd("SCRIPT", "FLUSH") == "OK"
    got = poll_until(lambda: (lambda x: x if x.st else None)(rank(d, uid, t0 + 8 * MIN)), tf(5),
                     "a call that reads state after SCRIPT FLUSH")
    check(got, "+8m after SCRIPT FLUSH", st={"used": 8, "session": 8}, items=PAGE_IDS)
    check(rank(d, uid, t0 + 12 * MIN), "+12m", st={"used": 12, "session": 12})


def test_daemon_starts_with_redis_down_and_connects_later(fg, redis_factory):
    port = harness.closed_port()
    r = redis_factory()
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"}, fail_mode="deny")),
           "127.0.0.1:%d" % port, state=FAST_STATE, wait=False)
    d.redis = r
    res = rank(d, new_user(), local_ms(WINTER, "10:00"), settle=False)
    check(res, "Redis not there yet", code=UNAVAILABLE, details="screen-time state unavailable, try again later",
          notices=None)
    r.start(port)
    wait_state(d)
    uid = new_user()
    check(rank(d, uid, local_ms(WINTER, "10:00")), "Redis up", st={"used": 0}, items=PAGE_IDS)


# ================================================================ 9. concurrency

def test_two_daemons_give_the_same_totals_as_one_after_another(fg, redis):
    """Ten calls at a time for one user (five through each of two
    feedguardd sharing one Redis), five waves 2 minutes apart, each page
    with 2 stunts: the same active time and exposure count as the same
    calls one after another for another user."""
    pol = policy(only(idle_gap="5m", daily={"cap": "120m", "warn_before": "0s", "action": "deny"},
                      exposure=[{"classes": ["dangerous_stunts"], "per_day": 100000}]))
    d1 = fg(pol, redis)
    d2 = fg(pol, redis)
    t0 = local_ms(WINTER, "10:00")
    waves = [t0 + w * 2 * MIN for w in range(5)]
    together, in_turn = new_user("conc"), new_user("seq")
    with ThreadPoolExecutor(max_workers=10) as pool:
        for w, t in enumerate(waves):
            futs = [pool.submit(rank, (d1, d2)[k % 2], together, t, resp=stunt_page(1000 * w + 10 * k, 2),
                                settle=False) for k in range(10)]
            for f in futs:
                check(f.result(), "wave %d" % w, notices=None)
                assert len(f.result().items) == 2, f.result()
    for w, t in enumerate(waves):
        for k in range(10):
            check(rank((d1, d2)[k % 2], in_turn, t, resp=stunt_page(1000 * w + 10 * k, 2)),
                  "in turn, wave %d call %d" % (w, k), notices=None)
    for uid in (together, in_turn):
        poll_until(lambda: hget(d1, uid, "x:dangerous_stunts") == 100, tf(5),
                   "x:dangerous_stunts 100 for %s (got %s)" % (uid, hget(d1, uid, "x:dangerous_stunts")))
    acts = {uid: hget(d1, uid, "act") for uid in (together, in_turn)}
    assert all(8 * MIN <= a < 8 * MIN + tf(2) * SEC for a in acts.values()), \
        "act (ms) after waves 0 to 8 minutes: %s" % acts
    for uid in (together, in_turn):
        r = rank(d2, uid, t0 + 10 * MIN)
        check(r, "the call after, %s" % uid, st={"used": 10, "left": 110, "session": 10})


def test_concurrent_calls_pass_an_exposure_limit_by_at_most_k_minus_1_pages(fg, redis):
    """8 calls at once (through two daemons), each page with 3 stunts, 10 a
    day: together at most 10 + 7 x 3 are delivered, and Redis counts exactly
    what the clients received."""
    pol = policy(only(exposure=[{"classes": ["dangerous_stunts"], "per_day": 10}]))
    d1 = fg(pol, redis)
    d2 = fg(pol, redis)
    uid = new_user()
    t = local_ms(WINTER, "10:00")
    with ThreadPoolExecutor(max_workers=8) as pool:
        futs = [pool.submit(rank, (d1, d2)[k % 2], uid, t, resp=stunt_page(100 * k, 3), delay=0.2, settle=False)
                for k in range(8)]
        results = [f.result() for f in futs]
    got = sum(len(r.items) for r in results)
    assert all(r.code == OK for r in results), results
    assert 10 <= got <= 10 + 7 * 3, "%d stunts delivered with 10 a day and 8 calls of 3 at once" % got
    poll_until(lambda: hget(d1, uid, "x:dangerous_stunts") == got, tf(5),
               "x:dangerous_stunts to be the %d delivered (got %s)" % (got, hget(d1, uid, "x:dangerous_stunts")))
    r = rank(d1, uid, t + MIN, resp=stunt_page(900, 3))
    check(r, "the call after", items=[], notices=["exposure-limit"])


# ================================================================ 10. metrics

def test_metrics_move(fg, redis_factory):
    """The README's screen-time and Redis metrics exist and move: notices
    by kind, calls answered by rule and action, commands and their latency,
    the connected gauge, errors and state failures when Redis is killed,
    reconnects when it is back."""
    r = redis_factory().start()
    d = fg(policy(only(daily={"cap": "10m", "warn_before": "5m", "action": "deny"})), r, state=FAST_STATE,
           config=ADMIN)
    before = metrics(d)
    assert redis_connected(d) == 1, "\n".join(l for l in before.splitlines() if "redis" in l)
    uid = new_user()
    t0 = local_ms(WINTER, "10:00")
    for m in (0, 4, 6, 8, 10, 11):
        rank(d, uid, t0 + m * MIN)      # soon at 6 and 8, deny at 10 and 11
    after = metrics(d)
    dump = "\n".join(l for l in after.splitlines() if "screen_time" in l or "redis" in l)

    def delta(name, **labels):
        return msum(after, name, **labels) - msum(before, name, **labels)
    assert delta("feedguard_screen_time_notices_total", band="under_13", kind="daily-limit-soon") == 2, dump
    assert delta("feedguard_screen_time_notices_total", band="under_13", kind="daily-limit") == 2, dump
    # READING: rule is named as in the policy: daily, quiet_hours, break.
    assert delta("feedguard_screen_time_answered_total", band="under_13", rule="daily", action="deny") == 2, dump
    assert delta("feedguard_redis_commands_total") >= 6, dump
    assert delta("feedguard_redis_latency_seconds_count") >= 6, dump
    assert re.search(r"^# TYPE feedguard_redis_latency_seconds histogram$", after, re.M), dump
    assert has_sample(after, "feedguard_redis_latency_seconds_bucket"), dump
    errors = msum(after, "feedguard_redis_errors_total")
    reconnects = msum(after, "feedguard_redis_reconnects_total")
    r.kill()
    poll_until(lambda: redis_connected(d) == 0, tf(5), "feedguard_redis_connected 0")
    res = rank(d, new_user(), t0, settle=False)
    assert res.code == OK and res.st is None, res
    down = metrics(d)
    dump = "\n".join(l for l in down.splitlines() if "redis" in l or "state_failures" in l)
    assert msum(down, "feedguard_state_failures_total", band="under_13", reason="down", mode="open") >= 1, dump
    r.start()
    poll_until(lambda: redis_connected(d) == 1, tf(10), "feedguard_redis_connected 1 after Redis is back")
    back = metrics(d)
    assert msum(back, "feedguard_redis_reconnects_total") > reconnects, \
        "\n".join(l for l in back.splitlines() if "reconnects" in l)
    # READING: a state read refused because the link is down is a Redis
    # error of kind `down` (the kinds down and busy are operations never
    # sent).
    assert msum(down, "feedguard_redis_errors_total") > errors, dump


# ================================================================ 11. methods and bands

def test_screen_time_off_method_is_not_a_heartbeat(fg, redis):
    """StreamPages with `screen_time: off`: its calls carry no screen time
    and do not keep a session going."""
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"}),
                  stream_extra="    screen_time: off\n"), redis)
    uid = new_user()
    t0 = local_ms(WINTER, "10:00")
    for m in (0, 4):
        rank(d, uid, t0 + m * MIN)
    r = stream(d, uid, t0 + 8 * MIN, [PAGE], settle=False)
    check(r, "StreamPages, screen_time off", items=PAGE_IDS, notices=[])
    assert r.st is None, r
    check(rank(d, uid, t0 + 12 * MIN), "+12m: 8 minutes after the last heartbeat", st={"used": 4, "session": 0})


# ================================================================ 12. configuration

GOOD = policy(block(bands=["under_13"], idle_gap="5m",
                    daily={"cap": "60m", "warn_before": "10m", "action": "deny"},
                    brk={"after": "45m", "action": "empty"},
                    quiet_hours={"from": "21:00", "to": "07:00", "allowance": "10m", "warn_before": "30m",
                                 "action": "empty"},
                    exposure=[{"classes": ["dangerous_stunts"], "per_day": 10},
                              {"classes": ["body_image", "depression"], "per_day": 20, "name": "sad"}],
                    fail_mode="deny"),
              block(bands=["13_15", "16_17"], fail_mode="open"))

GOOD_LIMITS_LINE = '    quiet_hours: {from: "21:00", to: "07:00", allowance: 10m, warn_before: 30m, action: empty}\n'
assert GOOD_LIMITS_LINE in GOOD


def _bad(old, new, words, cfg=None):
    assert old in GOOD, old
    return GOOD.replace(old, new, 1), words, cfg


SEVENTEEN = "".join("      - {classes: [dangerous_stunts], per_day: 1, name: c%d}\n" % i for i in range(16)) + \
    "      - @@{classes: [dangerous_stunts], per_day: 1, name: c16}\n"

BAD_LIMITS = {
    # kind: (policy text with @@ at the error (@~: another acceptable place), words one of which the
    #        message has, config overrides for check.yaml)
    "limits_without_state_redis": (GOOD.replace("limits:\n", "@@limits:\n"), ["state.redis", "redis"],
                                   {"state": None}),
    "limits_without_pseudonym_keys": (GOOD.replace("limits:\n", "@@limits:\n"), ["pseudonym_keys"],
                                      {"keys": None}),
    "quiet_from_25h": _bad('{from: "21:00"', '{from: @@"25:00"', ["25:00", "from"]),
    "quiet_from_minute_60": _bad('{from: "21:00"', '{from: @@"21:60"', ["21:60", "from"]),
    "quiet_from_not_hhmm": _bad('{from: "21:00"', '{from: @@"9pm"', ["9pm", "from"]),
    "quiet_from_equals_to": _bad('{from: "21:00", to: "07:00"', '{from: @~"07:00", to: @@"07:00"',
                                 ["equal", "same", "from", "07:00"]),
    "quiet_allowance_13h": _bad("allowance: 10m", "allowance: @@13h", ["allowance", "13h"]),
    "quiet_warn_13h": _bad("warn_before: 30m, action: empty}", "warn_before: @@13h, action: empty}",
                           ["warn_before", "13h"]),
    "time_zone_unknown": _bad("time_zone: Europe/London", "time_zone: @@Europe/Lndon", ["Europe/Lndon"]),
    "time_zones_unknown": _bad("time_zones: [Europe/London, America/New_York",
                               "time_zones: [Europe/London, @@America/New_Yrok", ["America/New_Yrok"]),
    "exposure_class_unknown": _bad("{classes: [dangerous_stunts], per_day: 10}",
                                   "{classes: [@@dangerous_stunt], per_day: 10}", ["dangerous_stunt"]),
    "exposure_per_day_100001": _bad("per_day: 10}", "per_day: @@100001}", ["per_day", "100001"]),
    "exposure_17_counters": _bad("      - {classes: [dangerous_stunts], per_day: 10}\n"
                                 "      - {classes: [body_image, depression], per_day: 20, name: sad}\n",
                                 SEVENTEEN, ["16"]),
    "daily_cap_25h": _bad("cap: 60m", "cap: @@25h", ["cap", "25h"]),
    "daily_cap_30s": _bad("cap: 60m", "cap: @@30s", ["cap", "30s"]),
    "daily_warn_over_cap": _bad("cap: 60m, warn_before: 10m", "cap: 60m, warn_before: @@61m",
                                ["warn_before", "61m", "cap"]),
    "daily_action_unknown": _bad("action: deny}", "action: @@block}", ["block", "action"]),
    "break_after_30s": _bad("after: 45m", "after: @@30s", ["after", "30s"]),
    "idle_gap_5s": _bad("idle_gap: 5m", "idle_gap: @@5s", ["idle_gap", "5s"]),
    "idle_gap_2h": _bad("idle_gap: 5m", "idle_gap: @@2h", ["idle_gap", "2h"]),
    "fail_mode_unknown": _bad("fail_mode: deny", "fail_mode: @@closed", ["closed", "fail_mode"]),
    "unknown_key": _bad("    idle_gap: 5m\n", "    @@idle_gapp: 5m\n", ["idle_gapp"]),
    "band_in_two_blocks": _bad('  - bands: ["13_15", "16_17"]', '  - bands: ["13_15", @@under_13]',
                               ["under_13"]),
    "band_unknown": _bad("  - bands: [under_13]", "  - bands: [@@under_12]", ["under_12"]),
    "method_without_user_id": (GOOD.replace("  %s:\n    user_id: {header: x-user-id}\n" % RANK,
                                            "  @@%s:\n" % RANK).replace("limits:\n", "@~limits:\n")
                               .replace("  - bands: [under_13]\n", "  @~- @~bands: [under_13]\n"),
                               ["user_id"], None),
}


def _exposure_without_feed():
    """StreamPages without feed or filter, with screen_time: on; the
    under_13 block has exposure: an error (exposure needs the method's
    feed), at the exposure key or at screen_time."""
    start = GOOD.index("  %s:\n" % STREAM_PAGES)
    end = GOOD.index("limits:\n")
    method = ("  %s:\n    user_id: {header: x-user-id}\n    age_band: {header: x-age-band}\n"
              "    @~screen_time: on\n" % STREAM_PAGES)
    return GOOD[:start] + method + GOOD[end:].replace("    exposure:\n", "    @@exposure:\n")


BAD_LIMITS["exposure_without_feed"] = (_exposure_without_feed(), ["feed"], None)

CHECK_CONFIG = """\
listen: 127.0.0.1:0
upstream:
  address: 127.0.0.1:9
admin:
  listen: "off"
policy: policy.yaml
%s%s"""
KEYS_YAML = "pseudonym_keys:\n  - {id: k1, file: k1.key}\n"
STATE_YAML = "state:\n  redis: 127.0.0.1:9\n  timeout: 20ms\n"


def _place(text, j):
    """1-based (line, column) of offset <j> in <text>."""
    return text.count("\n", 0, j) + 1, j - (text.rfind("\n", 0, j) + 1) + 1


def marked_places(text):
    """<text> without its marks, and the (line, column) places an error may
    be at: @@ (the one expected), each @~ (others as right), and for a
    quoted value also the column after the quote."""
    places = []
    for mark in ("@@", "@~"):
        other = "@~" if mark == "@@" else "@@"
        clean = text.replace(other, "")
        while mark in clean:
            j = clean.index(mark)
            clean = clean[:j] + clean[j + 2:]
            line, col = _place(clean, j)
            places.append((line, col))
            if clean[j:j + 1] == '"':
                places.append((line, col + 1))
    return text.replace("@@", "").replace("@~", ""), places


def check_t(tmp_path, policy_text=None, state=STATE_YAML, keys=KEYS_YAML, config_text=None):
    if policy_text is not None:
        ph.write_policy(tmp_path, policy_text)
    (tmp_path / "k1.key").write_bytes(os.urandom(32))
    cfg = tmp_path / "check.yaml"
    cfg.write_text(config_text if config_text is not None else CHECK_CONFIG % (keys or "", state or ""))
    res = run_feedguardd(["-t", "-c", str(cfg)])
    return cfg, res.returncode, res.stderr.decode("utf-8", "replace")


def assert_error_at(err, path, places, words, kind):
    for line, col in places:
        where = "%s:%d:%d: " % (path, line, col)
        if where in err:
            msg = err.split(where, 1)[1].splitlines()[0]
            assert any(w in msg for w in words), "%s: the message does not name any of %s: %r" % (kind, words, msg)
            return
    pytest.fail("%s: expected an error at %s; got:\n%s"
                % (kind, " or ".join("%s:%d:%d" % (path, l, c) for l, c in places), err), pytrace=False)


def test_check_accepts_a_limits_policy(tmp_path):
    """The policy the error cases start from passes -t (Redis is not
    running: -t checks, it does not connect)."""
    _, rc, err = check_t(tmp_path, GOOD)
    assert rc == 0, err
    _, rc, err = check_t(tmp_path, policy(block(bands="*")))
    assert rc == 0, "a block for every band, all defaults: %s" % err


@pytest.mark.parametrize("kind", sorted(BAD_LIMITS))
def test_check_rejects_bad_limits(tmp_path, kind):
    text, words, over = BAD_LIMITS[kind]
    text, places = marked_places(text)
    over = over or {}
    path = ph.write_policy(tmp_path, text)
    _, rc, err = check_t(tmp_path, None, state=None if "state" in over else STATE_YAML,
                         keys=None if "keys" in over else KEYS_YAML)
    assert rc == 1, "%s: exit %s; stderr:\n%s" % (kind, rc, err)
    assert_error_at(err, path, places, words, kind)


BAD_STATE = {
    "redis_host_name": ("  redis: @@localhost:6379\n", ["localhost", "host"]),
    "redis_no_port": ("  redis: @@127.0.0.1\n", ["127.0.0.1", "port"]),
    "timeout_11s": ("  redis: 127.0.0.1:9\n  timeout: @@11s\n", ["timeout", "11s"]),
    "timeout_0": ("  redis: 127.0.0.1:9\n  timeout: @@0ms\n", ["timeout", "0ms"]),
    "stall_below_timeout": ("  redis: 127.0.0.1:9\n  @~timeout: @~100ms\n  @~stall_timeout: @@50ms\n",
                            ["stall_timeout", "timeout"]),
    "key_prefix_space": ("  redis: 127.0.0.1:9\n  key_prefix: @@\"fg {x}\"\n", ["key_prefix", "fg {x}"]),
    "key_prefix_65": ("  redis: 127.0.0.1:9\n  key_prefix: @@%s\n" % ("a" * 65), ["key_prefix", "64"]),
    "db_negative": ("  redis: 127.0.0.1:9\n  db: @@-1\n", ["db", "-1"]),
    "password_file_missing": ("  redis: 127.0.0.1:9\n  password_file: @@no-such.pass\n", ["no-such.pass"]),
    "unknown_key": ("  redis: 127.0.0.1:9\n  @@timout: 20ms\n", ["timout"]),
}


@pytest.mark.parametrize("kind", sorted(BAD_STATE))
def test_check_rejects_bad_state(tmp_path, kind):
    body, words = BAD_STATE[kind]
    ph.write_policy(tmp_path, GOOD)
    text, places = marked_places(CHECK_CONFIG % (KEYS_YAML, "state:\n" + body))
    cfg, rc, err = check_t(tmp_path, None, config_text=text)
    assert rc == 1, "%s: exit %s; stderr:\n%s" % (kind, rc, err)
    assert_error_at(err, cfg, places, words, kind)


def test_reload_without_state_keeps_the_running_config(fg, redis):
    """A reload to a config without `state` fails at the policy's limits
    key; the running config keeps limiting."""
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"})), redis)
    uid = new_user()
    t0 = local_ms(WINTER, "10:00")
    check(rank(d, uid, t0), "before", st={"used": 0})
    cfg = dict(d.config)
    cfg.pop("state")
    d.config_path.write_text(harness.to_yaml(cfg))
    line = ph.sighup_and_wait(d, "reload_failed", len(d.stderr()))
    pol = (d.workdir / "policy.yaml").resolve()
    lim = pol.read_text().splitlines().index("limits:") + 1
    assert "%s:%d:1: " % (pol, lim) in line, "the error should be at the policy's limits key: %s" % line
    check(rank(d, uid, t0 + 4 * MIN), "after the failed reload", st={"used": 4})


# ================================================================ 13. release builds

@pytest.mark.release
def test_release_build_passes_test_now_through(middle, ranker, tmp_path, redis, keys):
    """Only without test hooks: feedguard-test-now is not read (the real
    clock counts) and reaches the ranker like any other header."""
    res = run_feedguardd(["-v"])
    if "test hooks: ON" in (res.stdout + res.stderr).decode("utf-8", "replace"):
        pytest.skip("a test-hooks build reads feedguard-test-now")
    ph.write_policy(tmp_path, policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"})))
    d = middle(ranker.addr, {"policy": "policy.yaml", "pseudonym_keys": [{"id": "k1", "file": "k1.key"}],
                             "state": {"redis": redis.addr, "timeout": STATE_TIMEOUT,
                                       "stall_timeout": STALL_TIMEOUT}})
    d.ranker, d.redis, d.keys, d.ring, d.prefix = ranker, redis, keys, ["k1"], "fg:"
    cid = ph.call_id("rel")
    ranker.script(cid, [PAGE])
    t = local_ms(WINTER, "10:00")
    uid = new_user()
    ph.unary(d.addr, RANK, REQ, metadata(uid, t, "under_13", cid))
    assert ranker.wait(cid)["md"].get(TEST_NOW) == [str(t)]
    last = poll_until(lambda: hget(d, uid, "last"), tf(5), "the state of the call")
    assert abs(last - time.time() * 1000) < tf(60) * SEC, "a release build used feedguard-test-now"


# ================================================================ 14. review regressions

def test_hostile_test_now_does_not_crash_the_daemon(fg, redis):
    """feedguard-test-now is digits only, but any number of them: a value
    past int64 (strtoll saturates) or past what a state time may be must
    not make the time arithmetic overflow (UBSan aborts the daemon) nor
    reach Redis; the call is served at the real time, and the daemon
    stays up."""
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"})), redis, config=ADMIN)
    for t in (10 ** 19 - 1, 2 ** 63 - 1, 2 ** 62, 2 ** 53, 2 ** 53 - 1):
        uid = new_user()
        r = rank(d, uid, t, settle=False)
        assert d.alive(), "feedguardd died on feedguard-test-now: %d\n%s" % (
            t, harness.tail(d.stderr_path, 30))
        check(r, "feedguard-test-now: %d" % t, items=PAGE_IDS, notices=None)
    uid = new_user()
    check(rank(d, uid, local_ms(WINTER, "10:00")), "after", st={"used": 0}, items=PAGE_IDS)


@pytest.mark.parametrize("mode", ["open", "empty", "deny"])
def test_reload_replacing_the_link_ends_reads_in_flight_by_fail_mode(fg, redis_factory, mode):
    """README: a reload that changes `state` drops the old link, and
    operations in flight on it end by the band's fail_mode.  Redis is
    paused with a read (and an update) in flight under a long
    state.timeout; the reload must answer the waiting call at once, leave
    the daemon sound (ASan) and the Redis counters monotonic."""
    r = redis_factory().start()
    # state.timeout is at most 10s: under valgrind (FG_TIME_FACTOR=10) the
    # scaled waits stop there
    long_timeout = "%dms" % min(int(tf(3.0) * 1000), 10000)
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"}, fail_mode=mode)), r,
           state={"timeout": long_timeout, "stall_timeout": "%dms" % int(tf(6.0) * 1000)}, config=ADMIN)
    uid = new_user()
    t0 = local_ms(WINTER, "10:00")
    check(rank(d, uid, t0), "before", st={"used": 0}, items=PAGE_IDS)
    before = ph.metric(metrics(d), "feedguard_redis_commands_total")
    r.pause()
    try:
        with ThreadPoolExecutor(2) as ex:
            fut = ex.submit(rank, d, uid, t0 + MIN, settle=False)
            time.sleep(tf(0.3))
            assert not fut.done(), "the call should wait for its state (Redis paused): %r" % (fut.result(),)
            cfg = harness.deep_merge(d.config, {"state": {"timeout": "%dms" % min(int(tf(2.9) * 1000), 9900)}})
            d.config_path.write_text(harness.to_yaml(cfg))
            start = time.monotonic()
            ph.sighup_and_wait(d, "reloaded", len(d.stderr()))
            res = fut.result(timeout=tf(10))
        waited = time.monotonic() - start
        assert waited < tf(1.5), "the call waited %.2f s after the reload dropped its link" % waited
        what = "read in flight when the reload dropped the link, fail_mode %s" % mode
        if mode == "open":
            check(res, what, items=PAGE_IDS, notices=[])
        elif mode == "empty":
            check(res, what, empty=True, notices=None)
        else:
            check(res, what, code=UNAVAILABLE, details="screen-time state unavailable, try again later",
                  notices=None)
        text = metrics(d)
        after = ph.metric(text, "feedguard_redis_commands_total")
        assert after >= before, "feedguard_redis_commands_total went down across a reload: %s -> %s" % (
            before, after)
        time.sleep(tf(1.0))         # the new link's connect times out (Redis still paused)
        text = metrics(d)
        later = ph.metric(text, "feedguard_redis_commands_total")
        assert later >= after, "feedguard_redis_commands_total went down after a reload: %s -> %s -> %s" % (
            before, after, later)
        # README: down is a command in flight when its link went.
        assert ph.metric(text, "feedguard_redis_errors_total", kind="down") >= 1, \
            "\n".join(l for l in text.splitlines() if "redis_errors" in l)
    finally:
        r.resume()
    assert d.alive()
    poll_until(lambda: (lambda x: x if x.st else None)(rank(d, new_user(), t0)), tf(10),
               "a call that reads state on the new link")


def test_reload_reads_a_rotated_password_file(fg, redis_factory, tmp_path):
    """Rotating the Redis password: the operator writes the new one to
    state.password_file and reloads.  The path is the same, so the worker
    must still read the file again (README: AUTH on every connect with the
    file's password); else it reconnects with the old password forever
    and every call takes the fail mode until a restart."""
    old, new = "pw-old-%s" % uuid.uuid4().hex, "pw-new-%s" % uuid.uuid4().hex
    r = redis_factory(password=old).start()
    (tmp_path / "redis.pass").write_text(old + "\n")
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"})), r,
           state=dict(FAST_STATE, password_file="redis.pass"), config=ADMIN)
    with RedisClient(r.addr, password=old) as c:
        assert c.cmd("CONFIG", "SET", "requirepass", new) == "OK"
        c.cmd("CLIENT", "KILL", "TYPE", "normal")       # SKIPME yes: drops feedguardd's link
    r.password = new
    (tmp_path / "redis.pass").write_text(new + "\n")
    poll_until(lambda: redis_connected(d) == 0, tf(5), "the link to fail AUTH with the old password")
    ph.sighup_and_wait(d, "reloaded", len(d.stderr()))
    wait_state(d)
    assert old not in d.stderr() and new not in d.stderr(), "a Redis password is in feedguardd's log"


def test_reload_retries_a_backend_that_could_not_start(fg, redis_factory, tmp_path):
    """A worker whose link could not be made at a reload (the password
    file unreadable when the worker read it) gets it at the next reload of
    the same config, once the file is fixed."""
    password = "pw-%s" % uuid.uuid4().hex
    r = redis_factory(password=password).start()
    pw = tmp_path / "redis.pass"
    pw.write_text(password + "\n")
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"})), r,
           state=dict(FAST_STATE, password_file="redis.pass"), config=ADMIN)
    # A reload with a changed setting, and a password file the config
    # loader can read but the worker cannot: too long to be a password.
    pw.write_text("x" * 600 + "\n")
    cfg = harness.deep_merge(d.config, {"state": {"timeout": "120ms"}})
    d.config_path.write_text(harness.to_yaml(cfg))
    ph.sighup_and_wait(d, "reloaded", len(d.stderr()))
    poll_until(lambda: redis_connected(d) == 0, tf(5), "no link after the failed start")
    pw.write_text(password + "\n")
    ph.sighup_and_wait(d, "reloaded", len(d.stderr()))
    wait_state(d)


def test_alternating_listed_zones_do_not_reset_the_day(fg, redis):
    """Days are in the call's zone, and a child may name any zone of
    time_zones.  At 14:00 in London it is already tomorrow in Sydney: a
    child who sends x-time-zone London and Sydney by turns must not restart
    the day's counters (and exposure allowances) at every call, or the
    daily cap and per_day never bind.  (It may at most make its day end
    at the earliest of the midnights of its zones: the cap still holds
    over the calls below, 40 minutes of use against a 10-minute cap.)"""
    d = fg(policy(only(daily={"cap": "10m", "warn_before": "0s", "action": "deny"},
                       exposure=[{"classes": ["dangerous_stunts"], "per_day": 2}])), redis)
    uid = new_user()
    t0 = local_ms(WINTER, "14:00")
    results = []
    for k in range(11):
        tz = LONDON if k % 2 == 0 else "Australia/Sydney"
        results.append((k * 4, tz, rank(d, uid, t0 + k * 4 * MIN, tz=tz, resp=stunt_page(10 * k, 2))))
    denied = [m for m, _, r in results if r.code == EXHAUSTED]
    assert denied, "40 minutes of continuous use past a 10-minute cap, never denied: %s" % [
        (m, tz, r.code.name, r.meta(ST) if r.code == OK else r.details) for m, tz, r in results]
    stunts = sum(len(r.items) for _, _, r in results)
    assert stunts <= 2 * 2, "per_day 2 of dangerous_stunts, %d delivered" % stunts


def test_chaos_calls_cancels_redis_faults_and_reloads(fg, redis_factory):
    """Hostile mix for the sanitizers: unary calls and streams (some cut
    by short deadlines while their state is read or their rule's timer is
    armed, some ended by a rule) from several threads, while Redis is
    paused, resumed, killed, restarted and the config reloaded with other
    state settings (each reload drops the link with operations in
    flight).  The daemon must stay up, answer every call with a status
    the README allows, and leave no sanitizer report (the fixture checks
    at teardown)."""
    r = redis_factory().start()
    d = fg(policy(only(idle_gap="10m", daily={"cap": "2m", "warn_before": "1m", "action": "deny"},
                       brk={"after": "1m", "action": "empty"},
                       quiet_hours={"from": "22:00", "to": "07:00", "allowance": "1m", "action": "empty"},
                       exposure=[{"classes": ["dangerous_stunts"], "per_day": 3}], fail_mode="empty")), r,
           state=dict(FAST_STATE, timeout="60ms", max_pending=8), config=ADMIN)
    stop = threading.Event()
    seen = set()
    errors = []
    allowed = {OK, EXHAUSTED, UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}

    def client(k):
        import random
        rnd = random.Random(k)
        uid = new_user("chaos%d" % k)
        t = local_ms(WINTER, "21:57")
        while not stop.is_set():
            t += rnd.choice((10, 20, 40)) * SEC
            try:
                if rnd.random() < 0.5:
                    cid = ph.call_id("cu")
                    d.ranker.script(cid, [stunt_page(rnd.randrange(1000), 2)], delay=rnd.choice((0, 0, 0.05)))
                    with harness.channel(d.addr) as ch:
                        ch.unary_unary(RANK).with_call(REQ, metadata=metadata(uid, t, "under_13", cid),
                                                       timeout=rnd.choice((0.03, 0.2, tf(2))))
                    seen.add(OK)
                else:
                    cid = ph.call_id("cs")
                    d.ranker.script(cid, [page([it(i, ("stunt", 0.9))]) for i in range(8)],
                                    interval=rnd.choice((0.01, 0.05)))
                    with harness.channel(d.addr) as ch:
                        call = ch.unary_stream(STREAM_PAGES)(REQ, metadata=metadata(uid, t, "under_13", cid),
                                                             timeout=rnd.choice((0.05, 0.2, tf(2))))
                        for _ in call:
                            pass
                    seen.add(OK)
            except grpc.RpcError as e:
                seen.add(e.code())
                if e.code() not in allowed:
                    errors.append((e.code(), e.details()))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    try:
        timeouts = ["50ms", "60ms", "70ms"]
        for step in range(12):
            time.sleep(0.3)
            action = step % 6
            if action == 0:
                r.pause()
            elif action == 1:
                r.resume()
            elif action == 2:
                r.kill()
            elif action == 3:
                r.start()
            cfg = harness.deep_merge(d.config, {"state": {"timeout": timeouts[step % 3]}})
            d.config_path.write_text(harness.to_yaml(cfg))
            ph.sighup_and_wait(d, "reloaded", len(d.stderr()))
            assert d.alive(), harness.tail(d.stderr_path, 30)
    finally:
        if r.paused:
            r.resume()
        stop.set()
        for th in threads:
            th.join(timeout=tf(20))
    assert d.alive(), harness.tail(d.stderr_path, 30)
    assert not errors, errors[:5]
    metrics(d)


def test_ranker_cannot_forge_screen_time_metadata(fg, redis):
    """feedguard-screen-time and feedguard-notice are feedguard's word to
    the child's app: a ranker that sends its own (a bug, or a platform
    that wants the app to show more time left) must not reach the client
    beside, or instead of, feedguard's values."""
    d = fg(policy(only(daily={"cap": "60m", "warn_before": "0s", "action": "deny"})), redis)
    uid = new_user()
    cid = ph.call_id("forge")
    d.ranker.script(cid, [PAGE])
    with d.ranker.lock:
        d.ranker.initial_md[cid] = ((ST, "used=0,left=999,session=0"), (NOTICE, "quiet-hours"))
    t = local_ms(WINTER, "10:00")
    with harness.channel(d.addr) as ch:
        msg, c = ch.unary_unary(RANK).with_call(REQ, metadata=metadata(uid, t, "under_13", cid), timeout=tf(10))
    r = Result("unary", OK, c.details(), [msg], c.initial_metadata(), c.trailing_metadata(), 0, t)
    check(r, "a ranker that sends feedguard's metadata", st={"used": 0, "left": 60, "session": 0}, notices=[],
          items=PAGE_IDS)


def test_rule_after_the_stream_ended_is_not_an_answer(fg, redis):
    """A stream whose ranker has finished (its trailers are in, OK), but
    whose client has not read the last bytes yet (flow control), when the
    rule's timer fires: the stream is not ended by the rule (it is over),
    so it must not count in feedguard_screen_time_answered_total; the
    client gets the ranker's OK."""
    from rawh2 import RawClient
    d = fg(policy(only(daily={"cap": "1m", "warn_before": "0s", "action": "deny"})), redis, config=ADMIN)
    uid = new_user()
    t0 = local_ms(WINTER, "10:00")
    check(rank(d, uid, t0), "the call before the stream", notices=[], items=PAGE_IDS)
    cid = ph.call_id("late")
    big = page([it(500 + i, ("sport", 0.9)) for i in range(1)], tail=f_len(9, b"x" * 90000))
    d.ranker.script(cid, [big])
    c = RawClient(d.addr, timeout=tf(10), ack_data=False)
    try:
        sid = c.request(STREAM_PAGES, messages=[REQ],
                        metadata=metadata(uid, t0 + 58 * SEC, "under_13", cid))
        st = c.streams[sid]
        c.wait(lambda: c.received_bytes >= 60000, tf(5), "the first window of the page")
        end = time.monotonic() + 2.0 + tf(1.0)          # the rule fires about 2 s in
        while time.monotonic() < end:
            c.pump(0.1)
        assert not st.finished, "the stream ended with the client's window shut: %r" % (st.frames,)
        c.open_windows()
        c.wait(lambda: st.finished, tf(5), "the end of the stream")
        status = st.status_headers().get("grpc-status")
    finally:
        c.close()
    answered = ph.metric(metrics(d), "feedguard_screen_time_answered_total", band="under_13", rule="daily",
                         action="deny") or 0
    if status == "0":
        assert answered == 0, "the client got OK, yet the call counts as answered by the daily deny"
    else:
        assert status == "8" and answered == 1, (status, answered)


def test_stream_trailers_count_the_stream_itself(fg, redis):
    """The figures in a stream's trailers are as of its end (README: `used`
    today, `session` of continuous use): a stream opened at 4:59 of use
    that runs 2 s ends at 5:01, and says used=5, session=5, not the 4 of
    its start (the stream's own time counts: test_stream_duration_counts)."""
    d = fg(policy(only(idle_gap="10m", daily={"cap": "60m", "warn_before": "0s", "action": "deny"})), redis)
    uid = new_user()
    t0 = local_ms(WINTER, "10:00")
    rank(d, uid, t0)
    r = stream(d, uid, t0 + 299 * SEC, [page([it(700 + i)]) for i in range(21)], interval=0.1)
    assert r.elapsed >= 2.0, r
    check(r, "a 2 s stream from 4:59", st={"used": 5, "session": 5}, notices=[])
    assert r.st["left"] in (55, 54), r.st
