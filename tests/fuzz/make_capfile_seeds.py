#!/usr/bin/env python3
"""Write the seed corpus of fuzz_capfile into tests/fuzz/corpus/capfile/.

The framing is written here from capture.proto's description, not with
fg_capfile.c, so the seeds also check the C code against the format.
Run from anywhere; the files are checked in, rerun only to change them.
"""
import os
import struct
import zlib

HEADER = b"\x89FGCAP\r\n" + struct.pack("<II", 1, 0)
MAX_RECORD = 64 * 1024 * 1024


def frame(payload, length=None):
    n = len(payload) if length is None else length
    lb = struct.pack("<I", n)
    return lb + struct.pack("<I", zlib.crc32(lb + payload)) + payload


def payload(i, n):
    return bytes((k * 31 + i * 7 + 1) & 0xFF for k in range(n))


def flip(data, pos, bit=0):
    b = bytearray(data)
    b[pos] ^= 1 << bit
    return bytes(b)


# a FileInfo-shaped first record (field 1, writer "feedguardd 0.1.0") and calls
info = b"\x0a\x14\x08\x01\x12\x10feedguardd 0.1.0"
small = [info, b"", b"a", payload(3, 100)]
valid = HEADER + b"".join(frame(p) for p in small)
many = HEADER + b"".join(frame(payload(i, (i * 37) % 300)) for i in range(20))
offs = [len(HEADER)]
for p in small:
    offs.append(offs[-1] + 8 + len(p))

seeds = {
    "valid_header_only": HEADER,
    "valid_small": valid,
    "valid_many": many,
    "torn_cut_frame": valid[:-40],
    "torn_cut_header": valid[: offs[3] + 5],
    "torn_zero_tail": valid + bytes(40),
    "torn_last_crc": flip(valid, len(valid) - 3),
    "torn_short_file": HEADER[:11],
    "corrupt_crc_middle": flip(valid, offs[1] + 4, 3),
    "corrupt_length_over_max": valid[: offs[2]] + frame(b"xyz", MAX_RECORD + 1) + valid[offs[2]:],
    "corrupt_after_zeros": valid + bytes(30) + b"\x01",
    "bad_magic": b"\x89FGCAP\n" + valid[8:],
    "bad_version": HEADER[:8] + struct.pack("<I", 2) + valid[12:],
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "capfile")
os.makedirs(out, exist_ok=True)
for name, data in sorted(seeds.items()):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
