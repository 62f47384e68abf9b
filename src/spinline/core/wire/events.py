"""Edge events (alarms, diagnoses, model changes): signed JSON with their own ack.

The contract is spelled out in the comment block below; topics and paths are ``wire.topics``'.
"""

from __future__ import annotations

import hmac
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from spinline.core.errors import PayloadError

from .batches import _PARSE_ERRORS, INT64_MAX, MAX_INCARNATION, KeyLookup, UnverifiedPayload
from .status import sign_status
from .topics import EVENTS_CONTENT_TYPE as EVENTS_CONTENT_TYPE
from .topics import EVENTS_PATH as EVENTS_PATH
from .topics import TOPIC_EVENTS as TOPIC_EVENTS
from .topics import TOPIC_EVENTS_ACK as TOPIC_EVENTS_ACK

# --- edge events (alarms, diagnoses, model changes) ------------------------------------------------
#
# Contract (the cloud implements the receiving side):
#
# * Edge -> cloud, MQTT QoS 1 on ``TOPIC_EVENTS``, or HTTP ``POST {base}{EVENTS_PATH}`` with
#   ``Content-Type: EVENTS_CONTENT_TYPE``; the same bytes either way (``encode_events``)::
#
#       {"v": 1, "edge": ..., "mill": ..., "inc": ..., "events": [EdgeEvent.to_dict(), ...]}  b"\n"  hex HMAC
#
#   The trailer (after the last newline) is ``sign_status(secret, json_bytes)``: hex HMAC-SHA256 of
#   the JSON bytes before the newline, keyed with the edge's secret. Without a secret the payload is
#   the JSON alone. ``decode_events(data, key_lookup=...)`` checks all of it.
# * ``(edge, inc, event.id)`` is the idempotency key: ``id`` is assigned when the edge commits the
#   event to its durable buffer and every re-send carries the same one; ``inc`` is the buffer's
#   incarnation (as in batch headers), so a wiped or re-imaged gateway whose ids restart at 1 is not
#   taken for a re-send. A payload without ``"inc"`` (an edge from before) keys as ``inc == ""``.
#   Store each event once.
# * Cloud -> edge ack (``encode_events_ack``): ``{"acked": [id, ...], "rejected": [{"id", "reason"}],
#   "inc": ...}`` (``inc`` echoes the payload's, when it had one: an edge acts only on acks of its own
#   incarnation)
#   on ``TOPIC_EVENTS_ACK`` (MQTT, QoS 1) or as the HTTP 200 response body. ``acked`` = stored now or
#   already stored (duplicates are acked too); ``rejected`` = refused for good (the edge keeps them in
#   its ``dead_events`` table), e.g. an event whose ``ts_ns`` is out of range (the cloud decodes with
#   ``per_event=True``: one bad event never holds up the others). An event that is neither stays in
#   the edge buffer and is re-sent after the ack timeout. A payload that fails the signature check
#   (or cannot be read far enough to check it) gets no ack (MQTT) / HTTP 401 or 400.

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
    #: The edge buffer's incarnation ("" from an edge that sends none).
    incarnation: str = ""


@dataclass(frozen=True, slots=True)
class EventsAck:
    acked: tuple[int, ...] = ()
    #: (event id, reason) of events the cloud refuses for good.
    rejected: tuple[tuple[int, str], ...] = ()
    #: The incarnation of the payload acked ("" when it had none).
    incarnation: str = ""


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
                  key: bytes | None = None, incarnation: str = "") -> bytes:
    """The events payload (see the contract above); signed when ``key`` is given."""
    if len(events) > MAX_EVENTS:
        raise ValueError(f"{len(events)} events in one payload, limit {MAX_EVENTS}")
    if len(incarnation) > MAX_INCARNATION:
        raise ValueError(f"incarnation longer than {MAX_INCARNATION} characters")
    d: dict[str, Any] = {"v": EVENTS_VERSION, "edge": edge, "mill": mill}
    if incarnation:
        d["inc"] = incarnation
    d["events"] = [e.to_dict() for e in events]
    body = json.dumps(d, separators=(",", ":"), allow_nan=False).encode()
    if key is None:
        return body
    return body + b"\n" + sign_status(key, body).encode()


def require_edge_signature(key_lookup: KeyLookup, edge: str, body: bytes, sig: bytes, what: str) -> None:
    """Refuse (``unauthorised``) a message whose trailer is not ``body`` signed with ``edge``'s key: the
    one check behind every signed JSON message an edge sends (events, raw snapshots)."""
    secret = key_lookup(edge)
    if secret is None:
        raise UnverifiedPayload("unauthorised", f"unknown or revoked edge {edge[:64]!r}")
    if not sig or not hmac.compare_digest(sign_status(secret, body).encode(), sig.strip()):
        raise UnverifiedPayload("unauthorised", f"{what} signature check failed for edge {edge[:64]!r}")


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
        inc = d.get("inc", "")
        if not isinstance(inc, str) or len(inc) > MAX_INCARNATION:
            raise TypeError(f"inc must be a string of at most {MAX_INCARNATION} characters")
    except _PARSE_ERRORS as exc:
        raise UnverifiedPayload("malformed", f"bad events payload: {type(exc).__name__}") from None
    if type(version) is not int or version != EVENTS_VERSION:
        raise UnverifiedPayload("unsupported_version", f"events payload version {str(version)[:20]}, this side "
                                                       f"reads {EVENTS_VERSION}")
    if key_lookup is not None:
        require_edge_signature(key_lookup, edge, body, sig, "events")
    if len(raw) > MAX_EVENTS:
        raise PayloadError("oversized", f"{len(raw)} events, limit {MAX_EVENTS}")
    if not per_event:
        return EventsPayload(edge, mill, tuple(EdgeEvent.from_dict(e) for e in raw), incarnation=inc)
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
    return EventsPayload(edge, mill, tuple(good), tuple(invalid), incarnation=inc)


def encode_events_ack(ack: EventsAck) -> bytes:
    d: dict[str, Any] = {"acked": list(ack.acked), "rejected": [{"id": i, "reason": r} for i, r in ack.rejected]}
    if ack.incarnation:
        d["inc"] = ack.incarnation
    return json.dumps(d, separators=(",", ":")).encode()


def decode_events_ack(data: bytes | str | dict[str, Any]) -> EventsAck:
    """Raises ``PayloadError("malformed", ...)``."""
    try:
        d = data if isinstance(data, dict) else json.loads(data)
        if not isinstance(d, dict):
            raise TypeError("ack must be a JSON object")
        acked = tuple(int(i) for i in d.get("acked") or ())
        rejected = tuple((int(r["id"]), str(r.get("reason") or "rejected")) for r in d.get("rejected") or ())
        inc = d.get("inc", "")
        if not isinstance(inc, str):
            raise TypeError("inc must be a string")
    except (KeyError, TypeError, ValueError) as exc:
        raise PayloadError("malformed", f"bad events ack: {exc!r}") from None
    return EventsAck(acked, rejected, inc)
