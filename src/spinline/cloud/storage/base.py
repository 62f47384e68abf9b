"""The storage interface every backend implements and the shared test suite exercises.

The interface is synchronous: DuckDB is an in-process library and psycopg's COPY is fastest in
blocking mode. Async callers (ingest workers, FastAPI routes) run it in a worker thread.

Everything is columnar (``Batch`` in, numpy columns out): a chart of a year of 1 s data must read
rollups, never a Python object per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from spinline.core.batch import Batch

Resolution = Literal["raw", "1m", "1h"]
RESOLUTION_NS: dict[str, int] = {"raw": 0, "1m": 60 * 10**9, "1h": 3600 * 10**9}


@dataclass(frozen=True, slots=True)
class PointInfo:
    """What the cloud knows about a point (registered from the site file)."""

    key: int
    tag: str              # "{mill}/{machine}/{point}"
    mill: str
    machine: str
    name: str
    unit: str
    kind: str             # gauge | counter | state
    interval_s: float
    line: str = ""
    workshop: str = ""
    machine_type: str = ""
    deadband: float = 0.0
    #: Counters only: the value at which the register wraps to 0 (None: a drop is a reset).
    rollover: float | None = None
    #: ISO 20816 machine class of the point's machine (I..IV, from its template); None: not known.
    iso_class: str | None = None
    #: ``interval`` (a sample every interval) or ``on_change`` (report by exception: OPC UA monitored
    #: items, on-change MQTT devices, deadbanded points); see ``spinline.core.site.PointRef.report``.
    report: str = "interval"
    #: On-change points: the longest normal silence in seconds (None: unknown, silence is no gap).
    keepalive_s: float | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Outcome of one idempotent write.

    An idempotency key is kept with the digest of the content first stored under it. A second write
    with the same key and the same digest is a ``duplicate`` (a re-send: nothing stored, safe to ack);
    with another digest it is a ``conflict``: the same (edge, incarnation, seq) now names other rows
    (a buffer restored from a snapshot reusing its sequence numbers), nothing is stored, and the
    caller must refuse it loudly instead of acking it as done.
    """

    stored: int           # rows stored by this call
    duplicate: bool       # the key was seen before with the same content: nothing stored
    conflict: bool = False  # the key was seen before with OTHER content: nothing stored
    #: The note kept with the key when it was first stored (the ingest's row refusals, JSON), so the
    #: answer to a re-send repeats what the first answer said.
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Series:
    """One point's values over a range, possibly reduced for a chart."""

    point: int
    ts_ns: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    resolution: str       # which data answered: raw | 1m | 1h
    reduced: bool         # True when downsampled to fit max_points


@dataclass(frozen=True, slots=True)
class Rollup:
    """Aggregates per point and bucket, as columns (all the same length)."""

    point: npt.NDArray[np.int64]
    bucket_ns: npt.NDArray[np.int64]
    min: npt.NDArray[np.float64]
    max: npt.NDArray[np.float64]
    mean: npt.NDArray[np.float64]
    last: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]
    #: For counters: increase within the bucket (roll-overs and resets handled); NaN for gauges.
    delta: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.point)


@dataclass(frozen=True, slots=True)
class Rejection:
    edge: str
    reason: str
    detail: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class EdgeStatus:
    """The last status message an edge sent (buffer depth, lag, versions ...), as received."""

    edge: str
    mill: str
    status: dict[str, Any]
    received_ns: int


@dataclass(frozen=True, slots=True)
class Gap:
    """A hole in one point's data.

    The edge numbers the samples it *emits* per point (after deadband), durably and without reuse,
    so the cloud can tell two kinds of hole apart:

    - ``lost``: a jump in ``seq`` — the edge emitted samples that never got stored;
    - ``not_collected``: consecutive rows further apart in time than the point's interval allows
      with no jump in ``seq`` — nobody sampled (edge process down, device down). For points that
      report on change (``PointInfo.report``) silence is normal: judged only past their keep-alive,
      and never when no keep-alive is known.
    """

    point: int
    start_ns: int         # last sample before the gap
    end_ns: int           # first sample after the gap
    missing: int          # samples missing
    kind: str = "lost"    # lost | not_collected


@dataclass(frozen=True, slots=True)
class Completeness:
    """Share of expected samples received, per point over a window, with the gaps named.

    expected = received + missing of every gap.
    """

    expected: int
    received: int
    gaps: list[Gap] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.received / self.expected if self.expected else 1.0


@runtime_checkable
class TimeSeriesStore(Protocol):
    """Time-series storage. Both backends pass tests/cloud/storage/ unchanged."""

    def migrate(self) -> None:
        """Create or upgrade the schema (idempotent)."""

    def register_points(self, points: Sequence[PointInfo]) -> None:
        """Insert or update point metadata."""

    def points(self, mill: str | None = None, *, tag: str | None = None) -> list[PointInfo]:
        """Registered points (of one mill; with ``tag``: only the point of that tag, a lookup that reads
        one row instead of a mill's hundreds, as a chart request needs)."""

    def write(self, batch: Batch, *, idempotency_key: str | None = None, digest: str | None = None,
              note: str | None = None) -> WriteResult:
        """Store rows once: a key seen before stores nothing and returns ``duplicate=True`` (same
        content) or ``conflict=True`` (other content). ``digest``: of the content the key names
        (default ``shared.batch_digest(batch)``); ``note``: kept with the key, echoed on duplicates."""

    def latest(self, points: Sequence[int]) -> Batch:
        """The most recent row of each point that has one."""

    def range(self, point: int, start_ns: int, end_ns: int, *, max_points: int | None = None,
              resolution: Resolution | Literal["auto"] = "auto") -> Series:
        """Values in [start, end); ``auto`` picks the coarsest data that still fills max_points."""

    def rollup(self, points: Sequence[int], start_ns: int, end_ns: int,
               resolution: Literal["1m", "1h"]) -> Rollup:
        """Aggregates per bucket for [start, end)."""

    def refresh_rollups(self) -> None:
        """Bring the 1 min and 1 h rollups up to date with the raw data written so far."""

    def apply_retention(self, now_ns: int) -> dict[str, int]:
        """Drop data older than each resolution's retention; returns rows dropped per resolution."""

    def completeness(self, points: Sequence[int], start_ns: int, end_ns: int) -> dict[int, Completeness]:
        """Expected vs received samples per point, and the gaps, from per-point sequence numbers."""

    def record_rejection(self, rejection: Rejection) -> None:
        """Count a refused batch (reason per edge) so the API can show it."""

    def rejections(self, edge: str | None = None) -> dict[str, dict[str, int]]:
        """Rejected batch counts as {edge: {reason: count}}."""

    def write_many(self, items: Sequence[tuple[Batch, str | None]], *,
                   digests: Sequence[str | None] | None = None,
                   notes: Sequence[str | None] | None = None) -> list[WriteResult]:
        """Several idempotent writes in ONE transaction (an ingest worker coalescing payloads).

        Results are in the order of ``items``; a key repeated within ``items`` is a duplicate (or a
        conflict, when its digest differs). ``digests``/``notes``: as ``write``, one per item.
        """

    def record_edge_status(self, edge: str, mill: str, status: dict[str, Any], received_ns: int) -> None:
        """Keep the latest status message of an edge."""

    def edge_status(self, mill: str | None = None) -> dict[str, EdgeStatus]:
        """The latest status of every edge (of one mill), by edge id."""

    def recent_rejections(self, edge: str | None = None, limit: int = 100) -> list[Rejection]:
        """The most recent refused batches, newest first, with their detail."""

    def close(self) -> None:
        """Release connections and files."""
