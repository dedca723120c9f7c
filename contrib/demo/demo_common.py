"""What the demos (and contrib/bench) need: waiting for a process's
readiness line, stopping every process they started by PID, and the
reference contract's message classes."""
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time


def wait_for(path, pattern, proc, timeout=15.0):
    """The first match of <pattern> in file <path>, written by <proc>; exits
    the demo with the file's text if <proc> dies or <timeout> passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            m = re.search(pattern, open(path, errors="replace").read())
            if m:
                return m
        if proc.poll() is not None:
            sys.exit("demo: %s exited early:\n%s" % (" ".join(proc.args), open(path).read()))
        time.sleep(0.02)
    sys.exit("demo: timed out waiting for %r in %s" % (pattern, path))


def stop_all(procs):
    """SIGTERM each process (newest first), SIGKILL what does not exit in 10 s."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def load_messages(pb_path):
    """{name: class} for RankFeedRequest, RankFeedResponse and FeedItem, built
    from the descriptor set at <pb_path> by the demo ranker's own loader (no
    generated code anywhere)."""
    ranker_py = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "demo-ranker", "ranker.py")
    spec = importlib.util.spec_from_file_location("fg_demo_ranker", ranker_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load_messages(pb_path)
