"""Signed acks: how the edge knows an ack (batch or events) really comes from the cloud."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from spinline.core.batch import Batch
from spinline.core.errors import PayloadError

from .batches import INT64_MAX, INT64_MIN
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


# --- which refused rows the edge re-sends ----------------------------------------------------------
# A batch ack may name rows the cloud refused for its own state (``CLOUD_STATE_REASONS``) in ``retry``:
# ``{"points": [key, ...], "after_ns": t, "before_ns": t}`` (each optional). A row is one of them when its
# point is in ``points`` (unknown to the cloud), or its timestamp is above ``after_ns`` (ahead of the
# cloud clock's limit) or below ``before_ns`` (past the retention). No per-row list crosses the wire.

#: Most point keys one ``retry`` may name.
MAX_RETRY_POINTS = 1_000_000


def retry_rows(batch: Batch, retry: Mapping[str, Any]) -> npt.NDArray[np.bool_]:
    """The rows of ``batch`` an ack's ``retry`` selects; ``PayloadError`` (malformed) for a bad selector."""
    try:
        points = retry.get("points") or []
        after, before = retry.get("after_ns"), retry.get("before_ns")
        if not isinstance(points, list) or len(points) > MAX_RETRY_POINTS or \
                not all(type(k) is int and INT64_MIN <= k <= INT64_MAX for k in points):
            raise TypeError("points must be a list of int64 point keys")
        for name, v in (("after_ns", after), ("before_ns", before)):
            if v is not None and (type(v) is not int or not INT64_MIN <= v <= INT64_MAX):
                raise TypeError(f"{name} must be an int64")
    except (TypeError, AttributeError) as exc:
        raise PayloadError("malformed", f"bad retry selector: {exc}") from None
    mask = np.zeros(len(batch), dtype=bool)
    if points:
        mask |= np.isin(batch.point, np.asarray(points, dtype=np.int64))
    if after is not None:
        mask |= batch.ts_ns > after
    if before is not None:
        mask |= batch.ts_ns < before
    return mask
