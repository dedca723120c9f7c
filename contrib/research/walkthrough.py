#!/usr/bin/python3
"""The researcher's walk-through: capture a synthetic day through
feedguardd, replay it under two policies, plot what changed.

Steps (README, "A researcher's walk-through"):
  1. writes policy A (policies/uk-children.yaml, as it is) and policy B (the
     same, stricter: the wellbeing exposure counter at 8 items a day instead
     of 20, and every daily cap at 45 minutes instead of 60) into OUT/policies;
  2. starts a local redis-server, the demo ranker (contrib/demo-ranker, with
     body_image and depression labels on four items) and feedguardd (a
     test-hooks build) with policy A and capture on: every user sampled, the
     x-age-band header kept;
  3. runs simulate.py: synthetic children and adults through one simulated
     day, against feedguardd;
  4. sends feedguardd SIGUSR1 (the capture file is closed), stops everything;
  5. feedguard-replay run -p A -p B --calls calls.csv: the summary table;
     feedguard-replay run -p A --check: the capture decided as recorded;
  6. plot.py calls.csv --out plots.

Usage: /usr/bin/python3 contrib/research/walkthrough.py [--out DIR] [--users N]
           [--seed S] [--day YYYY-MM-DD] [--build DIR]
(contrib/research/walkthrough.sh builds build-hooks/ first and runs this.)

Everything runs on 127.0.0.1 with ports the kernel picks; the processes it
starts are stopped by PID.  OUT (default ./research-out) keeps: capture/
(the capture files), calls.csv, summary.txt, plots/*.png, policies/ (A, B
and ranking.pb), run/ (feedguard.yaml and its keys), logs/.
"""
import argparse
import glob
import re
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, "contrib", "demo"))
from demo_common import stop_all, wait_for  # noqa: E402

# The demo catalogue has no body_image or depression item; these four get
# the label, so the wellbeing exposure counter has something to count.  A
# child's feed ranks by popularity alone (its profile is stripped), in pages
# of 15 fetched items: they are on its 1st page (rank 7, "Journaling
# prompts"), 3rd (rank 32, "Acoustic covers") and 4th (ranks 48 and 49,
# "Sugar-free snacks", "Red carpet looks").  The filter shows at most one
# non-designated item in ten, and none on a page left with fewer than ten.
EXTRA_LABELS = ("1054:depression", "1016:depression", "1008:body_image", "1040:body_image")

# Policy B: policies/uk-children.yaml with these replacements, each of
# which must match exactly this many times.
STRICTER = (
    ("per_day: 20, name: wellbeing", "per_day: 8, name: wellbeing", 1),
    ("daily: {cap: 60m,", "daily: {cap: 45m,", 2),
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step(msg):
    print("\n== %s" % msg, flush=True)


def run(cmd, out_path=None, ok=(0,)):
    """Run <cmd>; echo and keep its stdout (in <out_path> too); fail on an
    exit status not in <ok>."""
    print("$ " + " ".join(os.path.relpath(c) if os.path.isabs(c) and c.startswith(os.getcwd()) else c
                          for c in cmd), flush=True)
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = res.stdout.decode("utf-8", "replace")
    err = res.stderr.decode("utf-8", "replace")
    if out_path:
        with open(out_path, "w") as f:
            f.write(out)
    if res.returncode not in ok:
        sys.stdout.write(out)
        sys.exit("walkthrough: %s exited %d:\n%s" % (cmd[0], res.returncode, err))
    return out, err


def write_policies(pdir, pb):
    os.makedirs(pdir, exist_ok=True)
    shutil.copy(pb, os.path.join(pdir, "ranking.pb"))
    text = open(os.path.join(TOP, "policies", "uk-children.yaml")).read()
    a = os.path.join(pdir, "uk-children.yaml")
    with open(a, "w") as f:
        f.write(text)
    for old, new, n in STRICTER:
        if text.count(old) != n:
            sys.exit("walkthrough: policies/uk-children.yaml has %d times %r, expected %d: "
                     "update STRICTER in %s" % (text.count(old), old, n, __file__))
        text = text.replace(old, new)
    b = os.path.join(pdir, "uk-children-strict.yaml")
    with open(b, "w") as f:
        f.write("# Written by contrib/research/walkthrough.py: policies/uk-children.yaml with\n"
                "# the wellbeing exposure counter at 8 items a day (not 20) and the daily\n"
                "# caps at 45 minutes (not 60).\n" + text)
    return a, b


def check_build(build):
    fgd = os.path.join(build, "daemon", "feedguardd")
    replay = os.path.join(build, "daemon", "feedguard-replay")
    pb = os.path.join(build, "proto", "ranking.pb")
    for p in (fgd, replay, pb):
        if not os.path.exists(p):
            sys.exit("walkthrough: %s is missing: build with --enable-test-hooks first "
                     "(contrib/research/walkthrough.sh does)" % p)
    v = subprocess.run([fgd, "-v"], capture_output=True, text=True).stdout
    if "test hooks: ON" not in v:
        sys.exit("walkthrough: %s is not a test-hooks build (configure --enable-test-hooks): "
                 "it would ignore the simulated clock" % fgd)
    return fgd, replay, pb


def capture_day(args, fgd, pb, policy_a, out, logs):
    """Steps 2 to 4: the simulated day through feedguardd, captured."""
    cap = os.path.join(out, "capture")
    os.makedirs(cap)
    keys = os.path.join(out, "run")
    os.makedirs(keys, exist_ok=True)
    for name in ("pseudonym.key", "capture.key"):
        with open(os.path.join(keys, name), "wb") as f:
            f.write(os.urandom(32))
    procs = []
    try:
        rport = free_port()
        redis_log = os.path.join(logs, "redis.log")
        redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", keys],
                                 stdout=open(redis_log, "w"), stderr=subprocess.STDOUT)
        procs.append(redis)
        wait_for(redis_log, r"Ready to accept connections", redis)
        ranker_out = os.path.join(logs, "ranker.out")
        cmd = [sys.executable, os.path.join(TOP, "contrib", "demo-ranker", "ranker.py"),
               "--descriptor-set", pb]
        for spec in EXTRA_LABELS:
            cmd += ["--add-label", spec]
        ranker = subprocess.Popen(cmd, stdout=open(ranker_out, "w"), stderr=subprocess.DEVNULL)
        procs.append(ranker)
        port = wait_for(ranker_out, r"PORT (\d+)", ranker).group(1)
        cfg = os.path.join(keys, "feedguard.yaml")
        with open(cfg, "w") as f:
            f.write("""listen: 127.0.0.1:0
workers: 1
upstream:
  address: 127.0.0.1:%(port)s
admin:
  listen: 127.0.0.1:0
policy: %(policy)s
pseudonym_keys:
  - {id: walk, file: %(keys)s/pseudonym.key}
state:
  redis: 127.0.0.1:%(rport)d
  timeout: 1s                 # a busy 2-core VM: no call fails open on a slow Redis
  stall_timeout: 2s
capture:
  directory: %(cap)s
  key: {id: walk-cap, file: %(keys)s/capture.key}
  sample: 1                   # every user
  max_age: off                # keep the walk-through's files until you delete them
  metadata: [x-age-band]      # so feedguard-replay live can band the calls
""" % {"port": port, "policy": policy_a, "keys": keys, "rport": rport, "cap": cap})
        flog = os.path.join(logs, "feedguardd.log")
        fg = subprocess.Popen([fgd, "-c", cfg], stderr=open(flog, "w"))
        procs.append(fg)
        wait_for(flog, r"event=ready", fg)
        fport = re.search(r"event=listening addr=127\.0\.0\.1:(\d+)", open(flog).read()).group(1)
        print("redis-server pid %d, demo ranker pid %d (:%s), feedguardd pid %d (:%s), capture in %s"
              % (redis.pid, ranker.pid, port, fg.pid, fport, os.path.relpath(cap)), flush=True)

        step("3. the simulated day: %d users through feedguardd" % args.users)
        t0 = time.monotonic()
        sim, _ = run([sys.executable, os.path.join(HERE, "simulate.py"), "--target", "127.0.0.1:" + fport,
                      "--users", str(args.users), "--seed", args.seed, "--day", args.day,
                      "--descriptor-set", pb], os.path.join(logs, "simulate.txt"))
        sys.stdout.write(sim)
        sim_s = time.monotonic() - t0

        step("4. SIGUSR1 (close the capture file), stop feedguardd, the ranker and Redis")
        m = re.search(r'event=admin_listening\b.*?\baddr="?([0-9.]+:\d+)', open(flog).read())
        if m:       # the daemon's own counts, to set beside the capture's
            with urllib.request.urlopen("http://%s/metrics" % m.group(1), timeout=10) as r, \
                    open(os.path.join(logs, "metrics.txt"), "wb") as f:
                f.write(r.read())
        fg.send_signal(signal.SIGUSR1)
        deadline = time.time() + 10
        while time.time() < deadline and not glob.glob(os.path.join(cap, "*.fgcap")):
            time.sleep(0.05)
    finally:
        stop_all(procs)
    if glob.glob(os.path.join(cap, "*.open")):
        sys.exit("walkthrough: feedguardd left capture files open: %s" % glob.glob(os.path.join(cap, "*.open")))
    files = sorted(glob.glob(os.path.join(cap, "*.fgcap")))
    size = sum(os.path.getsize(f) for f in files)
    print("capture: %d files, %.1f MB" % (len(files), size / 1e6))
    return files, sim, sim_s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="research-out", help="output directory (default ./research-out)")
    ap.add_argument("--users", type=int, default=100, help="synthetic users (default 100)")
    ap.add_argument("--seed", default="1", help="simulate.py's seed (default 1)")
    ap.add_argument("--day", default="2026-11-24", help="the simulated day (default 2026-11-24)")
    ap.add_argument("--build", default=os.path.join(TOP, "build-hooks"),
                    help="a build configured with --enable-test-hooks (default build-hooks/)")
    ap.add_argument("--format", choices=("png", "svg"), default="png", help="of the plots (default png)")
    args = ap.parse_args()
    t_start = time.monotonic()
    fgd, replay, pb = check_build(os.path.abspath(args.build))
    out = os.path.abspath(args.out)
    # A previous run's outputs go; nothing else in OUT is touched.
    for sub in ("capture", "plots", "policies", "logs", "run"):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    for name in ("calls.csv", "summary.txt"):
        if os.path.exists(os.path.join(out, name)):
            os.unlink(os.path.join(out, name))
    logs = os.path.join(out, "logs")
    os.makedirs(logs)

    step("1. policies: A = uk-children.yaml, B = uk-children-strict.yaml")
    policy_a, policy_b = write_policies(os.path.join(out, "policies"), pb)
    print("A: %s\nB: %s (wellbeing exposure 8/day instead of 20, daily caps 45m instead of 60m)"
          % (os.path.relpath(policy_a), os.path.relpath(policy_b)))

    step("2. redis-server, the demo ranker and feedguardd (%s) with policy A, capture on"
         % os.path.relpath(fgd))
    files, sim, sim_s = capture_day(args, fgd, pb, policy_a, out, logs)

    step("5. replay the capture under A and B, and check A against the recording")
    calls = os.path.join(out, "calls.csv")
    t0 = time.monotonic()
    summary, err = run([replay, "run", "-p", policy_a, "-p", policy_b, "--calls", calls, "--no-progress"]
                       + files)
    replay_s = time.monotonic() - t0
    sys.stdout.write(summary)
    if err.strip():
        sys.stdout.write(err)
    check, check_err = run([replay, "run", "-p", policy_a, "--check", "--no-progress"] + files, ok=(0, 1))
    check_line = [l for l in (check + check_err).splitlines() if l.startswith("check:")]
    print("\n".join(check_line) or "(no check: line)")
    differ = [l for l in check_err.splitlines() if not l.startswith("check:")]
    if differ:
        print("\n".join(differ[:12]))

    step("6. plots")
    t0 = time.monotonic()
    plots, _ = run([sys.executable, os.path.join(HERE, "plot.py"), calls, "--out", os.path.join(out, "plots"),
                    "--format", args.format, "--label-a", "A: uk-children", "--label-b", "B: stricter",
                    "--combine", "wellbeing=body_image,depression"])
    sys.stdout.write(plots)
    plot_s = time.monotonic() - t0

    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write("feedguard research walk-through: %d users, seed %s, day %s (Europe/London)\n"
                "A: %s\nB: %s\n\n" % (args.users, args.seed, args.day, policy_a, policy_b))
        f.write("== what the synthetic clients saw, through feedguardd under A (simulate.py)\n" + sim)
        f.write("\n== feedguard-replay run -p A -p B --calls calls.csv\n" + summary)
        if err.strip():
            f.write(err)
        f.write("\n== feedguard-replay run -p A --check\n%s\n" % "\n".join(check_line + differ[:12]))
        f.write("\n== plot.py: the wellbeing exposure counter (body_image + depression together)\n")
        f.write("".join(l + "\n" for l in plots.splitlines() if not l.startswith("wrote ")))

    step("done in %.0f s (simulated day %.0f s, replay %.1f s, plots %.0f s); in %s:"
         % (time.monotonic() - t_start, sim_s, replay_s, plot_s, os.path.relpath(out)))
    print("  summary.txt  calls.csv  capture/ (%d files)  plots/ (%d files)  policies/  run/  logs/"
          % (len(files), len(os.listdir(os.path.join(out, "plots")))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
