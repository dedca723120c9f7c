#!/usr/bin/python3
"""contrib/bench/rankfeed-messages.py - the messages of the benchmark's
intercepted-call scenario (run-bench.sh --scenario rankfeed).

Builds, from the descriptor set of the reference contract
(proto/feedguard/ranking/v1/ranking.proto, message classes made at run
time as contrib/demo/feed_demo.py does), with a fixed seed so every run
sends the same bytes:

  request.bin       one gRPC-framed RankFeedRequest (5-byte prefix +
                    message) for h2load -d: exactly REQUEST_LEN bytes of
                    message with 200 signals.watch_history entries, a
                    user, a context with geo, and the other signals a
                    ranking client sends;
  response.msg      the bare RankFeedResponse bytes bench-upstream -r
                    answers with: 100 FeedItems, each with explanations,
                    inferred_interest_labels, feature_weights, debug_score
                    and content labels, plus profile_segments;
                    Each item also carries moderation labels (label and
                    confidence): two topics, and on every 10th item
                    (i % 10 == 3) "self_harm" at 0.9, on every 5th
                    (i % 5 == 1) "body_image" at 0.8: 10% excluded and 20%
                    demoted under the benchmark's filter band;
  expected.txt      the sizes a correct feedguardd must produce, for the
                    benchmark's own check (one "name value" a line):
                    request/response message lengths as sent and as the
                    child band's policy edits them.

The child sizes come from clearing, in a copy, what the benchmark's policy
(written by run-bench.sh from policies/demo.yaml's RankFeed rules) strips:
the request keeps only the allow-listed fields (with geo coarsened to 0.1
degree, same size on the wire), the response loses explanations,
inferred_interest_labels, feature_weights, debug_score and
profile_segments.  feedguardd edits at the wire level and keeps field
order, and this script serialises in field order, so the lengths match
exactly.

Usage: /usr/bin/python3 rankfeed-messages.py DESCRIPTOR_SET OUT_DIR
Needs python3-protobuf (Debian), nothing else.
"""
import os
import random
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo"))
from demo_common import load_messages  # noqa: E402

REQUEST_LEN = 10240             # bytes of RankFeedRequest, prefix not included
WATCH_EVENTS = 200
ITEMS = 100


TOPICS = ["sport", "music", "gaming", "comedy", "science", "cooking", "fashion", "travel", "pets", "dance"]
INTERESTS = ["fitness", "dieting", "gaming", "skincare", "football", "anime", "makeup", "gym",
             "crypto", "horror", "k-pop", "streetwear", "weight-loss", "esports", "vlogs"]
LABELS = ["none", "mild_language", "violence_cartoon", "gambling_adjacent", "body_image",
          "alcohol", "scary", "sponsored"]
FEATURES = ["affinity.topic", "affinity.creator", "watch_completion", "session_depth",
            "recency", "social_proof", "novelty", "similar_viewers"]


def build_request(Req, rnd, pad):
    r = Req()
    r.user.user_id = "user-8a41c2d7e6f04b19"
    r.user.age_band = "13_15"
    r.user.account_age_days = 412
    r.context.surface = 1
    r.context.locale = "en-GB"
    r.context.time_zone = "Europe/London"
    r.context.geo.latitude = 51.507351
    r.context.geo.longitude = -0.127758
    r.context.geo.accuracy_m = 12.5
    r.context.geo.city = "London"
    now = 1795000000
    s = r.signals
    for i in range(WATCH_EVENTS):
        w = s.watch_history.add()
        w.item_id = rnd.randrange(10 ** 9, 10 ** 10)
        w.watch_ms = rnd.randrange(2000, 900000)
        w.ts.seconds = now - 60 * i - rnd.randrange(60)
        w.ts.nanos = rnd.randrange(10 ** 9)
    for i in range(100):
        e = s.engagement_events.add()
        e.item_id = rnd.randrange(10 ** 9, 10 ** 10)
        e.kind = rnd.randrange(1, 7)
        e.ts.seconds = now - 300 * i
    s.inferred_interests.extend(rnd.sample(INTERESTS, 10))
    s.search_history.extend(["how to lose weight fast", "best gaming headset under 50",
                             "ten minute hiit", "is it normal to", "football transfer news",
                             "easy pasta recipe", "skincare routine for teens", "anime like naruto",
                             "why am i always tired", "how to get abs in a week", "fortnite new season",
                             "cheap trainers", "what to do when bored", "sad songs playlist"])
    s.advertising_id = "ad-3f9e11aa-5c2b-4e8d-9a71-02d6c4f3b8e0"
    s.device_fingerprint = "fp-" + ("9f3c0a7e5b1d2864" * (pad // 16 + 1))[:pad]
    s.social_graph.extend("u-%08d" % rnd.randrange(10 ** 8) for _ in range(100))
    for name in FEATURES:
        for suffix in ("1h", "1d", "7d", "28d"):
            s.features["%s.%s" % (name, suffix)] = rnd.random()
    r.page_size = 100
    r.page_token = "pt-0000000000000000000000000001"
    r.recently_shown_ids.extend(rnd.randrange(10 ** 9, 10 ** 10) for _ in range(100))
    return r


def child_request(Req, r):
    """What the policy's keep_only lets through (geo coarsened in place)."""
    c = Req()
    c.user.user_id = r.user.user_id
    c.user.age_band = r.user.age_band
    c.context.surface = r.context.surface
    c.context.locale = r.context.locale
    c.context.time_zone = r.context.time_zone
    c.context.geo.latitude = round(r.context.geo.latitude, 1)
    c.context.geo.longitude = round(r.context.geo.longitude, 1)
    c.page_size = r.page_size
    c.page_token = r.page_token
    return c


def build_response(Resp, rnd):
    p = Resp()
    for i in range(ITEMS):
        it = p.items.add()
        it.item_id = rnd.randrange(10 ** 9, 10 ** 10)
        topic = rnd.choice(TOPICS)
        it.title = "%s clip %d: the one everyone is watching" % (topic.capitalize(), i)
        it.score = 1.0 - i / 200.0
        it.content_labels.extend(rnd.sample(LABELS, 2))
        for _ in range(2):
            e = it.explanations.add()
            e.reason = "because you watched %s clip %d and liked similar" % (rnd.choice(TOPICS), rnd.randrange(1000))
            e.source_item_id = rnd.randrange(10 ** 9, 10 ** 10)
        it.inferred_interest_labels.extend(rnd.sample(INTERESTS, 3))
        for name in rnd.sample(FEATURES, 5):
            it.feature_weights[name] = rnd.random()
        it.debug_score = rnd.random() * 10
        it.topic = topic
        for label in rnd.sample(TOPICS, 2):
            m = it.moderation.add()
            m.label, m.confidence = label, 0.5 + rnd.random() / 2
        for cond, label, conf in ((i % 10 == 3, "self_harm", 0.9), (i % 5 == 1, "body_image", 0.8)):
            if cond:
                m = it.moderation.add()
                m.label, m.confidence = label, conf
    p.profile_segments.extend(["teen_fitness", "gamer", "late_night_viewer", "body_image_risk"])
    p.model_version = "ranker-2026.11.3"
    p.next_page_token = "pt-0000000000000000000000000002"
    return p


def child_response(Resp, p):
    c = Resp()
    c.CopyFrom(p)
    for it in c.items:
        it.ClearField("explanations")
        it.ClearField("inferred_interest_labels")
        it.ClearField("feature_weights")
        it.ClearField("debug_score")
    c.ClearField("profile_segments")
    return c


# The filter band's rules (run-bench.sh writes the same into the policy).
NOT_BEFORE, SPACING, MAX_SHARE = 3, 3, 0.34


def filter_order(items):
    """The README's placement rules on one page, for the expected size:
    excluded items out, each demoted item at the first position, no earlier
    than its own, where not_before, spacing and max_share hold; surplus
    dropped."""
    kind = []
    for it in items:
        labels = {m.label for m in it.moderation}
        kind.append("x" if "self_harm" in labels else "d" if "body_image" in labels else "a")
    allowed = [i for i, k in enumerate(kind) if k == "a"]
    pending = [i for i, k in enumerate(kind) if k == "d"]
    out, last, count, ri = [], None, 0, 0
    while ri < len(allowed) or pending:
        p = len(out)
        nxt = allowed[ri] if ri < len(allowed) else len(items)
        if pending and pending[0] < nxt and p >= NOT_BEFORE and (last is None or p - last >= SPACING) \
                and count + 1 <= MAX_SHARE * (p + 1) + 1e-9:
            out.append(pending.pop(0))
            last, count = p, count + 1
        elif ri < len(allowed):
            out.append(allowed[ri])
            ri += 1
        else:
            break
    return out


def filtered_response(Resp, child):
    c = Resp()
    c.CopyFrom(child)
    del c.items[:]
    for i in filter_order(child.items):
        c.items.add().CopyFrom(child.items[i])
    return c


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[-2].strip())
    pb, out = sys.argv[1], sys.argv[2]
    classes = load_messages(pb)
    Req, Resp = classes["RankFeedRequest"], classes["RankFeedResponse"]

    # Grow the device fingerprint until the request is exactly REQUEST_LEN.
    pad = max(0, REQUEST_LEN - build_request(Req, random.Random(1), 0).ByteSize() - 8)
    while True:
        req = build_request(Req, random.Random(1), pad)
        n = req.ByteSize()
        if n >= REQUEST_LEN:
            break
        pad += 1
    if n != REQUEST_LEN:
        sys.exit("rankfeed-messages: cannot make a request of exactly %d bytes (%d)" % (REQUEST_LEN, n))
    if len(req.signals.watch_history) != WATCH_EVENTS:
        sys.exit("rankfeed-messages: watch_history has %d entries" % len(req.signals.watch_history))
    resp = build_response(Resp, random.Random(2))

    req_b = req.SerializeToString(deterministic=True)
    resp_b = resp.SerializeToString(deterministic=True)
    creq_b = child_request(Req, req).SerializeToString(deterministic=True)
    cresp = child_response(Resp, resp)
    cresp_b = cresp.SerializeToString(deterministic=True)
    fresp = filtered_response(Resp, cresp)
    fresp_b = fresp.SerializeToString(deterministic=True)
    with open(os.path.join(out, "request.bin"), "wb") as f:
        f.write(struct.pack(">BI", 0, len(req_b)) + req_b)
    with open(os.path.join(out, "response.msg"), "wb") as f:
        f.write(resp_b)
    with open(os.path.join(out, "expected.txt"), "w") as f:
        f.write("request_len %d\nrequest_child_len %d\nresponse_len %d\nresponse_child_len %d\n"
                "response_filter_len %d\nfilter_items %d\nwatch_history %d\nitems %d\n"
                % (len(req_b), len(creq_b), len(resp_b), len(cresp_b), len(fresp_b), len(fresp.items),
                   len(req.signals.watch_history), len(resp.items)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
