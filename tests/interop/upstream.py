#!/usr/bin/python3
"""The interop suite's gRPC upstream: service fgtest.Echo on grpc.aio.

Run:   /usr/bin/python3 upstream.py --events FILE [--port N] [--host H]
Prints "PORT <n>" on stdout once it serves.  SIGTERM stops it; SIGKILL is fine
too (tests use it for "upstream killed mid-call").

No protoc: generic handlers with identity (bytes) serializers.

Methods (all take and return raw bytes):
  Unary         returns the request, or payload(x-response-size) if given
  ServerStream  sends x-sizes (comma list) or x-count messages of x-size bytes;
                message i is fgcommon.payload(size, seed=i).  Without either it
                sends the request back once.
  ClientStream  reads everything, returns JSON {"count","bytes","sha256","sizes"}
  Bidi          echoes each request as it arrives (or payload(x-sizes[i], i))

Request metadata that steers a call:
  x-call-id            id the events file uses for this call
  x-status, x-message, x-message-bin
                       end the call with that code (number or name) and
                       message (-bin: UTF-8 bytes, for any text)
  x-trailers-only      abort before sending anything (trailers-only response)
  x-sleep-ms           sleep that long before the body (after the headers)
  x-interval-ms        pause between server-stream messages
  x-wait-file, x-wait-timeout-ms
                       ServerStream: after message 1, wait for the file to exist
                       (or abort with FAILED_PRECONDITION at the timeout)
  x-barrier            "GROUP:N": wait until N calls of GROUP are in the
                       handler at once (x-barrier-timeout-ms, default 20000,
                       then FAILED_PRECONDITION)
  x-grpc-test-echo-initial / x-grpc-test-echo-trailing-bin
                       echoed under the same name (gRPC interop custom_metadata)

Every other request metadata entry (all of them, in order, duplicates kept)
is echoed back as "echo-<key>" in the initial metadata and again in the
trailing metadata.

Events file: JSON lines {"ev", "call", "t", ...}:
  start  {method, md: [[key, value]...] (-bin values as "b64:..."), time_remaining}
  recv   {n, bytes, sha256}      a request message (Unary/ClientStream/Bidi)
  sent   {n, bytes, total}       a response message was handed to gRPC
  done   {cancelled, outcome}    the handler ended: outcome "ok", "abort"
                                 (x-status, barrier...), "cancelled" (the
                                 client cancelled, reset or the deadline
                                 passed: grpc.aio cancels the handler task)
                                 or "error: ..."
"""
import argparse
import asyncio
import base64
import hashlib
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

from fgcommon import MAX_MESSAGE, SERVICE, payload  # noqa: E402

_events = None
_anon = 0
_barriers = {}


def log(ev, call, **kw):
    rec = {"ev": ev, "call": call, "t": time.time()}
    rec.update(kw)
    _events.write(json.dumps(rec) + "\n")
    _events.flush()


def _enc(key, value):
    if isinstance(value, bytes):
        return "b64:" + base64.b64encode(value).decode()
    return value


def _code(text):
    try:
        num = int(text)
        for c in grpc.StatusCode:
            if c.value[0] == num:
                return c
        raise ValueError("no status code %d" % num)
    except ValueError:
        return grpc.StatusCode[text.upper()]


class Call:
    """Per-RPC state: metadata, echo lists, event logging."""

    def __init__(self, ctx, name):
        global _anon
        self.ctx = ctx
        self.md = [(m[0], m[1]) for m in (ctx.invocation_metadata() or ())]
        cid = self.get("x-call-id")
        if cid is None:
            _anon += 1
            cid = "anon-%d" % _anon
        self.id = cid
        self.sent = 0
        self.sent_bytes = 0
        echo = [("echo-" + k, v) for k, v in self.md
                if not k.startswith(":") and not k.startswith("grpc-")]
        self.initial = list(echo)
        self.trailing = list(echo)
        for k, v in self.md:
            if k == "x-grpc-test-echo-initial":
                self.initial.append((k, v))
            elif k == "x-grpc-test-echo-trailing-bin":
                self.trailing.append((k, v))
        log("start", self.id, method=name,
            md=[[k, _enc(k, v)] for k, v in self.md],
            time_remaining=ctx.time_remaining())

    def get(self, key, default=None):
        for k, v in self.md:
            if k == key:
                return v
        return default

    def getint(self, key, default=0):
        v = self.get(key)
        return default if v is None else int(v)

    def sizes(self):
        v = self.get("x-sizes")
        if v is not None:
            return [int(x) for x in v.split(",") if x != ""]
        if self.get("x-count") is not None:
            return [self.getint("x-size")] * self.getint("x-count")
        return None

    def status(self):
        code = self.get("x-status")
        if code is None:
            return None, None
        msg = self.get("x-message-bin")
        if msg is not None:
            msg = msg.decode("utf-8")
        else:
            msg = self.get("x-message", "")
        return _code(code), msg

    async def begin(self):
        """Headers (or a trailers-only abort), barrier and sleep."""
        if self.get("x-trailers-only") is not None:
            code, msg = self.status()
            if code is None:
                code, msg = grpc.StatusCode.UNKNOWN, "x-trailers-only without x-status"
            await self.ctx.abort(code, msg, trailing_metadata=tuple(self.trailing))
        await self.ctx.send_initial_metadata(tuple(self.initial))
        barrier = self.get("x-barrier")
        if barrier is not None:
            await self._barrier(barrier)
        ms = self.getint("x-sleep-ms")
        if ms:
            await asyncio.sleep(ms / 1000.0)

    async def _barrier(self, spec):
        group, n = spec.rsplit(":", 1)
        n = int(n)
        state = _barriers.setdefault(group, {"count": 0, "event": asyncio.Event()})
        state["count"] += 1
        if state["count"] >= n:
            state["event"].set()
        timeout = self.getint("x-barrier-timeout-ms", 20000) / 1000.0
        try:
            await asyncio.wait_for(state["event"].wait(), timeout)
        except asyncio.TimeoutError:
            await self.ctx.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                 "barrier %s: only %d of %d calls arrived"
                                 % (group, state["count"], n))

    async def write(self, msg):
        await self.ctx.write(msg)
        self.sent += 1
        self.sent_bytes += len(msg)
        log("sent", self.id, n=self.sent, bytes=len(msg), total=self.sent_bytes)

    async def end(self):
        """Trailing metadata and the status asked for (OK by default)."""
        code, msg = self.status()
        if code is not None and code != grpc.StatusCode.OK:
            await self.ctx.abort(code, msg, trailing_metadata=tuple(self.trailing))
        self.ctx.set_trailing_metadata(tuple(self.trailing))
        if code is not None:
            self.ctx.set_code(code)
            self.ctx.set_details(msg)


async def _after_requests():
    """grpc.aio ends the request iterator (as at a half-close) first and
    cancels the handler task a moment later when the client cancelled:
    give that cancellation the chance to land here, so that it is logged."""
    await asyncio.sleep(0.05)


def _recv(call, n, req):
    log("recv", call.id, n=n, bytes=len(req), sha256=hashlib.sha256(req).hexdigest())


def handler(fn):
    """Run a handler and log its "done" event with how it ended."""
    async def run(arg, ctx):
        state = {}
        try:
            result = await fn(arg, ctx, state)
        except asyncio.CancelledError:
            _done(state, "cancelled")
            raise
        except grpc.aio.AbortError:
            _done(state, "abort")
            raise
        except BaseException as e:
            if type(e).__name__ == "ExecuteBatchError":
                # a write on an RPC the peer already ended (RST_STREAM,
                # deadline, lost connection): that is a cancellation too
                _done(state, "cancelled")
            else:
                _done(state, "error: %r" % (e,))
            raise
        _done(state, "ok")
        return result
    return run


def _done(state, outcome):
    call = state.get("call")
    if call is not None:
        log("done", call.id, cancelled=(outcome == "cancelled"), outcome=outcome)


@handler
async def unary(request, ctx, state):
    call = Call(ctx, "Unary")
    state["call"] = call
    _recv(call, 1, request)
    await call.begin()
    size = call.get("x-response-size")
    resp = payload(int(size)) if size is not None else request
    await call.end()
    call.sent = 1
    log("sent", call.id, n=1, bytes=len(resp), total=len(resp))
    return resp


@handler
async def server_stream(request, ctx, state):
    call = Call(ctx, "ServerStream")
    state["call"] = call
    _recv(call, 1, request)
    await call.begin()
    sizes = call.sizes()
    msgs = None
    if sizes is None:
        msgs = [request]
        sizes = [len(request)]
    interval = call.getint("x-interval-ms") / 1000.0
    wait_file = call.get("x-wait-file")
    for i, size in enumerate(sizes):
        if i > 0 and interval:
            await asyncio.sleep(interval)
        if i == 1 and wait_file is not None:
            limit = time.monotonic() + call.getint("x-wait-timeout-ms", 10000) / 1000.0
            while not os.path.exists(wait_file):
                if time.monotonic() > limit:
                    await ctx.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    "wait file %s never appeared" % wait_file)
                await asyncio.sleep(0.01)
            log("signal", call.id)
        await call.write(msgs[i] if msgs is not None else payload(size, seed=i))
    await call.end()


@handler
async def client_stream(request_iterator, ctx, state):
    call = Call(ctx, "ClientStream")
    state["call"] = call
    await call.begin()
    h = hashlib.sha256()
    count = total = 0
    sizes = []
    async for req in request_iterator:
        count += 1
        total += len(req)
        sizes.append(len(req))
        h.update(req)
        _recv(call, count, req)
    await _after_requests()
    await call.end()
    return json.dumps({"count": count, "bytes": total, "sha256": h.hexdigest(),
                       "sizes": sizes}).encode()


@handler
async def bidi(request_iterator, ctx, state):
    call = Call(ctx, "Bidi")
    state["call"] = call
    await call.begin()
    sizes = call.sizes()
    n = 0
    async for req in request_iterator:
        _recv(call, n + 1, req)
        if sizes is not None:
            resp = payload(sizes[n] if n < len(sizes) else 0, seed=n)
        else:
            resp = req
        n += 1
        await call.write(resp)
    await _after_requests()
    await call.end()


async def serve(host, port, max_streams=0):
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.so_reuseport", 0),
    ]
    if max_streams:
        # advertised as SETTINGS_MAX_CONCURRENT_STREAMS on every connection
        options.append(("grpc.max_concurrent_streams", max_streams))
    server = grpc.aio.server(options=options)
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    try:
        bound = server.add_insecure_port("%s:%d" % (host, port))
    except RuntimeError as e:
        print("upstream: cannot bind %s:%d: %s" % (host, port, e), file=sys.stderr)
        sys.exit(2)
    if not bound:
        print("upstream: cannot bind %s:%d" % (host, port), file=sys.stderr)
        sys.exit(2)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("PORT %d" % bound, flush=True)
    await stop.wait()
    await server.stop(0)


def main():
    global _events
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--events", required=True)
    ap.add_argument("--max-streams", type=int, default=0,
                    help="SETTINGS_MAX_CONCURRENT_STREAMS per connection (0: grpc's default)")
    args = ap.parse_args()
    _events = open(args.events, "a", encoding="utf-8")
    asyncio.run(serve(args.host, args.port, args.max_streams))


if __name__ == "__main__":
    main()
