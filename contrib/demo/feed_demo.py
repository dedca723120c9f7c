#!/usr/bin/python3
"""feedguard demo: a 14-year-old's and an adult's feed side by side.

Starts the demo ranker (contrib/demo-ranker, python3-grpcio), feedguardd in
front of it with policies/uk-children.yaml, and asks for the same feed twice
with the same rich behavioural profile: once as a 14-year-old (x-age-band:
13_15), once as an adult.  Prints what the ranker received for each and both
feeds: the child's without its harmful items (the ranker's moderation labels
say which), the adult's with them.

Usage: /usr/bin/python3 contrib/demo/feed_demo.py [--build DIR]
Everything runs on 127.0.0.1 with ports the kernel picks, in a temporary
directory, and is stopped by PID at the end.
"""
import argparse
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from demo_common import load_messages, stop_all, wait_for  # noqa: E402

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RANK = "/feedguard.ranking.v1.Ranker/RankFeed"


def profiled_request(Req):
    """One user with a rich behavioural profile, as a ranking client sends it."""
    r = Req()
    r.user.user_id = "user-8a41c2"
    r.user.age_band = "13_15"
    r.context.surface = 1
    r.context.locale = "en-GB"
    r.context.time_zone = "Europe/London"
    r.context.geo.latitude = 51.507351
    r.context.geo.longitude = -0.127758
    r.context.geo.accuracy_m = 12
    r.context.geo.city = "London"
    for item, ms in ((7, 340000), (19, 610000), (23, 95000)):
        w = r.signals.watch_history.add()
        w.item_id, w.watch_ms = item, ms
    e = r.signals.engagement_events.add()
    e.item_id, e.kind = 19, 1
    r.signals.inferred_interests.extend(["dieting", "gaming"])
    r.signals.search_history.extend(["how to lose weight fast"])
    r.signals.advertising_id = "ad-3f9e-11aa"
    r.signals.device_fingerprint = "fp-77d0"
    r.signals.social_graph.extend(["u-1", "u-2", "u-3"])
    r.signals.features["affinity.fitness"] = 0.9
    r.page_size = 10
    return r


# The ranker's labels that uk-children.yaml maps to a harm class.
HARM_LABELS = {"pornography", "suicide", "self_harm", "eating_disorder", "hate_abuse", "hate_incitement",
               "bullying", "violence", "violence_incitement", "animal_cruelty", "dangerous_challenge",
               "harmful_substances", "depression", "body_image", "gambling", "alcohol"}


def describe_feed(resp, report):
    lines = []
    for it in resp.items:
        why = it.explanations[0].reason if it.explanations else ""
        harm = [m.label for m in it.moderation if m.label in HARM_LABELS]
        lines.append("%-28s %s" % (it.title[:28], ("[%s] " % ",".join(harm) if harm else "") + why))
    lines.append("profile_segments: %s" % (", ".join(resp.profile_segments) or "(none)"))
    lines.append("x-feedguard-filter: %s" % (report or "-"))
    return lines


def describe_received(Req, rec):
    r = Req()
    r.ParseFromString(base64.b64decode(rec["request_b64"]))
    s = r.signals
    md = dict((k, v) for k, v in rec["metadata"])
    out = ["watch_history=%d engagement=%d interests=%d searches=%d" % (
        len(s.watch_history), len(s.engagement_events), len(s.inferred_interests), len(s.search_history)),
        "advertising_id=%s fingerprint=%s social_graph=%d" % (
        repr(s.advertising_id) if s.advertising_id else "-", repr(s.device_fingerprint) if s.device_fingerprint else "-",
        len(s.social_graph)),
        "geo=%.6f,%.6f city=%s" % (r.context.geo.latitude, r.context.geo.longitude, r.context.geo.city or "-"),
        "x-device-id header: %s" % md.get("x-device-id", "-")]
    return out


def side_by_side(title, left, right, width=60):
    print("\n" + title)
    print("%-*s | %s" % (width, "14-year-old (x-age-band: 13_15)", "adult (x-age-band: adult)"))
    print("-" * width + "-+-" + "-" * width)
    for i in range(max(len(left), len(right))):
        a = textwrap.shorten(left[i], width) if i < len(left) else ""
        b = textwrap.shorten(right[i], width) if i < len(right) else ""
        print("%-*s | %s" % (width, a, b))


def free_port():
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(TOP, "build"))
    args = ap.parse_args()
    fgd = os.path.join(args.build, "daemon", "feedguardd")
    pb = os.path.join(args.build, "proto", "ranking.pb")
    tmp = tempfile.mkdtemp(prefix="feedguard-demo-")
    procs = []
    try:
        shutil.copy(pb, os.path.join(tmp, "ranking.pb"))
        shutil.copy(os.path.join(TOP, "policies", "uk-children.yaml"), os.path.join(tmp, "policy.yaml"))
        with open(os.path.join(tmp, "demo.key"), "wb") as f:
            f.write(os.urandom(32))
        # The screen-time state: a local Redis of the demo's own.
        rport_redis = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(rport_redis), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", tmp],
                                 stdout=open(os.path.join(tmp, "redis.log"), "w"))
        procs.append(redis)
        wait_for(os.path.join(tmp, "redis.log"), r"Ready to accept connections", redis)
        rec = os.path.join(tmp, "ranker.jsonl")
        rlog = os.path.join(tmp, "ranker.out")
        ranker = subprocess.Popen([sys.executable, os.path.join(TOP, "contrib", "demo-ranker", "ranker.py"),
                                   "--descriptor-set", pb, "--record", rec],
                                  stdout=open(rlog, "w"), stderr=subprocess.DEVNULL)
        procs.append(ranker)
        rport = wait_for(rlog, r"PORT (\d+)", ranker).group(1)
        cfg = os.path.join(tmp, "feedguard.yaml")
        with open(cfg, "w") as f:
            f.write("listen: 127.0.0.1:0\nworkers: 1\nupstream:\n  address: 127.0.0.1:%s\n"
                    "admin:\n  listen: 127.0.0.1:0\npolicy: policy.yaml\n"
                    "pseudonym_keys:\n  - {id: demo, file: demo.key}\n"
                    "state:\n  redis: 127.0.0.1:%d\n" % (rport, rport_redis))
        flog = os.path.join(tmp, "feedguardd.log")
        fg = subprocess.Popen([fgd, "-c", cfg], stderr=open(flog, "w"))
        procs.append(fg)
        wait_for(flog, r"event=ready", fg)
        port = re.search(r"event=listening addr=127\.0\.0\.1:(\d+)", open(flog).read()).group(1)

        classes = load_messages(pb)
        Req, Resp = classes["RankFeedRequest"], classes["RankFeedResponse"]
        feeds, reports, screen = {}, {}, {}
        with grpc.insecure_channel("127.0.0.1:" + port) as ch:
            call = ch.unary_unary(RANK, request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=Resp.FromString)
            for band in ("13_15", "adult"):
                req = profiled_request(Req)
                req.user.age_band = band
                feeds[band], c = call.with_call(req, timeout=10,
                                                metadata=(("x-age-band", band), ("x-device-id", "dev-42")))
                md = dict(c.initial_metadata())
                reports[band] = md.get("x-feedguard-filter")
                screen[band] = (md.get("feedguard-screen-time"), md.get("feedguard-notice"))
        records = [json.loads(l) for l in open(rec)]
        print("\nfeedguard demo: the same user profile, the same ranker, two age bands.")
        print("The ranking client sent watch history, likes, inferred interests, searches, an")
        print("advertising id, a device fingerprint, a social graph and a precise location.")
        side_by_side("What the ranker received (through feedguardd)",
                     describe_received(Req, records[0]), describe_received(Req, records[1]))
        side_by_side("The feed that came back ([labels]: the ranker's harm labels)",
                     describe_feed(feeds["13_15"], reports["13_15"]), describe_feed(feeds["adult"], reports["adult"]))
        print("\nFor the 14-year-old, feedguardd passed only the allow-listed fields, rounded the")
        print("location to 0.1 degree, removed the profiling explanations from the feed, kept")
        print("harmful content out of it (primary priority and priority content excluded,")
        print("gambling and alcohol promotion dispersed) and asked the ranker for more items")
        print("so the page stays full.")
        used, notice = screen["13_15"]
        print("Its app was also told the day's feed time, kept per user in Redis under a keyed")
        print("HMAC of the user id (the adult's call carries none of it):")
        print("  feedguard-screen-time: %s%s\n" % (used, "   feedguard-notice: " + notice if notice else ""))
        return 0
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
