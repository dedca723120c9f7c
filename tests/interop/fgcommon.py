"""Helpers shared by the test upstream (upstream.py) and the tests.

Kept free of grpc imports so that upstream.py, the tests and the raw HTTP/2
helpers can all use it.
"""
import hashlib
import struct

SERVICE = "fgtest.Echo"

# Large enough for every message the suite sends (the biggest is 20 MiB).
MAX_MESSAGE = 64 * 1024 * 1024

MiB = 1024 * 1024
KiB = 1024

_PERIOD = 251  # prime, so that message boundaries never line up with the pattern
_PATTERN = bytes((i * 31 + 7) & 0xFF for i in range(_PERIOD))


def method(name):
    """Full gRPC path of a method of the Echo service, e.g. /fgtest.Echo/Unary."""
    return "/%s/%s" % (SERVICE, name)


def payload(size, seed=0):
    """Deterministic bytes of length <size>; a different <seed> shifts the
    pattern, so message i of a stream (seed=i) differs from its neighbours."""
    if size <= 0:
        return b""
    start = seed % _PERIOD
    reps = (size + start) // _PERIOD + 1
    return (_PATTERN * reps)[start:start + size]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def grpc_frame(message, compressed=False):
    """One gRPC length-prefixed message (as it travels in HTTP/2 DATA)."""
    return struct.pack(">BI", 1 if compressed else 0, len(message)) + message


def grpc_unframe(buf):
    """Split <buf> into complete gRPC messages; returns (messages, rest)."""
    out = []
    while len(buf) >= 5:
        _flag, length = struct.unpack(">BI", buf[:5])
        if len(buf) < 5 + length:
            break
        out.append(buf[5:5 + length])
        buf = buf[5 + length:]
    return out, buf


def grpc_timeout_header(seconds):
    """grpc-timeout value for <seconds> (at most 8 digits, unit m = ms)."""
    return "%dm" % int(round(seconds * 1000))
