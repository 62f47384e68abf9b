"""Edge status (buffer depth, lag, versions): small JSON, signed over HTTP with ``sign_status``."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from spinline.core.errors import PayloadError

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
