"""Completeness of a point's data from its rows: which samples went missing, and why (pure numpy).

The edge numbers the samples it emits per point (``seq``), so a jump in ``seq`` between two stored
rows means samples were emitted and lost on the way (``lost``). Rows further apart in time than the
point's interval allows, with no jump in ``seq``, mean nobody sampled (``not_collected``): judged
only for points with deadband 0, whose samples are due every interval. Rows without ``seq``
(negative here) are judged on time alone.

Holes are judged between stored rows of the window; a point with no row at all in the window is
one ``not_collected`` gap over the whole window (deadband 0) or nothing to judge (deadband > 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spinline.cloud.storage.base import Completeness, Gap, PointInfo
from spinline.core.batch import I64

#: A gap in time counts once rows are this many intervals apart (jitter of the poll loop tolerated).
TIME_TOLERANCE = 1.5


def completeness_of(point: int, ts_ns: I64, seq: I64, interval_s: float, deadband: float,
                    start_ns: int, end_ns: int) -> Completeness:
    """Expected vs received samples of one point; ``ts_ns`` sorted, ``seq`` < 0 where unknown."""
    interval_ns = max(1, int(round(interval_s * 1e9)))
    n = len(ts_ns)
    if n == 0:
        if deadband > 0:
            return Completeness(0, 0, [])
        missing = max(0, (end_ns - start_ns) // interval_ns)
        whole = [Gap(point, start_ns, end_ns, int(missing), "not_collected")] if missing else []
        return Completeness(int(missing), 0, whole)
    gaps: list[Gap] = []
    if n > 1:
        dseq = np.diff(seq)
        known = (seq[1:] >= 0) & (seq[:-1] >= 0)
        lost = known & (dseq > 1)
        dt = np.diff(ts_ns)
        late = (dt > TIME_TOLERANCE * interval_ns) & ~lost
        if deadband > 0:
            late[:] = False
        for i in np.flatnonzero(lost | late):
            if lost[i]:
                gaps.append(Gap(point, int(ts_ns[i]), int(ts_ns[i + 1]), int(dseq[i] - 1), "lost"))
            else:
                missing = int(round(dt[i] / interval_ns)) - 1
                if missing > 0:
                    gaps.append(Gap(point, int(ts_ns[i]), int(ts_ns[i + 1]), missing, "not_collected"))
    return Completeness(n + sum(g.missing for g in gaps), n, gaps)


def completeness_by_point(points: Sequence[int], info: Mapping[int, PointInfo], point: Any, ts: Any, seq: Any,
                  start_ns: int, end_ns: int) -> dict[int, Completeness]:
    """Per-point completeness from rows ordered by (point, ts); ``seq`` < 0 where unknown."""
    out: dict[int, Completeness] = {}
    bounds = np.searchsorted(point, np.asarray(points, dtype=np.int64), side="left")
    ends = np.searchsorted(point, np.asarray(points, dtype=np.int64), side="right")
    for p, a, b in zip(points, bounds, ends, strict=True):
        pi = info.get(int(p))
        interval = pi.interval_s if pi is not None else 1.0
        deadband = pi.deadband if pi is not None else 0.0
        out[int(p)] = completeness_of(int(p), ts[a:b], seq[a:b], interval, deadband, start_ns, end_ns)
    return out
