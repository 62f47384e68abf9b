"""Password hashing with argon2id (memory-hard; argon2-cffi), cost from the settings."""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 8


class Passwords:
    """Hash and verify passwords. ``verify`` costs the same for unknown users (``dummy_verify``)."""

    def __init__(self, *, time_cost: int = 3, memory_kib: int = 65536, parallelism: int = 4) -> None:
        self._ph = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism,
                                  type=Type.ID)
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
        return self._ph.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._ph.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._ph.check_needs_rehash(password_hash)

    def dummy_verify(self, password: str) -> None:
        """Spend a verification's time for a user that does not exist (no user-enumeration by timing)."""
        if self._dummy is None:
            self._dummy = self._ph.hash("not-a-real-password")
        self.verify(self._dummy, password)
