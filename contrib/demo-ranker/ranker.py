#!/usr/bin/python3
"""feedguard's demo ranker: feedguard.ranking.v1.Ranker over a synthetic catalogue.

It plays the platform's ranking service in the demo and the tests: it
personalises with every behavioural signal it is sent, so what feedguard
strips shows in what it ranks, and it logs which signals reached it.

Run:  /usr/bin/python3 ranker.py [--port N] [--host H] [--descriptor-set PATH]
                                 [--record FILE] [--add-label ID:LABEL]...
                                 [--print-catalogue]
Prints "PORT <n>" on stdout once it serves.  SIGTERM or SIGINT stops it.

No generated code: the message classes are built at start from the
descriptor set (proto/ranking.pb of the build, made from
proto/feedguard/ranking/v1/ranking.proto), and the service is served with
generic handlers whose deserializers are the identity, so each handler gets
the request bytes exactly as they came off the wire, records them and parses
them itself.

Per call it writes one line to stderr naming which behavioural signals it
saw (counts, never values) and the geolocation precision it got.

--record FILE appends one JSON line per call:
    {"seq": n, "method": "/feedguard.ranking.v1.Ranker/RankFeed",
     "metadata": [[key, value], ...],     (as received; -bin values "b64:...")
     "request_b64": "..."}                 (the request message bytes)
so a test can assert what reached the ranker on the wire.

Everything is deterministic: the same request gives the same response.
"""
import argparse
import base64
import json
import os
import re
import signal
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVICE = "feedguard.ranking.v1.Ranker"
PKG = "feedguard.ranking.v1."
MODEL = "demo-ranker-1"
DEFAULT_PAGE = 10
STREAM_PAGES = 3
HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))

# (title, topic, content labels).  Ids are 1001.. in this order.  The labels
# are what a platform's classifiers would attach; self_harm, eating_disorder,
# violence, gambling and alcohol are the classes children's policies filter
# or demote.
CATALOGUE_ROWS = [
    ("Ten-minute HIIT", "fitness", []),
    ("Morning stretch routine", "fitness", []),
    ("Marathon training, week 1", "fitness", []),
    ("Extreme weight-cut challenge", "fitness", ["eating_disorder"]),
    ("Home kettlebell basics", "fitness", ["educational"]),
    ("Meal prep for the week", "dieting", []),
    ("What I eat in a day (800 kcal)", "dieting", ["eating_disorder"]),
    ("Sugar-free snacks", "dieting", []),
    ("I fasted for 72 hours", "dieting", ["eating_disorder"]),
    ("Reading food labels", "dieting", ["educational"]),
    ("Speedrun world record", "gaming", []),
    ("Loot box opening marathon", "gaming", ["gambling"]),
    ("Battle royale: top kills", "gaming", ["violence"]),
    ("Indie games you missed", "gaming", []),
    ("Building a gaming PC", "gaming", ["educational"]),
    ("Acoustic covers", "music", []),
    ("Lyrics that got me through dark times", "music", ["self_harm"]),
    ("Drum lesson for beginners", "music", ["educational"]),
    ("Festival highlights", "music", ["alcohol"]),
    ("Top 10 this week", "music", []),
    ("Goal of the month", "football", []),
    ("Stadium fights compilation", "football", ["violence"]),
    ("Betting tips for the weekend", "football", ["gambling"]),
    ("Skills tutorial: the step-over", "football", ["educational"]),
    ("Women's league highlights", "football", []),
    ("Five-minute pasta", "cooking", []),
    ("Cocktails at home", "cooking", ["alcohol"]),
    ("Knife skills", "cooking", ["educational"]),
    ("Baking sourdough", "cooking", []),
    ("Street food tour", "cooking", []),
    ("Black holes explained", "science", ["educational"]),
    ("Kitchen chemistry", "science", ["educational"]),
    ("Mars rover update", "science", []),
    ("Why the sky is blue", "science", ["educational"]),
    ("Experiments gone wrong", "science", ["violence"]),
    ("Thrift haul", "fashion", []),
    ("Capsule wardrobe", "fashion", []),
    ("Body-check outfit challenge", "fashion", ["eating_disorder"]),
    ("Sneaker restoration", "fashion", []),
    ("Red carpet looks", "fashion", []),
    ("Sketch: the group chat", "comedy", []),
    ("Stand-up in five minutes", "comedy", []),
    ("Prank gone too far", "comedy", ["violence"]),
    ("Pets being dramatic", "comedy", []),
    ("Office parody", "comedy", []),
    ("Europe by train on a budget", "travel", []),
    ("Hidden beaches", "travel", []),
    ("Party island nightlife", "travel", ["alcohol"]),
    ("Casino city weekend", "travel", ["gambling"]),
    ("Mountain hut hike", "travel", []),
    ("Breathing exercise before exams", "wellbeing", ["educational"]),
    ("Scars: my story", "wellbeing", ["self_harm"]),
    ("Sleep better tonight", "wellbeing", []),
    ("Journaling prompts", "wellbeing", []),
    ("When a friend is struggling", "wellbeing", ["educational"]),
    ("Puppy's first week", "pets", []),
    ("Cat meets cucumber", "pets", []),
    ("Parrot sings opera", "pets", []),
    ("Horse riding basics", "pets", ["educational"]),
    ("Rescue dog transformation", "pets", []),
]


def build_catalogue():
    """Items with a fixed popularity in [0, 1] (a multiplicative hash of the
    id: spread out, the same on every run)."""
    items = []
    for i, (title, topic, labels) in enumerate(CATALOGUE_ROWS):
        item_id = 1001 + i
        pop = ((item_id * 7919) % 101) / 100.0
        items.append({"id": item_id, "title": title, "topic": topic,
                      "labels": list(labels), "popularity": round(pop, 2)})
    return items


CATALOGUE = build_catalogue()
BY_ID = {it["id"]: it for it in CATALOGUE}
TOPICS = sorted({it["topic"] for it in CATALOGUE})
# Words in interests and searches that point at a topic.
TOPIC_WORDS = {t: {t} for t in TOPICS}
TOPIC_WORDS["fitness"] |= {"workout", "gym", "hiit", "running", "marathon", "weight"}
TOPIC_WORDS["dieting"] |= {"diet", "calories", "kcal", "fasting", "meal", "weight loss", "food"}
TOPIC_WORDS["gaming"] |= {"games", "game", "esports", "speedrun"}
TOPIC_WORDS["music"] |= {"songs", "lyrics", "guitar", "drums"}
TOPIC_WORDS["football"] |= {"soccer", "goals", "premier league", "betting"}
TOPIC_WORDS["cooking"] |= {"recipe", "recipes", "baking", "food"}
TOPIC_WORDS["science"] |= {"space", "physics", "chemistry"}
TOPIC_WORDS["fashion"] |= {"outfit", "clothes", "style"}
TOPIC_WORDS["comedy"] |= {"funny", "prank", "sketch"}
TOPIC_WORDS["travel"] |= {"beach", "holiday", "trip"}
TOPIC_WORDS["wellbeing"] |= {"mental health", "anxiety", "sleep", "sad"}
TOPIC_WORDS["pets"] |= {"dog", "dogs", "cat", "cats", "puppy"}

# Engagement kinds (Signals.EngagementEvent.Kind numbers) and their pull.
KIND_WEIGHT = {1: 0.8, 2: 1.0, 3: 0.6, 4: 0.9, 5: -0.5, 6: -2.0}
KIND_VERB = {1: "liked", 2: "shared", 3: "commented on", 4: "saved"}
KIND_REPORT = 6


def topics_in(text):
    """Topics <text> names: by whole word, or by phrase for multi-word entries."""
    text = text.lower()
    words = set(re.findall(r"[a-z0-9]+", text))
    return [t for t in TOPICS
            if any((w in text) if " " in w else (w in words) for w in TOPIC_WORDS[t])]


def default_descriptor_set():
    for path in (os.environ.get("FG_RANKING_PB"),
                 os.path.join(TOP, "proto", "ranking.pb"),
                 os.path.join(TOP, "build", "proto", "ranking.pb")):
        if path and os.path.isfile(path):
            return path
    return None


def load_messages(path):
    """The request/response classes, built from the descriptor set at <path>."""
    fds = descriptor_pb2.FileDescriptorSet()
    with open(path, "rb") as f:
        fds.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fdp in fds.file:        # protoc --include_imports lists dependencies first
        pool.Add(fdp)
    names = ("RankFeedRequest", "RankFeedResponse", "FeedItem")
    if hasattr(message_factory, "GetMessageClass"):        # protobuf >= 4.22
        return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(PKG + n)) for n in names}
    factory = message_factory.MessageFactory(pool)          # Debian 12: 4.21 (protoc 3.21)
    return {n: factory.GetPrototype(pool.FindMessageTypeByName(PKG + n)) for n in names}


def geo_precision(req):
    """How precise the location is: decimals of the coordinates and metres."""
    if not req.HasField("context") or not req.context.HasField("geo"):
        return "none"
    g = req.context.geo
    if g.latitude == 0 and g.longitude == 0:
        return "no coordinates, city=%s" % ("yes" if g.city else "no")
    dp = 0
    for dp in range(0, 8):
        if all(abs(v * 10 ** dp - round(v * 10 ** dp)) < 1e-6 for v in (g.latitude, g.longitude)):
            break
    metres = 111320.0 / 10 ** dp
    if metres < 1:
        size = "%.1fm" % metres
    elif metres < 1000:
        size = "%.0fm" % metres
    else:
        size = "%.0fkm" % (metres / 1000)
    return "%ddp (~%s), accuracy_m=%g, city=%s" % (dp, size, g.accuracy_m, "yes" if g.city else "no")


def signals_line(method, req):
    s = req.signals
    parts = ["watch_history=%d" % len(s.watch_history),
             "engagement_events=%d" % len(s.engagement_events),
             "inferred_interests=%d" % len(s.inferred_interests),
             "search_history=%d" % len(s.search_history),
             "advertising_id=%s" % ("yes" if s.advertising_id else "no"),
             "device_fingerprint=%s" % ("yes" if s.device_fingerprint else "no"),
             "social_graph=%d" % len(s.social_graph),
             "features=%d" % len(s.features),
             "recently_shown_ids=%d" % len(req.recently_shown_ids),
             "user_id=%s" % ("yes" if req.user.user_id else "no")]
    return "ranker: %s signals: %s; geo: %s" % (method.rsplit("/", 1)[-1], " ".join(parts),
                                                geo_precision(req))


class Profile:
    """What the signals say about the viewer, per topic."""

    def __init__(self, req):
        s = req.signals
        self.interest = {}      # topic -> [interest strings as sent]
        self.watch = {}         # topic -> minutes (capped per event)
        self.watched = {}       # topic -> (watch_ms, item) most watched item
        self.engage = {}        # topic -> weight
        self.engaged = {}       # topic -> (kind, item) strongest positive
        self.search = {}        # topic -> first query that named it
        self.features = {}      # topic -> affinity.<topic> value
        self.reported = set()
        self.watched_ids = set()
        for text in s.inferred_interests:
            for t in topics_in(text):
                self.interest.setdefault(t, []).append(text)
        for ev in s.watch_history:
            it = BY_ID.get(ev.item_id)
            if it is None:
                continue
            self.watched_ids.add(it["id"])
            t = it["topic"]
            self.watch[t] = self.watch.get(t, 0.0) + min(ev.watch_ms, 600000) / 60000.0
            if ev.watch_ms > self.watched.get(t, (-1, None))[0]:
                self.watched[t] = (ev.watch_ms, it)
        for ev in s.engagement_events:
            it = BY_ID.get(ev.item_id)
            if it is None:
                continue
            if ev.kind == KIND_REPORT:
                self.reported.add(it["id"])
            t = it["topic"]
            w = KIND_WEIGHT.get(ev.kind, 0.0)
            self.engage[t] = self.engage.get(t, 0.0) + w
            if w > 0 and w > KIND_WEIGHT.get(self.engaged.get(t, (0, None))[0], 0.0):
                self.engaged[t] = (ev.kind, it)
        for q in s.search_history:
            for t in topics_in(q):
                self.search.setdefault(t, q)
        for name in sorted(s.features):
            if name.startswith("affinity.") and name[9:] in TOPIC_WORDS:
                self.features[name[9:]] = s.features[name]
        self.social = min(len(s.social_graph), 20)
        self.any = bool(self.interest or self.watch or self.engage or self.search or
                        self.features or self.social)

    def components(self, it):
        t = it["topic"]
        c = {"popularity": 0.5 * it["popularity"]}
        if t in self.interest:
            c["interest"] = 1.0 * len(self.interest[t])
        if t in self.watch:
            c["watch"] = 0.3 * self.watch[t] - (0.3 if it["id"] in self.watched_ids else 0.0)
        if t in self.engage:
            c["engagement"] = self.engage[t]
        if t in self.search:
            c["search"] = 0.7
        if t in self.features:
            c["features"] = self.features[t]
        if self.social:
            c["social"] = 0.05 * self.social * it["popularity"]
        return c

    def explanations(self, it):
        t = it["topic"]
        out = []
        if t in self.watched and self.watched[t][1]["id"] != it["id"]:
            src = self.watched[t][1]
            out.append(("because you watched %s" % src["title"], src["id"]))
        if t in self.engaged and self.engaged[t][1]["id"] != it["id"]:
            kind, src = self.engaged[t]
            out.append(("because you %s %s" % (KIND_VERB[kind], src["title"]), src["id"]))
        if t in self.interest:
            out.append(("because you are interested in %s" % self.interest[t][0], 0))
        if t in self.search:
            out.append(("because you searched for \"%s\"" % self.search[t], 0))
        if not out:
            out.append(("popular right now", 0))
        return out

    def segments(self, req):
        totals = {}
        for t in TOPICS:
            totals[t] = (len(self.interest.get(t, [])) + 0.3 * self.watch.get(t, 0.0) +
                         self.engage.get(t, 0.0) + (0.7 if t in self.search else 0.0) +
                         self.features.get(t, 0.0))
        top = sorted((t for t in totals if totals[t] > 0), key=lambda t: (-totals[t], t))[:3]
        segs = ["%s_fan" % t for t in top]
        if sum(self.watch.values()) >= 30:
            segs.append("heavy_viewer")
        if req.signals.advertising_id:
            segs.append("ad_targetable")
        if self.social >= 10:
            segs.append("well_connected")
        if req.user.age_band:
            segs.append("age_%s" % req.user.age_band)
        return segs


def page_bounds(req, n):
    size = req.page_size if req.page_size > 0 else DEFAULT_PAGE
    size = min(size, n)
    which = req.WhichOneof("cursor")
    start = 0
    if which == "offset":
        start = max(0, req.offset)
    elif which == "page_token" and req.page_token.startswith("o") and req.page_token[1:].isdigit():
        start = int(req.page_token[1:])
    return start, min(start + size, n)


def rank(msgs, req):
    """(response, items): the ranked page for <req>."""
    prof = Profile(req)
    shown = set(req.recently_shown_ids)
    scored = []
    for it in CATALOGUE:
        if it["id"] in shown or it["id"] in prof.reported:
            continue
        c = prof.components(it)
        scored.append((-round(sum(c.values()), 9), it["id"], it, c))
    scored.sort(key=lambda x: (x[0], x[1]))
    start, end = page_bounds(req, len(scored))
    resp = msgs["RankFeedResponse"]()
    for neg, _, it, c in scored[start:end]:
        fi = resp.items.add()
        fi.item_id = it["id"]
        fi.title = it["title"]
        fi.topic = it["topic"]
        fi.score = -neg
        fi.content_labels.extend(it["labels"])
        # The same findings as a moderation pipeline reports them: each
        # label with its classifier's confidence, the topic among them.
        for label in it["labels"]:
            m = fi.moderation.add()
            m.label = label
            m.confidence = 0.6 + (it["id"] % 7) * 0.05
        m = fi.moderation.add()
        m.label = it["topic"]
        m.confidence = 0.95
        for reason, src in prof.explanations(it):
            ex = fi.explanations.add()
            ex.reason = reason
            ex.source_item_id = src
        fi.inferred_interest_labels.extend(prof.interest.get(it["topic"], []))
        for k in sorted(c):
            fi.feature_weights[k] = c[k]
        fi.debug_score = round(sum(v for k, v in c.items() if k != "popularity"), 9)
    resp.profile_segments.extend(prof.segments(req))
    resp.model_version = "%s/%s" % (MODEL, "personalised" if prof.any else "popularity")
    if end < len(scored):
        resp.next_page_token = "o%d" % end
    return resp


class Ranker:
    def __init__(self, msgs, record_path):
        self.msgs = msgs
        self.record = open(record_path, "a") if record_path else None
        self.lock = threading.Lock()
        self.seq = 0

    def _record(self, method, context, raw):
        if self.record is None:
            return
        md = []
        for key, value in context.invocation_metadata():
            if isinstance(value, bytes):
                value = "b64:" + base64.b64encode(value).decode()
            md.append([key, value])
        with self.lock:
            self.seq += 1
            line = {"seq": self.seq, "method": method, "metadata": md,
                    "request_b64": base64.b64encode(raw).decode()}
            self.record.write(json.dumps(line) + "\n")
            self.record.flush()

    def _request(self, method, raw, context):
        self._record(method, context, raw)
        req = self.msgs["RankFeedRequest"]()
        try:
            req.ParseFromString(raw)
        except Exception as e:  # noqa: BLE001 - any parse failure is the client's
            print("ranker: %s: bad request: %s" % (method, e), file=sys.stderr, flush=True)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request does not parse: %s" % e)
        print(signals_line(method, req), file=sys.stderr, flush=True)
        return req

    def rank_feed(self, raw, context):
        req = self._request("/%s/RankFeed" % SERVICE, raw, context)
        return rank(self.msgs, req).SerializeToString(deterministic=True)

    def stream_feed(self, raw, context):
        req = self._request("/%s/StreamFeed" % SERVICE, raw, context)
        for fi in rank(self.msgs, req).items:
            yield fi.SerializeToString(deterministic=True)

    def stream_pages(self, raw, context):
        """Up to STREAM_PAGES pages of the feed, each page_size items, from
        the request's cursor on."""
        req = self._request("/%s/StreamPages" % SERVICE, raw, context)
        for _ in range(STREAM_PAGES):
            page = rank(self.msgs, req)
            yield page.SerializeToString(deterministic=True)
            if not page.next_page_token:
                break
            req.page_token = page.next_page_token


def serve(args, msgs):
    ranker = Ranker(msgs, args.record)
    handlers = {
        # No (de)serializers: handlers get and return the bytes.
        "RankFeed": grpc.unary_unary_rpc_method_handler(ranker.rank_feed),
        "StreamFeed": grpc.unary_stream_rpc_method_handler(ranker.stream_feed),
        "StreamPages": grpc.unary_stream_rpc_method_handler(ranker.stream_pages),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("%s:%d" % (args.host, args.port))
    if port == 0:
        sys.exit("ranker: cannot listen on %s:%d" % (args.host, args.port))
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("PORT %d" % port, flush=True)
    print("ranker: serving %s on %s:%d (%d items)" % (SERVICE, args.host, port, len(CATALOGUE)),
          file=sys.stderr, flush=True)
    while not stop.wait(3600):
        pass
    server.stop(0).wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="port, 0 (default): any")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--descriptor-set", metavar="PATH", default=default_descriptor_set(),
                    help="descriptor set of ranking.proto (default: $FG_RANKING_PB, "
                         "else the build's proto/ranking.pb)")
    ap.add_argument("--record", metavar="FILE", help="append one JSON line per call")
    ap.add_argument("--add-label", metavar="ID:LABEL", action="append", default=[],
                    help="give catalogue item ID the label LABEL too (repeatable; the research "
                         "walk-through adds body_image and depression, which the catalogue lacks)")
    ap.add_argument("--print-catalogue", action="store_true",
                    help="print the catalogue as JSON lines and exit")
    args = ap.parse_args()
    for spec in args.add_label:
        item_id, _, label = spec.partition(":")
        if not item_id.isdigit() or int(item_id) not in BY_ID or not label:
            sys.exit("ranker: --add-label %r: want ID:LABEL with an id of the catalogue (%d..%d)"
                     % (spec, CATALOGUE[0]["id"], CATALOGUE[-1]["id"]))
        if label not in BY_ID[int(item_id)]["labels"]:
            BY_ID[int(item_id)]["labels"].append(label)
    if args.print_catalogue:
        for it in CATALOGUE:
            print(json.dumps(it))
        return
    if not args.descriptor_set:
        sys.exit("ranker: no proto/ranking.pb found; build feedguard (make) or pass --descriptor-set")
    try:
        msgs = load_messages(args.descriptor_set)
    except (OSError, KeyError, TypeError, ValueError) as e:
        sys.exit("ranker: cannot load %s: %s" % (args.descriptor_set, e))
    serve(args, msgs)


if __name__ == "__main__":
    main()
