"""Password hashing with argon2id (memory-hard; argon2-cffi), cost from the settings.

Each hash or check takes ``memory_kib`` of memory and ``parallelism`` threads, so at most
``max_concurrent`` run at once (a login flood cannot take the process's memory with it); a caller
that waits longer than ``wait_s`` for its turn gets ``PasswordsBusy``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 8
T = TypeVar("T")


class PasswordsBusy(RuntimeError):
    """Every password-check slot stayed taken for longer than the wait allows."""


class Passwords:
    """Hash and verify passwords. ``verify`` costs the same for unknown users (``dummy_verify``)."""

    def __init__(self, *, time_cost: int = 3, memory_kib: int = 65536, parallelism: int = 4,
                 max_concurrent: int = 2, wait_s: float = 10.0) -> None:
        self._ph = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism,
                                  type=Type.ID)
        self._dummy: str | None = None
        self._dummy_lock = threading.Lock()
        self.max_concurrent = max_concurrent
        self.wait_s = wait_s
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._count_lock = threading.Lock()
        self._running = 0
        #: The most checks or hashes seen running at once (for tests and the bench).
        self.peak_concurrent = 0

    def _bounded(self, fn: Callable[[], T]) -> T:
        if not self._slots.acquire(timeout=self.wait_s):
            raise PasswordsBusy(f"all {self.max_concurrent} password-check slots stayed busy for {self.wait_s:g} s")
        try:
            with self._count_lock:
                self._running += 1
                self.peak_concurrent = max(self.peak_concurrent, self._running)
            return fn()
        finally:
            with self._count_lock:
                self._running -= 1
            self._slots.release()

    def hash(self, password: str) -> str:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
        return self._bounded(lambda: self._ph.hash(password))

    def verify(self, password_hash: str, password: str) -> bool:
        def check() -> bool:
            try:
                return self._ph.verify(password_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return self._bounded(check)

    def needs_rehash(self, password_hash: str) -> bool:
        return self._ph.check_needs_rehash(password_hash)

    def dummy_verify(self, password: str) -> None:
        """Spend a verification's time for a user that does not exist (no user-enumeration by timing)."""
        with self._dummy_lock:             # once, and not by every one of a flood's first attempts at once
            if self._dummy is None:
                self._dummy = self._bounded(lambda: self._ph.hash("not-a-real-password"))
        self.verify(self._dummy, password)
