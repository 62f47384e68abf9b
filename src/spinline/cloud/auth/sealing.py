"""Edge secrets at rest: sealed with AES-256-GCM under the server key.

The cloud must know each edge's secret itself to check the HMAC of its payloads, so the secret is
stored encrypted (not hashed). The edge id is the associated data: a sealed secret copied onto
another edge's row does not open.
"""

from __future__ import annotations

import base64
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from spinline.core.errors import AuthError

NONCE_BYTES = 12


def new_edge_secret() -> str:
    """A new edge secret (256 bits, URL-safe text: what the edge is configured with)."""
    return secrets.token_urlsafe(32)


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the server key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, edge_id: str, secret: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        ct = self._aead.encrypt(nonce, secret.encode(), edge_id.encode())
        return base64.b64encode(nonce + ct).decode("ascii")

    def open(self, edge_id: str, sealed: str) -> str:
        raw = base64.b64decode(sealed)
        try:
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], edge_id.encode()).decode()
        except InvalidTag:
            raise AuthError(f"the secret of edge {edge_id!r} does not open with this server key") from None
