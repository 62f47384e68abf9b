"""Checks of a decoded batch against what its mill declares (pure).

Policy: only the offending ROWS are refused; the rest of the batch is stored. One fractional state
or one row stamped in the future must not cost the good rows of ~36 other machines flushed with
it (the edge flushes a whole mill in one batch). ``screen`` returns the rows that pass and, per
reason, how many were refused. Two kinds of reason:

- edge faults (``non_finite``, ``wrong_type``, ``clock_skew``): the row itself is wrong; it is
  refused for good (the edge validates types where the point is defined and should never send one);
- cloud-state refusals (``CLOUD_STATE_REASONS``: ``unknown_point``, ``future_timestamp``,
  ``too_old``): the row may be fine and the cloud's state the problem (its site file lags the
  edge's, its clock is slow, its retention changed). The result names them by selector (``Retry``:
  the point keys, the time bounds) so the edge can pick those rows out of the batch it sent and
  re-send them later, with backoff, under a new sequence number.

Rules, in the order checked (a row refused by an earlier rule is counted there only):

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

``validate`` keeps the all-or-nothing form (raises on the first reason) for callers that want it.

Malformed, oversized and unauthorised payloads are refused earlier, by ``spinline.core.wire.decode``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from spinline.cloud.storage.base import PointInfo
from spinline.core.batch import Batch, Quality
from spinline.core.errors import PayloadError
from spinline.core.wire import CLOUD_STATE_REASONS, Envelope

__all__ = ["CLOUD_STATE_REASONS", "MAX_FUTURE_NS", "MIN_TS_NS", "PointRules", "Retry", "Screened", "screen",
           "validate"]

MAX_FUTURE_NS = 5 * 60 * 10**9
MIN_TS_NS = 1_420_070_400 * 10**9          # 2015-01-01T00:00:00Z


@dataclass(frozen=True, slots=True, eq=False)
class PointRules:
    """The points one mill accepts, as sorted columns for vectorised lookups."""

    keys: npt.NDArray[np.int64]            # sorted
    integer: npt.NDArray[np.bool_]         # state points: whole numbers only
    counter: npt.NDArray[np.bool_]         # counters: never below 0

    @property
    def any_integer(self) -> bool:
        return bool(len(self.integer)) and bool(self.integer.any())

    @property
    def any_counter(self) -> bool:
        return bool(len(self.counter)) and bool(self.counter.any())

    @classmethod
    def build(cls, allowed: Iterable[int], infos: Iterable[PointInfo] = ()) -> PointRules:
        keys = np.unique(np.fromiter(allowed, dtype=np.int64))
        kind = {p.key: p.kind for p in infos}
        return cls(keys=keys, integer=np.array([kind.get(int(k)) == "state" for k in keys], dtype=bool),
                   counter=np.array([kind.get(int(k)) == "counter" for k in keys], dtype=bool))


@dataclass(frozen=True, slots=True)
class Retry:
    """Which rows of the batch were refused for the cloud's state (the edge may re-send them later).

    A row is one of them when its point is in ``points`` (unknown to the cloud), or its timestamp is
    above ``after_ns`` (ahead of the cloud clock's limit) or below ``before_ns`` (past the retention).
    The edge selects them from the batch it sent; no per-row list crosses the wire.
    """

    points: tuple[int, ...] = ()
    after_ns: int | None = None
    before_ns: int | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.points:
            out["points"] = list(self.points)
        if self.after_ns is not None:
            out["after_ns"] = self.after_ns
        if self.before_ns is not None:
            out["before_ns"] = self.before_ns
        return out


@dataclass(frozen=True, slots=True)
class Screened:
    """A batch split by ``screen``: the rows that pass, and per reason the rows refused."""

    batch: Batch
    refused: dict[str, int] = field(default_factory=dict)
    detail: dict[str, str] = field(default_factory=dict)
    retry: Retry | None = None

    @property
    def n_refused(self) -> int:
        return sum(self.refused.values())

    def first_error(self) -> PayloadError | None:
        """The first refusal as a ``PayloadError`` (rule order), None when nothing was refused."""
        for reason, d in self.detail.items():
            return PayloadError(reason, d)
        return None


def screen(env: Envelope, rules: PointRules, now_ns: int, *, max_future_ns: int = MAX_FUTURE_NS,
           min_ts_ns: int = MIN_TS_NS, max_age_ns: int | None = None) -> Screened:
    """Split the batch into the rows that pass every rule and the refused ones, counted per reason."""
    b = env.batch
    n = len(b)
    if not n:
        return Screened(b)
    refused: dict[str, int] = {}
    detail: dict[str, str] = {}
    ok = np.ones(n, dtype=bool)

    def refuse(reason: str, rows: np.ndarray[Any, np.dtype[np.bool_]], why: str) -> None:
        rows = rows & ok
        k = int(rows.sum())
        if k:
            refused[reason] = refused.get(reason, 0) + k
            detail.setdefault(reason, why)
            ok[rows] = False

    idx = np.searchsorted(rules.keys, b.point)
    idx_c = np.minimum(idx, max(len(rules.keys) - 1, 0))
    known = (idx < len(rules.keys)) & (rules.keys[idx_c] == b.point) if len(rules.keys) else \
        np.zeros(n, dtype=bool)
    all_known = bool(known.all())
    unknown_keys: tuple[int, ...] = ()
    if not all_known:
        bad = np.unique(b.point[~known])
        unknown_keys = tuple(int(k) for k in bad)
        refuse("unknown_point", ~known, f"{len(bad)} point key(s) not declared for mill {env.mill!r}, "
                                        f"e.g. {int(bad[0])} ({int((~known).sum())} rows)")
    # Time rules: one min/max each in the common case (every row in range), masks only when not.
    limit = now_ns + max_future_ns
    oldest_kept = None if max_age_ns is None else now_ns - max_age_ns
    ts_min, ts_max = int(b.ts_ns.min()), int(b.ts_ns.max())
    if ts_max > limit:
        late = b.ts_ns > limit
        refuse("future_timestamp", late, f"{int(late.sum())} rows are up to {(ts_max - now_ns) / 1e9:.1f} s ahead "
                                         f"of the cloud clock (limit {max_future_ns / 1e9:.0f} s)")
    if ts_min < min_ts_ns:
        early = b.ts_ns < min_ts_ns
        refuse("clock_skew", early, f"{int(early.sum())} rows are timestamped before 2015 "
                                    f"(earliest {ts_min} ns): the edge clock is not set")
    if oldest_kept is not None and ts_min < oldest_kept:
        old = b.ts_ns < oldest_kept
        assert max_age_ns is not None
        refuse("too_old", old, f"{int(old.sum())} rows are older than the raw retention "
                               f"({max_age_ns / 86400e9:.1f} days; oldest {(now_ns - ts_min) / 86400e9:.1f} days)")
    finite = np.isfinite(b.value)
    all_finite = bool(finite.all())
    if not all_finite:
        may_be_nan = np.isnan(b.value) & (b.quality >= Quality.BAD)
        offending = ~finite & ~may_be_nan
        if offending.any():
            i = int(np.flatnonzero(offending)[0])
            refuse("non_finite", offending, f"{int(offending.sum())} rows hold NaN/inf with non-bad quality, "
                                            f"e.g. point {int(b.point[i])} = {b.value[i]!r}")
    # Type rules only where the mill has such points (comparisons with NaN are False, no warning).
    if rules.any_integer:
        integer = rules.integer[idx_c] if all_known else rules.integer[idx_c] & known
        fractional = integer & (b.value != np.round(b.value))
        if not all_finite:
            fractional &= finite
        if fractional.any():
            i = int(np.flatnonzero(fractional)[0])
            refuse("wrong_type", fractional, f"{int(fractional.sum())} state rows are not whole numbers, "
                                             f"e.g. point {int(b.point[i])} = {b.value[i]!r}")
    if rules.any_counter:
        counter = rules.counter[idx_c] if all_known else rules.counter[idx_c] & known
        negative = counter & (b.value < 0)
        if negative.any():
            i = int(np.flatnonzero(negative)[0])
            refuse("wrong_type", negative, f"{int(negative.sum())} counter rows are below 0, "
                                           f"e.g. point {int(b.point[i])} = {b.value[i]!r}")
    if not refused:
        return Screened(b)
    retry = None
    if refused.keys() & CLOUD_STATE_REASONS:
        retry = Retry(points=unknown_keys if "unknown_point" in refused else (),
                      after_ns=limit if "future_timestamp" in refused else None,
                      before_ns=oldest_kept if "too_old" in refused else None)
    return Screened(b.take(np.flatnonzero(ok)), refused, detail, retry)


def validate(env: Envelope, rules: PointRules, now_ns: int, *, max_future_ns: int = MAX_FUTURE_NS,
             min_ts_ns: int = MIN_TS_NS, max_age_ns: int | None = None) -> Batch:
    """The batch, if every row passes; else ``PayloadError`` with the first failing rule's reason."""
    s = screen(env, rules, now_ns, max_future_ns=max_future_ns, min_ts_ns=min_ts_ns, max_age_ns=max_age_ns)
    err = s.first_error()
    if err is not None:
        raise err
    return s.batch
