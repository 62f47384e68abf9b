"""Edge status (buffer depth, lag, versions): small JSON, signed on every transport.

Over HTTP the signature (``sign_status``) rides in the ``X-Spinline-Signature`` header; over MQTT
(a retained message anyone on the broker could overwrite) it is a trailer, as for events:
``json_bytes b"\n" hex HMAC`` (``encode_status(..., key=)``, checked by ``verify_signed_status``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from spinline.core.errors import PayloadError

#: HTTP header carrying ``sign_status`` of a status body (over MQTT the signature is a trailer).
STATUS_SIGNATURE_HEADER = "X-Spinline-Signature"


def sign_status(secret: bytes, body: bytes) -> str:
    """Hex HMAC-SHA256 of a status body, so nobody but the edge can overwrite its fleet status."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def encode_status(status: dict[str, Any], *, key: bytes | None = None) -> bytes:
    """The status JSON; with ``key`` followed by ``b"\n"`` and its signature (the MQTT form)."""
    body = json.dumps(status, separators=(",", ":"), default=str).encode()
    return body if not key else body + b"\n" + sign_status(key, body).encode()


def verify_signed_status(data: bytes, key: bytes | None) -> bytes | None:
    """The JSON body of a status signed with ``key`` (trailer form), else None (unsigned, bad
    signature, or no key to check it with)."""
    body, sep, sig = data.rpartition(b"\n")
    if not key or not sep:
        return None
    return body if hmac.compare_digest(sign_status(key, body).encode(), sig.strip().lower()) else None


#: Status fields left out of what is published (a retained MQTT message is readable by anyone on the
#: broker): the buffer's newest seq tells a forger which acks to forge. The local status file keeps them.
PRIVATE_BUFFER_FIELDS = ("last_seq",)


def public_status(status: dict[str, Any]) -> dict[str, Any]:
    """``status`` without ``PRIVATE_BUFFER_FIELDS`` (what the edge publishes)."""
    buf = status.get("buffer")
    if not isinstance(buf, dict):
        return status
    return {**status, "buffer": {k: v for k, v in buf.items() if k not in PRIVATE_BUFFER_FIELDS}}


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
