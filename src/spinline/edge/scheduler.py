"""Scheduling maths (pure): drift-free ticks, per-point periods, and backoff per failing device.

A device is polled on a base tick (the GCD of its points' intervals, in milliseconds); a point
with interval ``k * base`` is due on every k-th tick. Deadlines are anchored to the start time
(``start + n * base``), never to "now + interval", so a slow poll never accumulates drift; a
poll that overruns skips the ticks it missed (counted as ``overruns``) instead of bursting.
A failing device waits out an exponential backoff (with deterministic jitter) before its next
attempt, on its own task, so it never delays the others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from spinline.core.backoff import Backoff as Backoff  # re-exported: the pollers' backoff lives in core


def base_tick(intervals_s: Sequence[float], *, resolution_s: float = 0.001) -> float:
    """The GCD of the intervals (quantised to ``resolution_s``), i.e. the device's poll tick."""
    if not intervals_s:
        raise ValueError("no intervals")
    ticks = [max(1, round(i / resolution_s)) for i in intervals_s]
    g = 0
    for t in ticks:
        g = math.gcd(g, t)
    return g * resolution_s


def periods(intervals_s: Sequence[float], base_s: float) -> npt.NDArray[np.int64]:
    """Each point's period in base ticks (at least 1)."""
    return np.maximum(1, np.rint(np.asarray(intervals_s, dtype=np.float64) / base_s)).astype(np.int64)


def due_mask(period: npt.NDArray[np.int64], tick: int) -> npt.NDArray[np.bool_]:
    """Points due at tick number ``tick`` (tick 0: everything)."""
    return np.asarray(tick % period == 0)


def next_tick(start: float, base_s: float, now: float, after_tick: int) -> tuple[int, int]:
    """The first tick strictly after ``after_tick`` whose deadline is not in the past.

    Returns (tick, skipped): ``skipped`` ticks were missed because the last poll overran.
    """
    nxt = after_tick + 1
    due_now = math.floor((now - start) / base_s) if now > start else -1
    if due_now >= nxt:
        # We are late: run the tick whose slot we are in now, skip the ones before it.
        return due_now, due_now - nxt
    return nxt, 0


def deadline(start: float, base_s: float, tick: int) -> float:
    return start + tick * base_s
