"""A crafted-feed ranker for the filter tests (test_filter.py).

FeedRanker is a grpcio server in the test's own process that answers any
method of any service generically (bytes in, bytes out): the test scripts,
per call id (x-call-id metadata), the response messages the ranker sends, so
a test decides exactly which items, labels and unknown fields a page holds.
It records every request's raw bytes and metadata (what feedguard let
through, e.g. the page_size an over-fetch raised), and can gzip a call's
responses.  No contract is built in: the reference contract's Ranker and a
contract written at test time are served alike.

Also here: wire-level builders of the reference contract's pages
(FeedItem, ModerationLabel, RankFeedResponse) and readers of what the client
got back.
"""
import threading
from concurrent import futures

import grpc

from harness import poll_until, tf
from policyhelp import SERVICE, f_float, f_len, f_varint, fields, one

STREAM_PAGES = "/%s/StreamPages" % SERVICE
# Server-streaming methods of the reference contract; every other method is
# served as unary unless the test names it.
REFERENCE_STREAMING = ("/%s/StreamFeed" % SERVICE, STREAM_PAGES)


class Script:
    """What the ranker answers to one call: <responses>, a list of messages
    (bytes) or a function of the request bytes returning one; unary methods
    send the first; <gzip> compresses them; <code> ends the call with that
    status instead (after the messages, on a stream); <initial> and
    <trailing> are metadata the ranker sends of its own."""

    def __init__(self, responses, gzip=False, code=None, initial=(), trailing=()):
        self.responses = responses
        self.gzip = gzip
        self.code = code
        self.initial = tuple(initial)
        self.trailing = tuple(trailing)

    def messages(self, raw):
        r = self.responses(raw) if callable(self.responses) else self.responses
        return [bytes(m) for m in r]


class FeedRanker:
    """In-process generic ranker.  ranker.script(cid, [msg, ...]) before the
    call; ranker.wait(cid) after it: {"method", "md" (dict of lists),
    "metadata" (list), "raw" (request bytes)}."""

    def __init__(self, streaming=REFERENCE_STREAMING, max_workers=8):
        self.streaming = set(streaming)
        self.scripts = {}
        self.records = []
        self.lock = threading.Lock()
        # calls served at once: a test of many open streams needs more
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
        self.server.add_generic_rpc_handlers((_Generic(self),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        assert self.port, "the feed ranker could not listen"
        self.addr = "127.0.0.1:%d" % self.port
        self.server.start()

    def script(self, cid, responses, gzip=False, code=None, initial=(), trailing=()):
        with self.lock:
            self.scripts[cid] = Script(responses, gzip, code, initial, trailing)
        return cid

    def _begin(self, method, raw, context):
        md = list(context.invocation_metadata())
        cid = next((v for k, v in md if k == "x-call-id"), None)
        rec = {"method": method, "metadata": md, "raw": bytes(raw), "md": {}}
        for k, v in md:
            rec["md"].setdefault(k, []).append(v)
        with self.lock:
            self.records.append(rec)
            s = self.scripts.get(cid)
        if s is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "feedranker: no feed scripted for call %r" % cid)
        if s.gzip:
            context.set_compression(grpc.Compression.Gzip)
        if s.initial:
            context.send_initial_metadata(s.initial)
        if s.trailing:
            context.set_trailing_metadata(s.trailing)
        return s

    def unary(self, method):
        def handle(raw, context):
            s = self._begin(method, raw, context)
            msgs = s.messages(raw)
            if s.code is not None:
                context.abort(s.code, "feedranker: scripted status")
            return msgs[0] if msgs else b""
        return handle

    def server_stream(self, method):
        def handle(raw, context):
            s = self._begin(method, raw, context)
            for m in s.messages(raw):
                yield m
            if s.code is not None:
                context.abort(s.code, "feedranker: scripted status")
        return handle

    def find(self, cid):
        with self.lock:
            return [r for r in self.records if ("x-call-id", cid) in r["metadata"]]

    def wait(self, cid, timeout=None):
        got = poll_until(lambda: self.find(cid), timeout or tf(5), "the feed ranker to receive call %s" % cid)
        assert len(got) == 1, "the ranker saw call %s %d times" % (cid, len(got))
        return got[0]

    def stop(self):
        self.server.stop(0).wait()


class _Generic(grpc.GenericRpcHandler):
    def __init__(self, ranker):
        self.ranker = ranker

    def service(self, details):
        m = details.method
        if m in self.ranker.streaming:
            return grpc.unary_stream_rpc_method_handler(self.ranker.server_stream(m))
        return grpc.unary_unary_rpc_method_handler(self.ranker.unary(m))


# ---------------------------------------------------------------- reference contract pages

def mod_label(label, confidence=None):
    """A ModerationLabel; <confidence> None: the field is absent."""
    out = f_len(1, label)
    if confidence is not None:
        out += f_float(2, confidence)
    return out


def item(item_id, labels=(), moderation=(), unknown=b"", title=None):
    """A FeedItem at the wire level: item_id, title, content_labels
    (<labels>), moderation (<moderation>: (label, confidence or None)
    pairs), then <unknown> (raw bytes, e.g. an unknown field 99)."""
    out = f_varint(1, item_id) + f_len(2, title if title is not None else "item %d" % item_id)
    for lab in labels:
        out += f_len(4, lab)
    for lab, conf in moderation:
        out += f_len(10, mod_label(lab, conf))
    return out + unknown


def page(items, head=b"", tail=b""):
    """A RankFeedResponse: <head> fields, the items (field 1) in order, <tail>."""
    return head + b"".join(f_len(1, it) for it in items) + tail


def page_items(resp, num=1):
    """The items (raw bytes of each field <num>) of response <resp>, in order."""
    return [f[2] for f in fields(resp) if f[0] == num]


def item_id(it):
    return one(it, 1)


def ids(items):
    return [item_id(it) for it in items]
