#!/usr/bin/python3
# pbjson_vectors.py - the python3-protobuf (3.21) vectors of test_pbjson.c:
# for each case, the message's wire bytes (hex) and what json_format makes
# of them, compact:
#     json.dumps(MessageToDict(m, preserving_proto_field_name=True),
#                separators=(",", ":"), ensure_ascii=False)
# which is MessageToJson(m, preserving_proto_field_name=True, indent=None,
# ensure_ascii=False) with bare separators (MessageToJson is that
# json.dumps of that dict).  Run from the build directory, after make:
#     /usr/bin/python3 ../tests/unit/pbjson_vectors.py
import json
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf import duration_pb2, timestamp_pb2  # noqa: F401 (registers them)


def load(path):
    pool = descriptor_pool.Default()
    fds = descriptor_pb2.FileDescriptorSet.FromString(open(path, "rb").read())
    for f in fds.file:
        if not f.name.startswith("google/protobuf/"):
            pool.Add(f)


def cls(name):
    return message_factory.MessageFactory().GetPrototype(
        descriptor_pool.Default().FindMessageTypeByName(name))


def show(case, m, raw=None):
    """<raw>: the bytes <m> was parsed from (its serialization differs)."""
    js = json.dumps(json_format.MessageToDict(m, preserving_proto_field_name=True),
                    separators=(",", ":"), ensure_ascii=False)
    print(case, (raw or m.SerializeToString()).hex(), js, sep="\n", end="\n\n")


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, wire, payload):
    if wire == 2:
        payload = varint(len(payload)) + payload
    return varint(number << 3 | wire) + payload


load(sys.argv[1] if len(sys.argv) > 1 else "proto/ranking.pb")
load(sys.argv[2] if len(sys.argv) > 2 else "tests/unit/pbjson_test.pb")
R = "feedguard.ranking.v1."
T = "feedguard.test.pbjson."

req = cls(R + "RankFeedRequest")()
req.user.user_id = "u-42"
req.user.age_band = "13-15"
req.user.account_age_days = 400
req.context.surface = 3
req.context.locale = "en-GB"
req.context.time_zone = "Europe/London"
req.context.geo.latitude = 51.5072
req.context.geo.longitude = -0.1276
req.context.geo.accuracy_m = 12.5
req.context.geo.city = "London"
w = req.signals.watch_history.add()
w.item_id = 1001
w.watch_ms = 15000
w.ts.seconds = 1796538600
w.ts.nanos = 123000000
e = req.signals.engagement_events.add()
e.item_id = 1001
e.kind = 1
e.ts.seconds = 1796538660
req.signals.inferred_interests.extend(["fitness", "gaming"])
req.signals.search_history.append("hiit")
req.signals.advertising_id = "ad-1"
req.signals.device_fingerprint = "fp"
req.signals.social_graph.append("u-7")
req.signals.features["affinity.gaming"] = 0.75
req.page_size = 20
req.page_token = "p2"
req.recently_shown_ids.extend([9007199254740993, 5, -1])
show("request", req)

resp = cls(R + "RankFeedResponse")()
it = resp.items.add()
it.item_id = 1
it.title = 'Ten-minute "HIIT"\n'
it.score = 0.9234
it.content_labels.append("sport")
x = it.explanations.add()
x.reason = "because you watched 7"
x.source_item_id = 7
it.inferred_interest_labels.append("fitness")
it.feature_weights["affinity"] = 0.1
it.debug_score = 1e-05
it.topic = "sport"
mo = it.moderation.add()
mo.label = "self_harm"
mo.confidence = 0.3
it = resp.items.add()
it.item_id = 2
it.score = 3.0
it.debug_score = 1e16
resp.profile_segments.append("gamer")
resp.model_version = "m-1"
resp.next_page_token = "n"
show("response", resp)

s = cls(T + "Scalars")()
s.f_double = -2.5e-300
s.f_float = 0.1
s.f_int64 = -9007199254740993
s.f_uint64 = 18446744073709551615
s.f_int32 = -1
s.f_fixed64 = 18446744073709551614
s.f_fixed32 = 4294967295
s.f_bool = True
s.f_string = "h\u00e9llo \u2713 \U0001F600 \x01\t/\x7f"
s.f_bytes = b"\x00\xff\xfe\x7f"
s.f_uint32 = 4294967295
s.f_enum = 2
s.f_sfixed32 = -2147483648
s.f_sfixed64 = -9223372036854775808
s.f_sint32 = -2147483648
s.f_sint64 = -9223372036854775808
s.ts.seconds = -62135596800
s.ts.nanos = 1000
s.dur.seconds = -1
s.dur.nanos = -500000000
s.c_num = -7
s.f_far = 9
show("scalars", s)

rp = cls(T + "Repeated")()
rp.r_int32.extend([1, -1, 300])
rp.r_sint64.extend([-1, 1, -9223372036854775808])
rp.r_double.extend([1.0, 0.5, 1e100, float("inf"), float("-inf"), 123456789012345678.0])
rp.r_fixed32.extend([1, 4294967295])
rp.r_bool.extend([True, False])
rp.r_enum.extend([0, 1, 2])
rp.r_string.extend(["", "b"])
rp.r_bytes.extend([b"", b"a", b"ab", b"abc"])
rp.r_msg.add().f_int32 = 1
rp.r_msg.add()
rp.r_float.extend([3.4028234663852886e38, 1e-45, 16777216.0, -0.0, 0.3])
rp.r_sfixed64.extend([-1])
rp.m_int32[-5] = "neg"
rp.m_msg["k"].f_bool = True
rp.m_bool[True] = 2
rp.m_int64[-9007199254740993] = 0.25
rp.m_uint32[4294967295] = b"\x01"
rp.m_sint64[-3] = 2.5
rp.m_ts["t"].seconds = 253402300799
rp.m_ts["t"].nanos = 999999999
show("repeated", rp)

# non-repeated message occurrences merge; a oneof keeps its last member and
# a message member set again after another starts afresh
raw = (field(10, 2, field(5, 0, varint(1)) + field(9, 2, b"a")) +
       field(10, 2, field(9, 2, b"b") + field(10, 2, field(8, 0, varint(1)))) +
       field(10, 2, field(10, 2, field(3, 0, varint(5)))) +
       field(22, 2, field(5, 0, varint(9)) + field(9, 2, b"first")) +
       field(21, 2, b"y") +
       field(22, 2, field(5, 0, varint(2))) +
       field(22, 2, field(8, 0, varint(1))) +
       field(9, 2, b"one") + field(9, 2, b"two"))
show("merge", cls(T + "Scalars").FromString(raw), raw)

lg = cls("feedguard.test.pbjson2.Legacy")()
lg.item.a = 1
lg.item.b = "g"
lg.entry.add().x = 2
lg.entry.add()
lg.nums.extend([1, 2])
lg.plain.extend([3, 4])
lg.next.item.a = -1
show("legacy", lg)
