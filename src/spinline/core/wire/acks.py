"""Signed acks: how the edge knows an ack (batch or events) really comes from the cloud."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from .events import EventsAck, encode_events_ack

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
