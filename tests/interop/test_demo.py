"""The README's demos run and show what they claim: the first quick-start
command ends in contrib/demo/feed_demo.py, so a broken demo is a broken
quick start."""
import os
import subprocess
import sys

import pytest

from harness import FEEDGUARDD, SRCDIR, tf

pytestmark = pytest.mark.proxy_only

BUILD = os.path.dirname(os.path.dirname(os.path.abspath(FEEDGUARDD)))


def run_demo(*args):
    res = subprocess.run([sys.executable] + list(args), capture_output=True, timeout=tf(120))
    out = res.stdout.decode("utf-8", "replace")
    assert res.returncode == 0, out + res.stderr.decode("utf-8", "replace")
    return out


def test_feed_demo_shows_child_stripped_and_adult_untouched():
    out = run_demo(str(SRCDIR / "contrib" / "demo" / "feed_demo.py"), "--build", BUILD)
    received = [l for l in out.splitlines() if l.startswith("watch_history=")]
    assert len(received) == 1, out
    child, adult = (side.strip() for side in received[0].split("|"))
    assert child.startswith("watch_history=0 engagement=0 interests=0 searches=0"), out
    assert adult.startswith("watch_history=3 engagement=1 interests=2 searches=1"), out
    geo = [l for l in out.splitlines() if l.startswith("geo=")][0]
    assert geo.split("|")[0].strip() == "geo=51.500000,-0.100000 city=-", out
    segments = [l for l in out.splitlines() if l.startswith("profile_segments:")][0]
    assert segments.split("|")[0].strip() == "profile_segments: (none)", out
    assert "because you" not in "\n".join(l.split("|")[0] for l in out.splitlines() if "|" in l), out
    # policies/uk-children.yaml's filter: the child's feed has no item the
    # ranker labelled with an excluded class, the adult's has some; both
    # pages are full (over-fetch).
    feed = out[out.index("The feed that came back"):].splitlines()[3:]
    rows = [l.split("|") for l in feed if "|" in l and not l.lstrip().startswith(("profile_segments", "x-feedguard"))]
    excluded = ("[self_harm", "[eating_disorder", "[violence", "self_harm]", "eating_disorder]", "violence]")
    child = [r[0] for r in rows if r[0].strip()]
    adult = [r[1] for r in rows if len(r) > 1 and r[1].strip()]
    assert len(child) == 10 and len(adult) == 10, out
    assert not any(x in c for c in child for x in excluded), out
    assert any(x in a for a in adult for x in excluded), out
    report = [l for l in out.splitlines() if l.startswith("x-feedguard-filter:")][0]
    assert report.split("|")[0].strip().startswith("x-feedguard-filter: removed="), out
    assert report.split("|")[1].strip() == "x-feedguard-filter: -", out


def test_transparency_demo_finds_no_difference():
    out = run_demo(str(SRCDIR / "contrib" / "demo" / "transparency_demo.py"), "--feedguardd", FEEDGUARDD)
    assert "every call came out exactly as it went in." in out, out
    assert "DIFFERS" not in out, out


def test_feed_demo_shows_the_childs_screen_time():
    """The demo's Redis holds the child's day: the app is told the minutes
    used and left of policies/uk-children.yaml's 60-minute cap."""
    out = run_demo(os.path.join(SRCDIR, "contrib", "demo", "feed_demo.py"), "--build", BUILD)
    line = [l for l in out.splitlines() if l.strip().startswith("feedguard-screen-time:")]
    assert line, out
    assert line[0].split()[1].startswith("used=0,left=60,session=0"), out
