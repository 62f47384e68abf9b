"""Refusals nobody proved they sent are counted in memory, not stored row by row.

Anyone can post junk to ``/api/v1/ingest`` or publish it on the broker. Each refusal used to be a
row in the store's rejections table (kept 90 days, no cap), so junk was an unauthenticated way to
fill the database. ``BoundedRejections`` wraps the store: a refusal under the neutral edge
``UNVERIFIED_EDGE`` (signature not verified) only bumps a counter per reason and joins a bounded
sample of the latest ones; a verified edge's own refusals (signed, so bounded by that edge's own
rate) are still stored. ``rejections()`` and ``recent_rejections()`` answer both together, so the
fleet view still shows how much junk arrived and of what kind. The counts restart with the process.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any, Literal

from spinline.cloud.storage.base import (
    Completeness,
    EdgeStatus,
    PointInfo,
    Rejection,
    Resolution,
    Rollup,
    Series,
    TimeSeriesStore,
    WriteResult,
)
from spinline.core.batch import Batch

#: The edge name of refusals whose sender is not proven (``spinline.cloud.ingest.service.UNVERIFIED_EDGE``).
UNVERIFIED = "?"


class BoundedRejections:
    """A ``TimeSeriesStore`` whose unverified refusals are counted in memory (``sample`` newest kept)."""

    def __init__(self, store: TimeSeriesStore, *, sample: int = 100) -> None:
        self.inner = store
        self.counts: Counter[str] = Counter()
        self.sample: deque[Rejection] = deque(maxlen=sample)
        self._lock = threading.Lock()

    # --- the part that differs ---------------------------------------------------------------------

    def record_rejection(self, rejection: Rejection) -> None:
        if rejection.edge != UNVERIFIED:
            self.inner.record_rejection(rejection)
            return
        with self._lock:
            self.counts[rejection.reason] += 1
            self.sample.append(rejection)

    def rejections(self, edge: str | None = None) -> dict[str, dict[str, int]]:
        out = self.inner.rejections(edge)
        if edge in (None, UNVERIFIED):
            with self._lock:
                mine = dict(self.counts)
            if mine:
                merged = dict(out.get(UNVERIFIED, {}))
                for reason, n in mine.items():
                    merged[reason] = merged.get(reason, 0) + n
                out = {**out, UNVERIFIED: merged}
        return out

    def recent_rejections(self, edge: str | None = None, limit: int = 100) -> list[Rejection]:
        stored = self.inner.recent_rejections(edge, limit)
        if edge not in (None, UNVERIFIED):
            return stored
        with self._lock:
            mine = list(self.sample)
        return sorted(stored + mine, key=lambda r: r.ts_ns, reverse=True)[:limit]

    # --- the rest is the store's --------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def migrate(self) -> None:
        self.inner.migrate()

    def register_points(self, points: Sequence[PointInfo]) -> None:
        self.inner.register_points(points)

    def points(self, mill: str | None = None, *, tag: str | None = None) -> list[PointInfo]:
        return self.inner.points(mill, tag=tag)

    def write(self, batch: Batch, *, idempotency_key: str | None = None, digest: str | None = None,
              note: str | None = None) -> WriteResult:
        return self.inner.write(batch, idempotency_key=idempotency_key, digest=digest, note=note)

    def write_many(self, items: Sequence[tuple[Batch, str | None]], *,
                   digests: Sequence[str | None] | None = None,
                   notes: Sequence[str | None] | None = None) -> list[WriteResult]:
        return self.inner.write_many(items, digests=digests, notes=notes)

    def latest(self, points: Sequence[int]) -> Batch:
        return self.inner.latest(points)

    def range(self, point: int, start_ns: int, end_ns: int, *, max_points: int | None = None,
              resolution: Resolution | Literal["auto"] = "auto") -> Series:
        return self.inner.range(point, start_ns, end_ns, max_points=max_points, resolution=resolution)

    def rollup(self, points: Sequence[int], start_ns: int, end_ns: int, resolution: Literal["1m", "1h"]) -> Rollup:
        return self.inner.rollup(points, start_ns, end_ns, resolution)

    def refresh_rollups(self) -> None:
        self.inner.refresh_rollups()

    def apply_retention(self, now_ns: int) -> dict[str, int]:
        return self.inner.apply_retention(now_ns)

    def completeness(self, points: Sequence[int], start_ns: int, end_ns: int) -> dict[int, Completeness]:
        return self.inner.completeness(points, start_ns, end_ns)

    def record_edge_status(self, edge: str, mill: str, status: dict[str, Any], received_ns: int) -> None:
        self.inner.record_edge_status(edge, mill, status, received_ns)

    def edge_status(self, mill: str | None = None) -> dict[str, EdgeStatus]:
        return self.inner.edge_status(mill)

    def close(self) -> None:
        self.inner.close()
