"""Per-point report filter (pure, vectorised): deadband, heartbeat and plausible-range flags.

A sample is emitted when it is the point's first, when its quality changed, when it moved by
more than the point's deadband since the last *emitted* value, or when ``heartbeat_s`` passed
since the last emission (so a flat deadbanded signal still proves it is alive). A deadband of 0
emits every sample. Values outside the point's ``min``/``max`` are flagged UNCERTAIN; the rows
flagged by the last ``apply`` are kept in ``out_of_range`` for the caller to count (the agent
counts them per device as bad input).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from spinline.core.batch import Batch, Quality
from spinline.core.site import PointKind, PointRef, Priority

from .buffer import per_point_rank


class PointTable:
    """Per-point settings as arrays indexed by position in the sorted key array."""

    def __init__(self, points: Sequence[PointRef], *, heartbeat_s: float = 60.0) -> None:
        keys = np.asarray([p.key for p in points], dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        if len(self.keys) > 1 and bool(np.any(self.keys[1:] == self.keys[:-1])):
            raise ValueError("duplicate point keys")
        pts = [points[i] for i in order]
        self.refs = pts
        self.deadband = np.asarray([p.point.deadband for p in pts], dtype=np.float64)
        self.lo = np.asarray([-np.inf if p.point.min is None else p.point.min for p in pts], dtype=np.float64)
        self.hi = np.asarray([np.inf if p.point.max is None else p.point.max for p in pts], dtype=np.float64)
        self.priority = np.asarray([p.point.priority.rank for p in pts], dtype=np.int8)
        #: Point kinds the cloud checks (``validate.screen``): states are whole numbers, counters not below 0.
        self.state = np.asarray([p.point.kind == PointKind.STATE for p in pts], dtype=bool)
        self.counter = np.asarray([p.point.kind == PointKind.COUNTER for p in pts], dtype=bool)
        self.heartbeat_ns = np.asarray([int(max(heartbeat_s, p.point.interval_s) * 1e9) for p in pts],
                                       dtype=np.int64)

    def index(self, point: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Positions of ``point`` keys in the table and a mask of the keys the table knows."""
        idx = np.searchsorted(self.keys, point)
        idx = np.minimum(idx, max(len(self.keys) - 1, 0))
        known = self.keys[idx] == point if len(self.keys) else np.zeros(len(point), dtype=bool)
        return idx.astype(np.intp), np.asarray(known)


class ReportFilter:
    """Stateful deadband/heartbeat filter over a ``PointTable``; unknown points pass unchanged."""

    def __init__(self, table: PointTable) -> None:
        self.table = table
        n = len(table.keys)
        self.last_v = np.full(n, np.nan)
        self.last_q = np.zeros(n, dtype=np.uint8)
        self.last_t = np.full(n, -1, dtype=np.int64)
        #: Rows the last ``apply`` flagged as outside their point's plausible range (None: none).
        self.out_of_range: Batch | None = None

    def _one_pass(self, b: Batch) -> npt.NDArray[np.bool_]:
        t = self.table
        idx, known = t.index(b.point)
        keep = np.ones(len(b), dtype=bool)
        if not known.any():
            return keep
        ki = idx[known]
        v, q, ts = b.value[known], b.quality[known], b.ts_ns[known]
        lv, lq, lt = self.last_v[ki], self.last_q[ki], self.last_t[ki]
        db = t.deadband[ki]
        with np.errstate(invalid="ignore"):
            moved = np.abs(v - lv) > db
        nan_change = np.isnan(v) != np.isnan(lv)
        emit = (lt < 0) | (db <= 0) | (q != lq) | moved | nan_change | (ts - lt >= t.heartbeat_ns[ki])
        keep[known] = emit
        e = ki[emit]
        self.last_v[e] = v[emit]
        self.last_q[e] = q[emit]
        self.last_t[e] = ts[emit]
        return keep

    def apply(self, batch: Batch) -> Batch:
        """Rows of ``batch`` to report, range-flagged. Rows of one point are taken in order."""
        self.out_of_range = None
        if not len(batch):
            return batch
        t = self.table
        idx, known = t.index(batch.point)
        q = batch.quality
        if known.any():
            with np.errstate(invalid="ignore"):
                out = known & ((batch.value < t.lo[idx]) | (batch.value > t.hi[idx])) & (q < Quality.UNCERTAIN)
            if out.any():
                self.out_of_range = batch.take(out)
                q = q.copy()
                q[out] = np.uint8(Quality.UNCERTAIN)
                batch = Batch(batch.point, batch.ts_ns, batch.value, q, batch.seq)
        _, _, rank, counts = per_point_rank(batch.point)
        if int(counts.max()) == 1:
            return batch.take(self._one_pass(batch))
        keep = np.zeros(len(batch), dtype=bool)
        for r in range(int(counts.max())):
            rows = np.flatnonzero(rank == r)
            keep[rows] = self._one_pass(batch.take(rows))
        return batch.take(keep)

    def priority_of(self, batch: Batch) -> npt.NDArray[np.int8]:
        idx, known = self.table.index(batch.point)
        pr = self.table.priority[idx] if len(self.table.keys) else np.zeros(len(batch), dtype=np.int8)
        return np.where(known, pr, np.int8(Priority.NORMAL.rank)).astype(np.int8)


def refused_rows(table: PointTable, b: Batch) -> dict[str, npt.NDArray[np.bool_]]:
    """Rows the cloud would refuse for their own data, by cause, checked where the point is defined (pure).

    ``non_finite``: NaN or inf unless the row's quality says the reading failed (bad quality may carry
    NaN, never inf); ``wrong_type``: a state point's value that is not a whole number, or a counter
    below 0. The same rules as the cloud's ``validate.screen``, so a bad value is refused at the edge,
    counted, and never costs the good rows flushed with it. Empty when every row passes (the usual case:
    two vectorised checks).
    """
    out: dict[str, npt.NDArray[np.bool_]] = {}
    finite = np.isfinite(b.value)
    if not bool(finite.all()):
        bad = ~finite & ~(np.isnan(b.value) & (b.quality >= Quality.BAD))
        if bad.any():
            out["non_finite"] = bad
    if (table.state.any() or table.counter.any()) and len(table.keys):
        idx, known = table.index(b.point)
        with np.errstate(invalid="ignore"):
            wrong = known & finite & ((table.state[idx] & (b.value != np.round(b.value)))
                                      | (table.counter[idx] & (b.value < 0)))
        if wrong.any():
            out["wrong_type"] = wrong
    return out
