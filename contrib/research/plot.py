#!/usr/bin/python3
"""Plots of a `feedguard-replay run --calls` file: policy A against B.

Usage: /usr/bin/python3 contrib/research/plot.py CALLS.csv [CALLS.csv...] --out DIR
           [--format png|svg] [--label-a TEXT] [--label-b TEXT]
           [--combine NAME=CLASS,CLASS]...

Reads the calls file(s) (CSV, the columns of README "The calls file"; the
shards of one replay may be given together) and writes, with matplotlib
(python3-matplotlib, Agg backend):

  exposure-<band>.<fmt>  per age band, one panel per labelled class: the
                         distribution (ECDF) of items of that class shown per
                         user-day, A and B on the same axes.  --combine adds
                         a panel for the sum of several classes (an exposure
                         counter such as `wellbeing`: body_image + depression).
  notices.<fmt>          per band, calls answered empty or denied by the
                         screen-time gate, and calls told each notice, A and B.
  items.<fmt>            per band and class, items removed, demoted and
                         limited (over an exposure allowance), A and B.

A user-day is a user (capture pseudonym) on a UTC date with a call in the
band, as in the replay's summary (a call without a user id makes none); a
user-day with no item of a class shown counts as 0.  A file with one policy
(run with one -p) plots A alone.
"""
import argparse
import collections
import csv
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BAND_ORDER = ("under_13", "13_15", "16_17", "adult")
NOTICE_ORDER = ("daily-limit", "quiet-hours", "take-a-break", "exposure-limit", "daily-limit-soon",
                "quiet-hours-soon")
FATES = ("shown", "removed", "demoted", "limited", "surplus", "trimmed")
COLOURS = {"A": "#1f77b4", "B": "#ff7f0e"}
STYLES = {"A": "-", "B": "--"}


class Data:
    def __init__(self):
        self.policies = []
        self.calls = {}                     # (policy, call) -> dict of the call's columns
        self.user_days = collections.defaultdict(set)       # (policy, band) -> {(user, date)}
        self.shown = collections.Counter()  # (policy, band, class, user, date) -> items shown
        self.fates = collections.Counter()  # (policy, band, class, fate) -> items
        self.classes = collections.defaultdict(set)         # band -> labelled classes seen

    def read(self, path):
        with open(path, newline="") as f:
            rd = csv.DictReader(f)
            need = {"policy", "call", "date", "user_key", "band", "action", "notices", "class"} | set(FATES)
            missing = need - set(rd.fieldnames or ())
            if missing:
                sys.exit("plot: %s: not a feedguard-replay calls CSV (missing columns: %s)"
                         % (path, ", ".join(sorted(missing))))
            for row in rd:
                pol, band = row["policy"], row["band"]
                if pol not in self.policies:
                    self.policies.append(pol)
                # Shards are split by user: (policy, call, user) is one call.
                self.calls[(pol, row["call"], row["user_key"])] = row
                # a call with no user id has no user-day, as in the summary
                if row["user_key"]:
                    self.user_days[(pol, band)].add((row["user_key"], row["date"]))
                cls = row["class"]
                if not cls or cls == "-":   # a call with no items, or items of no class
                    continue
                self.classes[band].add(cls)
                self.shown[(pol, band, cls, row["user_key"], row["date"])] += int(row["shown"])
                for fate in FATES:
                    self.fates[(pol, band, cls, fate)] += int(row[fate])
        self.policies.sort()

    def bands(self):
        seen = {b for (_, b) in self.user_days}
        return [b for b in BAND_ORDER if b in seen] + sorted(seen - set(BAND_ORDER))

    def per_user_day(self, pol, band, classes):
        """Items of <classes> shown, one value per user-day of the band."""
        return sorted(sum(self.shown[(pol, band, c, u, d)] for c in classes)
                      for (u, d) in self.user_days[(pol, band)])


def percentile(values, q):
    """The nearest-rank percentile (what a reader can check by counting)."""
    if not values:
        return 0
    return values[max(0, math.ceil(q / 100.0 * len(values)) - 1)]


def ecdf(ax, values, label, pol):
    n = len(values)
    xs = [0] + values
    ys = [0] + [(i + 1) / n for i in range(n)]
    ax.step(xs, ys, where="post", color=COLOURS.get(pol), linestyle=STYLES.get(pol), linewidth=1.8,
            label="%s: p50 %d, p90 %d, max %d" % (label, percentile(values, 50), percentile(values, 90),
                                                  values[-1] if values else 0))


def grid(n, ncols):
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    return nrows, ncols


def save(fig, out, name, fmt, written):
    path = os.path.join(out, "%s.%s" % (name, fmt))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(path)


def plot_exposure(data, labels, combine, out, fmt, written):
    for band in data.bands():
        # Classes never shown under either policy (excluded) get no panel.
        shown = [c for c in sorted(data.classes[band])
                 if any(data.fates[(p, band, c, "shown")] for p in data.policies)]
        never = sorted(data.classes[band] - set(shown))
        panels = []
        for name, members in combine:
            if any(m in data.classes[band] for m in members):
                panels.append(("%s (%s)" % (name, " + ".join(members)), members))
        panels += [(c, [c]) for c in shown]
        if not panels:
            continue
        nrows, ncols = grid(len(panels), 4)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
        for ax, (title, members) in zip(axes.flat, panels):
            for pol in data.policies:
                ecdf(ax, data.per_user_day(pol, band, members), labels[pol], pol)
            ax.set_title(title)
            ax.set_xlabel("items shown per user-day")
            ax.set_ylabel("share of user-days (ECDF)")
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        days = len(data.user_days[(data.policies[0], band)])
        fig.suptitle("Band %s: items of each class shown per user-day (%d user-days)" % (band, days),
                     fontsize=13)
        if never:
            fig.text(0.5, -0.01, "never shown under %s: %s" % (" or ".join(labels[p] for p in data.policies),
                                                             ", ".join(never)),
                     ha="center", va="top", fontsize=9, color="dimgrey")
        fig.tight_layout()
        save(fig, out, "exposure-%s" % band, fmt, written)


def plot_notices(data, labels, out, fmt, written):
    bands = data.bands()
    counts = collections.Counter()          # (policy, band, category) -> calls
    for (pol, _, _), row in data.calls.items():
        band = row["band"]
        if row["action"] == "EMPTY":
            counts[(pol, band, "answered empty")] += 1
        elif row["action"] == "DENY":
            counts[(pol, band, "denied")] += 1
        for n in filter(None, row["notices"].split("|")):
            counts[(pol, band, n)] += 1
    cats = [c for c in ("answered empty", "denied") + NOTICE_ORDER if any(k[2] == c for k in counts)]
    cats += sorted({k[2] for k in counts} - set(cats))
    nrows, ncols = grid(len(bands), 2)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7.5 * ncols, 3.8 * nrows), squeeze=False)
    width = 0.8 / max(1, len(data.policies))
    for ax, band in zip(axes.flat, bands):
        ax.set_title("Band %s" % band)
        if not any(counts[(p, band, c)] for p in data.policies for c in cats):
            ax.text(0.5, 0.5, "no call answered or told a notice (no limits for this band?)",
                    ha="center", va="center", transform=ax.transAxes, color="grey")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        total = {pol: sum(1 for (p, _, _), r in data.calls.items() if p == pol and r["band"] == band)
                 for pol in data.policies}
        for i, pol in enumerate(data.policies):
            xs = [j + (i - (len(data.policies) - 1) / 2) * width for j in range(len(cats))]
            bars = ax.bar(xs, [counts[(pol, band, c)] for c in cats], width, color=COLOURS.get(pol),
                          label="%s (%d calls)" % (labels[pol], total[pol]))
            ax.bar_label(bars, fontsize=7, padding=1)
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels(cats, rotation=25, ha="right", fontsize=8)
        ax.set_ylabel("calls")
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(bands):]:
        ax.axis("off")
    fig.suptitle("Screen time: calls answered empty or denied, and calls told each notice", fontsize=13)
    fig.tight_layout()
    save(fig, out, "notices", fmt, written)


def plot_items(data, labels, out, fmt, written):
    fates = ("removed", "demoted", "limited")
    bands = [b for b in data.bands()
             if any(data.fates[(p, b, c, f)] for p in data.policies for c in data.classes[b] for f in fates)]
    if not bands:
        return
    fig, axes = plt.subplots(len(bands), len(fates), figsize=(5.2 * len(fates), 0.6 + 2.9 * len(bands)),
                             squeeze=False)
    height = 0.8 / max(1, len(data.policies))
    for r, band in enumerate(bands):
        for k, fate in enumerate(fates):
            ax = axes[r][k]
            classes = sorted(c for c in data.classes[band]
                             if any(data.fates[(p, band, c, fate)] for p in data.policies))
            ax.set_title("%s: items %s" % (band, fate), fontsize=10)
            if not classes:
                ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes, color="grey")
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            for i, pol in enumerate(data.policies):
                ys = [j + (i - (len(data.policies) - 1) / 2) * height for j in range(len(classes))]
                bars = ax.barh(ys, [data.fates[(pol, band, c, fate)] for c in classes], height,
                               color=COLOURS.get(pol), label=labels[pol])
                ax.bar_label(bars, fontsize=7, padding=2)
            ax.set_yticks(range(len(classes)))
            ax.set_yticklabels(classes, fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("items")
            ax.margins(x=0.2)
            ax.grid(axis="x", alpha=0.3)
            if r == 0 and k == 0:
                ax.legend(fontsize=8)
    fig.suptitle("Filter and exposure: items removed, demoted (shown lower) and limited "
                 "(over an exposure allowance), per class", fontsize=13)
    fig.tight_layout()
    save(fig, out, "items", fmt, written)


def print_combined(data, labels, name, members):
    """The sum of <members> per user-day, as the replay's summary gives a
    class's: percentiles over the band's user-days."""
    print("%s (%s): items shown per user-day" % (name, " + ".join(members)))
    print("%-10s %-16s %9s %5s %5s %5s %5s" % ("band", "policy", "user-days", "p50", "p90", "p99", "max"))
    for band in data.bands():
        if not any(m in data.classes[band] for m in members):
            continue
        for pol in data.policies:
            v = data.per_user_day(pol, band, members)
            print("%-10s %-16s %9d %5d %5d %5d %5d" % (band, labels[pol], len(v), percentile(v, 50),
                                                      percentile(v, 90), percentile(v, 99), v[-1] if v else 0))
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("calls", nargs="+", help="calls file(s) of feedguard-replay run --calls (CSV)")
    ap.add_argument("--out", required=True, help="directory for the plots (made if missing)")
    ap.add_argument("--format", choices=("png", "svg"), default="png")
    ap.add_argument("--label-a", default="A", help="legend of policy A (default A)")
    ap.add_argument("--label-b", default="B", help="legend of policy B (default B)")
    ap.add_argument("--combine", action="append", default=[], metavar="NAME=CLASS,CLASS",
                    help="also plot the sum of these classes per user-day (an exposure counter)")
    args = ap.parse_args()
    combine = []
    for spec in args.combine:
        name, _, members = spec.partition("=")
        if not name or not members:
            ap.error("--combine: want NAME=CLASS,CLASS, got %r" % spec)
        combine.append((name, members.split(",")))
    data = Data()
    for path in args.calls:
        data.read(path)
    if not data.calls:
        sys.exit("plot: no calls in %s" % ", ".join(args.calls))
    os.makedirs(args.out, exist_ok=True)
    labels = {"A": args.label_a, "B": args.label_b}
    written = []
    plot_exposure(data, labels, combine, args.out, args.format, written)
    plot_notices(data, labels, args.out, args.format, written)
    plot_items(data, labels, args.out, args.format, written)
    for name, members in combine:
        print_combined(data, labels, name, members)
    for p in written:
        print("wrote %s" % p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
