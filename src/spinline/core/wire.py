"""The edge -> cloud wire format, imported by both sides so they cannot drift apart.

A batch payload is binary and columnar (a JSON payload of a million readings would be ~60 MB and
slow to parse)::

    b"SPLB" | version:u8 | flags:u8 | reserved:u16 | header_len:u32 | header (JSON, utf-8) | body

A payload ends with a 32-byte HMAC-SHA256 trailer over everything before it, keyed with the
edge's secret (flag MAC). That authenticates the edge whatever the broker's own auth is, and lets
the cloud refuse a payload that claims to come from another edge.

``body`` is the columns back to back, little-endian: point int64[n], ts_ns int64[n],
value float64[n], quality uint8[n], then seq int64[n] when flag HAS_SEQ is set; the body is
zlib-compressed when flag ZLIB is set (mill uplinks are often thin 4G links).

The header carries who sent it and which batch it is. ``(edge, seq)`` is the idempotency key: the
edge assigns ``seq`` when it commits the batch to its durable buffer, so every re-send of that
batch carries the same key and the cloud stores it once. An edge whose buffer may restart its
``seq`` counter (a new buffer file) sends an ``incarnation`` (header ``"inc"``) and the key becomes
``(edge, inc, seq)``; without one the key is the old ``edge:seq``.

Every refusal ``decode`` raises before the signature was verified is an ``UnverifiedPayload``: what
its header claims (edge, seq) is unproven, so the cloud neither acks it on an edge's ack topic nor
counts it against the edge it names.

Edge status (buffer depth, lag, versions) travels separately as small JSON (``encode_status``).
Edge events (alarms, diagnoses, model changes) travel as signed JSON with their own ack
(``encode_events`` / ``encode_events_ack``; the contract is spelled out above ``TOPIC_EVENTS``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from spinline.core.batch import Batch
from spinline.core.errors import PayloadError

MAGIC = b"SPLB"
VERSION = 1
FLAG_ZLIB = 0x01
FLAG_HAS_SEQ = 0x02
FLAG_MAC = 0x04
MAC_SIZE = 32
_PREFIX = struct.Struct("<4sBBHI")

#: Payloads larger than this are refused before decoding (both compressed and expanded size).
MAX_PAYLOAD_BYTES = 32 * 1024 * 1024
#: Rows one batch may carry.
MAX_ROWS = 1_000_000

#: Topic layout on the broker. ``{mill}`` and ``{edge}`` are ids; the cloud subscribes to
#: ``$share/<group>/spinline/up/+/+/batch`` so several ingest workers split the load.
TOPIC_BATCH = "spinline/up/{mill}/{edge}/batch"
TOPIC_STATUS = "spinline/up/{mill}/{edge}/status"
TOPIC_ACK = "spinline/down/{mill}/{edge}/ack"

BatchKind = Literal["live", "backlog"]

#: Stable reason codes for refused payloads (counted per edge, shown in the API).
REASONS = ("malformed", "unsupported_version", "oversized", "unknown_point", "wrong_type",
           "non_finite", "future_timestamp", "clock_skew", "unauthorised", "duplicate", "too_old")

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Longest incarnation id (header ``"inc"``) accepted.
MAX_INCARNATION = 64
#: Errors ``json.loads`` and the conversions after it raise on hostile input (deep nesting, huge
#: numbers, Infinity) besides ``ValueError``.
_PARSE_ERRORS = (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError)


class UnverifiedPayload(PayloadError):
    """A refusal raised before the payload's signature was checked (or because it failed the check).

    Nothing the payload claims is proven: not the edge, not the mill, not the seq.
    """


class SignedPayloadError(PayloadError):
    """A refusal of a payload whose signature was verified: ``edge`` sent it (``mill`` / ``seq`` as its
    header says, None where the header field itself is unusable), so it may be acked as rejected."""

    def __init__(self, reason: str, detail: str, *, edge: str, mill: str | None, seq: int | None) -> None:
        super().__init__(reason, detail)
        self.edge, self.mill, self.seq = edge, mill, seq


def _int64(h: dict[str, Any], name: str) -> int:
    """A header field that must be a JSON integer (not a bool, not a float) within int64."""
    v = h[name]
    if type(v) is not int or not INT64_MIN <= v <= INT64_MAX:
        raise ValueError(f"{name} must be an integer within int64, got {str(v)[:40]!r}")
    return v


@dataclass(frozen=True, slots=True)
class Envelope:
    """A batch with its provenance."""

    edge: str
    mill: str
    seq: int
    batch: Batch
    created_ns: int
    kind: BatchKind = "live"
    meta: dict[str, Any] = field(default_factory=dict)
    #: The edge buffer's incarnation (header ``"inc"``); "" for edges that send none.
    incarnation: str = ""

    @property
    def idempotency_key(self) -> str:
        """``edge:inc:seq`` when the edge sends an incarnation, else ``edge:seq`` (older edges)."""
        if self.incarnation:
            return f"{self.edge}:{self.incarnation}:{self.seq}"
        return f"{self.edge}:{self.seq}"


def encode(env: Envelope, *, key: bytes | None = None, compress: bool = True, level: int = 1) -> bytes:
    """Serialise an envelope (compression level 1: most of the gain for little CPU).

    With ``key`` (the edge's secret) the payload is signed; the cloud refuses unsigned payloads
    unless it runs with authentication off (tests of the format only).
    """
    b = env.batch
    h: dict[str, Any] = {"edge": env.edge, "mill": env.mill, "seq": env.seq, "n": len(b),
                         "created_ns": env.created_ns, "kind": env.kind, "meta": env.meta}
    if env.incarnation:
        h["inc"] = env.incarnation
    header = json.dumps(h, separators=(",", ":")).encode()
    flags = 0
    parts = [b.point.astype("<i8", copy=False).tobytes(), b.ts_ns.astype("<i8", copy=False).tobytes(),
             b.value.astype("<f8", copy=False).tobytes(), b.quality.tobytes()]
    if b.seq is not None:
        flags |= FLAG_HAS_SEQ
        parts.append(b.seq.astype("<i8", copy=False).tobytes())
    body = b"".join(parts)
    if compress:
        flags |= FLAG_ZLIB
        body = zlib.compress(body, level)
    if key is not None:
        flags |= FLAG_MAC
    out = _PREFIX.pack(MAGIC, VERSION, flags, 0, len(header)) + header + body
    if key is not None:
        out += hmac.new(key, out, hashlib.sha256).digest()
    return out


KeyLookup = Callable[[str], bytes | None]


def peek_edge(data: bytes) -> str | None:
    """The edge id a payload claims, without verifying anything (for counting refusals)."""
    try:
        _, _, _, _, hlen = _PREFIX.unpack_from(data)
        return str(json.loads(data[_PREFIX.size:_PREFIX.size + hlen])["edge"])
    except (struct.error, *_PARSE_ERRORS):
        return None


def decode(data: bytes, *, key_lookup: KeyLookup | None = None, max_bytes: int = MAX_PAYLOAD_BYTES,
           max_rows: int = MAX_ROWS) -> Envelope:
    """Parse a payload; every failure is a ``PayloadError`` with a reason from ``REASONS``.

    With ``key_lookup`` (edge id -> secret, None for an unknown or revoked edge) the HMAC trailer
    is required and verified before the body is touched. Refusals raised before that check passed
    are ``UnverifiedPayload``.
    """
    if len(data) > max_bytes:
        raise UnverifiedPayload("oversized", f"payload is {len(data)} bytes, limit {max_bytes}")
    if len(data) < _PREFIX.size:
        raise UnverifiedPayload("malformed", f"payload is {len(data)} bytes, shorter than the prefix")
    magic, version, flags, _, hlen = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise UnverifiedPayload("malformed", f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise UnverifiedPayload("unsupported_version", f"payload version {version}, this cloud reads {VERSION}")
    end = _PREFIX.size + hlen
    if end > len(data):
        raise UnverifiedPayload("malformed", "header length runs past the end of the payload")
    try:
        h = json.loads(data[_PREFIX.size:end])
        if not isinstance(h, dict):
            raise TypeError("the header must be a JSON object")
        edge = h["edge"]
        if not isinstance(edge, str):
            raise TypeError("edge must be a string")
    except _PARSE_ERRORS as exc:
        raise UnverifiedPayload("malformed", f"bad header: {type(exc).__name__}") from None
    body = data[end:]
    if key_lookup is not None:
        if not flags & FLAG_MAC:
            raise UnverifiedPayload("unauthorised", f"payload from edge {edge!r} is not signed")
        key = key_lookup(edge)
        if key is None:
            raise UnverifiedPayload("unauthorised", f"unknown or revoked edge {edge!r}")
        if len(body) < MAC_SIZE or not hmac.compare_digest(
                hmac.new(key, data[:-MAC_SIZE], hashlib.sha256).digest(), data[-MAC_SIZE:]):
            raise UnverifiedPayload("unauthorised", f"signature check failed for edge {edge!r}")
    try:
        return _decode_signed(h, edge, flags, body, max_rows)
    except PayloadError as exc:
        if key_lookup is None:
            raise
        raise SignedPayloadError(exc.reason, exc.detail, edge=edge, mill=_claim_str(h.get("mill")),
                                 seq=_claim_int(h.get("seq"))) from None


def _claim_str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _claim_int(v: Any) -> int | None:
    return v if type(v) is int and INT64_MIN <= v <= INT64_MAX else None


def _decode_signed(h: dict[str, Any], edge: str, flags: int, body: bytes, max_rows: int) -> Envelope:
    """The rest of ``decode``, once the signature is verified (or not required)."""
    try:
        mill, seq, n, created_ns = str(h["mill"]), _int64(h, "seq"), _int64(h, "n"), _int64(h, "created_ns")
        kind, meta, inc = h.get("kind", "live"), h.get("meta", {}), h.get("inc", "")
        if not isinstance(meta, dict):
            raise TypeError("meta must be a JSON object")
        if not isinstance(inc, str) or len(inc) > MAX_INCARNATION:
            raise TypeError(f"inc must be a string of at most {MAX_INCARNATION} characters")
    except _PARSE_ERRORS as exc:
        raise PayloadError("malformed", f"bad header: {exc!r}"[:300]) from None
    if kind not in ("live", "backlog"):
        raise PayloadError("malformed", f"bad kind {str(kind)[:40]!r}")
    if n < 0 or n > max_rows:
        raise PayloadError("oversized", f"batch has {n} rows, limit {max_rows}")
    has_seq = bool(flags & FLAG_HAS_SEQ)
    width = 8 + 8 + 8 + 1 + (8 if has_seq else 0)
    if flags & FLAG_MAC:
        body = body[:-MAC_SIZE]
    if flags & FLAG_ZLIB:
        try:
            d = zlib.decompressobj()
            body = d.decompress(body, n * width + 1)
            if d.unconsumed_tail or not d.eof:
                raise PayloadError("malformed", "compressed body is longer than its header says")
        except zlib.error as exc:
            raise PayloadError("malformed", f"cannot decompress body: {exc}") from None
    if len(body) != n * width:
        raise PayloadError("malformed", f"body is {len(body)} bytes, {n} rows need {n * width}")
    buf = memoryview(body)
    o = 0

    def col(dtype: str, size: int) -> Any:
        nonlocal o
        arr = np.frombuffer(buf[o:o + n * size], dtype=dtype)
        o += n * size
        return arr

    point, ts, value = col("<i8", 8), col("<i8", 8), col("<f8", 8)
    quality = col("u1", 1)
    seqcol = col("<i8", 8) if has_seq else None
    batch = Batch(point.astype(np.int64, copy=False), ts.astype(np.int64, copy=False),
                  value.astype(np.float64, copy=False), quality,
                  None if seqcol is None else seqcol.astype(np.int64, copy=False))
    return Envelope(edge=edge, mill=mill, seq=seq, batch=batch, created_ns=created_ns,
                    kind=kind, meta=dict(meta), incarnation=inc)


#: HTTP header carrying ``sign_status`` of a status body (MQTT status rides on the broker's auth).
STATUS_SIGNATURE_HEADER = "X-Spinline-Signature"


def sign_status(secret: bytes, body: bytes) -> str:
    """Hex HMAC-SHA256 of a status body, so nobody but the edge can overwrite its fleet status."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def encode_status(status: dict[str, Any]) -> bytes:
    return json.dumps(status, separators=(",", ":"), default=str).encode()


def decode_status(data: bytes, *, max_bytes: int = 1024 * 1024) -> dict[str, Any]:
    if len(data) > max_bytes:
        raise PayloadError("oversized", f"status is {len(data)} bytes, limit {max_bytes}")
    try:
        out = json.loads(data)
    except ValueError as exc:
        raise PayloadError("malformed", f"status is not JSON: {exc}") from None
    if not isinstance(out, dict):
        raise PayloadError("malformed", "status must be a JSON object")
    return out


# --- edge events (alarms, diagnoses, model changes) ------------------------------------------------
#
# Contract (the cloud implements the receiving side):
#
# * Edge -> cloud, MQTT QoS 1 on ``TOPIC_EVENTS``, or HTTP ``POST {base}{EVENTS_PATH}`` with
#   ``Content-Type: EVENTS_CONTENT_TYPE``; the same bytes either way (``encode_events``)::
#
#       {"v": 1, "edge": ..., "mill": ..., "events": [EdgeEvent.to_dict(), ...]}  b"\n"  hex HMAC
#
#   The trailer (after the last newline) is ``sign_status(secret, json_bytes)``: hex HMAC-SHA256 of
#   the JSON bytes before the newline, keyed with the edge's secret. Without a secret the payload is
#   the JSON alone. ``decode_events(data, key_lookup=...)`` checks all of it.
# * ``(edge, event.id)`` is the idempotency key: ``id`` is assigned when the edge commits the event
#   to its durable buffer and every re-send carries the same one. Store each event once.
# * Cloud -> edge ack (``encode_events_ack``): ``{"acked": [id, ...], "rejected": [{"id", "reason"}]}``
#   on ``TOPIC_EVENTS_ACK`` (MQTT, QoS 1) or as the HTTP 200 response body. ``acked`` = stored now or
#   already stored (duplicates are acked too); ``rejected`` = refused for good (the edge keeps them in
#   its ``dead_events`` table), e.g. an event whose ``ts_ns`` is out of range (the cloud decodes with
#   ``per_event=True``: one bad event never holds up the others). An event that is neither stays in
#   the edge buffer and is re-sent after the ack timeout. A payload that fails the signature check
#   (or cannot be read far enough to check it) gets no ack (MQTT) / HTTP 401 or 400.

TOPIC_EVENTS = "spinline/up/{mill}/{edge}/events"
TOPIC_EVENTS_ACK = "spinline/down/{mill}/{edge}/events-ack"
EVENTS_PATH = "/api/v1/edge-events"
EVENTS_CONTENT_TYPE = "application/x-spinline-events"
EVENTS_VERSION = 1
#: Events one payload may carry, and its size limit.
MAX_EVENTS = 1000
MAX_EVENTS_BYTES = 1024 * 1024

EventKind = Literal["alarm_raised", "alarm_cleared", "model_commissioned", "model_replaced"]
EVENT_KINDS: tuple[str, ...] = ("alarm_raised", "alarm_cleared", "model_commissioned", "model_replaced")
EventSeverity = Literal["info", "warning", "critical"]
EVENT_SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")


@dataclass(frozen=True, slots=True)
class EdgeEvent:
    """One thing that happened to an asset, as the edge saw it.

    ``asset`` is the vibration channel's tag ``{mill}/{machine}/{channel}``; ``alarm_key`` ties an
    ``alarm_cleared`` to its ``alarm_raised`` (``{asset}:{rule}:{raised ts_ns}``); ``fault`` /
    ``confidence`` / ``evidence`` carry the diagnosis (``fault`` is a ``spinline.health.diagnosis``
    label); ``model_version`` is the version of the model that scored it.
    """

    asset: str
    ts_ns: int
    kind: EventKind
    severity: EventSeverity
    model_version: str
    rule: str | None = None
    value: float | None = None
    fault: str | None = None
    confidence: float | None = None
    evidence: str = ""
    alarm_key: str | None = None
    #: Assigned by the edge buffer at commit (0 = not committed yet).
    id: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "asset": self.asset, "ts_ns": self.ts_ns, "kind": self.kind,
                "severity": self.severity, "model_version": self.model_version, "rule": self.rule,
                "value": _finite_or_none(self.value), "fault": self.fault,
                "confidence": _finite_or_none(self.confidence), "evidence": self.evidence,
                "alarm_key": self.alarm_key}

    @classmethod
    def from_dict(cls, d: Any) -> EdgeEvent:
        """Validated; raises ``PayloadError("malformed", ...)``."""
        try:
            if not isinstance(d, dict):
                raise TypeError("an event must be a JSON object")
            kind, sev = str(d["kind"]), str(d["severity"])
            if kind not in EVENT_KINDS:
                raise ValueError(f"unknown event kind {kind!r}")
            if sev not in EVENT_SEVERITIES:
                raise ValueError(f"unknown severity {sev!r}")
            asset = str(d["asset"])
            if not asset or len(asset) > 300:
                raise ValueError("asset must be 1-300 characters")
            ts_ns = d["ts_ns"]
            if type(ts_ns) is not int or not 0 < ts_ns <= MAX_EVENT_TS_NS:
                raise ValueError(f"ts_ns must be an integer in (0, {MAX_EVENT_TS_NS}], got {str(ts_ns)[:40]!r}")
            alarm_key = _opt_str(d.get("alarm_key"))
            if alarm_key is not None and len(alarm_key) > MAX_ALARM_KEY:
                raise ValueError(f"alarm_key is longer than {MAX_ALARM_KEY} characters")
            rule = _opt_str(d.get("rule"))
            if rule is not None and not 0 < len(rule) <= 64:
                raise ValueError("rule must be 1-64 characters")
            ev = cls(asset=asset, ts_ns=ts_ns, kind=kind, severity=sev,  # type: ignore[arg-type]
                     model_version=str(d["model_version"]), rule=rule,
                     value=_opt_float(d.get("value")), fault=_opt_str(d.get("fault")),
                     confidence=_opt_float(d.get("confidence")), evidence=str(d.get("evidence") or ""),
                     alarm_key=alarm_key, id=_event_id(d))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise PayloadError("malformed", f"bad event: {exc!r}"[:300]) from None
        if ev.id < 0:
            raise PayloadError("malformed", f"bad event id {ev.id}")
        return ev


@dataclass(frozen=True, slots=True)
class EventsPayload:
    edge: str
    mill: str
    events: tuple[EdgeEvent, ...]
    #: (event id, reason) of events refused one by one (``decode_events(..., per_event=True)``).
    invalid: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True)
class EventsAck:
    acked: tuple[int, ...] = ()
    #: (event id, reason) of events the cloud refuses for good.
    rejected: tuple[tuple[int, str], ...] = ()


#: Latest event time accepted: 2200-01-01 (ids and alarm times derive from it; int64 ns ends in 2262).
MAX_EVENT_TS_NS = 7_258_118_400 * 10**9
MAX_ALARM_KEY = 512


def _event_id(d: dict[str, Any]) -> int:
    v = d.get("id") or 0
    if type(v) is not int or not 0 <= v <= INT64_MAX:
        raise ValueError(f"id must be an integer within int64, got {str(v)[:40]!r}")
    return v


def _finite_or_none(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def encode_events(edge: str, mill: str, events: list[EdgeEvent] | tuple[EdgeEvent, ...], *,
                  key: bytes | None = None) -> bytes:
    """The events payload (see the contract above); signed when ``key`` is given."""
    if len(events) > MAX_EVENTS:
        raise ValueError(f"{len(events)} events in one payload, limit {MAX_EVENTS}")
    body = json.dumps({"v": EVENTS_VERSION, "edge": edge, "mill": mill, "events": [e.to_dict() for e in events]},
                      separators=(",", ":"), allow_nan=False).encode()
    if key is None:
        return body
    return body + b"\n" + sign_status(key, body).encode()


def decode_events(data: bytes, *, key_lookup: KeyLookup | None = None,
                  max_bytes: int = MAX_EVENTS_BYTES, per_event: bool = False) -> EventsPayload:
    """Parse and validate an events payload; every failure is a ``PayloadError``.

    With ``key_lookup`` (edge id -> secret) the signature trailer is required and verified before
    the events are parsed; refusals before that check passed are ``UnverifiedPayload``.

    ``per_event``: an event that fails validation but carries a valid id goes to ``invalid``
    (``(id, "malformed")``, to be acked as rejected) instead of refusing the whole payload.
    """
    if len(data) > max_bytes:
        raise UnverifiedPayload("oversized", f"events payload is {len(data)} bytes, limit {max_bytes}")
    body, sep, sig = data.rpartition(b"\n")
    sig = sig.strip()
    if not sep or len(sig) != 64 or any(c not in b"0123456789abcdef" for c in sig):
        body, sig = data, b""
    try:
        d = json.loads(body)
        if not isinstance(d, dict):
            raise TypeError("payload must be a JSON object")
        version, edge, mill, raw = d["v"], d["edge"], d["mill"], d["events"]
        if not isinstance(edge, str) or not isinstance(mill, str):
            raise TypeError("edge and mill must be strings")
        if not isinstance(raw, list):
            raise TypeError("events must be a list")
    except _PARSE_ERRORS as exc:
        raise UnverifiedPayload("malformed", f"bad events payload: {type(exc).__name__}") from None
    if type(version) is not int or version != EVENTS_VERSION:
        raise UnverifiedPayload("unsupported_version", f"events payload version {str(version)[:20]}, this side "
                                                       f"reads {EVENTS_VERSION}")
    if key_lookup is not None:
        secret = key_lookup(edge)
        if secret is None:
            raise UnverifiedPayload("unauthorised", f"unknown or revoked edge {edge!r}")
        if not sig or not hmac.compare_digest(sign_status(secret, body).encode(), sig):
            raise UnverifiedPayload("unauthorised", f"events signature check failed for edge {edge!r}")
    if len(raw) > MAX_EVENTS:
        raise PayloadError("oversized", f"{len(raw)} events, limit {MAX_EVENTS}")
    if not per_event:
        return EventsPayload(edge, mill, tuple(EdgeEvent.from_dict(e) for e in raw))
    good: list[EdgeEvent] = []
    invalid: list[tuple[int, str]] = []
    for e in raw:
        try:
            good.append(EdgeEvent.from_dict(e))
        except PayloadError:
            try:
                ident = _event_id(e) if isinstance(e, dict) else 0
            except (ValueError, TypeError):
                ident = 0
            if ident <= 0:
                raise   # no id to ack it by: the whole payload is malformed
            invalid.append((ident, "malformed"))
    return EventsPayload(edge, mill, tuple(good), tuple(invalid))


def encode_events_ack(ack: EventsAck) -> bytes:
    return json.dumps({"acked": list(ack.acked), "rejected": [{"id": i, "reason": r} for i, r in ack.rejected]},
                      separators=(",", ":")).encode()


def decode_events_ack(data: bytes | str | dict[str, Any]) -> EventsAck:
    """Raises ``PayloadError("malformed", ...)``."""
    try:
        d = data if isinstance(data, dict) else json.loads(data)
        if not isinstance(d, dict):
            raise TypeError("ack must be a JSON object")
        acked = tuple(int(i) for i in d.get("acked") or ())
        rejected = tuple((int(r["id"]), str(r.get("reason") or "rejected")) for r in d.get("rejected") or ())
    except (KeyError, TypeError, ValueError) as exc:
        raise PayloadError("malformed", f"bad events ack: {exc!r}") from None
    return EventsAck(acked, rejected)


# --- signed acks ---------------------------------------------------------------------------------
# The cloud signs every ack it sends an edge (batch acks, events acks, HTTP answers): ``sig`` is the
# hex HMAC-SHA256, keyed with the edge's secret, of the ack without ``sig`` as canonical JSON (sorted
# keys, no spaces, ASCII). It may name ``edge`` and the batch's ``inc`` (incarnation), which the edge
# checks, so a forged or replayed "rejected" ack cannot make an edge throw a batch away.

ACK_SIG_FIELD = "sig"


def ack_signing_bytes(ack: Mapping[str, Any]) -> bytes:
    """What ``sig`` signs: the ack without ``sig``, canonical JSON (sorted keys, no spaces, ASCII)."""
    return json.dumps({k: v for k, v in ack.items() if k != ACK_SIG_FIELD}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=False).encode()


def sign_ack(secret: bytes, ack: Mapping[str, Any]) -> dict[str, Any]:
    """``ack`` with its ``sig`` (what the cloud sends; see the module docstring)."""
    body = {k: v for k, v in ack.items() if k != ACK_SIG_FIELD}
    return body | {ACK_SIG_FIELD: hmac.new(secret, ack_signing_bytes(body), hashlib.sha256).hexdigest()}


def verify_ack(secret: bytes, ack: Mapping[str, Any]) -> bool | None:
    """None: the ack is not signed; else whether its ``sig`` is right."""
    sig = ack.get(ACK_SIG_FIELD)
    if sig is None:
        return None
    if not isinstance(sig, str) or not secret:
        return False
    try:
        want = hmac.new(secret, ack_signing_bytes(ack), hashlib.sha256).hexdigest()
    except (TypeError, ValueError):
        return False
    return hmac.compare_digest(want, sig.lower())


def signed_events_ack(ack: EventsAck, edge: str, key: bytes | None) -> bytes:
    """An events ack as sent to ``edge``: ``encode_events_ack`` plus ``edge`` and ``sig`` when keyed."""
    obj = json.loads(encode_events_ack(ack))
    if key:
        obj = sign_ack(key, obj | {"edge": edge})
    return json.dumps(obj, separators=(",", ":")).encode()
