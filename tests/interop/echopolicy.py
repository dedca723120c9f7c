"""Policies over the test upstream's own service: fgtest.Echo declared in a
descriptor set with the reference contract's RankFeedRequest as every
method's request and response type, so that feedguardd intercepts calls
to upstream.py (which echoes requests back and logs events) exactly as it
intercepts RankFeed calls to a ranker.

Unary and Bidi echo the (edited) request, so an intercepted call's
response is what the upstream received.  ClientStream answers with JSON,
not a RankFeedRequest: give it no response rules.
"""
from pathlib import Path

from google.protobuf import descriptor_pb2

import policyhelp as ph
from fgcommon import SERVICE, method

ECHO_PB = "echo.pb"
REQ_TYPE = ".feedguard.ranking.v1.RankFeedRequest"
# name -> (client_streaming, server_streaming)
SHAPES = {"Unary": (False, False), "ServerStream": (False, True),
          "ClientStream": (True, False), "Bidi": (True, True)}
CHILDREN = '[under_13, "13_15", "16_17"]'


def echo_descriptor_set():
    """ranking.pb plus fgtest/echo.proto (service fgtest.Echo), serialized."""
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(ph.ranking_pb().read_bytes())
    ranking = [f.name for f in fds.file if f.package == "feedguard.ranking.v1"]
    assert ranking, "ranking.pb has no feedguard.ranking.v1 file"
    f = fds.file.add()
    f.name = "fgtest/echo.proto"
    f.package = SERVICE.rsplit(".", 1)[0]
    f.syntax = "proto3"
    f.dependency.append(ranking[0])
    svc = f.service.add()
    svc.name = SERVICE.rsplit(".", 1)[1]
    for name, (cs, ss) in SHAPES.items():
        m = svc.method.add()
        m.name, m.input_type, m.output_type = name, REQ_TYPE, REQ_TYPE
        if cs:
            m.client_streaming = True
        if ss:
            m.server_streaming = True
    return fds.SerializeToString()


def echo_policy(methods, request_block=None):
    """Policy text for fgtest.Echo: <methods> maps a method name (Unary...)
    to its band source, "field" (user.age_band: the call waits for its
    first message) or "header" (x-age-band).  Every child band loses
    signals and recently_shown_ids (<request_block> replaces that)."""
    block = request_block or ("      - bands: %s\n        remove: [signals, recently_shown_ids]\n"
                              % CHILDREN)
    text = ph.BANDS_HEADER.replace("descriptor_set: ranking.pb", "descriptor_set: %s" % ECHO_PB)
    text += "methods:\n"
    for name, source in methods.items():
        band = {"field": "{field: user.age_band}", "header": "{header: x-age-band}"}[source]
        text += "  %s:\n    age_band: %s\n    request:\n%s" % (method(name), band, block)
    return text


def write_echo_policy(dirpath, methods, request_block=None):
    """Write echo.pb and policy.yaml into <dirpath>; returns the policy path
    (relative to <dirpath>, as the config names it)."""
    d = Path(dirpath)
    (d / ECHO_PB).write_bytes(echo_descriptor_set())
    (d / "policy.yaml").write_text(echo_policy(methods, request_block))
    return "policy.yaml"


def stripped(req):
    """What the default request block makes of RankFeedRequest <req> (a
    message object) for a child band: serialized bytes, as feedguard's wire
    edit leaves them (field order kept)."""
    return ph.drop(req.SerializeToString(), 3, 7)
