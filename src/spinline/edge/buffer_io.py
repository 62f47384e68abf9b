"""``AsyncBuffer``: the durable buffer on one worker thread, so fsyncs never block the event loop.

Every operation the agent, the collector and the forwarder need is a method here; nobody reaches
through to the wrapped ``EdgeBuffer`` (``.buffer`` stays public for tests and tools only).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

from spinline.core.batch import Batch
from spinline.core.site import Priority
from spinline.core.wire import EdgeEvent

from .buffer import BufferStats, EdgeBuffer, StoredBatch
from .buffer_retry import RetryPolicy, Settled

T = TypeVar("T")


class AsyncBuffer:
    """The buffer on one worker thread, so fsyncs never block the event loop."""

    def __init__(self, buffer: EdgeBuffer) -> None:
        self.buffer = buffer
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="edge-buffer")

    async def call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run ``fn`` on the buffer's thread (for I/O that belongs beside the buffer's, e.g. model slots)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kw))

    async def open(self) -> None:
        await self.call(self.buffer.open)

    async def close(self) -> None:
        await self.call(self.buffer.close)
        self._pool.shutdown(wait=True)

    @property
    def incarnation(self) -> str:
        return self.buffer.incarnation

    # --- batches -----------------------------------------------------------------------------------

    async def append(self, batch: Batch, priority: Priority, meta: dict[str, Any] | None = None) -> StoredBatch:
        return await self.call(self.buffer.append, batch, priority=priority, meta=meta)

    async def quarantine(self, batch: Batch, reason: str) -> None:
        await self.call(self.buffer.quarantine, batch, reason)

    async def stats(self) -> BufferStats:
        return await self.call(self.buffer.stats)

    async def last_seq(self) -> int:
        return await self.call(self.buffer.last_seq)

    async def seqs(self, *, order: Literal["asc", "desc"] = "asc", min_seq: int | None = None,
                   max_seq: int | None = None, limit: int = 1000) -> list[int]:
        return await self.call(self.buffer.seqs, order=order, min_seq=min_seq, max_seq=max_seq, limit=limit)

    async def get(self, seq: int) -> StoredBatch | None:
        return await self.call(self.buffer.get, seq)

    async def ack(self, seqs: Iterable[int]) -> int:
        return await self.call(self.buffer.ack, seqs)

    async def split(self, seq: int, max_rows: int) -> list[int]:
        return await self.call(self.buffer.split, seq, max_rows)

    async def dead_letter(self, seq: int, reason: str) -> bool:
        return await self.call(self.buffer.dead_letter, seq, reason)

    async def settle(self, seq: int, held: Any, reason: str, *, dead_reason: str | None,
                     policy: RetryPolicy) -> Settled:
        return await self.call(self.buffer.settle, seq, held, reason, dead_reason=dead_reason, policy=policy)

    async def release_held(self) -> list[int]:
        return await self.call(self.buffer.release_held)

    # --- events ------------------------------------------------------------------------------------

    async def append_events(self, events: Iterable[EdgeEvent]) -> list[EdgeEvent]:
        return await self.call(self.buffer.append_events, events)

    async def pending_events(self, *, limit: int = 100) -> list[EdgeEvent]:
        return await self.call(self.buffer.pending_events, limit=limit)

    async def ack_events(self, ids: Iterable[int]) -> int:
        return await self.call(self.buffer.ack_events, ids)

    async def reject_events(self, rejected: Iterable[tuple[int, str]]) -> int:
        return await self.call(self.buffer.reject_events, rejected)
