"""Open live (SSE) streams per user: a limit on how many, and an end the moment their session ends.

A stream holds a slot from its request until its response is over. ``end`` (subscribed to
``Accounts.on_sessions_ended``) is called from any thread (the sync routes run in a thread pool):
it wakes each affected stream on its own event loop, so a logout, a disabled user or a revoked
token closes the user's open streams at once rather than at the next poll. The streams also
re-check their credential on every poll, which covers sessions ended by another process (the CLI,
a second API replica).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from spinline.cloud.auth.service import SessionEnd


class TooManyStreams(Exception):
    """The user already holds ``limit`` open streams."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"at most {limit} live streams per user are open at once; close one first")


@dataclass(eq=False)
class LiveStream:
    """One open stream: whose, by which credential (a token's or session's hash), and its end signal."""

    user_id: int
    credential: str
    loop: asyncio.AbstractEventLoop
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: Why it ended (None while open).
    reason: str | None = None


class LiveStreams:
    def __init__(self, max_per_user: int) -> None:
        self.max_per_user = max_per_user
        self._open: dict[int, set[LiveStream]] = {}
        self._lock = threading.Lock()

    def open(self, user_id: int, credential: str) -> LiveStream:
        """Take a slot (call on the event loop); ``TooManyStreams`` when the user has none left."""
        s = LiveStream(user_id, credential, asyncio.get_running_loop())
        with self._lock:
            mine = self._open.setdefault(user_id, set())
            if len(mine) >= self.max_per_user:
                raise TooManyStreams(self.max_per_user)
            mine.add(s)
        return s

    def close(self, s: LiveStream) -> None:
        with self._lock:
            mine = self._open.get(s.user_id)
            if mine is not None:
                mine.discard(s)
                if not mine:
                    del self._open[s.user_id]

    def count(self, user_id: int | None = None) -> int:
        with self._lock:
            if user_id is not None:
                return len(self._open.get(user_id, ()))
            return sum(len(v) for v in self._open.values())

    def end(self, end: SessionEnd) -> int:
        """End the streams of ``end`` (thread-safe); returns how many were told to stop."""
        with self._lock:
            hit = [s for s in self._open.get(end.user_id, ()) if end.token_hash in (None, s.credential)]
        for s in hit:
            s.reason = "the session ended"
            try:
                s.loop.call_soon_threadsafe(s.ended.set)
            except RuntimeError:  # its loop is closed: the stream is gone with it
                self.close(s)
        return len(hit)
