"""Raw evidence snapshots on the wire: one signed snapshot per message, acked like events.

Edge -> cloud, MQTT QoS 1 on ``TOPIC_SNAPSHOT`` or HTTP ``POST {base}{SNAPSHOTS_PATH}``, the same bytes::

    {"v": 1, "edge": ..., "mill": ..., "id": <buffer id>}  b"\\n"  <64 hex HMAC or "-">  b"\\n"  <snapshot>

``<snapshot>`` is ``edge.evidence.encode_snapshot``'s bytes (JSON header line + zlib float32 samples),
kept as they are so the cloud stores exactly what the edge queued. The HMAC (``sign_status``, keyed with
the edge's secret) covers the first line, a newline and the snapshot, so neither the envelope nor the
samples can be altered. ``(edge, id)`` is the idempotency key.

The ack is an ``EventsAck`` (``acked`` / ``rejected`` ids) signed with ``signed_events_ack``; on MQTT it
comes on ``TOPIC_SNAPSHOT_ACK``, over HTTP as the 200 body, which may also carry ``"requests"``: the
assets a user asked a snapshot of (``TOPIC_REQUESTS`` carries the same over MQTT, signed like an ack).

Snapshot reasons (``SNAPSHOT_REASONS``): ``alarm``, ``request``, ``sample`` and ``uncertain`` (an alarm whose edge
diagnosis is uncertain). An ``uncertain`` snapshot's header carries the edge's ``"diagnosis": {"fault",
"confidence"}``; any snapshot may carry ``"shaft_hz"`` (the speed measured with it).

The cloud model's answer to an ``uncertain`` snapshot goes back to its edge in the same signed answers as
the requests (MQTT ``TOPIC_REQUESTS``; over HTTP the answer to the snapshot, events or status post), as
``"diagnoses": [{"asset", "snapshot": <the edge's id>, "fault", "confidence", "ts_ns"}, ...]``
(``CloudAnswer``; ``ts_ns`` is the snapshot's time).
The edge acts on them only when the answer's signature verifies (``sign_ack`` with its key); an unsigned
or forged one is refused and counted.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from spinline.core.errors import PayloadError

from .batches import KeyLookup, UnverifiedPayload
from .events import require_edge_signature
from .status import sign_status

SNAPSHOT_VERSION = 1
#: A snapshot message's size limit (a 1 s waveform at 25.6 kHz is ~100 kB raw, less compressed).
MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024
#: Samples one snapshot may hold once decompressed (guards the cloud against a zip bomb).
MAX_SNAPSHOT_SAMPLES = 1 << 21
#: Why a snapshot was sent (the header's ``reason``).
SNAPSHOT_REASONS = ("alarm", "request", "sample", "uncertain")
#: Longest fault label on the wire (``spinline.health.diagnosis.LABELS`` are far shorter).
MAX_FAULT = 40
#: Most cloud answers one downlink message carries.
MAX_ANSWERS = 64


@dataclass(frozen=True, slots=True)
class CloudAnswer:
    """The cloud model's diagnosis of one ``uncertain`` snapshot, for the edge that sent it."""

    asset: str
    #: The snapshot's id at the edge (its buffer id, the upload's ``id``).
    snapshot: int
    fault: str
    confidence: float
    #: The snapshot's own time (ns): the edge applies the answer only to the alarm episode it belongs to.
    ts_ns: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"asset": self.asset, "snapshot": self.snapshot, "fault": self.fault,
                "confidence": round(self.confidence, 3), **({"ts_ns": self.ts_ns} if self.ts_ns is not None else {})}


def decode_answers(items: object) -> list[CloudAnswer]:
    """The ``"diagnoses"`` of a downlink answer; ``PayloadError("malformed")`` naming the problem."""
    try:
        if not isinstance(items, list) or len(items) > MAX_ANSWERS:
            raise TypeError(f"diagnoses must be a list of at most {MAX_ANSWERS}")
        out = []
        for d in items:
            if not isinstance(d, dict):
                raise TypeError("a diagnosis must be an object")
            asset, ident, fault, conf = d["asset"], d["snapshot"], d["fault"], d["confidence"]
            if not isinstance(asset, str) or not 0 < len(asset) <= 300:
                raise ValueError("asset must be 1-300 characters")
            if type(ident) is not int or ident <= 0:
                raise ValueError("snapshot must be a positive integer")
            if not isinstance(fault, str) or not 0 < len(fault) <= MAX_FAULT:
                raise ValueError(f"fault must be 1-{MAX_FAULT} characters")
            if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0.0 <= float(conf) <= 1.0:
                raise ValueError("confidence must be a number in [0, 1]")
            ts = d.get("ts_ns")
            if ts is not None and (type(ts) is not int or ts <= 0):
                raise ValueError("ts_ns must be a positive integer")
            out.append(CloudAnswer(asset, ident, fault, float(conf), ts))
    except (ValueError, TypeError, KeyError) as exc:
        raise PayloadError("malformed", f"bad diagnoses: {exc}"[:300]) from None
    return out


@dataclass(frozen=True, slots=True)
class SnapshotUpload:
    edge: str
    mill: str
    id: int
    #: The snapshot's own header (asset, ts_ns, fs_hz, reason, n ...).
    header: dict[str, Any]
    #: The snapshot bytes as the edge encoded them (header line + compressed samples).
    snapshot: bytes


def encode_snapshot_upload(edge: str, mill: str, ident: int, snapshot: bytes, *, key: bytes | None) -> bytes:
    """The message (see the module docstring); unsigned (``-``) without ``key``."""
    head = json.dumps({"v": SNAPSHOT_VERSION, "edge": edge, "mill": mill, "id": ident},
                      separators=(",", ":")).encode()
    sig = sign_status(key, head + b"\n" + snapshot).encode() if key else b"-"
    return head + b"\n" + sig + b"\n" + snapshot


def decode_snapshot_samples(snapshot: bytes,
                            max_samples: int = MAX_SNAPSHOT_SAMPLES) -> tuple[dict[str, Any], np.ndarray]:
    """Header and samples of an ``encode_snapshot`` payload; ``PayloadError("malformed")`` naming the problem."""
    head, sep, body = snapshot.partition(b"\n")
    try:
        if not sep:
            raise ValueError("snapshot has no header line")
        h = json.loads(head)
        if not isinstance(h, dict):
            raise TypeError("snapshot header must be a JSON object")
        n, fs, ts = h.get("n"), h.get("fs_hz"), h.get("ts_ns")
        if type(n) is not int or not 0 < n <= max_samples:
            raise ValueError(f"snapshot sample count must be 1..{max_samples}, got {str(n)[:20]}")
        if not isinstance(fs, int | float) or not 0 < float(fs) < 1e7:
            raise ValueError(f"snapshot fs_hz must be in (0, 1e7), got {str(fs)[:20]}")
        if type(ts) is not int or ts <= 0:
            raise ValueError("snapshot ts_ns must be a positive integer")
        if not isinstance(h.get("asset"), str) or not 0 < len(h["asset"]) <= 300:
            raise ValueError("snapshot asset must be 1-300 characters")
        if h.get("encoding") != "f32le-zlib":
            raise ValueError(f"unknown snapshot encoding {str(h.get('encoding'))[:30]!r}")
        _check_optional(h)
        d = zlib.decompressobj()
        raw = d.decompress(body, n * 4 + 1)
        if len(raw) != n * 4 or d.unconsumed_tail:
            raise ValueError(f"snapshot says {n} samples, payload holds another amount")
        samples = np.frombuffer(raw, dtype="<f4")
    except (ValueError, TypeError, zlib.error, RecursionError) as exc:
        raise PayloadError("malformed", f"bad snapshot: {exc}"[:300]) from None
    return h, samples


def _check_optional(h: dict[str, Any]) -> None:
    """The optional header fields: ``shaft_hz`` and an uncertain snapshot's edge ``diagnosis``."""
    sh = h.get("shaft_hz")
    if sh is not None and (isinstance(sh, bool) or not isinstance(sh, int | float) or not 0 < float(sh) < 1e4):
        raise ValueError(f"snapshot shaft_hz must be in (0, 1e4), got {str(sh)[:20]}")
    dg = h.get("diagnosis")
    if dg is None:
        return
    if not isinstance(dg, dict):
        raise TypeError("snapshot diagnosis must be an object")
    fault, conf = dg.get("fault"), dg.get("confidence")
    if not isinstance(fault, str) or not 0 < len(fault) <= MAX_FAULT:
        raise ValueError(f"snapshot diagnosis fault must be 1-{MAX_FAULT} characters")
    if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0.0 <= float(conf) <= 1.0:
        raise ValueError("snapshot diagnosis confidence must be a number in [0, 1]")


def decode_snapshot_upload(data: bytes, *, key_lookup: KeyLookup | None = None,
                           max_bytes: int = MAX_SNAPSHOT_BYTES) -> SnapshotUpload:
    """Parse and verify a snapshot message; ``UnverifiedPayload`` before/at the signature check,
    ``PayloadError`` after it."""
    if len(data) > max_bytes:
        raise UnverifiedPayload("oversized", f"snapshot message is {len(data)} bytes, limit {max_bytes}")
    head, sep1, rest = data.partition(b"\n")
    sig, sep2, snapshot = rest.partition(b"\n")
    try:
        if not sep1 or not sep2:
            raise ValueError("snapshot message needs an envelope line and a signature line")
        d = json.loads(head)
        if not isinstance(d, dict):
            raise TypeError("envelope must be a JSON object")
        version, edge, mill, ident = d["v"], d["edge"], d["mill"], d["id"]
        if not isinstance(edge, str) or not isinstance(mill, str) or type(ident) is not int or ident <= 0:
            raise TypeError("edge and mill must be strings, id a positive integer")
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise UnverifiedPayload("malformed", f"bad snapshot message: {type(exc).__name__}") from None
    if type(version) is not int or version != SNAPSHOT_VERSION:
        raise UnverifiedPayload("unsupported_version", f"snapshot message version {str(version)[:20]}, this side "
                                                       f"reads {SNAPSHOT_VERSION}")
    if key_lookup is not None:
        require_edge_signature(key_lookup, edge, head + b"\n" + snapshot, sig, "snapshot")
    header, _ = decode_snapshot_samples(snapshot)
    return SnapshotUpload(edge, mill, ident, header, snapshot)
