"""Login tokens: random opaque bearer tokens, stored only as their SHA-256 (with an expiry).

Opaque tokens rather than signed ones because a logout, a password change or a role change must end
a session at once: the token table is the single source of truth, and a stolen copy of it holds no
usable token (sha256 of 256 random bits cannot be inverted).
"""

from __future__ import annotations

import hashlib
import secrets


def new_token() -> tuple[str, str]:
    """A fresh token and the hash to store."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
