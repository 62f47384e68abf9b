"""The cloud signs every ack with the edge's secret (``core.wire.sign_ack``) and echoes edge and incarnation."""

from __future__ import annotations

import dataclasses
import json
import time

from spinline.cloud.ingest.service import IngestService
from spinline.core.wire import Envelope, EventsAck, decode_events_ack, encode, signed_events_ack, verify_ack

from .conftest import SECRETS


def test_stored_duplicate_and_rejected_acks_are_signed_and_echo_the_incarnation(mill, store) -> None:  # type: ignore[no-untyped-def]
    svc: IngestService = mill.service(store)
    env = Envelope(edge="edge-a", mill=mill.id, seq=1, batch=mill.batch(2), created_ns=time.time_ns(),
                   incarnation="0123abcd")
    first = svc.handle(encode(env, key=SECRETS["edge-a"]))
    again = svc.handle(encode(env, key=SECRETS["edge-a"]))
    assert (first.status, again.status) == ("stored", "duplicate")
    for r in (first, again):
        ack = svc.signed_ack(r)
        assert ack["edge"] == "edge-a" and ack["inc"] == "0123abcd" and ack["seq"] == 1
        assert verify_ack(SECRETS["edge-a"], ack) is True
        assert verify_ack(SECRETS["edge-b"], ack) is False          # another edge's key cannot have made it
        assert verify_ack(SECRETS["edge-a"], ack | {"status": "rejected"}) is False
    bad = dataclasses.replace(env, seq=2, mill="mill-x")               # signed, but not this edge's mill
    r = svc.handle(encode(bad, key=SECRETS["edge-a"]))
    assert r.status == "rejected"
    if r.verified:
        assert verify_ack(SECRETS["edge-a"], svc.signed_ack(r)) is True
    else:
        assert "sig" not in svc.signed_ack(r)                         # nothing unverified is ever signed


def test_events_ack_is_signed_for_its_edge() -> None:
    ack = EventsAck(acked=(1, 2), rejected=((3, "malformed"),))
    body = signed_events_ack(ack, "edge-a", SECRETS["edge-a"])
    obj = json.loads(body)
    assert obj["edge"] == "edge-a" and verify_ack(SECRETS["edge-a"], obj) is True
    assert decode_events_ack(body).acked == (1, 2)
    assert "sig" not in json.loads(signed_events_ack(ack, "edge-a", None))
