"""Backend-independent pieces of the two stores (pure numpy): what both must compute the same way.

- which resolution answers a chart (``pick_resolution``) and how rollups become chart points
  (``envelope``);
- the last row of each point in a batch (``last_per_point``), for the latest-value table;
- the 1-minute buckets a batch touches (``minute_buckets``) and their contiguous runs
  (``runs``): the rollup refresh recomputes exactly those buckets, so late and out-of-order data
  (an edge's backlog after days offline) lands in the right rollups;
- the final assembly of a ``Rollup`` from stored bucket rows (``assemble_rollup``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from spinline.cloud.storage import downsample
from spinline.cloud.storage.base import RESOLUTION_NS, Rollup
from spinline.cloud.storage.counters import step
from spinline.core.batch import F64, I64, Batch

DAY_S = 86400.0
#: Default retention in seconds (None: keep forever) per resolution, and of the rejection log.
DEFAULT_RETENTION_S: dict[str, float | None] = {"raw": 90 * DAY_S, "1m": 2 * 365 * DAY_S, "1h": None,
                                                "rejections": 90 * DAY_S}
#: How much longer than the raw rows an idempotency key is kept (see ``key_retention_s``).
KEY_MARGIN_S = DAY_S
#: How far back a rollup query looks for the bucket before the first one (the counter increase
#: across that boundary). A counter silent longer than this starts again from its next bucket.
LOOKBACK_NS: dict[str, int] = {"1m": 3600 * 10**9, "1h": 2 * 86400 * 10**9}
MINUTE_NS = RESOLUTION_NS["1m"]


def retention(overrides: Mapping[str, float | None] | None) -> dict[str, float | None]:
    """``DEFAULT_RETENTION_S`` with ``overrides`` (keys raw, 1m, 1h, rejections; seconds, None: forever)."""
    out = dict(DEFAULT_RETENTION_S)
    for k, v in (overrides or {}).items():
        if k not in out:
            raise ValueError(f"unknown retention {k!r} (raw, 1m, 1h, rejections)")
        if v is not None and v <= 0:
            raise ValueError(f"retention {k!r} must be positive seconds or None, not {v!r}")
        out[k] = v
    return out


def key_retention_s(retention_s: Mapping[str, float | None]) -> float | None:
    """How long an idempotency key is kept (by ingest time): the raw retention plus ``KEY_MARGIN_S``.

    Keys are not kept as long as the rollups (1 h rollups are kept forever by default, and a key
    per batch forever is unbounded). The bound that makes this safe: a batch's rows are at most
    ``MAX_FUTURE_NS`` (minutes) ahead of the cloud clock when it is first stored, so once its key is
    purged (ingest time + raw retention + margin, the margin far above that limit) every row of a
    replay of it is older than the raw retention, and the ingest boundary refuses it as ``too_old``
    (``spinline.cloud.ingest.validate`` with the store's ``raw_retention_ns``) before the store sees
    it. A replay can therefore never be merged into rollups twice (PostgreSQL partials) nor recompute
    buckets whose raw rows retention already removed (embedded). Never configurable below that.
    """
    raw = retention_s["raw"]
    return None if raw is None else raw + KEY_MARGIN_S


def cutoff_ns(now_ns: int, keep_s: float | None) -> int | None:
    """The timestamp below which data kept ``keep_s`` seconds is dropped at ``now_ns`` (None: never)."""
    return None if keep_s is None else now_ns - int(keep_s * 1e9)


def pick_resolution(span_ns: int, max_points: int | None) -> Literal["raw", "1m", "1h"]:
    """The coarsest data that still gives at least ``max_points`` buckets over the span."""
    if max_points is None:
        return "raw"
    if span_ns // RESOLUTION_NS["1h"] >= max_points:
        return "1h"
    if span_ns // RESOLUTION_NS["1m"] >= max_points:
        return "1m"
    return "raw"


def envelope(bucket: I64, mn: F64, mx: F64, res: str) -> tuple[I64, F64]:
    """Chart rows from rollups: each bucket's min at its start and its max at its middle.

    Rollups do not keep when within the bucket the extremes happened; drawing min then max keeps
    both visible, which is what a chart of a year needs (a spike is never averaged away).
    """
    half = RESOLUTION_NS[res] // 2
    same = mn == mx
    ts = np.empty(2 * len(bucket), dtype=np.int64)
    val = np.empty(2 * len(bucket), dtype=np.float64)
    ts[0::2], ts[1::2] = bucket, bucket + half
    val[0::2], val[1::2] = mn, mx
    keep = np.ones(len(ts), dtype=bool)
    keep[1::2] = ~same
    return ts[keep], val[keep]


def reduce(ts: I64, val: F64, max_points: int | None, start_ns: int, end_ns: int) -> tuple[I64, F64, bool]:
    if max_points is None or len(ts) <= max_points:
        return ts, val, False
    t, v = downsample.minmax(ts, val, max_points, start_ns, end_ns)
    return t, v, True


def batch_digest(batch: Batch) -> str:
    """A digest of a batch's rows (every column, in order), kept with its idempotency key.

    BLAKE2b over the raw column bytes: ~1 GB/s, so ~20 us for the edge's 1,250-row flush. 16 bytes
    (hex) is plenty to tell a re-send from other rows under a reused key; it is not a signature.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(len(batch).to_bytes(8, "little"))
    for col in (batch.point, batch.ts_ns, batch.value, batch.quality):
        h.update(np.ascontiguousarray(col).tobytes())
    if batch.seq is not None:
        h.update(np.ascontiguousarray(batch.seq).tobytes())
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class KeyClaim:
    """What one item of a ``write_many`` is: stored (fresh key or none), duplicate or conflict."""

    fresh: bool
    conflict: bool = False
    note: str | None = None


def item_notes(items: Sequence[object], notes: Sequence[str | None] | None) -> list[str | None]:
    if notes is None:
        return [None] * len(items)
    if len(notes) != len(items):
        raise ValueError(f"{len(notes)} notes for {len(items)} items")
    return list(notes)


def item_digests(items: Sequence[tuple[Batch, str | None]], digests: Sequence[str | None] | None) -> list[str | None]:
    """The digest of each item (given, or computed from its batch; None for an item without a key)."""
    if digests is not None and len(digests) != len(items):
        raise ValueError(f"{len(digests)} digests for {len(items)} items")
    return [None if k is None else (digests[i] if digests is not None and digests[i] is not None
                                    else batch_digest(b))
            for i, (b, k) in enumerate(items)]


def resolve_claims(items: Sequence[tuple[Batch, str | None]], digests: Sequence[str | None],
                   notes: Sequence[str | None], fresh: set[str],
                   seen: Mapping[str, tuple[str | None, str | None]]) -> list[KeyClaim]:
    """Per item, from the keys this write inserted (``fresh``) and those already there (``seen``:
    key -> (digest, note) as stored; a NULL digest predates digests and matches anything).

    The first item with a fresh key stores its rows; a later item with that key in the same call is
    judged against the first item's digest, like a re-send.
    """
    first: dict[str, tuple[str | None, str | None]] = {}
    out: list[KeyClaim] = []
    for (_, k), d, n in zip(items, digests, notes, strict=True):
        if k is None:
            out.append(KeyClaim(True))
            continue
        if k in fresh and k not in first:
            first[k] = (d, n)
            out.append(KeyClaim(True))
            continue
        kept_digest, note = first[k] if k in first else seen.get(k, (None, None))
        conflict = kept_digest is not None and d is not None and kept_digest != d
        out.append(KeyClaim(False, conflict, note))
    return out


def last_per_point(batch: Batch) -> Batch:
    """The newest row of each point in the batch (ties: the later row)."""
    if not len(batch):
        return batch
    order = np.lexsort((np.arange(len(batch)), batch.ts_ns, batch.point))
    p = batch.point[order]
    last = np.r_[p[1:] != p[:-1], True]
    return batch.take(order[last])


def minute_buckets(ts_ns: I64) -> I64:
    """Distinct 1-minute bucket starts touched by these timestamps."""
    if not len(ts_ns):
        return np.empty(0, dtype=np.int64)
    return np.unique(ts_ns - ts_ns % MINUTE_NS)


def minute_pairs(point: I64, ts_ns: I64) -> tuple[I64, I64]:
    """Distinct (point, 1-minute bucket) pairs touched by these rows, sorted by point then bucket."""
    if not len(ts_ns):
        e = np.empty(0, dtype=np.int64)
        return e, e
    b = ts_ns - ts_ns % MINUTE_NS
    order = np.lexsort((b, point))
    p, b = point[order], b[order]
    first = np.r_[True, (p[1:] != p[:-1]) | (b[1:] != b[:-1])]
    return np.ascontiguousarray(p[first], dtype=np.int64), np.ascontiguousarray(b[first], dtype=np.int64)


def runs(buckets: I64, width_ns: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) runs of sorted distinct bucket starts."""
    if not len(buckets):
        return []
    b = np.unique(buckets)
    brk = np.flatnonzero(np.diff(b) != width_ns)
    starts = np.r_[b[0], b[brk + 1]]
    ends = np.r_[b[brk], b[-1]] + width_ns
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


@dataclass(frozen=True, slots=True)
class Partials:
    """Per-(point, minute) partial aggregates of some rows (columns of equal length).

    Two partials of the same point and minute merge into the partial of their union: min, max, sum
    and count combine directly; first/last come from the earlier ``first_ts``/later ``last_ts``;
    the counter increase is ``inc_a + step(last_a, first_b) + inc_b`` when a's rows all precede b's
    (``last_ts_a <= first_ts_b``), and cannot be merged otherwise (the bucket is recomputed).
    """

    point: I64
    bucket: I64
    min: F64
    max: F64
    sum: F64
    count: I64
    first_ts: I64
    first: F64
    last_ts: I64
    last: F64
    inc: F64

    def __len__(self) -> int:
        return len(self.point)


def minute_partials(batch: Batch, counter_keys: I64, counter_rollover: F64) -> Partials:
    """The partials of a batch's rollup-worthy rows (quality good or uncertain, value not NaN).

    ``counter_keys`` (sorted) are the counter points, ``counter_rollover`` their roll-over values
    (NaN: none); other points get ``inc`` 0. Rows are ordered by (point, ts) first, so a batch's own
    order does not matter.
    """
    ok = (batch.quality < 128) & ~np.isnan(batch.value)
    if ok.all():
        p, t, v = batch.point, batch.ts_ns, batch.value
    else:
        p, t, v = batch.point[ok], batch.ts_ns[ok], batch.value[ok]
    if not sorted_by(p, t):
        order = np.lexsort((t, p))
        p, t, v = p[order], t[order], v[order]
    b = t - t % MINUTE_NS
    n = len(p)
    if n == 0:
        e_i, e_f = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        return Partials(e_i, e_i, e_f, e_f, e_f, e_i, e_i, e_f, e_i, e_f, e_f)
    brk = np.r_[True, (p[1:] != p[:-1]) | (b[1:] != b[:-1])]
    if brk.all():
        # Every row alone in its minute (sparse points): the partials are the rows themselves.
        return Partials(point=p, bucket=b, min=v, max=v, sum=v, count=np.ones(n, dtype=np.int64), first_ts=t,
                        first=v, last_ts=t, last=v, inc=np.zeros(n, dtype=np.float64))
    starts = np.flatnonzero(brk)
    ends = np.r_[starts[1:], n] - 1
    inc = np.zeros(len(starts), dtype=np.float64)
    if len(counter_keys):
        pos = np.clip(np.searchsorted(counter_keys, p), 0, len(counter_keys) - 1)
        is_ctr = counter_keys[pos] == p
        if is_ctr.any():
            stepped = np.zeros(n, dtype=np.float64)
            same = ~brk[1:] & is_ctr[1:]
            if same.any():
                idx = np.flatnonzero(same) + 1
                stepped[idx] = step(v[idx - 1], v[idx], counter_rollover[pos[idx]])
            inc = np.add.reduceat(stepped, starts)
    return Partials(point=p[starts], bucket=b[starts], min=np.minimum.reduceat(v, starts),
                    max=np.maximum.reduceat(v, starts), sum=np.add.reduceat(v, starts),
                    count=np.diff(np.r_[starts, n]).astype(np.int64), first_ts=t[starts], first=v[starts],
                    last_ts=t[ends], last=v[ends], inc=inc)


def sorted_by(major: I64, minor: I64) -> bool:
    """Whether rows are in (major, minor) order already: one linear pass, which saves sorting sorted data."""
    if len(major) < 2:
        return True
    rise = major[1:] > major[:-1]
    if rise.all():
        return True
    return bool(np.all(rise | ((major[1:] == major[:-1]) & (minor[1:] >= minor[:-1]))))


def spans(buckets: I64, width_ns: int, max_gap_ns: int) -> list[tuple[int, int]]:
    """[start, end) spans covering sorted bucket starts, merging runs less than ``max_gap_ns`` apart.

    A refresh runs one set-based statement per span and keeps only the dirty buckets inside it (a
    join on the dirty set), so a span may safely cover buckets that are not dirty; merging nearby
    runs keeps the number of statements small however scattered the dirty buckets are (data every
    5 min dirties isolated minutes), while distant clusters (a late backlog days ago) stay separate
    so no statement scans the days in between.
    """
    if not len(buckets):
        return []
    b = np.unique(buckets)
    brk = np.flatnonzero(np.diff(b) > width_ns + max_gap_ns)
    starts = np.r_[b[0], b[brk + 1]]
    ends = np.r_[b[brk], b[-1]] + width_ns
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def assemble_rollup(point: I64, bucket: I64, mn: F64, mx: F64, total: F64, count: I64, first: F64,
                    last: F64, inc: F64, prev_last: F64, is_counter: npt.NDArray[np.bool_], rollover: F64) -> Rollup:
    """Rows of a rollup table (plus each row's previous bucket's ``last``) into a ``Rollup``.

    A counter's delta is its increase within the bucket plus the step from the previous bucket's
    last value to this bucket's first; gauges get NaN.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    delta = np.where(is_counter, inc + step(prev_last, first, rollover), np.nan)
    return Rollup(point=point, bucket_ns=bucket, min=mn, max=mx, mean=mean, last=last,
                  count=count, delta=delta)


def points_filter(mill: str | None, tag: str | None, mark: str) -> tuple[str, list[str]]:
    """The ``WHERE`` clause (with ``mark`` placeholders) and arguments of a points query by mill and tag."""
    conds = [(f"mill = {mark}", mill), (f"tag = {mark}", tag)]
    used = [(c, v) for c, v in conds if v is not None]
    return (" WHERE " + " AND ".join(c for c, _ in used) if used else ""), [v for _, v in used]
