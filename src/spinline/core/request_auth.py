"""Signed HTTP requests from an edge: how an edge proves who it is on a GET (no body to sign).

The batch, events and status uplinks sign their bodies; the model update routes (TUF metadata,
targets, the update report) are mostly GETs, so the edge signs the request line instead: HMAC-SHA256
with its secret over ``METHOD\\nPATH\\nTIME_NS\\n`` plus the body, sent as three headers. The cloud
accepts a request whose time is within ``MAX_SKEW_S`` of its own clock (a captured request cannot be
replayed for long) and whose signature matches the edge's active secret.
"""

from __future__ import annotations

import hashlib
import hmac

EDGE_HEADER = "X-Spinline-Edge"
TIME_HEADER = "X-Spinline-Time"
SIGNATURE_HEADER = "X-Spinline-Request-Signature"
MAX_SKEW_S = 300


def request_signature(secret: bytes, method: str, path: str, ts_ns: int, body: bytes = b"") -> str:
    """Hex HMAC-SHA256 of the request line, the time and the body."""
    msg = f"{method.upper()}\n{path}\n{ts_ns}\n".encode() + body
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def sign_request(secret: bytes, edge: str, method: str, path: str, ts_ns: int, body: bytes = b"") -> dict[str, str]:
    """The three headers an edge adds to a request."""
    return {EDGE_HEADER: edge, TIME_HEADER: str(ts_ns),
            SIGNATURE_HEADER: request_signature(secret, method, path, ts_ns, body)}


def check_request(secret: bytes, method: str, path: str, ts_header: str | None, signature: str | None,
                  now_ns: int, body: bytes = b"") -> str | None:
    """None when the request is genuine and fresh, else why not (for the refusal count, not for the caller)."""
    if not ts_header or not signature:
        return "unsigned"
    try:
        ts_ns = int(ts_header)
    except ValueError:
        return "bad time header"
    if abs(now_ns - ts_ns) > MAX_SKEW_S * 10**9:
        return "request time too far from the cloud's clock"
    good = request_signature(secret, method, path, ts_ns, body)
    return None if hmac.compare_digest(good, signature.strip().lower()) else "bad signature"
