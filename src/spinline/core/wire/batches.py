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

Edge status (buffer depth, lag, versions) travels separately as small JSON (``wire.status``).
Edge events (alarms, diagnoses, model changes) travel as signed JSON with their own ack
(``wire.events``); acks are signed as ``wire.acks`` says; topics and paths are ``wire.topics``'.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import zlib
from collections.abc import Callable
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
#: Expanded body bytes per row at most: point, ts_ns, value (8 each), quality (1), seq (8).
ROW_BYTES = 33
#: Room kept for the prefix, the JSON header (meta can carry model versions) and the MAC.
HEADER_ALLOWANCE = 1 << 20


def max_batch_rows(max_bytes: int = MAX_PAYLOAD_BYTES, max_rows: int = MAX_ROWS) -> int:
    """Most rows one payload may carry so the cloud's row limit and byte limit (``max_ingest_bytes``,
    checked on the expanded size) both hold: the edge splits batches to this at commit and at send,
    so a backlog after a commit-failure episode is never one payload the cloud must refuse."""
    return max(1, min(max_rows, (max_bytes - HEADER_ALLOWANCE) // ROW_BYTES))

BatchKind = Literal["live", "backlog"]

#: Stable reason codes for refused payloads (counted per edge, shown in the API).
#: ``conflicting_duplicate``: the batch's idempotency key was stored before with other rows (a buffer
#: restored from a snapshot re-using its seqs); final, so the edge dead-letters it instead of re-sending
#: it forever.
REASONS = ("malformed", "unsupported_version", "oversized", "unknown_point", "wrong_type",
           "non_finite", "future_timestamp", "clock_skew", "unauthorised", "duplicate", "too_old",
           "conflicting_duplicate")
#: Row refusals caused by the cloud's state, not by the row (its site file lags the edge's, its clock is
#: slow, its retention changed): an ack names those rows in ``retry`` and the edge re-sends them later,
#: with backoff, instead of dead-lettering them.
CLOUD_STATE_REASONS = frozenset({"unknown_point", "future_timestamp", "too_old"})
#: Batch meta key by which an edge says it re-buffers the rows an ack's ``retry`` names: the cloud then
#: stores the rest of a batch with cloud-state refusals instead of refusing the whole batch.
META_REBUFFERS = "rebuffers"

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
