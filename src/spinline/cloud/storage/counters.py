"""Counter arithmetic shared by both backends (pure numpy).

A counter (kWh, doffs, breaks) only rises, except when its register wraps (roll-over: the value
drops by about the roll-over value) or the device restarts it (reset: it drops to near 0). The
increase between two readings is then ``cur - prev`` when it rose, ``cur + rollover - prev`` when it
wrapped, and ``cur`` after a reset (what was counted since the restart), as Prometheus does.
A drop of more than half the roll-over value is read as a wrap. Unlike Prometheus, only a drop to
less than half the previous value is a reset: a small step back (a PLC restored from a backup, a
simulator resumed from its seed, a meter corrected by hand) adds 0 instead of the counter's whole
value, which would book weeks of output into one minute (production efficiency of 8,000 %).

The SQL of both backends uses the same rule (``STEP_SQL``) for increases within a bucket; the
increase across a bucket boundary is added here at query time from the previous bucket's last value.
"""

from __future__ import annotations

import numpy as np

from spinline.core.batch import F64

#: The same rule in SQL, on columns ``prev``, ``cur`` and ``rollover`` (placeholders formatted in).
STEP_SQL = ("CASE WHEN {prev} IS NULL THEN 0 WHEN {cur} >= {prev} THEN {cur} - {prev} "
            "WHEN {rollover} IS NOT NULL AND {prev} - {cur} > {rollover} / 2 THEN {cur} + {rollover} - {prev} "
            "WHEN {cur} * 2 < {prev} THEN {cur} ELSE 0 END")


def step(prev: F64, cur: F64, rollover: F64) -> F64:
    """Increase from ``prev`` to ``cur`` (element-wise); NaN ``prev`` gives 0, NaN ``rollover`` = none."""
    d = cur - prev
    wrapped = ~np.isnan(rollover) & (prev - cur > rollover / 2)
    out = np.where(d >= 0, d, np.where(wrapped, cur + rollover - prev, np.where(cur * 2 < prev, cur, 0.0)))
    return np.where(np.isnan(prev), 0.0, out)
