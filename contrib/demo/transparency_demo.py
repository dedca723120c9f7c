#!/usr/bin/python3
"""feedguard demo: a real gRPC client calling a real gRPC server, directly and
through feedguardd, side by side, so you can see that the proxy changes
nothing it is not told to change.

Until the demo ranker lands (next milestone), the server is the interop
suite's echo service (tests/interop/upstream.py, python3-grpcio).

Usage: /usr/bin/python3 contrib/demo/transparency_demo.py [--feedguardd PATH]
Everything it starts runs on 127.0.0.1 with ports the kernel picks, in a
temporary directory, and is stopped by PID when it ends.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from demo_common import stop_all, wait_for  # noqa: E402

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UPSTREAM = os.path.join(TOP, "tests", "interop", "upstream.py")


def call_all(target):
    """The same five calls against <target>; returns printable outcomes."""
    out = []
    with grpc.insecure_channel(target) as ch:
        unary = ch.unary_unary("/fgtest.Echo/Unary")
        resp, call = unary.with_call(b"hello, ranker", metadata=(("x-demo", "42"),), timeout=5)
        md = dict(call.initial_metadata())
        out.append(("unary + metadata", "%r, echo-x-demo=%s" % (resp, md.get("echo-x-demo"))))
        stream = ch.unary_stream("/fgtest.Echo/ServerStream")
        sizes = [len(m) for m in stream(b"", metadata=(("x-sizes", "3,1,4,1,5"),), timeout=5)]
        out.append(("server stream", "message sizes %s" % sizes))
        big = unary(b"x" * (1 << 20), timeout=10)
        out.append(("1 MiB message", "%d bytes back" % len(big)))
        try:
            unary(b"", metadata=(("x-status", "5"), ("x-message-bin", "no such feed: ünïcödé".encode())), timeout=5)
        except grpc.RpcError as e:
            out.append(("error status", "%s %r" % (e.code().name, e.details())))
        try:
            unary(b"", metadata=(("x-sleep-ms", "2000"),), timeout=0.2)
        except grpc.RpcError as e:
            out.append(("200ms deadline", e.code().name))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--feedguardd", default=os.path.join(TOP, "build", "daemon", "feedguardd"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="feedguard-demo-")
    procs = []
    try:
        up_log = os.path.join(tmp, "upstream.out")
        up = subprocess.Popen([sys.executable, UPSTREAM, "--events", os.path.join(tmp, "events.jsonl")],
                              stdout=open(up_log, "w"), stderr=subprocess.STDOUT)
        procs.append(up)
        up_port = wait_for(up_log, r"PORT (\d+)", up).group(1)
        cfg = os.path.join(tmp, "feedguard.yaml")
        with open(cfg, "w") as f:
            f.write("listen: 127.0.0.1:0\nworkers: 1\nupstream:\n  address: 127.0.0.1:%s\n"
                    "admin:\n  listen: 127.0.0.1:0\nmetrics:\n  methods: [/fgtest.Echo/Unary]\n" % up_port)
        fg_log = os.path.join(tmp, "feedguardd.log")
        fg = subprocess.Popen([args.feedguardd, "-c", cfg], stderr=open(fg_log, "w"))
        procs.append(fg)
        wait_for(fg_log, r"event=ready", fg)
        log = open(fg_log).read()
        fg_port = re.search(r"event=listening addr=127\.0\.0\.1:(\d+)", log).group(1)
        admin = re.search(r"event=admin_listening addr=(127\.0\.0\.1:\d+)", log).group(1)

        direct = call_all("127.0.0.1:" + up_port)
        proxied = call_all("127.0.0.1:" + fg_port)
        print("\nfeedguard demo: the same calls, direct and through feedguardd\n")
        w = max(len(r) for _, r in direct + proxied)
        print("%-18s %-*s  %s" % ("call", w, "direct to 127.0.0.1:" + up_port, "via feedguardd 127.0.0.1:" + fg_port))
        print("%-18s %-*s  %s" % ("-" * 18, w, "-" * w, "-" * w))
        for (name, d), (_, p) in zip(direct, proxied):
            print("%-18s %-*s  %s%s" % (name, w, d, p, "" if d == p else "   <-- DIFFERS"))
        metrics = urllib.request.urlopen("http://%s/metrics" % admin, timeout=5).read().decode()
        print("\nfrom http://%s/metrics:" % admin)
        for line in metrics.splitlines():
            if line.startswith("feedguard_calls_total"):
                print("  " + line)
        same = all(d == p for (_, d), (_, p) in zip(direct, proxied))
        print("\n%s\n" % ("every call came out exactly as it went in." if same else "DIFFERENCES found."))
        return 0 if same else 1
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
