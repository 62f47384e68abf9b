"""Completeness of a point's data from its rows: which samples went missing, and why (pure numpy).

The edge numbers the samples it emits per point (``seq``), so a jump in ``seq`` between two stored
rows means samples were emitted and lost on the way (``lost``). Rows further apart in time than the
point's interval allows, with no jump in ``seq``, mean nobody sampled (``not_collected``). Rows
without ``seq`` (negative here) are judged on time alone.

Silence is only a gap for a point whose samples are due: one that reports every interval. A point
that reports on change (``PointInfo.report``: OPC UA monitored items, on-change MQTT devices,
deadbanded points re-emitted by the edge's heartbeat) sends nothing while its value stands still;
its time gaps are judged against its keep-alive (the longest normal silence) instead of its
interval, and not at all when no keep-alive is known (only ``seq`` jumps count then).

Holes are judged between stored rows of the window; a point with no row at all in the window is
one ``not_collected`` gap over the whole window when samples are due that often, else nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spinline.cloud.storage.base import Completeness, Gap, PointInfo
from spinline.core.batch import I64

#: A gap in time counts once rows are this many intervals apart (jitter of the poll loop tolerated).
TIME_TOLERANCE = 1.5


def due_every_s(info: PointInfo | None) -> float | None:
    """How often a point's samples are due, in seconds: its interval when it reports every interval,
    its keep-alive when it reports on change, None when silence can be normal for any length."""
    if info is None:
        return 1.0
    if info.report == "on_change":
        return info.keepalive_s
    if info.deadband > 0:       # stored before report modes existed: the edge's heartbeat bounds it
        return None
    return info.interval_s


def completeness_of(point: int, ts_ns: I64, seq: I64, interval_s: float | None, deadband: float,
                    start_ns: int, end_ns: int) -> Completeness:
    """Expected vs received samples of one point; ``ts_ns`` sorted, ``seq`` < 0 where unknown.

    ``interval_s``: how often samples are due (``due_every_s``); None: never judge time gaps.
    ``deadband`` > 0 with an interval is kept for callers that predate report modes (no time gaps).
    """
    judge_time = interval_s is not None and deadband <= 0
    interval_ns = max(1, int(round((interval_s or 1.0) * 1e9)))
    n = len(ts_ns)
    if n == 0:
        if not judge_time:
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
        if not judge_time:
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
        out[int(p)] = completeness_of(int(p), ts[a:b], seq[a:b], due_every_s(info.get(int(p))), 0.0,
                                      start_ns, end_ns)
    return out
