"""Checks of a decoded batch against what its mill declares (pure).

Policy: a batch with any bad row is refused WHOLE, with the first reason found. Splitting would
store part of a batch under an idempotency key that then says "done" for rows that were not, and a
bad row almost always means a bad edge configuration (a wrong site file, a broken clock) that the
operator must see. The edge dead-letters a refused batch (the ack says ``rejected`` with the reason)
and carries on with the next: one bad batch never blocks the ones behind it.

Rules, in the order checked:

- ``unknown_point``: a point key not declared for the edge's mill;
- ``future_timestamp``: a row more than ``max_future_ns`` (default 5 min) ahead of the cloud's clock;
- ``clock_skew``: a row before ``min_ts_ns`` (default 2015-01-01), an edge clock that never synced;
- ``too_old``: a row older than ``max_age_ns`` (the store's ``raw_retention_ns``; None: no limit).
  Retention has already removed the raw rows of its minute, so its rollups could not be recomputed
  exactly; and a batch that old may be a replay whose idempotency key was purged (keys outlive the
  raw rows by a margin, ``spinline.cloud.storage.shared.key_retention_s``), which must not be
  stored twice;
- ``non_finite``: NaN or +-inf in a row of good or uncertain quality (a bad-quality row may carry
  NaN: the reading failed and says so; inf is never valid);
- ``wrong_type``: a state point whose value is not a whole number, or a counter below 0.

Malformed, oversized and unauthorised payloads are refused earlier, by ``spinline.core.wire.decode``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spinline.cloud.storage.base import PointInfo
from spinline.core.batch import Batch, Quality
from spinline.core.errors import PayloadError
from spinline.core.wire import Envelope

MAX_FUTURE_NS = 5 * 60 * 10**9
MIN_TS_NS = 1_420_070_400 * 10**9          # 2015-01-01T00:00:00Z


@dataclass(frozen=True, slots=True, eq=False)
class PointRules:
    """The points one mill accepts, as sorted columns for vectorised lookups."""

    keys: npt.NDArray[np.int64]            # sorted
    integer: npt.NDArray[np.bool_]         # state points: whole numbers only
    counter: npt.NDArray[np.bool_]         # counters: never below 0

    @classmethod
    def build(cls, allowed: Iterable[int], infos: Iterable[PointInfo] = ()) -> PointRules:
        keys = np.unique(np.fromiter(allowed, dtype=np.int64))
        kind = {p.key: p.kind for p in infos}
        return cls(keys=keys, integer=np.array([kind.get(int(k)) == "state" for k in keys], dtype=bool),
                   counter=np.array([kind.get(int(k)) == "counter" for k in keys], dtype=bool))


def validate(env: Envelope, rules: PointRules, now_ns: int, *, max_future_ns: int = MAX_FUTURE_NS,
             min_ts_ns: int = MIN_TS_NS, max_age_ns: int | None = None) -> Batch:
    """The batch, if every row passes; else ``PayloadError`` with the first failing rule's reason."""
    b = env.batch
    if not len(b):
        return b
    idx = np.searchsorted(rules.keys, b.point)
    idx_c = np.minimum(idx, max(len(rules.keys) - 1, 0))
    known = (idx < len(rules.keys)) & (rules.keys[idx_c] == b.point) if len(rules.keys) else \
        np.zeros(len(b), dtype=bool)
    if not known.all():
        bad = np.unique(b.point[~known])
        raise PayloadError("unknown_point", f"{len(bad)} point key(s) not declared for mill {env.mill!r}, "
                                            f"e.g. {int(bad[0])} ({int((~known).sum())} rows)")
    late = b.ts_ns > now_ns + max_future_ns
    if late.any():
        ahead = (int(b.ts_ns.max()) - now_ns) / 1e9
        raise PayloadError("future_timestamp", f"{int(late.sum())} rows are up to {ahead:.1f} s ahead of the "
                                               f"cloud clock (limit {max_future_ns / 1e9:.0f} s)")
    early = b.ts_ns < min_ts_ns
    if early.any():
        raise PayloadError("clock_skew", f"{int(early.sum())} rows are timestamped before 2015 "
                                         f"(earliest {int(b.ts_ns.min())} ns): the edge clock is not set")
    if max_age_ns is not None:
        old = b.ts_ns < now_ns - max_age_ns
        if old.any():
            age = (now_ns - int(b.ts_ns.min())) / 86400e9
            raise PayloadError("too_old", f"{int(old.sum())} rows are older than the raw retention "
                                          f"({max_age_ns / 86400e9:.1f} days; oldest {age:.1f} days)")
    finite = np.isfinite(b.value)
    if not finite.all():
        may_be_nan = np.isnan(b.value) & (b.quality >= Quality.BAD)
        offending = ~finite & ~may_be_nan
        if offending.any():
            i = int(np.flatnonzero(offending)[0])
            raise PayloadError("non_finite", f"{int(offending.sum())} rows hold NaN/inf with non-bad quality, "
                                             f"e.g. point {int(b.point[i])} = {b.value[i]!r}")
    integer, counter = rules.integer[idx_c], rules.counter[idx_c]
    with np.errstate(invalid="ignore"):
        fractional = integer & finite & (b.value != np.round(b.value))
        negative = counter & finite & (b.value < 0)
    if fractional.any():
        i = int(np.flatnonzero(fractional)[0])
        raise PayloadError("wrong_type", f"{int(fractional.sum())} state rows are not whole numbers, "
                                         f"e.g. point {int(b.point[i])} = {b.value[i]!r}")
    if negative.any():
        i = int(np.flatnonzero(negative)[0])
        raise PayloadError("wrong_type", f"{int(negative.sum())} counter rows are below 0, "
                                         f"e.g. point {int(b.point[i])} = {b.value[i]!r}")
    return b
