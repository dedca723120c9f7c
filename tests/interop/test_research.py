"""The researcher's walk-through (README, "A researcher's walk-through") runs
end to end and shows what it claims: contrib/research/walkthrough.py with a
few users, against the build under test (a test-hooks build: the simulated
day needs feedguard-test-now), leaves the capture, calls.csv, summary.txt
and the plots, and the stricter policy B limits more than A."""
import os
import re
import subprocess
import sys

import pytest

from harness import FEEDGUARDD, SRCDIR, run_feedguard_replay, tf
from redisserver import RedisServer

pytestmark = pytest.mark.proxy_only

BUILD = os.path.dirname(os.path.dirname(os.path.abspath(FEEDGUARDD)))
USERS = 16          # 5 under_13, 5 13_15, 3 16_17, 3 adults (simulate.py's band cycle)


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    if not RedisServer.available():
        pytest.skip("redis-server is not installed (Debian: redis-server)")
    out = tmp_path_factory.mktemp("research") / "out"
    res = subprocess.run([sys.executable, str(SRCDIR / "contrib" / "research" / "walkthrough.py"),
                          "--build", BUILD, "--out", str(out), "--users", str(USERS)],
                         capture_output=True, timeout=tf(120))
    text = res.stdout.decode("utf-8", "replace")
    assert res.returncode == 0, text + res.stderr.decode("utf-8", "replace")
    return out, text


def table_rows(summary, header_start):
    """The rows of the summary table whose header line starts with <header_start>."""
    lines = summary.splitlines()
    i = next(n for n, l in enumerate(lines) if l.startswith(header_start))
    rows = []
    for l in lines[i + 1:]:
        if not l.strip() or l.startswith(("==", "feedguard-replay:")) or not re.match(r"^\S+\s+\S+", l):
            break
        rows.append(l.split())
    return rows


def test_walkthrough_leaves_capture_calls_summary_and_plots(walk):
    out, text = walk
    caps = [f for f in os.listdir(out / "capture") if f.endswith(".fgcap")]
    assert caps and not [f for f in os.listdir(out / "capture") if f.endswith(".open")], text
    summary = (out / "summary.txt").read_text()
    calls_simulated = int(re.search(r"(\d+) calls in [\d.]+ s of wall time", summary).group(1))
    # calls.csv: the documented columns, A and B for every call.
    lines = (out / "calls.csv").read_text().splitlines()
    assert lines[0] == ("policy,call,time_ms,date,user_key,band,method,status,answered,action,notices,"
                        "no_upstream,class,shown,removed,demoted,limited,surplus,trimmed"), lines[0]
    calls = {(l.split(",")[0], l.split(",")[1]) for l in lines[1:]}
    assert len(calls) == 2 * calls_simulated, (len(calls), calls_simulated)
    assert re.search(r"^calls: %d$" % calls_simulated, summary, re.M), summary
    # Every call was replayed under A by --check, and the line is in the summary.
    assert re.search(r"^check: %d calls, \d+ decided as recorded, \d+ otherwise$" % calls_simulated,
                     summary, re.M), summary
    for name in ("exposure-under_13", "exposure-13_15", "exposure-16_17", "notices", "items"):
        png = out / "plots" / ("%s.png" % name)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert png.stat().st_size > 10000, png


def test_stricter_policy_limits_more(walk):
    out, text = walk
    summary = (out / "summary.txt").read_text()
    items = table_rows(summary, "band              class")
    limited = {}
    for band, cls, pol, shown, removed, demoted, lim, surplus, trimmed, p50, p90, p99, mx in items:
        if cls in ("body_image", "depression"):
            limited[(band, pol)] = limited.get((band, pol), 0) + int(lim)
    for band in ("13_15", "16_17"):
        assert limited[(band, "B")] > limited[(band, "A")], (band, limited, summary)
    # plot.py's table of the wellbeing counter (body_image + depression):
    # A's allowance is 20 a day, B's 8.
    well = {}
    for m in re.finditer(r"^(13_15|16_17)\s+([AB]): \S+\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", summary, re.M):
        well[(m.group(1), m.group(2))] = [int(x) for x in m.groups()[2:]]   # user-days p50 p90 p99 max
    for band in ("13_15", "16_17"):
        a, b = well[(band, "A")], well[(band, "B")]
        assert b[4] == 8 and a[4] > 8 and a[4] <= 20, (band, a, b, summary)
        assert b[2] <= a[2], (band, a, b)
    # More daily-limit notices under B's 45-minute cap than A's 60.
    notices = table_rows(summary, "band              policy  notice")
    told = {(r[0], r[1]): int(r[3]) for r in notices if r[2] == "daily-limit"}
    assert sum(v for (_, p), v in told.items() if p == "B") > sum(v for (_, p), v in told.items() if p == "A"), \
        notices


def test_check_decides_every_call_as_recorded(walk):
    out, text = walk
    summary = (out / "summary.txt").read_text()
    m = re.search(r"^check: (\d+) calls, (\d+) decided as recorded, (\d+) otherwise$", summary, re.M)
    assert m and m.group(3) == "0", m.group(0) if m else summary


def calls_without_a_user(tmp_path):
    """A calls file (run --calls, CSV) of one band and class: users u1 (3
    items shown) and u2 (1), and a call without a user id (5)."""
    head = ("policy,call,time_ms,date,user_key,band,method,status,answered,action,notices,"
            "no_upstream,class,shown,removed,demoted,limited,surplus,trimmed")
    rows = [("1", "u1", 3), ("2", "u2", 1), ("3", "", 5)]
    csv = tmp_path / "calls.csv"
    csv.write_text(head + "\n" + "".join(
        "A,%s,1796000000000,2026-12-01,%s,13_15,/r.R/Feed,0,0,NONE,,0,body_image,%d,0,0,0,0,0\n"
        % (call, user, shown) for call, user, shown in rows))
    return csv


def test_summary_user_days_leave_out_calls_without_a_user(tmp_path):
    """The summary's exposure percentiles are over user-days, and a call
    without a user id belongs to none (README "The summary"): users u1 (3
    items) and u2 (1) and a call without a user (5 items) give the
    percentiles of [1, 3], while the class's total shown counts all 9."""
    csv = calls_without_a_user(tmp_path)
    res = run_feedguard_replay(["summary", str(csv)], timeout=tf(60))
    text = res.stdout.decode()
    assert res.returncode == 0, text + res.stderr.decode("utf-8", "replace")
    row = next(l.split() for l in text.splitlines() if l.startswith("13_15") and "body_image" in l)
    # band class policy shown removed demoted limited surplus trimmed p50 p90 p99 max
    assert row[3] == "9" and row[-4:] == ["1", "3", "3", "3"], text


def test_plot_user_days_leave_out_calls_without_a_user(tmp_path):
    """plot.py's user-days are the summary's: a call without a user id
    (empty user_key) makes none, so it neither adds a user-day of 0 nor
    counts its items for anybody."""
    csv = calls_without_a_user(tmp_path)
    res = subprocess.run(["/usr/bin/python3", str(SRCDIR / "contrib" / "research" / "plot.py"), str(csv),
                          "--out", str(tmp_path / "plots"), "--combine", "wb=body_image"],
                         capture_output=True, timeout=tf(60))
    text = res.stdout.decode()
    assert res.returncode == 0, text + res.stderr.decode("utf-8", "replace")
    row = next(l.split() for l in text.splitlines() if l.startswith("13_15"))
    # band policy user-days p50 p90 p99 max
    assert row[2:] == ["2", "1", "3", "3", "3"], text
