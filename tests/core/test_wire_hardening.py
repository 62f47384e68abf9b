"""Hostile headers never crash the decoder, refusals say whether the sender was verified, the
incarnation travels in the header and the idempotency key, and event times are range-checked."""

from __future__ import annotations

import json
import struct
import time

import numpy as np
import pytest

from spinline.core import wire
from spinline.core.batch import Batch
from spinline.core.errors import PayloadError
from spinline.core.wire import Envelope, SignedPayloadError, UnverifiedPayload, decode, encode

KEY = b"k" * 32


def _raw(header: bytes, *, version: int = 1, magic: bytes = b"SPLB", flags: int = 0) -> bytes:
    return struct.pack("<4sBBHI", magic, version, flags, 0, len(header)) + header


def _signed_raw(header: bytes, body: bytes = b"") -> bytes:
    import hashlib
    import hmac

    out = _raw(header, flags=wire.FLAG_MAC) + body
    return out + hmac.new(KEY, out, hashlib.sha256).digest()


def _batch(n: int = 3) -> Batch:
    now = time.time_ns()
    return Batch(np.arange(n, dtype=np.int64), np.full(n, now, dtype=np.int64), np.ones(n), np.zeros(n, np.uint8))


HOSTILE = {
    "seq Infinity": b'{"edge":"e","mill":"m","seq":Infinity,"n":0,"created_ns":1}',
    "created_ns -Infinity": b'{"edge":"e","mill":"m","seq":1,"n":0,"created_ns":-Infinity}',
    "n NaN": b'{"edge":"e","mill":"m","seq":1,"n":NaN,"created_ns":1}',
    "deep meta": b'{"edge":"e","mill":"m","seq":1,"n":0,"created_ns":1,"meta":' + b"[" * 5000 + b"]" * 5000 + b"}",
    "deep header": b"[" * 100_000 + b"]" * 100_000,
    "header is a list": b'[1, 2]',
    "seq is a bool": b'{"edge":"e","mill":"m","seq":true,"n":0,"created_ns":1}',
    "seq is a float": b'{"edge":"e","mill":"m","seq":1.5,"n":0,"created_ns":1}',
    "seq past int64": b'{"edge":"e","mill":"m","seq":9223372036854775808,"n":0,"created_ns":1}',
    "n huge": b'{"edge":"e","mill":"m","seq":1,"n":' + b"9" * 400 + b',"created_ns":1}',
    "edge not a string": b'{"edge":{"a":1},"mill":"m","seq":1,"n":0,"created_ns":1}',
    "meta not an object": b'{"edge":"e","mill":"m","seq":1,"n":0,"created_ns":1,"meta":"x"}',
    "inc not a string": b'{"edge":"e","mill":"m","seq":1,"n":0,"created_ns":1,"inc":5}',
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_headers_are_payload_errors_signed_or_not(case: str) -> None:
    header = HOSTILE[case]
    for data, lookup in ((_raw(header), None), (_raw(header), lambda e: KEY), (_signed_raw(header), lambda e: KEY)):
        with pytest.raises(PayloadError) as exc:
            decode(data, key_lookup=lookup)
        assert exc.value.reason in ("malformed", "oversized", "unauthorised")
    assert wire.peek_edge(_raw(header)) in (None, "e", "{'a': 1}")


def test_refusals_before_the_signature_check_are_unverified() -> None:
    lookup = lambda e: KEY  # noqa: E731
    hdr = b'{"edge":"edge-a","mill":"m","seq":7,"n":0,"created_ns":1}'
    for data in (_raw(hdr, version=9), _raw(hdr, magic=b"XXXX"), _raw(hdr), _raw(hdr, flags=wire.FLAG_MAC) + bytes(32),
                 b"\x00" * 5, _raw(b"{"), bytes(64)):
        with pytest.raises(UnverifiedPayload):
            decode(data, key_lookup=lookup)
    with pytest.raises(UnverifiedPayload):
        decode(_signed_raw(hdr), key_lookup=lambda e: None)          # unknown edge
    with pytest.raises(UnverifiedPayload, match="oversized"):
        decode(_signed_raw(hdr), key_lookup=lookup, max_bytes=10)


def test_refusals_after_the_signature_check_name_the_verified_edge_and_seq() -> None:
    hdr = b'{"edge":"edge-a","mill":"m","seq":7,"n":3,"created_ns":1}'
    with pytest.raises(SignedPayloadError) as exc:
        decode(_signed_raw(hdr, b"short body"), key_lookup=lambda e: KEY)
    assert (exc.value.reason, exc.value.edge, exc.value.mill, exc.value.seq) == ("malformed", "edge-a", "m", 7)
    bad_seq = b'{"edge":"edge-a","mill":"m","seq":Infinity,"n":0,"created_ns":1}'
    with pytest.raises(SignedPayloadError) as exc2:
        decode(_signed_raw(bad_seq), key_lookup=lambda e: KEY)
    assert (exc2.value.edge, exc2.value.seq) == ("edge-a", None)
    env = Envelope("edge-a", "m", 8, _batch(20), 1)
    with pytest.raises(SignedPayloadError, match="oversized"):
        decode(encode(env, key=KEY), key_lookup=lambda e: KEY, max_rows=10)


def test_incarnation_travels_in_the_header_and_the_idempotency_key() -> None:
    old = Envelope("edge-a", "m", 5, _batch(), 1)
    new = Envelope("edge-a", "m", 5, _batch(), 1, incarnation="b7f3")
    assert old.idempotency_key == "edge-a:5"                      # backward compatible
    assert new.idempotency_key == "edge-a:b7f3:5"
    data = encode(new, key=KEY)
    hlen = struct.unpack_from("<I", data, 8)[0]
    assert json.loads(data[12:12 + hlen])["inc"] == "b7f3"
    assert "inc" not in json.loads(encode(old)[12:12 + struct.unpack_from("<I", encode(old), 8)[0]])
    got = decode(data, key_lookup=lambda e: KEY)
    assert got.incarnation == "b7f3" and got.idempotency_key == "edge-a:b7f3:5"
    assert decode(encode(old)).incarnation == ""
    with pytest.raises(PayloadError, match="inc"):
        decode(encode(Envelope("edge-a", "m", 5, _batch(), 1, incarnation="x" * 65)))


def _ev(**kw: object) -> dict[str, object]:
    d: dict[str, object] = {"id": 1, "asset": "m/rf01/main_motor", "ts_ns": 1_700_000_000 * 10**9,
                            "kind": "alarm_raised", "severity": "warning", "model_version": "v1"}
    d.update(kw)
    return d


@pytest.mark.parametrize("bad", [10**30, -5, 0, 1.5e18, True, "123", 2**63, 7_258_118_400 * 10**9 + 1])
def test_event_ts_ns_must_be_an_integer_in_range(bad: object) -> None:
    with pytest.raises(PayloadError, match="malformed"):
        wire.EdgeEvent.from_dict(_ev(ts_ns=bad))
    assert wire.EdgeEvent.from_dict(_ev()).ts_ns == 1_700_000_000 * 10**9


def test_event_fields_with_infinity_or_huge_values_are_malformed_not_crashes() -> None:
    for bad in (_ev(id=float("inf")), _ev(id=10**30), _ev(alarm_key="k" * 10_000), _ev(rule="r" * 65)):
        with pytest.raises(PayloadError, match="malformed"):
            wire.EdgeEvent.from_dict(bad)


def test_events_payload_per_event_rejects_only_the_bad_event() -> None:
    good = _ev(id=1)
    far = _ev(id=2, ts_ns=10**30)
    body = json.dumps({"v": 1, "edge": "e1", "mill": "m", "events": [good, far]}).encode()
    data = body + b"\n" + wire.sign_status(KEY, body).encode()
    with pytest.raises(PayloadError, match="malformed"):          # strict (the default) refuses it whole
        wire.decode_events(data, key_lookup=lambda e: KEY)
    p = wire.decode_events(data, key_lookup=lambda e: KEY, per_event=True)
    assert [e.id for e in p.events] == [1] and p.invalid == ((2, "malformed"),)
    no_id = json.dumps({"v": 1, "edge": "e1", "mill": "m", "events": [_ev(id=0, ts_ns=10**30)]}).encode()
    with pytest.raises(PayloadError):
        wire.decode_events(no_id, per_event=True)


@pytest.mark.parametrize("data", [b'{"v":Infinity,"edge":"e","mill":"m","events":[]}',
                                  b'{"v":1,"edge":"e","mill":"m","events":[],"x":' + b"[" * 5000 + b"]" * 5000 + b"}",
                                  b"[" * 100_000, b'{"v":1,"edge":["e"],"mill":"m","events":[]}'])
def test_hostile_events_payloads_are_unverified_payload_errors(data: bytes) -> None:
    with pytest.raises(UnverifiedPayload):
        wire.decode_events(data, key_lookup=lambda e: KEY)
