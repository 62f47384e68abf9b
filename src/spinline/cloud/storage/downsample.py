"""Reduce a series to at most ``max_points`` for a chart, keeping every peak and trough.

Pure numpy. ``minmax`` splits the time range into ``max_points // 2`` equal buckets and keeps, in
each, the row holding the minimum and the row holding the maximum, in time order. A spike of one
sample in a year of 1 s data still shows on the chart, which an average (or plain decimation) hides.
"""

from __future__ import annotations

import numpy as np

from spinline.core.batch import F64, I64


def minmax(ts_ns: I64, value: F64, max_points: int, start_ns: int | None = None,
           end_ns: int | None = None) -> tuple[I64, F64]:
    """Min/max-preserving bucket reduction of a time-ordered series.

    Returns at most ``max_points`` rows (two per bucket, one when min and max are the same row).
    NaN values are ignored for the choice of min/max and dropped when the bucket has a finite one.
    """
    n = len(ts_ns)
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    if n <= max_points:
        return ts_ns, value
    lo = int(ts_ns[0]) if start_ns is None else int(start_ns)
    hi = int(ts_ns[-1]) + 1 if end_ns is None else int(end_ns)
    nb = max_points // 2
    width = max(1, -(-(hi - lo) // nb))
    bucket = np.clip((ts_ns - lo) // width, 0, nb - 1)
    # Start of each run of equal buckets (ts sorted, so buckets are non-decreasing).
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    finite = np.isfinite(value)
    big = np.where(finite, value, -np.inf)
    small = np.where(finite, value, np.inf)
    imax = _segment_arg(big, starts, np.maximum)
    imin = _segment_arg(-small, starts, np.maximum)
    keep = np.unique(np.concatenate([imin, imax]))
    return ts_ns[keep], value[keep]


def _segment_arg(v: F64, starts: I64, op: np.ufunc) -> I64:
    """Index of the first maximal element of each segment (segments start at ``starts``)."""
    seg_max = op.reduceat(v, starts)
    counts = np.diff(np.r_[starts, len(v)])
    seg_of_row = np.repeat(np.arange(len(starts)), counts)
    hit = v == seg_max[seg_of_row]
    # First hit per segment: hits ordered by row index, pick the first of each segment.
    rows = np.flatnonzero(hit)
    segs = seg_of_row[rows]
    first = np.r_[True, segs[1:] != segs[:-1]]
    out = rows[first]
    # Segments whose values are all -inf after masking (all NaN) still hit (-inf == -inf).
    return out.astype(np.int64)
