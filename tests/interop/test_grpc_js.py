"""A second client implementation: @grpc/grpc-js (js/client.js) through the
target: unary, server streaming, metadata and status echo, an 8 MiB message."""
import base64
import json
import shutil
import subprocess

import pytest

from fgcommon import payload, sha256
from harness import HERE, new_call_id, tf

JS_DIR = HERE / "js"
UNICODE = "nicht gefunden: \u00fcn\u00efc\u00f6d\u00e9 \u2713 \u65e5\u672c"


def _b64(b):
    return "b64:" + base64.b64encode(b).decode()


def test_grpc_js_client(target, events):
    node = shutil.which("node") or "/usr/bin/node"
    if not (JS_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("tests/interop/js/node_modules is missing: run `npm ci` in "
                    "tests/interop/js (run.sh does it)", pytrace=False)
    prefix = new_call_id("js")
    res = subprocess.run([node, "client.js", target, prefix, str(int(tf(30) * 1000))],
                         cwd=JS_DIR, stdin=subprocess.DEVNULL, capture_output=True,
                         timeout=tf(60) + 30)
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")
    out = json.loads(res.stdout)

    u = out["unary"]
    assert (u["code"], u["resp"]) == (0, "hello from grpc-js")
    assert u["headers"]["echo-x-js"] == ["plain value"]
    assert u["headers"]["echo-x-js-bin"] == [_b64(bytes([0, 1, 2, 254, 255]))]
    assert u["trailers"]["echo-x-js"] == ["plain value"]
    assert u["trailers"]["echo-x-js-bin"] == [_b64(bytes([0, 1, 2, 254, 255]))]
    start = events.wait(prefix + "-unary", "start", tf(5))
    assert ["x-js-bin", _b64(bytes([0, 1, 2, 254, 255]))] in start["md"]

    s = out["stream"]
    assert s["code"] == 0, s["details"]
    assert s["sizes"] == [1000] * 5
    assert s["sha256"] == [sha256(payload(1000, seed=i)) for i in range(5)]

    st = out["status"]
    assert (st["code"], st["details"]) == (5, UNICODE)
    assert st["trailers"]["echo-x-status"] == ["5"]

    b = out["big"]
    assert b["code"] == 0, b["details"]
    assert b["req_len"] == b["resp_len"] == 8 * 1024 * 1024
    assert b["equal"] and b["resp_sha256"] == b["req_sha256"]
    recv = events.wait(prefix + "-big", "recv", tf(5))
    assert recv["sha256"] == b["req_sha256"]
