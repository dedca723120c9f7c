"""End-to-end tests of the policy format where the README used to leave a
new user guessing (issue 9, "the policy format, tried as a new user would"):
keep_only in response blocks, coarsen under keep_only, remove of what
keep_only drops, rule_sets shared by two methods, user_id and
pseudonym_keys, pseudonymize, and how band values are matched.

Same peers as test_policy.py: the demo ranker with --record shows the exact
request bytes that reached it; `feedguardd -t` shows load-time messages.
"""
import hashlib
import hmac

import pytest

import harness
import policyhelp as ph
from harness import run_feedguardd, tf
from policyhelp import CHILD_BANDS, RANK, STREAM, at, md, numbers, one, parse
from rawh2 import RawClient

pytestmark = pytest.mark.proxy_only

CHILDREN = '[under_13, "13_15", "16_17"]'
KEY = bytes(range(32))
RAW_ID = "uid-raw-4471-secret"


# The demo ranker, feedguardd in front of it with a policy written per test,
# and one call through it: test_policy.py's (pytest finds the fixtures
# through this import).
from test_policy import fg, ranker, send  # noqa: E402,F401


def with_keys(tmp_path, config=None):
    """Config overrides with a pseudonym key ring of one key, "k1"."""
    (tmp_path / "k1.key").write_bytes(KEY)
    return harness.deep_merge({"pseudonym_keys": [{"id": "k1", "file": "k1.key"}]}, config or {})


def pseudonym(user_id):
    return "k1:" + hmac.new(KEY, user_id.encode(), hashlib.sha256).hexdigest()


def check(tmp_path, policy_text, keys=False):
    """`feedguardd -t` on <policy_text> ("@@" marks where an error must
    point, if anywhere); returns (exit code, stderr, "path:line:col: ")."""
    pos = None
    if "@@" in policy_text:
        policy_text, line, col = ph.marked(policy_text)
        pos = (line, col)
    path = ph.write_policy(tmp_path, policy_text)
    where = "%s:%d:%d: " % ((path,) + pos) if pos else ""
    cfg = tmp_path / "check.yaml"
    text = ("listen: 127.0.0.1:0\nupstream:\n  address: 127.0.0.1:9\nadmin:\n  listen: \"off\"\n"
            "policy: policy.yaml\n")
    if keys:
        (tmp_path / "k1.key").write_bytes(KEY)
        text += "pseudonym_keys:\n  - {id: k1, file: k1.key}\n"
    cfg.write_text(text)
    res = run_feedguardd(["-t", "-c", str(cfg)])
    return res.returncode, res.stderr.decode("utf-8", "replace"), where


def expect_rejected(tmp_path, policy_text, words, keys=False):
    rc, err, where = check(tmp_path, policy_text, keys)
    assert rc == 1, "exit %s; stderr:\n%s" % (rc, err)
    assert where and where in err, "expected a message at %s; stderr:\n%s" % (where, err)
    msg = err.split(where, 1)[1].splitlines()[0]
    for w in words:
        assert w in msg, "the message does not say %r:\n%s" % (w, msg)
    return msg


# ---------------------------------------------------------------- keep_only, coarsen, remove

def test_keep_only_in_response_blocks(fg, ranker):
    d = fg(ph.rank_policy(response_block="""\
      - bands: %s
        keep_only: [items.item_id, items.title, next_page_token]
""" % CHILDREN))
    req = ph.profiled_request()
    _, resp = send(ranker, d.addr, req, "13_15")
    _, adult = send(ranker, d.addr, req, "adult")
    got = parse("RankFeedResponse", resp)
    assert got.items, "the child got an empty feed"
    assert set(numbers(resp)) <= {1, 4}, "response fields %s" % numbers(resp)
    for f in ph.fields(resp):
        if f[0] == 1:
            assert set(numbers(f[2])) <= {1, 2} and 1 in numbers(f[2]), "an item keeps %s" % numbers(f[2])
    assert any(set(numbers(f[2])) - {1, 2} for f in ph.fields(adult) if f[0] == 1), \
        "precondition: the ranker's items carry more than id and title"


def test_coarsen_is_kept_by_keep_only(fg, ranker):
    d = fg(ph.rank_policy("""\
      - bands: %s
        keep_only: [page_size]
        coarsen:
          - {field: context.geo.latitude, precision: 0.1}
""" % CHILDREN))
    rec, _ = send(ranker, d.addr, ph.profiled_request(), "16_17")
    raw = rec["raw"]
    assert numbers(raw) == [2, 4], numbers(raw)
    assert numbers(at(raw, 2)) == [4] and numbers(at(raw, 2, 4)) == [1], parse("RankFeedRequest", raw)
    assert abs(parse("RankFeedRequest", raw).context.geo.latitude - 51.5) < 1e-9


def test_remove_of_what_keep_only_drops_is_an_error(tmp_path):
    expect_rejected(tmp_path, ph.rank_policy("""\
      - bands: %s
        keep_only: [user.user_id]
        remove: [@@context.geo.city]
""" % CHILDREN), ["keep_only does not keep 'context'", "removed already"])


# ---------------------------------------------------------------- rule_sets

RULE_SETS = ph.BANDS_HEADER + """\
rule_sets:
  child_request:
    - bands: %s
      keep_only: [user.age_band, context.locale, page_size]
      remove_headers: [x-device-id]
methods:
  %s:
    age_band: {header: x-age-band}
    request: child_request
  %s:
    age_band: {header: x-age-band}
    request: child_request
""" % (CHILDREN, RANK, STREAM)


def test_rule_set_shared_by_unary_and_streaming(fg, ranker):
    d = fg(RULE_SETS)
    body = ph.profiled_request().SerializeToString()
    rec, _ = send(ranker, d.addr, body, "13_15", [("x-device-id", "dev-1")])
    cid = ph.call_id("fmt")
    assert ph.stream(d.addr, STREAM, body, md("u13", cid, [("x-device-id", "dev-1")]))
    srec = ranker.wait(cid)
    for r in (rec, srec):
        assert numbers(r["raw"]) == [1, 2, 4], numbers(r["raw"])
        assert numbers(at(r["raw"], 1)) == [2] and numbers(at(r["raw"], 2)) == [2]
        assert "x-device-id" not in r["md"], r["metadata"]
    rec, _ = send(ranker, d.addr, body, "adult")
    assert rec["raw"] == body


def test_rule_set_errors_point_where_written(tmp_path):
    text = ph.BANDS_HEADER + """\
rule_sets:
  no_explanations:
    - bands: %s
      remove: [@@items.explanations]
methods:
  %s:
    age_band: {header: x-age-band}
    response: no_explanations
  %s:
    age_band: {header: x-age-band}
    response: no_explanations
""" % (CHILDREN, RANK, STREAM)
    expect_rejected(tmp_path, text, ["FeedItem has no field 'items'", "rule set 'no_explanations'",
                                     "compiled for %s response" % STREAM])
    expect_rejected(tmp_path, ph.rank_policy(extra_top="rule_sets: {kids: []}\n")
                    + "    request: @@kidz\n", ["no rule set named 'kidz'", "kids"])


# ---------------------------------------------------------------- user_id, pseudonym_keys, pseudonymize

PSEUDO = ph.BANDS_HEADER + """\
methods:
  %s:
    user_id: {field: user.user_id}
    age_band: {header: x-age-band}
    request:
      - bands: %s
        keep_only: [user.age_band, page_size]
        pseudonymize: [user.user_id]
""" % (RANK, CHILDREN)


def test_metrics_methods_typo_of_a_known_service_is_refused(tmp_path):
    """metrics.methods: a method of a service the policy's descriptor set
    defines must be one of its methods (a README-only trial's typo,
    /...Discovery/Pnig, passed -t and its calls counted as "other"); a
    service the set does not define (a health check) is the operator's to
    name.  The error is at the entry, file:line:column of the config."""
    ph.write_policy(tmp_path, ph.demo_policy_text())
    cfg = tmp_path / "check.yaml"
    base = ("listen: 127.0.0.1:0\nupstream:\n  address: 127.0.0.1:9\nadmin:\n  listen: \"off\"\n"
            "policy: policy.yaml\nmetrics:\n  methods:\n    - /grpc.health.v1.Health/Check\n    - %s\n")
    cfg.write_text(base % RANK)
    res = run_feedguardd(["-t", "-c", str(cfg)])
    assert res.returncode == 0, res.stderr
    typo = RANK + "e"
    cfg.write_text(base % typo)
    res = run_feedguardd(["-t", "-c", str(cfg)])
    err = res.stderr.decode("utf-8", "replace")
    service = RANK.split("/")[1]
    assert res.returncode == 1, err
    assert ("%s:10:7: metrics.methods: '%s': the policy's descriptor set has service %s but no such method "
            "(its methods: " % (cfg, typo, service)) in err, err
    assert RANK.split("/")[2] in err.split("its methods:")[1], err


def test_user_id_without_keys_is_fine(tmp_path):
    rc, err, _ = check(tmp_path, ph.demo_policy_text())
    assert rc == 0, err


def test_pseudonymize_needs_keys_and_user_id(tmp_path):
    at_list = PSEUDO.replace("pseudonymize: [", "pseudonymize: @@[")
    expect_rejected(tmp_path, at_list, ["pseudonymize needs pseudonym_keys", "check.yaml"])
    rc, err, _ = check(tmp_path, PSEUDO, keys=True)
    assert rc == 0, err
    expect_rejected(tmp_path, at_list.replace("    user_id: {field: user.user_id}\n", ""),
                    ["needs the method's user_id"], keys=True)
    expect_rejected(tmp_path, PSEUDO.replace("pseudonymize: [user.user_id]", "pseudonymize: [@@page_size]"),
                    ["string or bytes"], keys=True)


@pytest.mark.parametrize("source", ["field", "header"])
def test_pseudonymize_child_sees_pseudonym_adult_raw(fg, ranker, tmp_path, source):
    text = PSEUDO
    extra = []
    if source == "header":
        text = text.replace("user_id: {field: user.user_id}", "user_id: {header: x-user-id}")
        extra = [("x-user-id", RAW_ID)]
    d = fg(text, with_keys(tmp_path, {"admin": {"listen": "127.0.0.1:0"}}))
    body = ph.profiled_request(user_id=RAW_ID).SerializeToString()
    for band in CHILD_BANDS + ("banana",):
        rec, resp = send(ranker, d.addr, body, band, extra)
        assert RAW_ID.encode() not in rec["raw"], "band %s: the raw id reached the ranker" % band
        r = parse("RankFeedRequest", rec["raw"])
        assert r.user.user_id == pseudonym(RAW_ID), (band, r.user.user_id)
        assert numbers(rec["raw"]) == [1, 4] and r.user.age_band == "13_15" and r.page_size == 6
        assert parse("RankFeedResponse", resp).items
    rec, _ = send(ranker, d.addr, body, "adult", extra)
    assert rec["raw"] == body, "the adult's request was edited"
    _, text = ph.http_get(ph.admin_addr(d), "/metrics")
    assert ph.metric(text, "feedguard_policy_fields_stripped_total", field="request:user.user_id",
                     band="13_15") == 1


def test_pseudonymize_without_a_user_id_leaves_the_field_out(fg, ranker, tmp_path):
    """The user id comes from a header the call does not carry: nothing to
    hash, and the id field in the message must not pass as it came."""
    text = PSEUDO.replace("user_id: {field: user.user_id}", "user_id: {header: x-user-id}")
    d = fg(text, with_keys(tmp_path))
    body = ph.profiled_request(user_id=RAW_ID).SerializeToString()
    rec, _ = send(ranker, d.addr, body, "under_13")
    r = parse("RankFeedRequest", rec["raw"])
    assert RAW_ID.encode() not in rec["raw"] and r.user.user_id == "" and r.user.age_band == "13_15"


# ---------------------------------------------------------------- band matching

def test_band_values_match_exactly(fg, ranker):
    """Case matters and nothing is trimmed: only the exact bytes listed in
    a band's match select it; anything else is unknown_band."""
    d = fg(ph.rank_policy("""\
      - bands: %s
        remove: [signals]
""" % CHILDREN))
    body = ph.profiled_request().SerializeToString()
    rec, _ = send(ranker, d.addr, body, "adult")
    assert 3 in numbers(rec["raw"])
    for value in ("Adult", "ADULT", "adult."):
        rec, _ = send(ranker, d.addr, body, value)
        assert 3 not in numbers(rec["raw"]), "x-age-band %r selected the adult band" % value
    fd = fg(ph.rank_policy("""\
      - bands: %s
        remove: [signals]
""" % CHILDREN).replace("{header: x-age-band}", "{field: user.age_band}"))
    for value in (" adult", "adult ", "adult\t", "Adult"):
        rec, _ = send(ranker, fd.addr, ph.profiled_request(age_band=value).SerializeToString(), None)
        assert 3 not in numbers(rec["raw"]), "user.age_band %r selected the adult band" % value
    rec, _ = send(ranker, fd.addr, ph.profiled_request(age_band="adult").SerializeToString(), None)
    assert 3 in numbers(rec["raw"])


def test_band_header_with_surrounding_whitespace_is_refused(fg, ranker):
    """HTTP/2 forbids leading and trailing whitespace in a field value
    (RFC 9113 section 8.2.1): nghttp2 resets such a stream, so the call
    never reaches the ranker in any band."""
    d = fg(ph.rank_policy("""\
      - bands: %s
        remove: [signals]
""" % CHILDREN))
    body = ph.profiled_request().SerializeToString()
    c = RawClient(d.addr, timeout=tf(5))
    # python-h2 would strip the space before sending: send the value as is
    c.conn.config.normalize_outbound_headers = False
    c.conn.config.validate_outbound_headers = False
    try:
        cid = ph.call_id("fmt")
        sid = c.request(RANK, [("x-call-id", cid), ("x-age-band", "adult ")], [body])
        c.wait(lambda: c.streams[sid].finished, tf(5), "the stream's end")
        s = c.streams[sid]
        assert s.reset is not None, s.frames
    finally:
        c.close()
    assert not ranker.find(cid), "a call with x-age-band 'adult ' reached the ranker"
