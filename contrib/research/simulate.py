#!/usr/bin/python3
"""Synthetic users' day of feed calls, for the research walk-through.

Drives N synthetic users of mixed age bands (under_13, 13_15, 16_17, adult)
through one simulated local day (Europe/London) against a feedguardd built
with --enable-test-hooks: every call is a RankFeed with x-age-band and
feedguard-test-now (ms since the epoch) set to the simulated time, so a day
passes in seconds of wall time.  Each user has a few sessions (early
morning, before school, lunch, after school, evening, late at night); a
session is a sequence of calls a simulated 30-60 s apart, paging with
page_token (back to the top at the end of the feed).  Light, medium and
heavy users; heavy ones and night owls run into the daily cap, breaks and
quiet hours.  A call the gate answers (an empty feed, or
RESOURCE_EXHAUSTED) ends the session, after a retry or two by persistent
users.

Usage: /usr/bin/python3 contrib/research/simulate.py --target HOST:PORT
           [--users 100] [--seed 1] [--day 2026-11-24] [--descriptor-set PB]
           [--parallel 8]

The same seed, users and day give the same calls (against a feedguardd
whose Redis starts empty).  User ids are stable: kid-007 is the same child
in every run; the users of a smaller --users are the first ones of a larger.
Prints one line per band: users, calls, statuses, empty answers, notices.
Exit status 0 when every call got an answer (whatever its status), 1 when
a call failed at the transport (the target could not be reached).
"""
import argparse
import collections
import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from zoneinfo import ZoneInfo

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, "contrib", "demo"))
from demo_common import load_messages  # noqa: E402

RANK = "/feedguard.ranking.v1.Ranker/RankFeed"
ZONE = "Europe/London"
BANDS = ("under_13", "13_15", "16_17", "adult")
# Bands of users 0, 1, 2, ... (repeating): 3 under_13, 3 13_15, 2 16_17 and
# 2 adults in every 10, and every band among the first 4.
BAND_CYCLE = ("under_13", "13_15", "16_17", "adult", "13_15", "under_13", "16_17", "13_15",
              "under_13", "adult")
NOTICES = ("daily-limit", "quiet-hours", "take-a-break", "exposure-limit", "daily-limit-soon",
           "quiet-hours-soon")
TOPICS = ("fitness", "dieting", "gaming", "music", "football", "cooking", "science", "fashion",
          "comedy", "travel", "wellbeing", "pets")
# Session windows, local time: (name, earliest start, latest start).
SLOTS = {"early": ("06:10", "06:40"), "morning": ("07:05", "07:45"), "lunch": ("12:20", "12:50"),
         "after_school": ("15:45", "17:30"), "evening": ("18:30", "20:40"),
         "late": ("21:20", "23:10")}
DAY_END = "23:58"            # sessions end before local midnight: one local day


def hhmm_ms(day, hhmm):
    h, m = map(int, hhmm.split(":"))
    return int(datetime(day.year, day.month, day.day, h, m, tzinfo=ZoneInfo(ZONE)).timestamp() * 1000)


class User:
    """One synthetic user: band, habits and the day's sessions, all drawn
    from a generator seeded with (seed, user id)."""

    def __init__(self, index, seed, day):
        self.band = BAND_CYCLE[index % len(BAND_CYCLE)]
        self.uid = "%s-%03d" % ("adult" if self.band == "adult" else "kid", index)
        rng = self.rng = random.Random("%s:%s" % (seed, self.uid))
        self.kind = rng.choices(("light", "medium", "heavy"), (45, 35, 20))[0]
        minutes = {"light": (10, 30), "medium": (30, 60), "heavy": (75, 150)}[self.kind]
        self.total_ms = int(rng.uniform(*minutes) * 60000)
        self.night_owl = rng.random() < (0.6 if self.kind == "heavy" else 0.2)
        self.early_bird = rng.random() < 0.1
        self.persistence = {"light": 0, "medium": 1, "heavy": 2}[self.kind]   # retries after a limit
        self.interests = rng.sample(TOPICS, 2)
        self.lat = 51.5 + rng.uniform(-0.2, 0.2)
        self.lon = -0.12 + rng.uniform(-0.3, 0.3)
        n = {"light": (1, 2), "medium": (2, 3), "heavy": (3, 4)}[self.kind]
        slots = rng.sample(("morning", "lunch", "after_school", "evening"), rng.randint(*n))
        if self.night_owl:
            slots.append("late")
        if self.early_bird:
            slots.append("early")
        weights = [rng.uniform(0.5, 1.5) for _ in slots]
        # Late sessions are where night owls spend their evening; a heavy
        # user has one long binge besides.
        weights = [w * (2.0 if s == "late" else 1.0) for s, w in zip(slots, weights)]
        if self.kind == "heavy":
            weights[rng.randrange(len(weights))] *= 3.0
        starts = []
        for s in slots:
            lo, hi = (hhmm_ms(day, t) for t in SLOTS[s])
            starts.append(rng.randint(lo, hi))
        order = sorted(range(len(slots)), key=lambda i: starts[i])
        self.sessions = []                        # (slot, start ms, planned length ms)
        end_of_day = hhmm_ms(day, DAY_END)
        prev_end = 0
        for i in order:
            start = max(starts[i], prev_end + rng.randint(8, 20) * 60000)
            length = int(self.total_ms * weights[i] / sum(weights))
            length = min(length, end_of_day - start)
            if length <= 0:
                continue
            self.sessions.append((slots[i], start, length))
            prev_end = start + length


class Tally:
    """Per band: users, calls, statuses, empty answers, notices."""

    def __init__(self):
        self.lock = threading.Lock()
        self.users = collections.Counter()
        self.calls = collections.Counter()
        self.status = collections.defaultdict(collections.Counter)
        self.empty = collections.Counter()
        self.notices = collections.defaultdict(collections.Counter)
        self.transport_errors = 0

    def add(self, band, code, empty, notices):
        with self.lock:
            self.calls[band] += 1
            self.status[band][code] += 1
            if empty:
                self.empty[band] += 1
            for n in notices:
                self.notices[band][n] += 1

    def lines(self):
        out = []
        for band in BANDS:
            if not self.users[band]:
                continue
            st = " ".join("%s %d" % (c, n) for c, n in sorted(self.status[band].items(),
                                                              key=lambda x: (-x[1], x[0])))
            nt = ", ".join("%s %d" % (n, self.notices[band][n]) for n in NOTICES if self.notices[band][n])
            out.append("%-8s users %3d  calls %5d  status: %s  empty %d  notices: %s" % (
                band, self.users[band], self.calls[band], st, self.empty[band], nt or "-"))
        return out


def request(msgs, user, page_token, watched):
    r = msgs["RankFeedRequest"]()
    r.user.user_id = user.uid
    r.user.age_band = user.band
    r.context.surface = 1
    r.context.locale = "en-GB"
    r.context.time_zone = ZONE
    r.context.geo.latitude = round(user.lat, 6)
    r.context.geo.longitude = round(user.lon, 6)
    r.context.geo.accuracy_m = 15
    # What a ranking client sends about a viewer: feedguard strips it from
    # children's requests; adults' reach the ranker, which personalises.
    r.signals.inferred_interests.extend(user.interests)
    r.signals.search_history.append("best %s videos" % user.interests[0])
    for item_id, ms in watched[-5:]:
        w = r.signals.watch_history.add()
        w.item_id, w.watch_ms = item_id, ms
    r.signals.advertising_id = "ad-" + user.uid
    r.page_size = 10
    if page_token:
        r.page_token = page_token
    return r


def run_user(call, msgs, user, tally, timeout):
    """The user's day, call after call in simulated time."""
    rng = user.rng
    for _slot, start, length in user.sessions:
        now, token, watched, retries = start, "", [], 0
        while now < start + length:
            md = (("x-age-band", user.band), ("feedguard-test-now", str(now)))
            try:
                resp, c = call.with_call(request(msgs, user, token, watched), metadata=md,
                                         timeout=timeout)
                code, head = "OK", dict(c.initial_metadata())
                items = list(resp.items)
            except grpc.RpcError as e:
                code = e.code().name
                head = dict(e.trailing_metadata() or ())
                items, resp = [], None
                if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED") and "feedguard-notice" not in head:
                    with tally.lock:
                        tally.transport_errors += 1
            notices = [n for n in head.get("feedguard-notice", "").split(",") if n]
            answered = resp is None or (not items and notices)     # denied, or an empty feed
            tally.add(user.band, code, resp is not None and not items, notices)
            if answered:
                if retries >= user.persistence:
                    break                         # the user gives up until the next session
                retries += 1
                now += rng.randint(60, 180) * 1000
                continue
            retries = 0
            token = resp.next_page_token          # "" at the end of the feed: back to the top
            watched += [(it.item_id, rng.randint(2000, 40000)) for it in items[:3]]
            now += rng.randint(30000, 60000)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True, help="feedguardd's address, HOST:PORT (test-hooks build)")
    ap.add_argument("--users", type=int, default=100, help="synthetic users (default 100)")
    ap.add_argument("--seed", default="1", help="seed of every choice (default 1)")
    ap.add_argument("--day", default="2026-11-24",
                    help="the simulated local day, YYYY-MM-DD (default 2026-11-24, a Tuesday in GMT)")
    ap.add_argument("--descriptor-set", metavar="PB",
                    default=os.environ.get("FG_RANKING_PB") or os.path.join(TOP, "build", "proto", "ranking.pb"),
                    help="ranking.pb of the build (default $FG_RANKING_PB, else build/proto/ranking.pb)")
    ap.add_argument("--parallel", type=int, default=8, help="users simulated at once (default 8)")
    ap.add_argument("--timeout", type=float, default=10.0, help="each call's deadline in s (default 10)")
    args = ap.parse_args()
    if args.users < 1 or args.parallel < 1:
        ap.error("--users and --parallel must be at least 1")
    try:
        day = date.fromisoformat(args.day)
    except ValueError:
        ap.error("--day: want YYYY-MM-DD, got %r" % args.day)
    msgs = load_messages(args.descriptor_set)
    users = [User(i, args.seed, day) for i in range(args.users)]
    tally = Tally()
    for u in users:
        tally.users[u.band] += 1
    t0 = time.monotonic()
    with grpc.insecure_channel(args.target) as ch:
        call = ch.unary_unary(RANK, request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=msgs["RankFeedResponse"].FromString)
        with ThreadPoolExecutor(args.parallel) as pool:
            for f in [pool.submit(run_user, call, msgs, u, tally, args.timeout) for u in users]:
                f.result()
    took = time.monotonic() - t0
    total = sum(tally.calls.values())
    print("simulated %s (%s): %d users, %d calls in %.1f s of wall time (%.0f calls/s)" % (
        args.day, ZONE, len(users), total, took, total / took if took else 0))
    for line in tally.lines():
        print(line)
    if tally.transport_errors:
        print("simulate: %d calls failed at the transport (is %s a running feedguardd?)"
              % (tally.transport_errors, args.target), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
