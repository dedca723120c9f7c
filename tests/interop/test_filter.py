"""End-to-end tests of feedguard's filter stage (README, "Policy: harmful
content in children's feeds"), written from the README alone: a crafted-feed
ranker (feedranker.FeedRanker, python3-grpcio in this process) returns the
pages each test builds at the wire level, feedguardd filters them per age
band, and the tests assert what the client gets: which items, in which
order, byte for byte; response headers and trailers; statuses; /metrics;
`-t` and reload messages.

Expected pages come from two places: hand-worked examples (each commented
with the placement steps), and a reference model of the README's rules
(`Rules`, `model`) used by the property test over random feeds.  The model
is checked against the README's stated properties (`assert_filtered`) on
every page too, so a disagreement says which rule broke.

The property test: FG_FILTER_SEED (default 20250725, printed in every
failure message; any other value explores other feeds) and FG_FILTER_FEEDS
(default 200 feeds, each sent in every child band, for both label forms).
"""
import json
import os
import random
import re
import shutil
import struct
import subprocess
import time
from collections import deque
from types import SimpleNamespace

import grpc
import h2.errors
import h2.events
import pytest

import harness
import policyhelp as ph
from feedranker import STREAM_PAGES, FeedRanker, ids, item, item_id, page, page_items
from harness import run_feedguardd, tf
from policyhelp import RANK, STREAM, f_len, f_varint, fields, md, values
from rawh2 import RawClient, headers_dict
from test_policy import write_check_config

pytestmark = pytest.mark.proxy_only

CHILD_BANDS = ph.CHILD_BANDS
REPORT = "x-feedguard-filter"

# ---------------------------------------------------------------- classes and labels

CATEGORIES = {
    "primary_priority": ["pornography", "suicide", "self_harm", "eating_disorder"],
    "priority": ["abuse", "hate", "bullying", "violence", "violence_graphic", "violence_animal",
                 "dangerous_stunts", "harmful_substances"],
    "non_designated": ["depression", "body_image"],
}
CATEGORY_OF = {c: cat for cat, cs in CATEGORIES.items() for c in cs}

# The platform's label values (label_maps "acme") and the classes they map to.
ACME = {
    "porn": "pornography", "nsfw_explicit": "pornography", "suicide_promotion": "suicide",
    "self_harm": "self_harm", "pro_ana": "eating_disorder", "slur": "abuse", "hate_speech": "hate",
    "bullying": "bullying", "incitement": "violence", "gore": "violence_graphic",
    "animal_cruelty": "violence_animal", "stunt": "dangerous_stunts", "drugs": "harmful_substances",
    "sad_content": "depression", "body_ideal": "body_image",
}
# Topics: labels the map does not list.  Matching is exact and case-sensitive,
# so "Porn" and "self-harm" are topics too.
TOPICS = ["sport", "music", "gaming", "cooking", "Porn", "SELF_HARM", "self-harm", "gore "]

STRINGS = "content_labels"
MODERATION = "{field: moderation, value: label, confidence: confidence}"
REQ = f_len(1, f_len(1, "kid-7f3a")) + f_len(2, f_len(2, "en-GB"))   # a RankFeedRequest, no page_size


def label_maps_yaml():
    return "label_maps:\n  acme:\n" + "".join("    %s: %s\n" % (k, v) for k, v in ACME.items())


def f32(x):
    """<x> as the float field carries it."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


# ---------------------------------------------------------------- the rules, as YAML and as a model

def _flow(v):
    if isinstance(v, dict):
        return "{%s}" % ", ".join("%s: %s" % (k, _flow(x)) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[%s]" % ", ".join(_flow(x) for x in v)
    return str(v)


class Rules:
    """One filter block: the keys given are written to the policy as given;
    what is left out takes the README's default in the model."""

    KEYS = ("exclude", "demote", "allow", "unlabelled", "prominence", "surplus", "thresholds", "overfetch")
    RANK = {"allow": 0, "demote": 1, "exclude": 2}

    def __init__(self, **kw):
        assert set(kw) <= set(self.KEYS), kw
        self.kw = kw

    def block(self, bands):
        out = "      - bands: [%s]\n" % ", ".join(json.dumps(b) if b[:1].isdigit() else b for b in bands)
        for k in self.KEYS:
            if k in self.kw:
                out += "        %s: %s\n" % (k, _flow(self.kw[k]))
        return out

    @property
    def surplus(self):
        return self.kw.get("surplus", "drop")

    def prominence(self):
        p = {"not_before": 3, "spacing": 5, "max_share": 0.2}
        p.update(self.kw.get("prominence", {}))
        return p

    def groups(self):
        """[(names, (K, N, S))]: one group for a list of names, or the
        groups written, each filled from the block's prominence."""
        d = self.kw.get("demote", [])
        if not d or not isinstance(d[0], dict):
            p = self.prominence()
            return [(list(d), (p["not_before"], p["spacing"], p["max_share"]))]
        out = []
        for g in d:
            p = self.prominence()
            p.update({k: v for k, v in g.items() if k != "classes"})
            out.append((g["classes"], (p["not_before"], p["spacing"], p["max_share"])))
        return out

    def decision(self, c):
        """(action, group) of class <c>: a class named on its own overrides
        its category; not named anywhere: allow."""
        excl = self.kw.get("exclude", ["primary_priority"])
        for name in (c, CATEGORY_OF[c]):
            if name in excl:
                return "exclude", None
            for gi, (names, _) in enumerate(self.groups()):
                if name in names:
                    return "demote", gi
            if name in self.kw.get("allow", []):
                return "allow", None
        return "allow", None

    def threshold(self, c):
        t = {"primary_priority": 0.1, "default": 0.5}
        t.update(self.kw.get("thresholds", {}))
        return t[c] if c in t else t.get(CATEGORY_OF[c], t["default"])

    def classify(self, labels):
        """(action, group, class that decided) of an item with <labels>
        [(label, confidence or None)]."""
        if not labels:
            u = self.kw.get("unlabelled", "demote")
            if u == "demote":
                assert len(self.groups()) == 1, "unlabelled with demote groups: not specified (see report)"
                return "demote", 0, "unlabelled"
            return u, None, "unlabelled"
        best = ("allow", None, None)
        for lab, conf in labels:
            c = ACME.get(lab)
            if c is None or (conf is not None and f32(conf) < self.threshold(c)):
                continue
            a, g = self.decision(c)
            if self.RANK[a] > self.RANK[best[0]]:
                best = (a, g, c)
        return best


def arrange(entries, params, surplus, carry=None):
    """The README's demotion: <entries> [(raw, group or None)] in ranked
    order; a demoted item moves later to the first position where its
    group's rules hold (not_before K, spacing N, max_share S over the items
    up to and including it); the page running out first makes it surplus.
    <carry>: per group, the position of the last demoted item of the page
    before, relative to this page's start (streams).  Returns (page,
    surplus items, carry for the next page)."""
    out, pending = [], [deque() for _ in params]
    last = list(carry) if carry else [None] * len(params)
    count = [0] * len(params)

    def fits(g, p):
        K, N, S = params[g]
        return p >= K and (last[g] is None or p - last[g] >= N) and count[g] + 1 <= S * (p + 1) + 1e-9

    def place(raw, g):
        if g is not None:
            last[g] = len(out)
            count[g] += 1
        out.append(raw)

    def flush():
        while True:
            ready = [(pending[g][0][0], g) for g in range(len(params)) if pending[g] and fits(g, len(out))]
            if not ready:
                return
            _, g = min(ready)
            place(pending[g].popleft()[1], g)

    for i, (raw, g) in enumerate(entries):
        flush()
        if g is None:
            place(raw, None)
        elif not pending[g] and fits(g, len(out)):
            place(raw, g)
        else:
            pending[g].append((i, raw))
    flush()
    left = [raw for _, raw in sorted(x for q in pending for x in q)]
    n = len(out)
    if surplus == "end":
        out += left
    return out, left, [None if x is None else x - n for x in last]


def model(items, rules, carry=None):
    """What the client should get of page <items> [(raw, labels)]."""
    kept, removed, demoted = [], [], []
    for raw, labels in items:
        a, g, c = rules.classify(labels)
        if a == "exclude":
            removed.append((raw, c))
        else:
            kept.append((raw, g if a == "demote" else None))
            if a == "demote":
                demoted.append(raw)
    out, surplus, carry = arrange(kept, [p for _, p in rules.groups()], rules.surplus, carry)
    return SimpleNamespace(out=out, removed=removed, surplus=surplus, carry=carry, demoted=demoted)


def assert_filtered(items, got, rules, what, trimmed=False, carry=None, tail_exempt=0):
    """The README's properties of a filtered page <got> (raw items) of
    <items> [(raw, labels)], independently of the model's placement."""
    labels_of = dict(items)
    order = {raw: i for i, (raw, _) in enumerate(items)}
    for g in got:
        assert g in labels_of, "%s: the client got an item the ranker did not send (or one changed): %s" \
            % (what, g.hex())
    assert len(set(got)) == len(got), "%s: an item came twice: %s" % (what, ids(got))
    cls = {raw: rules.classify(labels) for raw, labels in items}
    bad = [(item_id(g), labels_of[g]) for g in got if cls[g][0] == "exclude"]
    assert not bad, "%s: excluded items reached the client: %s" % (what, bad)
    others = [raw for raw, _ in items if cls[raw][0] == "allow"]
    got_others = [g for g in got if cls[g][0] == "allow"]
    want = others[:len(got_others)] if trimmed else others
    assert got_others == want, "%s: the items that are neither excluded nor demoted, expected in ranked " \
        "order %s, got %s" % (what, ids(want), ids(got_others))
    params = [p for _, p in rules.groups()]
    last = list(carry) if carry else [None] * len(params)
    count = [0] * len(params)
    for p, g in enumerate(got[:len(got) - tail_exempt]):
        a, gi, _ = cls[g]
        if a != "demote":
            continue
        K, N, S = params[gi]
        assert p >= K, "%s: demoted item %d at position %d, not_before is %d; page %s" \
            % (what, item_id(g), p, K, ids(got))
        assert last[gi] is None or p - last[gi] >= N, "%s: demoted items at positions %d and %d, spacing " \
            "is %d; page %s" % (what, last[gi], p, N, ids(got))
        count[gi] += 1
        assert count[gi] <= S * (p + 1) + 1e-9, "%s: %d demoted items in the first %d, max_share is %s; " \
            "page %s" % (what, count[gi], p + 1, S, ids(got))
        last[gi] = p
    for gi in range(len(params)):
        seq = [order[g] for g in got if cls[g][0] == "demote" and cls[g][1] == gi]
        assert seq == sorted(seq), "%s: demoted items out of their ranked order: %s" % (what, ids(got))
    for p, g in enumerate(got):
        if cls[g][0] == "demote":
            before = [o for o in got_others if order[o] < order[g]]
            assert set(before) <= set(got[:p]), "%s: demoted item %d moved earlier than item(s) %s" \
                % (what, item_id(g), ids([o for o in before if o not in got[:p]]))


def check_page(items, got, rules, what, carry=None):
    """<got> has the README's properties and is the model's page."""
    m = model(items, rules, carry)
    assert_filtered(items, m.out, rules, what + " (the test's model)", carry=carry,
                    tail_exempt=len(m.surplus) if rules.surplus == "end" else 0)
    assert_filtered(items, got, rules, what, carry=carry,
                    tail_exempt=len(m.surplus) if rules.surplus == "end" else 0)
    assert ids(got) == ids(m.out), "%s: expected items %s, got %s" % (what, ids(m.out), ids(got))
    assert got == m.out
    return m


# ---------------------------------------------------------------- policies

def filter_policy(blocks, methods=(RANK,), labels=STRINGS, feed_extra=None, extra_top="",
                  response_block=""):
    """A policy over the demo's bands (band from x-age-band) filtering
    <methods> with <blocks> [(bands, Rules)]."""
    text = ph.BANDS_HEADER + label_maps_yaml() + extra_top + "methods:\n"
    for m in methods:
        text += "  %s:\n    age_band: {header: x-age-band}\n" % m
        if response_block:
            text += "    response:\n" + response_block
        text += "    feed:\n      items: %s\n      labels: %s\n      classes: acme\n" \
            % ("." if m == STREAM else "items", labels)
        for k, v in (feed_extra or {}).items():
            text += "      %s: %s\n" % (k, v)
        text += "    filter:\n" + "".join(rules.block(bands) for bands, rules in blocks)
    return text


def mk(iid, labels=(), form=STRINGS, unknown=b""):
    """(raw FeedItem, labels as the model sees them).  <labels>: label
    strings or (label, confidence or None); in the strings form a label has
    no confidence."""
    norm = [(l, None) if isinstance(l, str) else tuple(l) for l in labels]
    if form == STRINGS:
        norm = [(l, None) for l, _ in norm]
        return item(iid, labels=[l for l, _ in norm], unknown=unknown), norm
    # A label message without its confidence field reads as the field's
    # default, 0.0 (proto3 does not send 0.0), as the README says.
    return item(iid, moderation=norm, unknown=unknown), [(l, 0.0 if c is None else c) for l, c in norm]


def report(md_seq):
    """{removed, demoted, surplus} of the report header in <md_seq>."""
    v = harness.md_values(md_seq, REPORT)
    assert len(v) == 1, "expected one %s, got %s (metadata %s)" % (REPORT, v, md_seq)
    m = re.fullmatch(r"removed=(\d+),demoted=(\d+),surplus=(\d+)", v[0])
    assert m, "%s: %r is not removed=<n>,demoted=<n>,surplus=<n>" % (REPORT, v[0])
    return dict(zip(("removed", "demoted", "surplus"), map(int, m.groups())))


# ---------------------------------------------------------------- fixtures and calls

@pytest.fixture(scope="module")
def ranker():
    r = FeedRanker()
    yield r
    r.stop()


@pytest.fixture
def fg(tmp_path, middle, ranker):
    """fg(policy_text, config=None, upstream=None): feedguardd in front of
    the crafted-feed ranker with <policy_text>."""
    def start(policy_text, config=None, upstream=None):
        ph.write_policy(tmp_path, policy_text)
        cfg = harness.deep_merge({"policy": "policy.yaml"}, config or {})
        return middle(upstream or ranker.addr, cfg)
    return start


def call(ranker, d, responses, band, body=REQ, method=RANK, gzip=False):
    """One unary call through <d> whose ranker answers <responses> (bytes,
    or a function of the request bytes); returns (response bytes, the
    grpc call, the ranker's record)."""
    cid = ph.call_id("flt")
    ranker.script(cid, (lambda raw: [responses(raw)]) if callable(responses) else [responses], gzip=gzip)
    resp, c = ph.unary(d.addr, method, body, md(band, cid))
    return resp, c, ranker.wait(cid)


def stream_call(ranker, d, messages, band, method, body=REQ, gzip=False):
    """One server-streaming call; returns (messages, initial metadata,
    trailing metadata)."""
    cid = ph.call_id("flt")
    ranker.script(cid, messages, gzip=gzip)
    with harness.channel(d.addr) as ch:
        c = ch.unary_stream(method)(body, metadata=md(band, cid), timeout=tf(10))
        got = list(c)
        return got, c.initial_metadata(), c.trailing_metadata()


HEAD = f_len(3, "model-v7")                                   # model_version before the items
TAIL = f_len(4, "next-page-token") + f_len(50, b"top-level unknown") + f_len(2, "seg-gamer")


# ---------------------------------------------------------------- 1. property: random feeds

PROPERTY_BLOCKS = [
    (["under_13"], Rules(exclude=["primary_priority", "priority"], demote=["non_designated"],
                         unlabelled="exclude", prominence={"not_before": 3, "spacing": 4, "max_share": 0.25})),
    # exclude, unlabelled, prominence, surplus and thresholds by default
    (["13_15"], Rules(demote=["priority", "depression"], allow=["body_image"])),
    (["16_17"], Rules(exclude=["primary_priority", "violence_graphic"], demote=["priority", "non_designated"],
                      unlabelled="allow", prominence={"not_before": 1, "spacing": 2, "max_share": 0.5},
                      surplus="end", thresholds={"default": 0.25, "primary_priority": 0.125,
                                                 "bullying": 0.75, "self_harm": 0.0625})),
]
PROPERTY_FEEDS = int(os.environ.get("FG_FILTER_FEEDS", "200"))


def random_feed(rng, form, first_id):
    items = []
    harms = sorted(ACME)
    for k in range(rng.randrange(0, 25)):
        labels = []
        if rng.random() > 0.2:
            for _ in range(rng.randrange(1, 4)):
                lab = rng.choice(harms) if rng.random() < 0.55 else rng.choice(TOPICS)
                # confidences on a grid of exact binary fractions: no value is
                # within rounding of a threshold; some labels carry none
                conf = None if rng.random() < 0.1 else rng.randrange(1, 65) / 64
                labels.append((lab, conf))
        unknown = f_len(99, "ext-%d" % k) if rng.random() < 0.2 else b""
        items.append(mk(first_id + k, labels, form, unknown))
    return items


@pytest.mark.parametrize("form", ["strings", "moderation"])
def test_property_random_feeds(fg, ranker, form):
    """For each child band, over random feeds with random labels (harm,
    topic, none) and confidences: no excluded class reaches the client, the
    others keep their order, demoted items obey not_before, spacing and
    max_share and only move later, and the page is the README's."""
    seed = int(os.environ.get("FG_FILTER_SEED") or 20250725)
    rng = random.Random(seed)
    labels = STRINGS if form == "strings" else MODERATION
    d = fg(filter_policy(PROPERTY_BLOCKS, labels=labels))
    rules = {bands[0]: r for bands, r in PROPERTY_BLOCKS}
    with harness.channel(d.addr) as ch:
        rank = ch.unary_unary(RANK)
        for n in range(PROPERTY_FEEDS):
            items = random_feed(rng, STRINGS if form == "strings" else "moderation", 1000 * n + 1)
            resp_in = page([raw for raw, _ in items], HEAD, TAIL)
            for band in CHILD_BANDS:
                what = "FG_FILTER_SEED=%d feed #%d band %s (%s labels)" % (seed, n, band, form)
                cid = ranker.script(ph.call_id("prop"), [resp_in])
                try:
                    resp = rank(REQ, metadata=md(band, cid), timeout=tf(10))
                except grpc.RpcError as e:
                    pytest.fail("%s: %s %s" % (what, e.code(), e.details()), pytrace=False)
                got = page_items(resp)
                m = check_page(items, got, rules[band], what)
                assert resp == page(m.out, HEAD, TAIL), "%s: the page's other fields changed" % what


# ---------------------------------------------------------------- 2. demotion, hand-worked

def test_demotion_prominence(fg, ranker):
    """not_before 3, spacing 3, max_share 0.25; D = sad_content (demoted),
    A = a topic.  Ranked: 1D 2D 3A 4A 5A 6D 7A 8A 9A 10A 11A 12A.
    1 and 2 wait (K); 3 4 5 at 0-2; 1 at 3 (1 <= 0.25*4); 2 needs 3 apart
    and 2 <= 0.25*(p+1): p 7; 6 waits behind 2 and needs p >= 10 and
    3 <= 0.25*(p+1): p 11."""
    rules = Rules(demote=["non_designated"], unlabelled="allow",
                  prominence={"not_before": 3, "spacing": 3, "max_share": 0.25})
    d = fg(filter_policy([(CHILD_BANDS, rules)]))
    kinds = "DDAAADAAAAAA"
    items = [mk(i + 1, ["sad_content"] if k == "D" else ["sport"]) for i, k in enumerate(kinds)]
    resp, _, _ = call(ranker, d, page([r for r, _ in items], HEAD, TAIL), "13_15")
    got = page_items(resp)
    assert ids(got) == [3, 4, 5, 1, 7, 8, 9, 2, 10, 11, 12, 6], ids(got)
    check_page(items, got, rules, "hand-worked page")
    assert resp == page(got, HEAD, TAIL), "the page's fields around the items changed"


def test_demotion_default_prominence_and_categories(fg, ranker):
    """The defaults (not_before 3, spacing 5, max_share 0.2) and a class
    overriding its category: exclude priority, demote bullying.
    Ranked: 1 bullying, 2 gore (priority: excluded), 3 A, 4 bullying, 5-12 A.
    After exclusion: 1B 3A 4B 5A..12A; 1 waits to p 4 (1 <= 0.2*5);
    4 needs p >= 9 and 2 <= 0.2*(p+1): p 9."""
    rules = Rules(exclude=["primary_priority", "priority"], demote=["bullying"], unlabelled="allow")
    d = fg(filter_policy([(CHILD_BANDS, rules)]))
    labels = {1: ["bullying"], 2: ["gore"], 4: ["bullying"]}
    items = [mk(i, labels.get(i, ["music"])) for i in range(1, 13)]
    resp, _, _ = call(ranker, d, page([r for r, _ in items]), "under_13")
    got = page_items(resp)
    assert ids(got) == [3, 5, 6, 7, 1, 8, 9, 10, 11, 4, 12], ids(got)
    check_page(items, got, rules, "defaults")


def test_demote_groups(fg, ranker):
    """Groups: depression {not_before 0, spacing 2, max_share 1}; priority
    {not_before 4, spacing 1}, its max_share (0.2) filled from the block's
    prominence.  Each group counts its own items.  Ranked:
    1dep 2dep 3bul 4A 5A 6A 7bul 8A 9A 10A -> 1@0; 4@1; 2@2 (2 apart);
    5@3; 3@4 (K 4, 1 <= 0.2*5); 6@5; 7 waits for 2 <= 0.2*(p+1): p 9."""
    rules = Rules(exclude=["primary_priority"], unlabelled="allow",
                  prominence={"not_before": 3, "spacing": 5, "max_share": 0.2},
                  demote=[{"classes": ["depression"], "not_before": 0, "spacing": 2, "max_share": 1},
                          {"classes": ["priority"], "not_before": 4, "spacing": 1}])
    d = fg(filter_policy([(CHILD_BANDS, rules)], labels=MODERATION))
    labels = {1: [("sad_content", 0.75)], 2: [("sad_content", 0.75)], 3: [("bullying", 1.0)],
              7: [("bullying", 1.0)]}
    items = [mk(i, labels.get(i, [("sport", 0.5)]), "moderation") for i in range(1, 11)]
    resp, _, _ = call(ranker, d, page([r for r, _ in items]), "16_17")
    got = page_items(resp)
    assert ids(got) == [1, 4, 2, 5, 3, 6, 8, 9, 10, 7], ids(got)
    check_page(items, got, rules, "groups")


# ---------------------------------------------------------------- 3. unlabelled

# Ranked: 1U 2T 3U 4T 5(self_harm at 0.0625: labelled, under the threshold) 6T 7U 8T
UNLABELLED_EXPECTED = {
    "allow": [1, 2, 3, 4, 5, 6, 7, 8],
    "exclude": [2, 4, 5, 6, 8],
    # K 2, N 2, S 0.5: 2@0 4@1 1@2 5@3 3@4 6@5 7@6 (fits where it is) 8@7
    "demote": [2, 4, 1, 5, 3, 6, 7, 8],
}


@pytest.mark.parametrize("mode", ["allow", "demote", "exclude", "default"])
def test_unlabelled(fg, ranker, mode):
    kw = {} if mode == "default" else {"unlabelled": mode}
    rules = Rules(prominence={"not_before": 2, "spacing": 2, "max_share": 0.5}, **kw)
    d = fg(filter_policy([(CHILD_BANDS, rules)], labels=MODERATION))
    labels = {2: [("sport", 0.9)], 4: [("music", 1.0)], 5: [("self_harm", 0.0625)], 6: [("gaming", 0.5)],
              8: [("cooking", 0.25), ("Porn", 1.0)]}
    items = [mk(i, labels.get(i, ()), "moderation") for i in range(1, 9)]
    sent = page([r for r, _ in items], HEAD, TAIL)
    resp, _, _ = call(ranker, d, sent, "13_15")
    got = page_items(resp)
    want = UNLABELLED_EXPECTED["demote" if mode == "default" else mode]
    assert ids(got) == want, "unlabelled: %s: expected %s, got %s" % (mode, want, ids(got))
    check_page(items, got, rules, "unlabelled %s" % mode)
    if mode == "allow":
        assert resp == sent, "a child's page with nothing to filter must come out byte for byte"


# ---------------------------------------------------------------- 4. thresholds

def test_thresholds_category_and_class(fg, ranker):
    rules = Rules(exclude=["primary_priority", "priority"], unlabelled="allow",
                  thresholds={"default": 0.5, "primary_priority": 0.25, "self_harm": 0.75,
                              "priority": 0.5, "bullying": 0.125})
    d = fg(filter_policy([(CHILD_BANDS, rules)], labels=MODERATION))
    cases = [
        (1, [("porn", 0.25)], False),           # at the category's threshold: excluded
        (2, [("porn", 0.1875)], True),          # below it: kept in place
        (3, [("self_harm", 0.5)], True),        # the class's own 0.75 overrides the category's
        (4, [("self_harm", 0.75)], False),
        (5, [("bullying", 0.125)], False),      # class 0.125 below the category's 0.5
        (6, [("bullying", 0.0625)], True),
        (7, [("gore", 0.375)], True),           # priority: 0.5
        (8, [("gore", 0.5)], False),
        (9, [("hate_speech", None)], True),     # no confidence field: its default, 0.0, below 0.5
        (10, [("sport", 1.0), ("porn", 0.125)], True),   # a harm label under threshold: harmless
        (11, [("sport", 1.0), ("pro_ana", 0.9375)], False),
    ]
    items = [mk(i, labels, "moderation") for i, labels, _ in cases]
    resp, _, _ = call(ranker, d, page([r for r, _ in items], HEAD, TAIL), "under_13")
    got = page_items(resp)
    want = [i for i, _, kept in cases if kept]
    assert ids(got) == want, "expected %s, got %s" % (want, ids(got))
    assert got == [r for (r, _), (_, _, kept) in zip(items, cases) if kept]
    check_page(items, got, rules, "thresholds")


def test_default_threshold_leaves_primary_priority_low(fg, ranker):
    """thresholds: {default: 0.8} raises every class's threshold except
    primary priority content's, which stays at 0.1 unless written for."""
    rules = Rules(exclude=["primary_priority", "priority"], unlabelled="allow", thresholds={"default": 0.8})
    d = fg(filter_policy([(CHILD_BANDS, rules)], labels=MODERATION))
    cases = [(1, [("porn", 0.125)], False), (2, [("gore", 0.75)], True), (3, [("gore", 0.875)], False),
             (4, [("sport", 1.0)], True)]
    items = [mk(i, labels, "moderation") for i, labels, _ in cases]
    resp, _, _ = call(ranker, d, page([r for r, _ in items], HEAD, TAIL), "13_15")
    assert ids(page_items(resp)) == [i for i, _, kept in cases if kept]


@pytest.mark.parametrize("written", ["none", "other_class_only"])
def test_primary_priority_default_threshold(fg, ranker, written):
    """No threshold written for primary priority content: 0.1 (a signal is
    enough); 0.5 for the rest.  Writing a threshold for another class does
    not lift it (the README's defaults read as merged with what is written)."""
    kw = {"thresholds": {"bullying": 0.25}} if written == "other_class_only" else {}
    rules = Rules(exclude=["primary_priority", "priority"], unlabelled="allow", **kw)
    d = fg(filter_policy([(CHILD_BANDS, rules)], labels=MODERATION))
    cases = [
        (1, [("porn", 0.09375)], True),
        (2, [("porn", 0.1)], False),           # float 0.1 (0.10000000149): at or above 0.1
        (3, [("suicide_promotion", 0.125)], False),
        (4, [("pro_ana", 0.0625)], True),
        (5, [("gore", 0.46875)], True),
        (6, [("gore", 0.5)], False),
        (7, [("sport", 0.5)], True),
    ]
    items = [mk(i, labels, "moderation") for i, labels, _ in cases]
    resp, _, _ = call(ranker, d, page([r for r, _ in items]), "16_17")
    want = [i for i, _, kept in cases if kept]
    assert ids(page_items(resp)) == want, "expected %s, got %s" % (want, ids(page_items(resp)))
    check_page(items, page_items(resp), rules, "default thresholds")


def test_string_labels_are_certain(fg, ranker):
    """content_labels carry no confidence: a harm label always counts,
    whatever the thresholds; matching is exact and case-sensitive."""
    rules = Rules(exclude=["primary_priority"], unlabelled="allow", thresholds={"default": 1, "primary_priority": 1})
    d = fg(filter_policy([(CHILD_BANDS, rules)]))
    labels = {1: ["porn"], 2: ["Porn"], 3: ["sport", "self_harm"], 4: ["self-harm"], 5: ["pro_ana "],
              6: ["nsfw_explicit"], 7: ["music"]}
    items = [mk(i, labels[i]) for i in range(1, 8)]
    resp, _, _ = call(ranker, d, page([r for r, _ in items]), "under_13")
    assert ids(page_items(resp)) == [2, 4, 5, 7], ids(page_items(resp))


# ---------------------------------------------------------------- 5. surplus, metrics, report header

def surplus_case():
    """Ranked 1D 2D 3D 4A 5A 6A, K 3, N 2, S 0.5: 4 5 6 at 0-2, 1 at 3,
    then 2 needs p 5 and the page has run out: 2 and 3 are surplus."""
    items = [mk(i, ["sad_content"] if i <= 3 else ["sport"]) for i in range(1, 7)]
    return items, {"drop": [4, 5, 6, 1], "end": [4, 5, 6, 1, 2, 3]}


@pytest.mark.parametrize("surplus", ["drop", "end", "default"])
def test_rules_cannot_all_be_met(fg, ranker, surplus):
    kw = {} if surplus == "default" else {"surplus": surplus}
    rules = Rules(demote=["non_designated"], unlabelled="allow",
                  prominence={"not_before": 3, "spacing": 2, "max_share": 0.5}, **kw)
    d = fg(filter_policy([(CHILD_BANDS, rules)], feed_extra={"report_header": REPORT}),
           {"admin": {"listen": "127.0.0.1:0"}})
    admin = ph.admin_addr(d)
    items, want = surplus_case()
    resp, c, _ = call(ranker, d, page([r for r, _ in items], HEAD, TAIL), "13_15")
    got = page_items(resp)
    assert ids(got) == want["drop" if surplus == "default" else surplus], ids(got)
    check_page(items, got, rules, "surplus %s" % surplus)
    assert resp == page(got, HEAD, TAIL)
    assert report(c.initial_metadata()) == {"removed": 0, "demoted": 1, "surplus": 2}
    # A page where the rules can be met (20 moves to 3): counted, not unmet.
    ok = [mk(20, ["sad_content"])] + [mk(10 + i, ["sport"]) for i in range(4)]
    resp, c, _ = call(ranker, d, page([r for r, _ in ok]), "13_15")
    assert ids(page_items(resp)) == [10, 11, 12, 20, 13], ids(page_items(resp))
    assert report(c.initial_metadata()) == {"removed": 0, "demoted": 1, "surplus": 0}
    _, text = ph.http_get(admin, "/metrics")
    dump = "\n".join(l for l in text.splitlines() if "filter" in l)
    got_m = {
        "pages": ph.metric(text, "feedguard_filter_pages_total", method=RANK, band="13_15"),
        "unmet": ph.metric(text, "feedguard_filter_pages_unmet_total", method=RANK, band="13_15"),
        "surplus": ph.metric(text, "feedguard_filter_items_total", method=RANK, band="13_15",
                             **{"class": "depression", "action": "surplus"}),
        "demoted": ph.metric(text, "feedguard_filter_items_total", method=RANK, band="13_15",
                             **{"class": "depression", "action": "demoted"}),
    }
    assert got_m == {"pages": 2, "unmet": 1, "surplus": 2, "demoted": 2}, "%s\n%s" % (got_m, dump)


def test_filter_metrics_and_report_header(fg, ranker):
    """13_15: exclude primary priority and priority, demote non-designated
    and unlabelled, K 2.  Ranked: 1U 2sad 3porn 4A 5A 6gore 7A -> 4 5 1 2 7:
    porn and gore removed, the unlabelled and the sad item moved."""
    rules = Rules(exclude=["primary_priority", "priority"], demote=["non_designated"],
                  prominence={"not_before": 2, "spacing": 1, "max_share": 1})
    d = fg(filter_policy([(["13_15"], rules)], feed_extra={"report_header": REPORT}),
           {"admin": {"listen": "127.0.0.1:0"}})
    admin = ph.admin_addr(d)
    labels = {2: ["sad_content"], 3: ["porn"], 4: ["sport"], 5: ["music"], 6: ["gore"], 7: ["gaming"]}
    items = [mk(i, labels.get(i, ())) for i in range(1, 8)]
    sent = page([r for r, _ in items], HEAD, TAIL)
    for _ in range(2):
        resp, c, _ = call(ranker, d, sent, "13_15")
        assert ids(page_items(resp)) == [4, 5, 1, 2, 7], ids(page_items(resp))
        assert report(c.initial_metadata()) == {"removed": 2, "demoted": 2, "surplus": 0}
        assert not harness.md_values(c.trailing_metadata(), REPORT), "unary: the counts go in the headers"
    resp, c, _ = call(ranker, d, sent, "adult")
    assert resp == sent
    _, text = ph.http_get(admin, "/metrics")
    dump = "\n".join(l for l in text.splitlines() if "filter" in l)

    def items_total(band, cls, action):
        return ph.metric(text, "feedguard_filter_items_total", method=RANK, band=band,
                         **{"class": cls, "action": action})
    got = {(c_, a): items_total("13_15", c_, a) for c_, a in
           [("pornography", "removed"), ("violence_graphic", "removed"), ("unlabelled", "demoted"),
            ("depression", "demoted")]}
    assert got == {("pornography", "removed"): 2, ("violence_graphic", "removed"): 2,
                   ("unlabelled", "demoted"): 2, ("depression", "demoted"): 2}, "%s\n%s" % (got, dump)
    assert items_total("13_15", "pornography", "demoted") in (None, 0), dump
    assert ph.metric(text, "feedguard_filter_pages_total", method=RANK, band="13_15") == 2, dump
    assert ph.metric(text, "feedguard_filter_pages_unmet_total", method=RANK, band="13_15") in (0, None), dump
    # the adult band has no filter block: nothing filtered, nothing counted
    assert ph.metric(text, "feedguard_filter_pages_total", method=RANK, band="adult") in (None, 0), dump
    assert items_total("adult", "pornography", "removed") in (None, 0), dump


@pytest.mark.parametrize("where", ["initial", "trailing"])
def test_ranker_cannot_forge_the_report_header(fg, ranker, where):
    """The report header is feedguard's count: the ranker's own header of
    that name (in its headers or trailers) never reaches the client, which
    gets feedguard's value alone."""
    d = fg(filter_policy([(CHILD_BANDS, Rules())], feed_extra={"report_header": REPORT}))
    cid = ph.call_id("forge")
    ranker.script(cid, [page([mk(1, ["porn"])[0], mk(2, ["sport"])[0]])], **{where: ((REPORT, "removed=0"),)})
    resp, c = ph.unary(d.addr, RANK, REQ, md("under_13", cid))
    assert ids(page_items(resp)) == [2]
    got = [v for k, v in list(c.initial_metadata()) + list(c.trailing_metadata()) if k == REPORT]
    assert got == ["removed=1,demoted=0,surplus=0"], got


def test_ranker_report_header_removed_in_unfiltered_band_read_from_field(fg, ranker):
    """With the band read from a request field, every band's call is worked
    on: an adult (no filter block) gets no report and none of the ranker's;
    the child gets feedguard's count alone."""
    text = filter_policy([(CHILD_BANDS, Rules())], feed_extra={"report_header": REPORT})
    d = fg(text.replace("age_band: {header: x-age-band}", "age_band: {field: user.age_band}"))
    for band, want in (("adult", []), ("under_13", ["removed=1,demoted=0,surplus=0"])):
        cid = ph.call_id("forge-" + band)
        ranker.script(cid, [page([mk(1, ["porn"])[0], mk(2, ["sport"])[0]])], initial=((REPORT, "removed=0"),))
        req = f_len(1, f_len(1, "kid-7f3a") + f_len(2, band)) + f_len(2, f_len(2, "en-GB"))
        _, c = ph.unary(d.addr, RANK, req, md("18_plus", cid))
        got = [v for k, v in list(c.initial_metadata()) + list(c.trailing_metadata()) if k == REPORT]
        assert got == want, (band, got)


def test_report_header_off_by_default(fg, ranker):
    d = fg(filter_policy([(CHILD_BANDS, Rules())]))
    items = [mk(1, ["porn"]), mk(2, ["sport"])]
    resp, c, _ = call(ranker, d, page([r for r, _ in items]), "under_13")
    assert ids(page_items(resp)) == [2]
    for name, seq in (("headers", c.initial_metadata()), ("trailers", c.trailing_metadata())):
        assert not [k for k, _ in seq if "filter" in k], "%s carry a filter report: %s" % (name, seq)


# ---------------------------------------------------------------- 6. over-fetch

def serve_page_size(bad=lambda i: i % 5 == 2):
    """A ranker answer of as many items as the request's page_size asks
    (ids 1..n), those with bad(id) labelled porn; and the items it sent."""
    sent = {}

    def respond(raw):
        ps = values(raw, 4)
        n = ps[-1] if ps else 12
        its = [mk(i, ["porn"] if bad(i) else ["sport"]) for i in range(1, n + 1)]
        sent["items"] = its
        return page([r for r, _ in its], HEAD, TAIL)
    return respond, sent


OVERFETCH = Rules(unlabelled="allow", overfetch={"factor": 1.5, "max": 100})


@pytest.mark.parametrize("n,raised", [(7, 11), (10, 15), (80, 100), (1, 2)])
def test_overfetch_fills_the_page(fg, ranker, n, raised):
    d = fg(filter_policy([(CHILD_BANDS, OVERFETCH)], feed_extra={"page_size": "page_size"}))
    body = REQ + f_varint(4, n) + f_len(5, "cursor-o0")
    respond, sent = serve_page_size()
    resp, _, rec = call(ranker, d, respond, "13_15", body=body)
    sizes = values(rec["raw"], 4)
    assert sizes and sizes[-1] == raised, "page_size %d x 1.5 (max 100): the ranker saw %s" % (n, sizes)
    assert ph.drop(rec["raw"], 4) == ph.drop(body, 4), "over-fetch changed more than page_size"
    got = page_items(resp)
    safe = [r for r, l in sent["items"] if l != [("porn", None)]]
    assert len(got) == n, "asked for %d, %d safe items sent: got %d (%s)" % (n, len(safe), len(got), ids(got))
    assert got == safe[:n], ids(got)
    assert resp == page(got, HEAD, TAIL)
    # An adult's request is not changed (no filter block) and nothing trimmed.
    resp, _, rec = call(ranker, d, respond, "adult", body=body)
    assert rec["raw"] == body and len(page_items(resp)) == n


def test_overfetch_not_enough_safe_items(fg, ranker):
    d = fg(filter_policy([(CHILD_BANDS, OVERFETCH)], feed_extra={"page_size": "page_size"}))
    respond, sent = serve_page_size(bad=lambda i: i > 5)
    resp, _, rec = call(ranker, d, respond, "under_13", body=REQ + f_varint(4, 8))
    assert values(rec["raw"], 4)[-1] == 12
    assert ids(page_items(resp)) == [1, 2, 3, 4, 5], "a short page, not an error"


def test_overfetch_without_a_page_size(fg, ranker):
    """No page_size in the request and no default_page_size: the request is
    not changed and the page is not trimmed."""
    d = fg(filter_policy([(CHILD_BANDS, OVERFETCH)], feed_extra={"page_size": "page_size"}))
    respond, sent = serve_page_size()
    resp, _, rec = call(ranker, d, respond, "13_15", body=REQ)
    assert rec["raw"] == REQ, "a request without a page size was changed"
    assert ids(page_items(resp)) == [i for i in range(1, 13) if i % 5 != 2]


@pytest.mark.parametrize("ps", [None, 0])
def test_overfetch_default_page_size(fg, ranker, ps):
    d = fg(filter_policy([(CHILD_BANDS, OVERFETCH)],
                         feed_extra={"page_size": "page_size", "default_page_size": 10}))
    body = REQ if ps is None else REQ + ph.tag(4, 0) + b"\x00"    # an explicit 0 on the wire
    respond, sent = serve_page_size()
    resp, _, rec = call(ranker, d, respond, "16_17", body=body)
    assert values(rec["raw"], 4)[-1:] == [15], values(rec["raw"], 4)
    assert ids(page_items(resp)) == [i for i in range(1, 16) if i % 5 != 2][:10]


# ---------------------------------------------------------------- 7. streaming

STREAM_RULES = Rules(demote=["depression"], unlabelled="allow",
                     prominence={"not_before": 1, "spacing": 4, "max_share": 1})


def test_stream_pages(fg, ranker):
    """K 1, N 4 per page, N across pages too.
    Page 1: 1D 2A 3A            -> 2 1 3      (1 waits for K; last D at -2 of page 2)
    Page 2: 4D 5A 6A 7D         -> 5 6 4      (4 needs p - (-2) >= 4: p 2; 7 surplus)
    Page 3: 8A 9D 10A 11A 12porn -> 8 10 11 9 (9 needs p - (-1) >= 4: p 3; porn removed)
    Without the spacing across pages, page 2 would be 5 4 6 and page 3 8 9 10 11."""
    d = fg(filter_policy([(CHILD_BANDS, STREAM_RULES)], methods=(STREAM_PAGES,),
                         feed_extra={"report_header": REPORT}))
    kinds = {1: "D", 4: "D", 7: "D", 9: "D", 12: "P"}
    lab = {"D": ["sad_content"], "P": ["porn"], "A": ["sport"]}

    def pg(lo, hi):
        return [mk(i, lab[kinds.get(i, "A")]) for i in range(lo, hi + 1)]
    pages = [pg(1, 3), pg(4, 7), pg(8, 12)]
    sent = [page([r for r, _ in p], HEAD + f_len(50, "page-%d" % k), TAIL) for k, p in enumerate(pages)]
    got, initial, trailing = stream_call(ranker, d, sent, "13_15", STREAM_PAGES)
    assert len(got) == 3, "pages: %d" % len(got)
    assert [ids(page_items(g)) for g in got] == [[2, 1, 3], [5, 6, 4], [8, 10, 11, 9]], \
        [ids(page_items(g)) for g in got]
    carry = None
    for k, (p, g) in enumerate(zip(pages, got)):
        m = check_page(p, page_items(g), STREAM_RULES, "page %d" % (k + 1), carry)
        carry = m.carry
        assert g == page(page_items(g), HEAD + f_len(50, "page-%d" % k), TAIL)
    assert report(trailing) == {"removed": 1, "demoted": 3, "surplus": 1}
    assert not harness.md_values(initial, REPORT), "streaming: the counts go in the trailers"
    # adults: every page byte for byte
    got, _, _ = stream_call(ranker, d, sent, "adult", STREAM_PAGES)
    assert got == sent


def test_stream_feed_items(fg, ranker):
    """items: . -- the stream is one page; an excluded item's message is not
    sent; a demoted item that does not fit where it comes is dropped.
    K 2, N 2: 1porn(x) 2A@0 3D(p1<K: dropped) 4A@1 5D@2 6D(p3: 1 apart:
    dropped) 7A@3 8self_harm(x) 9D@4 10A@5."""
    rules = Rules(demote=["depression"], unlabelled="allow",
                  prominence={"not_before": 2, "spacing": 2, "max_share": 1})
    d = fg(filter_policy([(CHILD_BANDS, rules)], methods=(STREAM,), feed_extra={"report_header": REPORT}))
    kinds = {1: ["porn"], 3: ["sad_content"], 5: ["sad_content"], 6: ["sad_content"], 8: ["self_harm"],
             9: ["sad_content"]}
    items = [mk(i, kinds.get(i, ["sport"]), unknown=f_len(99, "x%d" % i)) for i in range(1, 11)]
    sent = [r for r, _ in items]
    got, _, trailing = stream_call(ranker, d, sent, "under_13", STREAM)
    assert ids(got) == [2, 4, 5, 7, 9, 10], ids(got)
    assert got == [sent[i - 1] for i in (2, 4, 5, 7, 9, 10)], "streamed items changed"
    r = report(trailing)
    assert (r["removed"], r["surplus"]) == (2, 2), r
    got, _, _ = stream_call(ranker, d, sent, "adult", STREAM)
    assert got == sent


def test_stream_feed_all_excluded(fg, ranker):
    d = fg(filter_policy([(CHILD_BANDS, Rules())], methods=(STREAM,)))
    sent = [mk(i, ["porn"])[0] for i in range(1, 5)]
    got, _, _ = stream_call(ranker, d, sent, "13_15", STREAM)
    assert got == [], "excluded items were streamed: %s" % ids(got)


# ---------------------------------------------------------------- 8. gzip

def direct_is_gzip(ranker, method, responses, streaming=False):
    """Precondition: the ranker really sends <responses> gzip-compressed."""
    cid = ph.call_id("gz")
    ranker.script(cid, responses, gzip=True)
    c = RawClient(ranker.addr, timeout=tf(5))
    try:
        sid = c.request(method, [("x-call-id", cid), ("grpc-accept-encoding", "gzip")], [REQ])
        c.wait(lambda: c.streams[sid].finished, tf(5), "the direct response")
        st = c.streams[sid]
        assert headers_dict(st.headers).get("grpc-encoding") == "gzip", st.headers
        fr = ph.frames(st.data)
        assert fr and all(f[0] == 1 for f in fr), "the ranker did not compress: flags %s" % [f[0] for f in fr]
    finally:
        c.close()


def test_gzip_responses_filtered(fg, ranker):
    rules = Rules(exclude=["primary_priority", "priority"], unlabelled="allow")
    d = fg(filter_policy([(CHILD_BANDS, rules)], methods=(RANK, STREAM_PAGES)))
    labels = {2: ["porn"], 4: ["gore"], 5: ["suicide_promotion"]}
    items = [mk(i, labels.get(i, ["sport"]), unknown=f_len(99, "z" * 300)) for i in range(1, 9)]
    sent = page([r for r, _ in items], HEAD, TAIL)
    direct_is_gzip(ranker, RANK, [sent])
    resp, _, _ = call(ranker, d, sent, "under_13", gzip=True)
    assert ids(page_items(resp)) == [1, 3, 6, 7, 8], ids(page_items(resp))
    assert resp == page([items[i - 1][0] for i in (1, 3, 6, 7, 8)], HEAD, TAIL)
    resp, _, _ = call(ranker, d, sent, "adult", gzip=True)
    assert resp == sent
    direct_is_gzip(ranker, STREAM_PAGES, [sent, sent])
    got, _, _ = stream_call(ranker, d, [sent, sent], "16_17", STREAM_PAGES, gzip=True)
    assert [ids(page_items(g)) for g in got] == [[1, 3, 6, 7, 8]] * 2


# ---------------------------------------------------------------- 9. bytes kept

def test_unknown_fields_in_items_kept(fg, ranker):
    """Items with unknown fields of every wire type (inside the item and
    inside its moderation labels), a non-minimal varint, fields out of
    order: kept items reach the client byte for byte, moved or not."""
    rules = Rules(demote=["depression"], unlabelled="allow",
                  prominence={"not_before": 1, "spacing": 1, "max_share": 1})
    d = fg(filter_policy([(CHILD_BANDS, rules)], labels=MODERATION))
    odd = (f_len(99, "opaque") + f_varint(100, 1 << 40) + ph.tag(101, 5) + b"\x01\x02\x03\x04"
           + ph.tag(102, 1) + b"12345678")
    it1 = (f_len(10, f_len(1, "sad_content") + ph.f_float(2, 0.75) + f_len(7, "model-x"))
           + ph.tag(1, 0) + b"\x81\x80\x00" + odd)                      # item_id 1 as 3 bytes
    it2 = f_len(2, "second") + f_varint(1, 2) + f_len(10, f_len(1, "porn") + ph.f_float(2, 0.5) + f_len(9, b"\x00")) + odd
    it3 = item(3, moderation=[("music", 0.5)], unknown=odd + f_len(99, "again"))
    it4 = item(4, unknown=f_len(10, f_len(1, "sport") + ph.f_float(2, 0.5) + f_varint(3, 9)))
    sent = page([it1, it2, it3, it4], f_len(77, "top"), TAIL)
    ph.parse("RankFeedResponse", sent)
    resp, _, _ = call(ranker, d, sent, "13_15")
    assert resp == page([it3, it1, it4], f_len(77, "top"), TAIL), \
        "expected items 3 1 4 as sent; got %s" % [i.hex() for i in page_items(resp)]


@pytest.mark.parametrize("adult", ["no_block", "allow_all"])
def test_adult_byte_for_byte(fg, ranker, adult):
    blocks = [(CHILD_BANDS, Rules(exclude=["primary_priority", "priority"]))]
    if adult == "allow_all":
        blocks.append((["adult"], Rules(exclude=[], unlabelled="allow")))
    d = fg(filter_policy(blocks, methods=(RANK, STREAM, STREAM_PAGES), labels=MODERATION))
    items = [mk(1, [("porn", 1.0)], "moderation"), mk(2, (), "moderation"),
             mk(3, [("gore", 0.9)], "moderation", unknown=f_len(99, "u")),
             mk(4, [("sad_content", 0.9)], "moderation"), mk(5, [("sport", 0.5)], "moderation")]
    sent = page([r for r, _ in items], HEAD, TAIL)
    resp, _, rec = call(ranker, d, sent, "adult", body=REQ + f_varint(4, 5))
    assert resp == sent, "an adult's page was changed"
    assert rec["raw"] == REQ + f_varint(4, 5)
    got, _, _ = stream_call(ranker, d, [sent, sent], "18_plus", STREAM_PAGES)
    assert got == [sent, sent]
    got, _, _ = stream_call(ranker, d, [r for r, _ in items], "adult", STREAM)
    assert got == [r for r, _ in items]
    # control: the same page for a child is filtered (1 and 3 excluded; 2,
    # unlabelled, demoted by default with not_before 3: no room, dropped)
    resp, _, _ = call(ranker, d, sent, "13_15")
    assert ids(page_items(resp)) == [4, 5], ids(page_items(resp))


# ---------------------------------------------------------------- 10. bad policies

GOOD = [(CHILD_BANDS, Rules(exclude=["primary_priority", "priority"], unlabelled="allow"))]
GOOD_TEXT = filter_policy(GOOD)

# (policy text with @@ where the error is (@2: an equally right place),
# words one of which the message names)
BAD = {
    "unknown_class": (GOOD_TEXT.replace("exclude: [primary_priority, priority]",
                                        "exclude: [primary_priority, @@gore]"), ("gore",)),
    "unknown_category": (GOOD_TEXT.replace("exclude: [primary_priority, priority]",
                                           "exclude: [@@primary_prority]"), ("primary_prority",)),
    "label_map_to_unknown_class": (GOOD_TEXT.replace("    porn: pornography", "    porn: @@pornografy"),
                                   ("pornografy",)),
    "not_before_1001": (filter_policy([(CHILD_BANDS, Rules(prominence={"not_before": "@@1001"}))]),
                        ("not_before", "1001")),
    "not_before_negative": (filter_policy([(CHILD_BANDS, Rules(prominence={"not_before": "@@-1"}))]),
                            ("not_before", "-1")),
    "spacing_0": (filter_policy([(CHILD_BANDS, Rules(prominence={"spacing": "@@0"}))]), ("spacing", "0")),
    "spacing_1001": (filter_policy([(CHILD_BANDS, Rules(prominence={"spacing": "@@1001"}))]),
                     ("spacing", "1001")),
    "group_spacing_0": (filter_policy([(CHILD_BANDS, Rules(demote=[{"classes": ["depression"],
                                                                    "spacing": "@@0"}]))]),
                        ("spacing", "0")),
    "max_share_0": (filter_policy([(CHILD_BANDS, Rules(prominence={"max_share": "@@0"}))]),
                    ("max_share", "0")),
    "max_share_1.5": (filter_policy([(CHILD_BANDS, Rules(prominence={"max_share": "@@1.5"}))]),
                      ("max_share", "1.5")),
    "labels_singular_string": (GOOD_TEXT.replace("labels: content_labels", "labels: @@title"), ("title",)),
    "labels_int": (GOOD_TEXT.replace("labels: content_labels", "labels: @@item_id"), ("item_id",)),
    "labels_repeated_message_as_strings": (GOOD_TEXT.replace("labels: content_labels", "labels: @@moderation"),
                                           ("moderation",)),
    "labels_confidence_string": (GOOD_TEXT.replace(
        "labels: content_labels", "labels: {field: moderation, value: label, confidence: @@label}"),
        ("label", "confidence")),
    "labels_value_float": (GOOD_TEXT.replace(
        "labels: content_labels", "labels: {field: moderation, value: @@confidence, confidence: confidence}"),
        ("confidence", "value")),
    "labels_no_such_field": (GOOD_TEXT.replace("labels: content_labels", "labels: @@content_lables"),
                             ("content_lables",)),
    # a map of class to score: said as a map, not "not a repeated field"
    "labels_map": (GOOD_TEXT.replace("labels: content_labels", "labels: @@feature_weights"),
                   ("is a map", "repeated message")),
    "items_repeated_string": (GOOD_TEXT.replace("items: items", "items: @@profile_segments"),
                              ("profile_segments",)),
    "items_singular_string": (GOOD_TEXT.replace("items: items", "items: @@model_version"), ("model_version",)),
    "label_maps_name": (GOOD_TEXT.replace("classes: acme", "classes: @@acmee"), ("acmee",)),
    "class_in_exclude_and_demote": (filter_policy([(CHILD_BANDS, Rules(exclude=["@2self_harm"],
                                                                       demote=["@@self_harm"]))]),
                                    ("self_harm",)),
    "category_in_demote_and_allow": (filter_policy([(CHILD_BANDS, Rules(demote=["@2priority"],
                                                                        allow=["@@priority"]))]),
                                     ("priority",)),
    "surplus_value": (filter_policy([(CHILD_BANDS, Rules(surplus="@@keep"))]), ("keep", "surplus")),
    "unlabelled_value": (filter_policy([(CHILD_BANDS, Rules(unlabelled="@@hide"))]), ("hide", "unlabelled")),
    "overfetch_factor_1": (filter_policy([(CHILD_BANDS, Rules(overfetch={"factor": "@@1"}))],
                                         feed_extra={"page_size": "page_size"}), ("factor", "1")),
    "page_size_not_integer": (filter_policy(GOOD, feed_extra={"page_size": "@@page_token"}), ("page_token",)),
    "band_in_two_blocks": (filter_policy([(["under_13"], Rules()), (["@@under_13"], Rules())]), ("under_13",)),
    "response_removes_the_labels": (filter_policy(GOOD, response_block="      - bands: [under_13]\n"
                                                  "        remove: [@@items.content_labels]\n")
                                    .replace("labels: content_labels", "labels: @2content_labels"),
                                    ("content_labels",)),
    # A label stripped of its value or confidence would read as a harmless
    # topic: the response rules may not touch them either.
    "response_removes_label_values": (filter_policy(GOOD, labels=MODERATION,
                                                    response_block="      - bands: [under_13]\n"
                                                    "        remove: [items.moderation.label]\n")
                                      .replace("labels: {field", "labels: @@{field"), ("moderation",)),
    "response_coarsens_confidences": (filter_policy(GOOD, labels=MODERATION,
                                                    response_block="      - bands: [under_13]\n"
                                                    "        coarsen:\n"
                                                    "          - {field: items.moderation.confidence, "
                                                    "precision: 10}\n")
                                      .replace("labels: {field", "labels: @@{field"), ("moderation",)),
    "items_dot_on_unary": (GOOD_TEXT.replace("items: items", "items: @@."), ("server-streaming",)),
    "report_header_grpc": (filter_policy(GOOD, feed_extra={"report_header": "@@GRPC-STATUS"}), ("reserved",)),
    "report_header_bin": (filter_policy(GOOD, feed_extra={"report_header": "@@x-report-bin"}), ("-bin", "base64")),
    "report_header_space": (filter_policy(GOOD, feed_extra={"report_header": '@@"x bad"'}),
                            ("header name",)),
    "label_mapped_twice": (GOOD_TEXT.replace("    porn: pornography", "    porn: pornography\n    @@porn: suicide"),
                           ("porn",)),
    "page_size_in_oneof": (filter_policy(GOOD, feed_extra={"page_size": "@@offset"}), ("oneof", "cursor")),
}


def bad_policy(kind):
    """(text, [(line, column), ...] the error may be at, words)."""
    text, words = BAD[kind]
    alt = None
    if "@2" in text:
        t2, l2, c2 = ph.marked(text.replace("@@", ""), "@2")
        text = text.replace("@2", "")
        alt = (l2, c2)
    text, line, col = ph.marked(text)
    return text, [(line, col)] + ([alt] if alt else []), words


def assert_error_at(err, path, places, words, kind):
    for line, col in places:
        where = "%s:%d:%d: " % (path, line, col)
        if where in err:
            msg = err.split(where, 1)[1].splitlines()[0]
            assert any(w in msg for w in words), "%s: the message does not name any of %s: %r" \
                % (kind, words, msg)
            return
    pytest.fail("%s: expected an error at %s; got:\n%s"
                % (kind, " or ".join("%s:%d:%d" % (path, l, c) for l, c in places), err), pytrace=False)


def test_check_accepts_the_good_policies(tmp_path):
    """The policies these tests start from pass -t (so a rejection below is
    about the one mistake)."""
    for k, text in enumerate([GOOD_TEXT, filter_policy(PROPERTY_BLOCKS, labels=MODERATION),
                              filter_policy([(CHILD_BANDS, OVERFETCH)], feed_extra={"page_size": "page_size"}),
                              filter_policy([(CHILD_BANDS, Rules(exclude=["priority"], demote=["bullying"]))])]):
        ph.write_policy(tmp_path, text)
        res = run_feedguardd(["-t", "-c", str(write_check_config(tmp_path))])
        assert res.returncode == 0, "policy %d:\n%s\n%s" % (k, text, res.stderr.decode("utf-8", "replace"))


def test_check_accepts_uk_children_policy(tmp_path):
    """policies/uk-children.yaml, the policy a UK platform starts from, passes
    -t as shipped (beside the reference contract's descriptor set)."""
    ph.write_policy(tmp_path, (harness.SRCDIR / "policies" / "uk-children.yaml").read_text())
    cfg = write_check_config(tmp_path)
    # Its screen-time limits keep state: a Redis (not contacted by -t) and
    # the pseudonym key ring.
    (tmp_path / "k.key").write_bytes(os.urandom(32))
    cfg.write_text(cfg.read_text() + "pseudonym_keys: [{id: k1, file: k.key}]\nstate: {redis: 127.0.0.1:9}\n")
    res = run_feedguardd(["-t", "-c", str(cfg)])
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")
    # Without them the limits are refused, at the policy's limits key.
    cfg.write_text(write_check_config(tmp_path).read_text())
    res = run_feedguardd(["-t", "-c", str(cfg)])
    assert res.returncode == 1
    assert "limits need state.redis" in res.stderr.decode("utf-8", "replace")


@pytest.mark.parametrize("kind", sorted(BAD))
def test_check_rejects_bad_filter_policy(tmp_path, kind):
    text, places, words = bad_policy(kind)
    path = ph.write_policy(tmp_path, text)
    res = run_feedguardd(["-t", "-c", str(write_check_config(tmp_path))])
    err = res.stderr.decode("utf-8", "replace")
    assert res.returncode == 1, "%s: exit %s; stderr:\n%s" % (kind, res.returncode, err)
    assert_error_at(err, path, places, words, kind)


@pytest.mark.parametrize("kind", sorted(BAD))
def test_reload_bad_filter_policy_keeps_the_running_one(fg, ranker, tmp_path, kind):
    d = fg(GOOD_TEXT)
    items = [mk(1, ["porn"]), mk(2, ["sport"]), mk(3, ["gore"]), mk(4, ())]
    sent = page([r for r, _ in items])
    resp, _, _ = call(ranker, d, sent, "under_13")
    assert ids(page_items(resp)) == [2, 4]
    text, places, words = bad_policy(kind)
    path = ph.write_policy(tmp_path, text)
    since = len(d.stderr())
    ev = ph.sighup_and_wait(d, "reload_failed", since)
    assert_error_at(ev + "\n", path, places, words, kind)
    assert "event=reloaded" not in d.stderr()[since:]
    resp, _, _ = call(ranker, d, sent, "under_13")
    assert ids(page_items(resp)) == [2, 4], "after a failed reload the running policy must still filter"
    resp, _, _ = call(ranker, d, sent, "adult")
    assert resp == sent


def test_reload_good_filter_policy(fg, ranker, tmp_path):
    d = fg(GOOD_TEXT)
    items = [mk(1, ["porn"]), mk(2, ["sport"]), mk(3, ["gore"])]
    sent = page([r for r, _ in items])
    assert ids(page_items(call(ranker, d, sent, "13_15")[0])) == [2]
    ph.write_policy(tmp_path, filter_policy([(CHILD_BANDS, Rules(unlabelled="allow"))]))
    since = len(d.stderr())
    ph.sighup_and_wait(d, "reloaded", since)
    assert ids(page_items(call(ranker, d, sent, "13_15")[0])) == [2, 3], "the new policy does not apply"


# ---------------------------------------------------------------- 11. a contract feedguard was not written for

ACME_PROTO = """\
syntax = "proto3";
package acme.feed.v2;

service Recommender {
  rpc Recommend(RecommendRequest) returns (RecommendReply);
}
message RecommendRequest {
  string viewer = 1;
  uint32 limit = 2;
}
message RecommendReply {
  string trace_id = 1;
  Page page = 2;
}
message Page {
  repeated Entry entries = 3;
  string cursor = 4;
}
message Entry {
  enum Harm {
    HARM_UNSPECIFIED = 0;
    SELF_HARM = 1;
    NUDITY = 2;
    GORE = 3;
    SAD = 4;
    SPORTY = 5;
  }
  string id = 1;
  bytes thumbnail = 2;
  repeated Harm harms = 4;
}
"""
RECOMMEND = "/acme.feed.v2.Recommender/Recommend"
SELF_HARM, NUDITY, GORE, SAD, SPORTY = 1, 2, 3, 4, 5


def acme_policy(map_extra=""):
    return ph.BANDS_HEADER.replace("descriptor_set: ranking.pb", "descriptor_set: acme.pb") + """\
label_maps:
  harms:
    SELF_HARM: self_harm
    NUDITY: pornography
    GORE: violence_graphic
    SAD: depression
%smethods:
  %s:
    age_band: {header: x-age-band}
    feed:
      items: page.entries
      labels: harms
      classes: harms
      page_size: limit
      report_header: x-acme-filter
    filter:
      - bands: [under_13, "13_15", "16_17"]
        exclude: [primary_priority, priority]
        demote: [non_designated]
        unlabelled: allow
        prominence: {not_before: 2, spacing: 2, max_share: 1}
        overfetch: {factor: 2, max: 50}
""" % (map_extra, RECOMMEND)


@pytest.fixture(scope="module")
def acme_pb(tmp_path_factory):
    protoc = shutil.which("protoc")
    if not protoc:
        pytest.skip("protoc is not installed (Debian: protobuf-compiler): cannot compile the test's own contract")
    d = tmp_path_factory.mktemp("acme")
    (d / "acme.proto").write_text(ACME_PROTO)
    subprocess.run([protoc, "--include_imports", "--descriptor_set_out=%s" % (d / "acme.pb"),
                    "-I", str(d), str(d / "acme.proto")], check=True, capture_output=True, timeout=60)
    return d / "acme.pb"


def entry(eid, harms=(), packed=True, extra=b""):
    out = f_len(1, "e%d" % eid) + f_len(2, bytes([eid]) * 4)
    if harms:
        out += f_len(4, b"".join(ph.varint(h) for h in harms)) if packed \
            else b"".join(f_varint(4, h) for h in harms)
    return out + extra


def test_custom_contract_enum_labels(fg, ranker, tmp_path, acme_pb):
    """A contract written here: labels a repeated enum (packed, and one item
    unpacked), items behind a singular message (page.entries), page size a
    uint32 `limit`.  under_13 asks for 5, the ranker is asked for 10.
    Ranked: e1 SPORTY, e2 SELF_HARM (x), e3 SAD (demoted), e4 GORE+SPORTY (x),
    e5 none, e6 NUDITY unpacked (x), e7 42 (a number the enum does not name:
    no label), e8 SPORTY, e9 SAD, e10 SPORTY.  Left: e1 e3 e5 e7 e8 e9 e10;
    K 2: e1 e5 e3 e7 e8 e9 e10; trimmed to 5: e1 e5 e3 e7 e8."""
    shutil.copy(str(acme_pb), str(tmp_path / "acme.pb"))
    d = fg(acme_policy())
    entries = {1: entry(1, [SPORTY]), 2: entry(2, [SELF_HARM]), 3: entry(3, [SAD]),
               4: entry(4, [GORE, SPORTY]), 5: entry(5), 6: entry(6, [NUDITY], packed=False),
               7: entry(7, [42], extra=f_len(9, "unknown-in-entry")), 8: entry(8, [SPORTY]),
               9: entry(9, [SAD]), 10: entry(10, [SPORTY])}

    def reply(es):
        return f_len(1, "trace-1") + f_len(2, b"".join(f_len(3, entries[i]) for i in es)
                                           + f_len(4, "cursor-2")) + f_len(15, "unknown-top")
    sent = reply(range(1, 11))
    body = f_len(1, "viewer-3") + f_varint(2, 5)
    cid = ph.call_id("acme")
    ranker.script(cid, [sent])
    resp, c = ph.unary(d.addr, RECOMMEND, body, md("under_13", cid))
    rec = ranker.wait(cid)
    assert values(rec["raw"], 2)[-1] == 10, "limit 5 x 2: the ranker saw %s" % values(rec["raw"], 2)
    assert ph.drop(rec["raw"], 2) == ph.drop(body, 2)
    got = [f[2] for f in fields(ph.one(resp, 2)) if f[0] == 3]
    assert [ph.one(e, 1) for e in got] == [b"e1", b"e5", b"e3", b"e7", b"e8"], [ph.one(e, 1) for e in got]
    assert resp == reply([1, 5, 3, 7, 8])
    v = harness.md_values(c.initial_metadata(), "x-acme-filter")
    assert v and v[0].startswith("removed=3,"), v
    # the adult's request and page as they were
    cid = ph.call_id("acme")
    ranker.script(cid, [sent])
    resp, _ = ph.unary(d.addr, RECOMMEND, body, md("adult", cid))
    assert resp == sent and ranker.wait(cid)["raw"] == body


def raw_calls(capdir):
    """The Calls of <capdir>'s capture files as written: test_capture.scan()
    rebuilds the delivered pages a DeliveredFrom stands for."""
    import test_capture as tc
    raw = []
    for f in tc.scan(capdir):
        for _, _, payload in f.frames:
            r = tc.cap().Record()
            r.ParseFromString(payload)
            if r.WhichOneof("kind") == "call":
                raw.append(r.call)
    return raw


@pytest.mark.parametrize("redact,reference", [(None, True), ("{response: {}}", True),
                                               ("{response: {remove: [trace_id]}}", False)],
                         ids=["default", "side-as-the-band-left-it", "response-redacted"])
def test_capture_response_redaction_and_the_reference(fg, ranker, tmp_path, acme_pb, redact, reference):
    """capture_redact.response {} records the response as the band left it,
    so the child's filtered page is still written as a DeliveredFrom; a
    redaction that edits the response has the delivered page written whole
    (README, "What a record holds": delivered_response), the redacted field
    gone from both entries."""
    import test_capture as tc
    shutil.copy(str(acme_pb), str(tmp_path / "acme.pb"))
    capdir = tmp_path / "capture"
    capdir.mkdir()
    (tmp_path / "capture.key").write_bytes(os.urandom(32))
    policy = acme_policy()
    if redact:
        policy = policy.replace("    filter:\n", "    capture_redact: %s\n    filter:\n" % redact, 1)
    d = fg(policy, config={"capture": {"directory": str(capdir), "sample": 1,
                                       "key": {"id": "k1", "file": str(tmp_path / "capture.key")}}})
    entries = [entry(i, [h] if h else []) for i, h in [(1, SPORTY), (2, GORE), (3, 0), (4, SAD)]]
    sent = f_len(1, "trace-1") + f_len(2, b"".join(f_len(3, e) for e in entries))
    cid = ph.call_id("acme-redact")
    ranker.script(cid, [sent])
    got, _ = ph.unary(d.addr, RECOMMEND, f_len(1, "viewer-3") + f_varint(2, 5), md("under_13", cid))
    assert got != sent, "the filter changed nothing: the test tests nothing"

    def calls():
        return [c for f in tc.scan(capdir) for c in f.calls]
    harness.poll_until(lambda: len(calls()) >= 1, tf(10), "a capture record")
    call = raw_calls(capdir)[0]
    if reference:
        assert list(call.delivered_response) == [b""], "the page is written twice"
        assert [(f.delivered, f.upstream) for f in call.delivered_from] == [(0, 0)]
        tc.rebuild_delivered(call)
        assert call.delivered_response[0] == got
    else:
        assert not call.delivered_from
        assert len(call.delivered_response) == 1 and call.delivered_response[0] != got
        for m in (call.upstream_response[0], call.delivered_response[0]):
            assert b"trace-1" not in m


def test_capture_keeps_a_nested_page_as_a_reference(fg, ranker, tmp_path, acme_pb):
    """Capture of the acme contract (items behind page.entries: three
    removed, one demoted, the page trimmed) at sample 1: the record does not
    hold the delivered page again (format version 2: an empty
    delivered_response entry and a DeliveredFrom, reordered, with
    items_path [2, 3]), and rebuilt by capture.proto's rule (in Python, from
    the proto's words) and by feedguard-replay dump (daemon/fg_capread.c) it
    is byte for byte what the client got.  A page the filter leaves as it is
    (the adult's: no filter for the band, so written out) and a record with
    decisions that do not fit its page (dump reports corruption) too."""
    import base64
    import test_capture as tc
    shutil.copy(str(acme_pb), str(tmp_path / "acme.pb"))
    capdir = tmp_path / "capture"
    capdir.mkdir()
    (tmp_path / "capture.key").write_bytes(os.urandom(32))
    d = fg(acme_policy(), config={"capture": {"directory": str(capdir), "sample": 1,
                                              "key": {"id": "k1", "file": str(tmp_path / "capture.key")}}})
    entries = {i: entry(i, [h] if h else []) for i, h in
               [(1, SPORTY), (2, SELF_HARM), (3, SAD), (4, GORE), (5, 0), (6, NUDITY), (7, SPORTY), (8, 0),
                (9, SPORTY), (10, SAD)]}

    def reply(es):
        return f_len(1, "trace-1") + f_len(2, b"".join(f_len(3, entries[i]) for i in es)
                                           + f_len(4, "cursor-2")) + f_len(15, "unknown-top")
    sent = reply(range(1, 11))
    body = f_len(1, "viewer-3") + f_varint(2, 5)
    got = {}
    for band in ("under_13", "adult"):
        cid = ph.call_id("acme-cap")
        ranker.script(cid, [sent])
        got[band], _ = ph.unary(d.addr, RECOMMEND, body, md(band, cid))
    assert got["under_13"] == reply([1, 5, 3, 7, 8]) and got["adult"] == sent

    def calls():
        return [c for f in tc.scan(capdir) for c in f.calls]
    harness.poll_until(lambda: len(calls()) >= 2, tf(10), "two capture records")
    raw = raw_calls(capdir)
    child = [c for c in raw if c.band == "under_13"][0]
    adult = [c for c in raw if c.band == "adult"][0]
    assert list(child.delivered_response) == [b""], "the child's page is written twice"
    assert [(f.delivered, f.upstream, f.reordered) for f in child.delivered_from] == [(0, 0, True)]
    assert list(child.items_path) == [2, 3]
    assert list(adult.delivered_response) == [sent] and not adult.delivered_from
    # rebuilt by the proto's rule, apart from feedguardd's code
    tc.rebuild_delivered(child)
    assert child.delivered_response[0] == got["under_13"]
    # and by feedguard-replay's reader
    files = sorted(str(p) for p in capdir.iterdir())
    res = harness.run_feedguard_replay(["dump"] + files)
    assert res.returncode == 0, res.stderr.decode()
    lines = [json.loads(x) for x in res.stdout.decode().splitlines()]
    dumped = {c["band"]: c for c in lines if "band" in c}
    assert [base64.b64decode(m) for m in dumped["under_13"]["delivered_response"]] == [got["under_13"]]
    assert [base64.b64decode(m) for m in dumped["adult"]["delivered_response"]] == [sent]

    # decisions that place one item twice: corruption, never a page that grows
    bad = tc.cap().Record()
    bad.call.CopyFrom(child)
    bad.call.delivered_response[0] = b""        # as recorded (rebuilt above)
    for it in bad.call.decisions.items:
        if it.delivered_position >= 0:
            it.position = 0
    info = tc.cap().Record()
    info.file_info.format_version = 2
    path = tmp_path / "bad.fgcap"
    path.write_bytes(tc.MAGIC + struct.pack("<II", 2, 0) + tc.frame(info.SerializeToString())
                     + tc.frame(bad.SerializeToString()))
    res = harness.run_feedguard_replay(["dump", str(path)])
    err = res.stderr.decode()
    assert res.returncode != 0 and "corrupt record at offset" in err and "after 1 records" in err, err
    assert "do not fit its upstream page" in err, err


def test_custom_contract_enum_map_key_not_in_enum(tmp_path, acme_pb):
    shutil.copy(str(acme_pb), str(tmp_path / "acme.pb"))
    text, line, col = ph.marked(acme_policy("").replace("    SAD: depression", "    @@SADNESS: depression"))
    path = ph.write_policy(tmp_path, text)
    res = run_feedguardd(["-t", "-c", str(write_check_config(tmp_path))])
    err = res.stderr.decode("utf-8", "replace")
    assert res.returncode == 1, err
    assert_error_at(err, path, [(line, col)], ("SADNESS",), "enum key")


def held_bytes(admin):
    """feedguard_intercept_buffered_bytes of the daemon whose admin is <admin>."""
    _, text = ph.http_get(admin, "/metrics")
    return int(ph.metric(text, "feedguard_intercept_buffered_bytes") or 0)


def unary_once_not_overloaded(addr, method, body, metadata, within):
    """One unary call, tried again while the worker refuses it as
    overloaded (UNAVAILABLE, "retry", what a client is told to do) for up
    to <within> seconds; returns the response bytes.  A stream the sweep
    has not cut yet gets window once the worker is back under
    limits.worker_buffer and may take it over again for a moment (the
    distcheck run of 2026-12-07 met one such moment); a worker that stays
    over fails the test."""
    deadline = time.monotonic() + within
    while True:
        try:
            resp, _ = ph.unary(addr, method, body, metadata)
            return resp
        except grpc.RpcError as e:
            if (e.code() != grpc.StatusCode.UNAVAILABLE or "overloaded" not in (e.details() or "")
                    or time.monotonic() > deadline):
                raise
        time.sleep(0.05)            # a poll, not a wait for something that has a signal


def open_big_streams(c, ranker, tag, n=64):
    """<n> StreamPages calls of four 1.6 MB pages each on RawClient <c>;
    returns their stream ids."""
    big = page([item(i, labels=["sport"] if i % 7 else ["porn"]) for i in range(65536)])
    sids = []
    for i in range(n):
        cid = ph.call_id("%s-%d" % (tag, i))
        ranker.script(cid, [big] * 4)
        sids.append(c.request(STREAM_PAGES, md("13_15", cid), [REQ]))
    return sids


class ConnectionWindowOnly(RawClient):
    """Gives back the connection window for every DATA byte it gets, never a
    stream window: its streams stall one by one while the connection
    stays open for more."""

    def _event(self, ev):
        if isinstance(ev, h2.events.DataReceived) and ev.flow_controlled_length:
            self.conn.increment_flow_control_window(ev.flow_controlled_length)
        super()._event(ev)


def test_connection_over_budget_with_nothing_moving_is_cut(fg, ranker):
    """A client that opens no stream window on 64 StreamPages calls of 1.6
    MB pages (it gives the connection window back): the streams that went
    on past the budget send what their window allows and stall, and the
    others wait behind the budget with their first bytes, never having had
    anything to refuse, so no stream's own check could cut them (they held
    the budget, and the worker's, until the client left, or one batch a
    timeout).  A stream that holds bytes while its connection is over
    limits.connection_buffer, moving under 16 KiB for
    timeouts.stalled_stream, is reset with CANCEL: all 64 go together, and
    their bytes."""
    cfg = {"workers": 1, "admin": {"listen": "127.0.0.1:0"},
           "timeouts": {"stalled_stream": "1s"},
           "limits": {"stream_window": "256KiB", "connection_window": "1MiB", "max_concurrent_streams": 64,
                      "connection_buffer": "1MiB", "worker_buffer": "64MiB"}}
    many = FeedRanker(max_workers=80)
    d = fg(filter_policy([(CHILD_BANDS, Rules())], methods=(STREAM_PAGES,)), config=cfg, upstream=many.addr)
    admin = ph.admin_addr(d)

    def held():
        return held_bytes(admin)
    c = ConnectionWindowOnly(d.addr, timeout=tf(10), ack_data=False)
    try:
        sids = open_big_streams(c, many, "stuck")
        end = time.monotonic() + tf(2)
        peak = 0
        while time.monotonic() < end and peak <= (4 << 20):
            c.pump(0.05)
            peak = max(peak, held())
        assert peak > (4 << 20), "the connection never held much (%d bytes): the test tests nothing" % peak
        t0 = time.monotonic()
        c.wait(lambda: all(c.streams[s].reset is not None for s in sids), tf(8),
               "every stream of the stuck connection to be reset (%d of 64 so far)"
               % sum(1 for s in sids if c.streams[s].reset is not None))
        waited = time.monotonic() - t0
        assert all(c.streams[s].reset == h2.errors.ErrorCodes.CANCEL for s in sids)
        harness.poll_until(lambda: held() == 0, tf(5), "the cut streams' bytes to go")
        assert waited < tf(4), "cut %.1fs after the connection was full (stalled_stream 1s)" % waited
    finally:
        c.close()
        many.stop()


def test_overloaded_worker_cuts_stalls_sooner(fg, ranker):
    """timeouts.stalled_stream is 5m; a client that reads nothing on 64
    StreamPages calls of 1.6 MB pages takes its worker past
    limits.worker_buffer (2MiB here), so new intercepted calls of the
    worker would be refused for those 5 minutes.  While the worker is over,
    timeouts.stalled_stream_overloaded (1s here) applies instead: the
    client's streams are reset within a few seconds, the bytes go, and an
    intercepted call from another client is served."""
    cfg = {"workers": 1, "admin": {"listen": "127.0.0.1:0"},
           "timeouts": {"stalled_stream": "5m", "stalled_stream_overloaded": "1s"},
           "limits": {"stream_window": "256KiB", "connection_window": "1MiB", "max_concurrent_streams": 64,
                      "connection_buffer": "1MiB", "worker_buffer": "2MiB"}}
    many = FeedRanker(max_workers=80)
    d = fg(filter_policy([(CHILD_BANDS, Rules())], methods=(STREAM_PAGES, RANK)), config=cfg, upstream=many.addr)
    admin = ph.admin_addr(d)

    def held():
        return held_bytes(admin)
    c = RawClient(d.addr, timeout=tf(10), ack_data=False)
    try:
        sids = open_big_streams(c, many, "overload")
        c.wait(lambda: held() > (4 << 20), tf(5), "the worker to go well past its worker_buffer")
        # Streams are cut while the worker is over; once it is back under,
        # what still stalls waits for the 5m timeout (a slow machine may
        # leave a few such streams: their stall clocks started later).
        c.wait(lambda: held() < (2 << 20), tf(8), "the worker to come back under worker_buffer")
        ended = [s for s in sids if c.streams[s].finished]
        ends = [(c.streams[s].reset, (c.streams[s].status_headers() or {}).get("grpc-status")) for s in ended]
        cut = sum(1 for r, _ in ends if r == h2.errors.ErrorCodes.CANCEL)
        # (calls that came once the worker was over were refused outright)
        assert cut > 0 and all(r == h2.errors.ErrorCodes.CANCEL or st == "14" for r, st in ends), ends
        cid = ph.call_id("after-overload")
        many.script(cid, [page([item(1, labels=["sport"])])])
        resp = unary_once_not_overloaded(d.addr, RANK, REQ, md("13_15", cid), tf(10))
        assert page_items(resp) == [item(1, labels=["sport"])]
    finally:
        c.close()
        many.stop()


def test_memory_goes_back_after_clients_that_never_read(fg, ranker):
    """64 StreamPages calls of ~1 MB pages on one connection whose client
    never opens its window, three times, then nothing in flight: feedguardd
    gives the memory back (within 16 MiB of where it started), where glibc's
    growing mmap threshold once kept hundreds of MB after such clients."""
    cfg = {"workers": 1, "admin": {"listen": "127.0.0.1:0"},
           "limits": {"stream_window": "256KiB", "connection_window": "1MiB", "max_concurrent_streams": 64,
                      "connection_buffer": "1MiB", "worker_buffer": "8MiB"}}
    many = FeedRanker(max_workers=80)                  # all 64 streams served at once
    d = fg(filter_policy([(CHILD_BANDS, Rules())], methods=(STREAM_PAGES,)), config=cfg, upstream=many.addr)
    ranker = many
    big = page([item(i, labels=["sport"] if i % 7 else ["porn"]) for i in range(65536)])
    before = harness.rss_kib(d.pid)
    if harness.rss_factor(d.pid) > 1:
        pytest.skip("AddressSanitizer keeps freed memory in its quarantine")
    peak = before
    for rnd in range(3):
        c = RawClient(d.addr, timeout=tf(10), ack_data=False)
        try:
            for i in range(64):
                cid = ph.call_id("hold%d-%d" % (rnd, i))
                ranker.script(cid, [big] * 4)
                c.request(STREAM_PAGES, md("13_15", cid), [REQ])
            end = time.monotonic() + tf(2.0)
            while time.monotonic() < end:
                c.pump(0.1)
                peak = max(peak, harness.rss_kib(d.pid))
        finally:
            c.close()
    bound = before + 16 * 1024
    print("rss %d KiB, peak %d KiB, after %d KiB" % (before, peak, harness.rss_kib(d.pid)))
    try:
        harness.poll_until(lambda: harness.rss_kib(d.pid) <= bound, tf(10),
                           "RSS back under %d KiB after the clients left (started %d KiB, peak %d KiB, now %d KiB)"
                           % (bound, before, peak, harness.rss_kib(d.pid)))
    finally:
        many.stop()



@pytest.mark.parametrize("coding", ["identity", "gzip"])
def test_client_that_never_reads_holds_a_bounded_amount(fg, ranker, coding):
    """64 StreamPages calls of 1.6 MB pages on one connection whose client
    never opens a window: what feedguardd holds stays within the
    connection's budget, each stream's window and room for output (B + S x
    W + 2M), by its gauge and by its RSS.  Past the budget the call that
    goes on edits its next page only while the output the client has not
    taken is under B + M; when nothing capped that output, every stream
    finished a page in turn and one connection took the daemon to ~200 MB.
    gzip: the ranker compresses 3.9 MB pages of a few long items into a
    few KB each, inside every stream's window; past the budget the others'
    pages wait compressed (they were inflated and edited on arrival, and
    the same client took the daemon to 229 MB)."""
    window, streams, budget, message = 256 << 10, 64, 1 << 20, 4 << 20
    cfg = {"workers": 1, "admin": {"listen": "127.0.0.1:0"},
           "limits": {"stream_window": "256KiB", "connection_window": "1MiB", "max_concurrent_streams": streams,
                      "connection_buffer": "1MiB", "worker_buffer": "64MiB", "max_message_size": "4MiB"}}
    bound = budget + streams * window + 2 * message
    many = FeedRanker(max_workers=80)
    d = fg(filter_policy([(CHILD_BANDS, Rules())], methods=(STREAM_PAGES,)), config=cfg, upstream=many.addr)
    admin = ph.admin_addr(d)
    if coding == "gzip":
        big = page([item(i, labels=["porn"] if i == 0 else ["sport"], title="a" * (500 << 10)) for i in range(8)])
    else:
        big = page([item(i, labels=["sport"] if i % 7 else ["porn"]) for i in range(65536)])
    assert len(big) > 6 * window
    accept = [("grpc-accept-encoding", "gzip")] if coding == "gzip" else []
    measure_rss = harness.rss_factor(d.pid) == 1      # AddressSanitizer's RSS says little
    before = harness.rss_kib(d.pid)
    peak, held_peak, samples = before, 0, 0
    c = RawClient(d.addr, timeout=tf(10), ack_data=False)
    try:
        for i in range(streams):
            cid = ph.call_id("never-read-%d" % i)
            many.script(cid, [big] * 4, gzip=coding == "gzip")
            c.request(STREAM_PAGES, md("13_15", cid, accept), [REQ])
        end = time.monotonic() + tf(3.0)
        while time.monotonic() < end:
            c.pump(0.05)
            peak = max(peak, harness.rss_kib(d.pid))
            _, text = ph.http_get(admin, "/metrics")
            held_peak = max(held_peak, int(ph.metric(text, "feedguard_intercept_buffered_bytes") or 0))
            samples += 1
    finally:
        c.close()
        many.stop()
    print("held peak %d KiB (bound %d KiB), rss %d -> peak %d KiB, %d samples"
          % (held_peak >> 10, bound >> 10, before, peak, samples))
    assert held_peak > message // 2, "nothing came in: the test tests nothing"
    assert held_peak <= bound
    if measure_rss:
        assert (peak - before) * 1024 <= bound + (16 << 20)
