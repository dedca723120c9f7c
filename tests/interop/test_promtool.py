"""/metrics passes `promtool check metrics` (prometheus 2.42 from Debian,
/usr/bin/promtool) with every stage on (README.md, "Admin endpoint"): the
format and promtool's naming lint (counters end in _total, units as
suffixes, help text, ...) over every metric family feedguardd shows once it
has done each kind of work.

One daemon (a test-hooks build, so a call can be put in quiet hours) with
policies/uk-children.yaml (strip, filter, screen time), a real Redis with a
password, capture on (sample 1), metrics.methods naming the feed methods,
in front of the crafted-feed ranker.  A reload, then the calls: a child's feed (stripped,
filtered, past the wellbeing exposure allowance), an under-13's feed in
quiet hours (answered empty by feedguardd), a child's streamed pages, an
adult's feed, a pass-through call, a call the ranker fails.  The page it
scrapes must hold each stage's families with samples that moved, so the
check covers them as they look in production.
"""
import os
import shutil
import signal
import subprocess
from datetime import datetime, timezone

import grpc
import pytest

import harness
import policyhelp as ph
from feedranker import STREAM_PAGES, FeedRanker, item, page
from harness import poll_until, start_middle, tf
from policyhelp import RANK, f_len, f_varint
from redisserver import RedisServer

pytestmark = pytest.mark.proxy_only

PROMTOOL = os.environ.get("FG_PROMTOOL") or shutil.which("promtool") or "/usr/bin/promtool"
UK_CHILDREN = harness.SRCDIR / "policies" / "uk-children.yaml"
TEST_NOW = "feedguard-test-now"
# 23:30 in London on a winter day (GMT): an under-13's quiet hours.
QUIET = int(datetime(2031, 1, 15, 23, 30, tzinfo=timezone.utc).timestamp() * 1000)
PASS_THROUGH = "/feedguard.ranking.v1.Admin/Ping"      # not in the policy

# Families each stage must have put on the page by the end of the calls.
EXPECTED = [
    "feedguard_calls_total", "feedguard_call_duration_seconds_bucket",
    "feedguard_policy_calls_total", "feedguard_policy_fields_stripped_total",
    "feedguard_filter_", "feedguard_screen_time_", "feedguard_redis_",
    "feedguard_capture_records_total", "feedguard_reloads_total",
]


def need_tools():
    out = harness.run_feedguardd(["-v"])
    if b"test hooks: ON" not in out.stdout + out.stderr:
        pytest.skip("needs a --enable-test-hooks build (a call put in quiet hours)")
    if not RedisServer.available():
        pytest.skip("redis-server is not installed (Debian: redis-server; or set FG_REDIS_SERVER)")
    if not os.access(PROMTOOL, os.X_OK):
        msg = "promtool is not installed (Debian: prometheus; or set FG_PROMTOOL)"
        if os.environ.get("CI"):
            pytest.fail(msg + ": CI must run this check", pytrace=False)
        pytest.skip(msg)


def wellbeing_page(base):
    """100 items: body_image at every other place (50 of them), the rest
    sport (a topic), and one violence item (priority content).  A child's
    page of 100 then shows 10 body_image items (the policy's max_share
    0.1), so the third page of a day is past the wellbeing allowance (20)."""
    items = []
    for i in range(100):
        label = "body_image" if i % 2 == 0 else ("violence" if i == 7 else "sport")
        items.append(item(base + i, moderation=[(label, 0.9)]))
    return page(items, tail=f_len(3, "model-7"))


def request(uid, band, page_size=100):
    """A RankFeedRequest: user {user_id, age_band}, context {surface,
    locale}, a search-history signal (stripped for children), page_size."""
    return (f_len(1, f_len(1, uid) + f_len(2, band)) + f_len(2, f_varint(1, 1) + f_len(2, "en-GB"))
            + f_len(3, f_len(4, "how to lose weight fast")) + f_varint(4, page_size))


def call(d, ranker, method, body, band, responses, now=None, stream=False):
    """One call through <d>; returns its status code."""
    cid = ph.call_id("prom")
    if responses is not None:
        ranker.script(cid, responses)
    md = [("x-call-id", cid), ("x-age-band", band)] + ([(TEST_NOW, str(now))] if now else [])
    try:
        with harness.channel(d.addr) as ch:
            if stream:
                list(ch.unary_stream(method)(body, metadata=md, timeout=tf(10)))
            else:
                ch.unary_unary(method)(body, metadata=md, timeout=tf(10))
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


@pytest.fixture
def daemon(tmp_path):
    need_tools()
    k1 = tmp_path / "k1.key"
    k1.write_bytes(os.urandom(32))
    (tmp_path / "cap.key").write_bytes(os.urandom(32))
    (tmp_path / "redis.pass").write_text("promtool-test\n")
    (tmp_path / "capture").mkdir()
    redis = RedisServer(tmp_path, password="promtool-test").start()
    ranker = FeedRanker()
    d = None
    try:
        cfg = {
            "workers": 2,
            "admin": {"listen": "127.0.0.1:0"},
            "policy": str(ph.write_policy(tmp_path, UK_CHILDREN.read_text())),
            "pseudonym_keys": [{"id": "k1", "file": str(k1)}],
            "state": {"redis": redis.addr, "password_file": str(tmp_path / "redis.pass"),
                      "timeout": "%dms" % min(10000, int(tf(1.0) * 1000)),
                      "stall_timeout": "%dms" % min(20000, int(tf(2.0) * 1000))},
            "capture": {"directory": str(tmp_path / "capture"),
                        "key": {"id": "cap-1", "file": str(tmp_path / "cap.key")},
                        "sample": 1},
            "metrics": {"methods": [RANK, STREAM_PAGES]},
        }
        d = start_middle(tmp_path, ranker.addr, cfg, "promtool")
        yield d, ranker
    finally:
        problems = d.stop() if d is not None else []
        ranker.stop()
        redis.stop()
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


def test_metrics_pass_promtool_check_with_every_stage_on(daemon):
    d, ranker = daemon
    ok = grpc.StatusCode.OK
    # A reload first (it starts the policy's counters from zero), so the
    # reload families have moved too.
    before = d.stderr().count("event=reloaded")
    d.proc.send_signal(signal.SIGHUP)
    poll_until(lambda: d.stderr().count("event=reloaded") > before, tf(10), "event=reloaded")

    admin = ph.admin_addr(d)

    # A child's feeds (stripped, filtered), past the wellbeing allowance:
    # pages until the filter counts items limited (Redis may still be
    # connecting at the first call, and the state is updated after each
    # response, so this is polled, not assumed after the third page).
    def limited():
        assert call(d, ranker, RANK, request("teen-1", "13_15"), "13_15", [wellbeing_page(2000)]) == ok
        text = ph.http_get(admin, "/metrics")[1]
        return ph.metric(text, "feedguard_filter_items_total", method=RANK, band="13_15",
                         **{"class": "body_image", "action": "limited"})
    poll_until(limited, tf(10), "items limited by the wellbeing exposure allowance", interval=0.05)
    # An under-13 in quiet hours: feedguardd answers an empty feed itself.
    assert call(d, ranker, RANK, request("kid-1", "under_13"), "under_13", [wellbeing_page(3000)],
                now=QUIET) == ok
    # A child's streamed pages, an adult's feed, a call passed through, and
    # a feed the ranker fails (no script: NOT_FOUND).
    assert call(d, ranker, STREAM_PAGES, request("teen-2", "16_17"), "16_17",
                [wellbeing_page(4000), wellbeing_page(4100)], stream=True) == ok
    assert call(d, ranker, RANK, request("adult-1", "adult"), "adult", [wellbeing_page(5000)]) == ok
    assert call(d, ranker, PASS_THROUGH, b"ping", "adult", [b"pong"]) == ok
    assert call(d, ranker, RANK, request("adult-2", "adult"), "adult", None) == grpc.StatusCode.NOT_FOUND

    def scraped():
        status, text = ph.http_get(admin, "/metrics")
        return text if status == 200 and ph.metric(text, "feedguard_capture_records_total") else None
    text = poll_until(scraped, tf(10), "a capture record counted on /metrics")
    missing = [f for f in EXPECTED if f not in text]
    assert not missing, "families not on the page: %s\n%s" % (missing, text[:3000])
    moved = {
        "child's feed intercepted": ph.metric(text, "feedguard_policy_calls_total", method=RANK, band="13_15"),
        "quiet hours answered": ph.metric(text, "feedguard_screen_time_answered_total", band="under_13",
                                          rule="quiet_hours", action="empty"),
        "pass-through call": ph.metric(text, "feedguard_calls_total", method="other", code="OK"),
        "ranker's failure": ph.metric(text, "feedguard_calls_total", method=RANK, code="NOT_FOUND"),
        "streamed pages": ph.metric(text, "feedguard_calls_total", method=STREAM_PAGES, code="OK"),
    }
    assert all(moved.values()), moved
    if os.environ.get("FG_PROMTOOL_DUMP"):          # to read the page that was checked
        with open(os.environ["FG_PROMTOOL_DUMP"], "w") as f:
            f.write(text)
    res = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                         timeout=60)
    out = (res.stdout + res.stderr).decode("utf-8", "replace")
    assert res.returncode == 0 and not out.strip(), \
        "promtool check metrics (exit %d):\n%s" % (res.returncode, out)
