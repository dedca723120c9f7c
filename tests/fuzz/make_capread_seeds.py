#!/usr/bin/env python3
"""Write the seed corpus of fuzz_capread into tests/fuzz/corpus/capread/.

Each seed is one Record (capture.proto) written by hand in the wire format:
calls whose delivered pages are given as DeliveredFrom references (format
version 2), flat and nested items paths, unchanged pages, and a few that the
reader must refuse (an item placed twice, a hole, a missing path).  Run from
anywhere; the files are checked in, rerun only to change them.
"""
import os


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def tag(n, wt):
    return varint(n << 3 | wt)


def ln(n, b):
    b = b.encode() if isinstance(b, str) else b
    return tag(n, 2) + varint(len(b)) + b


def vi(n, v):
    return tag(n, 0) + varint(v & 0xFFFFFFFFFFFFFFFF)


def item(msg, pos, dpos, cls=""):
    return ln(2, vi(1, msg) + vi(2, pos) + vi(3, dpos) + (ln(4, cls) if cls else b""))


def frm(delivered, upstream, reordered):
    return ln(17, vi(1, delivered) + vi(2, upstream) + (vi(3, 1) if reordered else b""))


def call(upstream, decisions, refs, path=(), delivered=None):
    c = b"".join(ln(10, u) for u in upstream)
    c += b"".join(ln(11, d) for d in (delivered if delivered is not None else [b""] * len(refs)))
    c += ln(15, b"".join(decisions)) if decisions else b""
    c += b"".join(refs)
    if path:
        c += ln(18, b"".join(varint(p) for p in path))
    return ln(2, c)


flat_items = [ln(1, ln(1, "e%d" % i) + ln(2, "x" * i)) for i in range(5)]
flat = b"".join(flat_items) + ln(2, "segment")
nested = ln(1, "trace") + ln(2, b"".join(ln(3, ln(1, "e%d" % i)) for i in range(6)) + ln(4, "cursor")) + ln(15, "z")
seeds = {
    "flat_reordered": call([flat], [item(0, 0, 1), item(0, 1, -1), item(0, 2, 0), item(0, 3, 2), item(0, 4, -1)],
                           [frm(0, 0, True)], path=[1]),
    "nested_reordered": call([nested], [item(0, i, d) for i, d in enumerate([0, 2, 1, -1, 3, -1])],
                             [frm(0, 0, True)], path=[2, 3]),
    "unchanged": call([flat, nested], [], [frm(0, 0, False), frm(1, 1, False)]),
    "two_pages": call([flat, nested], [item(0, 0, 0), item(1, 5, 0)], [frm(0, 0, True), frm(1, 1, True)],
                      path=[1]),
    "item_twice": call([flat], [item(0, 0, 0), item(0, 0, 1)], [frm(0, 0, True)], path=[1]),
    "hole": call([flat], [item(0, 0, 0), item(0, 1, 2)], [frm(0, 0, True)], path=[1]),
    "no_path": call([flat], [item(0, 0, 0)], [frm(0, 0, True)]),
    "written_out": call([flat], [], [frm(0, 0, False)], delivered=[b"abc"]),
    "out_of_range": call([flat], [], [frm(3, 7, False)]),
    "file_info": ln(1, vi(1, 2) + ln(2, "feedguardd 0.1.0")),
}
d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "capread")
os.makedirs(d, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
