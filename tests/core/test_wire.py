from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from spinline.core import wire
from spinline.core.batch import Batch
from spinline.core.errors import PayloadError
from spinline.core.wire import MAC_SIZE, Envelope, decode, encode, peek_edge

KEY = b"secret-of-edge-1"


def _env(n: int = 1000, seq: int = 7) -> Envelope:
    rng = np.random.default_rng(0)
    b = Batch.of(rng.integers(-(2**62), 2**62, n), np.arange(n) * 10**9, rng.normal(size=n), 0, np.arange(n))
    return Envelope(edge="edge-1", mill="mill-a", seq=seq, batch=b, created_ns=123, kind="backlog",
                    meta={"fw": "0.1"})


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip(compress: bool) -> None:
    env = _env()
    out = decode(encode(env, key=KEY, compress=compress), key_lookup=lambda e: KEY if e == "edge-1" else None)
    assert out.batch.equals(env.batch)
    assert (out.edge, out.mill, out.seq, out.kind, out.meta) == ("edge-1", "mill-a", 7, "backlog", {"fw": "0.1"})
    assert out.idempotency_key == "edge-1:7"


def test_compact() -> None:
    env = _env(10_000)
    assert len(encode(env, key=KEY)) < env.batch.nbytes  # compression pays on real-looking columns


def test_signature_required_and_checked() -> None:
    env = _env(10)
    unsigned = encode(env)
    with pytest.raises(PayloadError) as e1:
        decode(unsigned, key_lookup=lambda e: KEY)
    assert e1.value.reason == "unauthorised"
    signed = encode(env, key=KEY)
    with pytest.raises(PayloadError, match="unknown or revoked edge"):
        decode(signed, key_lookup=lambda e: None)
    with pytest.raises(PayloadError, match="signature check failed"):
        decode(signed, key_lookup=lambda e: b"other")
    tampered = bytearray(signed)
    tampered[-MAC_SIZE - 3] ^= 0xFF
    with pytest.raises(PayloadError, match="signature"):
        decode(bytes(tampered), key_lookup=lambda e: KEY)
    assert decode(signed).batch.equals(env.batch)  # format-only decode ignores the trailer
    assert peek_edge(signed) == "edge-1"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "malformed"),
        (b"XXXX" + bytes(20), "malformed"),
        (struct.pack("<4sBBHI", b"SPLB", 9, 0, 0, 0), "unsupported_version"),
        (struct.pack("<4sBBHI", b"SPLB", 1, 0, 0, 500) + b"{}", "malformed"),
        (struct.pack("<4sBBHI", b"SPLB", 1, 0, 0, 2) + b"{}", "malformed"),
    ],
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as exc:
        decode(data)
    assert exc.value.reason == reason


def test_truncated_body_and_zip_bomb() -> None:
    good = encode(_env(100), compress=False)
    with pytest.raises(PayloadError, match="body is"):
        decode(good[:-5])
    # A header that claims 10 rows but a body that inflates to megabytes is refused without inflating it.
    header = b'{"edge":"e","mill":"m","seq":1,"n":10,"created_ns":0}'
    bomb = struct.pack("<4sBBHI", b"SPLB", 1, 0x01, 0, len(header)) + header + zlib.compress(bytes(50_000_000))
    with pytest.raises(PayloadError, match="longer than its header"):
        decode(bomb)


def test_oversized() -> None:
    with pytest.raises(PayloadError) as exc:
        decode(bytes(100), max_bytes=50)
    assert exc.value.reason == "oversized"
    with pytest.raises(PayloadError) as exc2:
        decode(encode(_env(100)), max_rows=10)
    assert exc2.value.reason == "oversized"


def test_topics_and_paths_round_trip_through_their_parsing() -> None:
    """Both sides format and parse topics with ``core.wire.topics``: what the edge sends, the cloud reads."""
    for template, kind in ((wire.TOPIC_BATCH, "batch"), (wire.TOPIC_STATUS, "status"), (wire.TOPIC_EVENTS, "events")):
        up = wire.parse_up_topic(template.format(mill="m-1", edge="e_2"))
        assert up == wire.UpTopic(mill="m-1", edge="e_2", kind=kind)
        assert wire.up_filter(template) == template.format(mill="+", edge="+")
    assert wire.parse_up_topic("spinline/up/m/e") is None
    assert wire.parse_up_topic("spinline/up/m/e/batch/extra") is None
    for path in (wire.INGEST_PATH, wire.STATUS_PATH, wire.EVENTS_PATH):
        assert path.startswith(wire.API_PREFIX + "/")
