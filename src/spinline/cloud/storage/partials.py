"""Folding rollup partials and merging them with stored rollup rows, in numpy (pure).

The PostgreSQL refresh (``PostgresStore._merge_partials``) reads the partials written since the last
refresh (``shared.Partials``, one per (point, minute) per write), folds them per minute and per hour
(``fold_partials``) and merges the result with the stored rows of the same buckets
(``merge_stored``), the rules the SQL refresh had: min/max/sum/count combine; first/last come from
the earliest/latest rows; a counter's increase adds the step across each seam, and is exact only when
the pieces do not overlap in time (else the bucket is recomputed from finer data). The embedded
refresh (``embedded_rollups``) folds its recomputed minutes into hours with the same function.

Both refreshes see sparse points (a row every few minutes: as many partials as rows) and rows read
in key order, so ``fold_partials`` checks for sorted input before sorting and passes one-partial
buckets through without reducing them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spinline.cloud.storage.counters import step
from spinline.cloud.storage.shared import Partials
from spinline.core.batch import F64, I64


@dataclass(frozen=True, slots=True)
class Folded:
    """Partials folded to one row per (point, bucket), sorted by (point, bucket), with what a merge
    into stored rollups needs: ``ordered`` (the partials chained without overlapping in time, so a
    counter's increase is exact) and the point's counter flag and roll-over (NaN: none)."""

    parts: Partials
    ordered: npt.NDArray[np.bool_]
    ctr: npt.NDArray[np.bool_]
    rollover: F64


def fold_partials(parts: Partials, width_ns: int, counter_keys: I64, counter_rollover: F64,
                  ordered_in: npt.NDArray[np.bool_] | None = None) -> Folded:
    """Fold partials into one per (point, ``width_ns`` bucket): the numpy form of the refresh's merge.

    Within a bucket the partials are chained in (first_ts, last_ts) order; each link adds the counter
    step from the previous partial's last value to this one's first (``counters.step``). first/last
    come from the partial(s) with the earliest first_ts / latest last_ts (ties: the smallest first,
    the largest last), as the SQL did. ``ordered_in``: per input partial, whether it was itself
    ordered (folding minutes into hours); the output is ordered when every input was and no link
    starts before the previous one ended.
    """
    n = len(parts)
    b = parts.bucket - parts.bucket % width_ns
    is_sorted = lex_sorted((parts.point, b, parts.first_ts, parts.last_ts))
    order = slice(None) if is_sorted else np.lexsort((parts.last_ts, parts.first_ts, b, parts.point))
    p, bk = parts.point[order], b[order]
    f_ts, l_ts = parts.first_ts[order], parts.last_ts[order]
    first, last = parts.first[order], parts.last[order]
    if not n:
        e_i, e_f = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        empty = Partials(e_i, e_i, e_f, e_f, e_f, e_i, e_i, e_f, e_i, e_f, e_f)
        return Folded(empty, np.empty(0, dtype=bool), np.empty(0, dtype=bool), e_f)
    brk = np.r_[True, (p[1:] != p[:-1]) | (bk[1:] != bk[:-1])]
    ordered = np.ones(n, dtype=bool) if ordered_in is None else ordered_in[order]
    if brk.all():
        # One partial per bucket (sparse points): the folded partials are the inputs, re-bucketed.
        is_ctr, roll = _counters(p, counter_keys, counter_rollover)
        alone = Partials(point=p, bucket=bk, min=parts.min[order], max=parts.max[order], sum=parts.sum[order],
                         count=parts.count[order], first_ts=f_ts, first=first, last_ts=l_ts, last=last,
                         inc=parts.inc[order])
        return Folded(alone, ordered, is_ctr, roll)
    starts = np.flatnonzero(brk)
    ends = np.r_[starts[1:], n] - 1
    g_ctr, g_roll = _counters(p[starts], counter_keys, counter_rollover)   # a point's kind, per bucket
    link = np.array(parts.inc[order], dtype=np.float64)
    ok = ordered.copy()
    inner = np.flatnonzero(~brk)                 # a partial after another of its bucket: a link
    ok[inner] &= f_ts[inner] >= l_ts[inner - 1]
    if g_ctr.any():
        gid = np.cumsum(brk) - 1
        ctr_inner = inner[g_ctr[gid[inner]]]
        if len(ctr_inner):
            link[ctr_inner] += step(last[ctr_inner - 1], first[ctr_inner], g_roll[gid[ctr_inner]])
    g_first_ts = np.minimum.reduceat(f_ts, starts)
    g_last_ts = np.maximum.reduceat(l_ts, starts)
    # In (first_ts, last_ts) order the first partial starts first and, unless partials overlap, the
    # last ends last; otherwise (ties, overlaps) the smallest first / largest last of the extremes.
    if (f_ts[inner] > f_ts[inner - 1]).all():          # strictly rising within buckets: one earliest
        g_first = first[starts]
    else:
        gid = np.cumsum(brk) - 1
        g_first = np.minimum.reduceat(np.where(f_ts == g_first_ts[gid], first, np.inf), starts)
    if (l_ts[inner] > l_ts[inner - 1]).all():          # and one latest, the bucket's last partial
        g_last = last[ends]
    else:
        gid = np.cumsum(brk) - 1
        g_last = np.maximum.reduceat(np.where(l_ts == g_last_ts[gid], last, -np.inf), starts)
    folded = Partials(point=p[starts], bucket=bk[starts], min=np.minimum.reduceat(parts.min[order], starts),
                      max=np.maximum.reduceat(parts.max[order], starts),
                      sum=np.add.reduceat(parts.sum[order], starts),
                      count=np.add.reduceat(parts.count[order], starts).astype(np.int64),
                      first_ts=g_first_ts, first=g_first, last_ts=g_last_ts, last=g_last,
                      inc=np.add.reduceat(link, starts))
    return Folded(folded, np.logical_and.reduceat(ok, starts), g_ctr, g_roll)


def _counters(point: I64, counter_keys: I64, counter_rollover: F64) -> tuple[npt.NDArray[np.bool_], F64]:
    """Per row, whether its point is a counter and its roll-over (NaN: none or not a counter)."""
    roll = np.full(len(point), np.nan)
    if not len(counter_keys) or not len(point):
        return np.zeros(len(point), dtype=bool), roll
    pos = np.clip(np.searchsorted(counter_keys, point), 0, len(counter_keys) - 1)
    is_ctr = counter_keys[pos] == point
    roll[is_ctr] = counter_rollover[pos[is_ctr]]
    return is_ctr, roll


def lex_sorted(keys: tuple[I64, ...]) -> bool:
    """Whether rows are in lexicographic order of ``keys`` (most significant first) already: linear
    passes that save sorting data which arrives sorted (sparse points, rows read in key order)."""
    n = len(keys[0])
    if n < 2:
        return True
    undecided = np.ones(n - 1, dtype=bool)       # pairs equal on every key so far
    for k in keys:
        a, z = k[:-1], k[1:]
        if np.any(undecided & (z < a)):
            return False
        undecided &= z == a
        if not undecided.any():
            return True
    return True


#: ``first_ts``/``last_ts`` of a stored rollup row written before they were kept (NULL in SQL).
NO_TS = np.iinfo(np.int64).min


def merge_stored(new: Folded, stored: Partials) -> tuple[Partials, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Merge folded new rows with the stored rollup rows of the same (point, bucket).

    ``stored`` holds only keys present in ``new`` (any order; ``NO_TS`` for unknown first/last
    times). Returns (merged rows, aligned with ``new``; ``redo``: the merge is not exact and the
    bucket must be recomputed from finer data; ``had``: a stored row existed). Not exact: a stored
    row without first/last times, or a counter whose new rows are not ordered or overlap the stored
    ones in time (the increase across the seam is then unknown).
    """
    a = new.parts
    n = len(a)
    had = np.zeros(n, dtype=bool)
    if not n:
        return a, had.copy(), had
    # (point, bucket) -> position in ``new`` (sorted by point then bucket): dense ranks, one search.
    pu = np.unique(a.point)
    bu = np.unique(a.bucket)
    key_new = np.searchsorted(pu, a.point) * len(bu) + np.searchsorted(bu, a.bucket)
    cols = {name: getattr(a, name).copy() for name in ("min", "max", "sum", "count", "first_ts", "first",
                                                       "last_ts", "last", "inc")}
    redo = new.ctr & ~new.ordered
    if len(stored):
        pi = np.clip(np.searchsorted(pu, stored.point), 0, len(pu) - 1)
        bi = np.clip(np.searchsorted(bu, stored.bucket), 0, len(bu) - 1)
        key_old = pi * len(bu) + bi
        i = np.clip(np.searchsorted(key_new, key_old), 0, n - 1)
        match = (a.point[i] == stored.point) & (a.bucket[i] == stored.bucket)
        if not match.all():                 # a stored row of a key not in ``new``: not ours to merge
            stored = Partials(*(getattr(stored, f)[match] for f in Partials.__slots__))
            i = i[match]
        had[i] = True
        e_fts, e_lts = stored.first_ts, stored.last_ts
        a_fts, a_lts = a.first_ts[i], a.last_ts[i]
        known = (e_fts != NO_TS) & (e_lts != NO_TS)
        after = a_fts >= e_lts
        disjoint = after | (a_lts <= e_fts)
        ctr = new.ctr[i]
        redo[i] |= ~known | (ctr & ~disjoint)
        roll = new.rollover[i]
        cols["min"][i] = np.minimum(a.min[i], stored.min)
        cols["max"][i] = np.maximum(a.max[i], stored.max)
        cols["sum"][i] = a.sum[i] + stored.sum
        cols["count"][i] = a.count[i] + stored.count
        cols["first"][i] = np.where(a_fts < e_fts, a.first[i], stored.first)
        cols["last"][i] = np.where(a_lts >= e_lts, a.last[i], stored.last)
        cols["first_ts"][i] = np.minimum(a_fts, e_fts)
        cols["last_ts"][i] = np.maximum(a_lts, e_lts)
        seam = np.where(after, step(stored.last, a.first[i], roll), step(a.last[i], stored.first, roll))
        cols["inc"][i] = np.where(ctr, a.inc[i] + stored.inc + seam, a.inc[i] + stored.inc)
    merged = Partials(point=a.point, bucket=a.bucket, **cols)
    return merged, redo, had
