"""Energy-meter data quality: counter increments, gaps, explicit gap fill, sub-meter reconciliation.

All pure numpy. An energy figure in a carbon report is only as good as the counters behind it, so
every kWh that was not measured directly is labelled:

- *interpolated*: the counter kept counting through a hole in the data (its value after the hole
  is above its value before), so the total is measured and only its spread over the missing
  buckets is assumed (linear in time);
- *estimated*: the counter cannot bridge the hole (hole at the edge of the period, a reset during
  it, or longer than the store looks back), so the kWh are estimated from the machine's power
  readings, or failing those its typical hourly energy.

Counter arithmetic follows the store's rule (``spinline.cloud.storage.counters``, the Prometheus
rule): a drop of more than half the roll-over value is a roll-over, a smaller drop a reset, and
the increase after a reset is the new value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

import numpy as np
import numpy.typing as npt

from spinline.carbon.wording import say
from spinline.core.batch import F64, I64

GapFill = Literal["auto", "estimate", "none"]


class Step(IntEnum):
    NORMAL = 0
    ROLLOVER = 1
    RESET = 2


def counter_increments(values: F64, rollover: float | None = None) -> tuple[F64, npt.NDArray[np.int8]]:
    """Increase between consecutive counter readings and what happened at each step.

    Roll-over (uint32 register at 1 Wh resolution, rollover 4294967.296 kWh): the reading falls
    from 4294967.0 to 0.5, a drop of more than half the roll-over, so the increase is
    0.5 + 4294967.296 − 4294967.0 = 0.796. A reset (meter restarted at 0) to 2.0 counts 2.0.

    >>> inc, kind = counter_increments(np.array([4294966.0, 4294967.0, 0.5, 1.5, 2.0]), 4294967.296)
    >>> [round(float(x), 3) for x in inc]
    [1.0, 0.796, 1.0, 0.5]
    >>> [Step(k).name for k in kind]
    ['NORMAL', 'ROLLOVER', 'NORMAL', 'NORMAL']
    >>> inc, kind = counter_increments(np.array([100.0, 105.0, 2.0, 4.0]))
    >>> inc.tolist(), [Step(k).name for k in kind]
    ([5.0, 2.0, 2.0], ['NORMAL', 'RESET', 'NORMAL'])
    """
    v = np.asarray(values, dtype=np.float64)
    prev, cur = v[:-1], v[1:]
    d = cur - prev
    roll = float(rollover) if rollover is not None else np.inf
    wrapped = (d < 0) & (prev - cur > roll / 2)
    inc = np.where(d >= 0, d, np.where(wrapped, cur + roll - prev, cur))
    kind = np.where(d >= 0, Step.NORMAL, np.where(wrapped, Step.ROLLOVER, Step.RESET)).astype(np.int8)
    return inc, kind


@dataclass(frozen=True, slots=True)
class GapSpan:
    """Missing buckets [start, end) of one counter and how they were filled."""

    start: int            # first missing bucket index
    end: int              # one past the last missing bucket
    kwh: float            # kWh filled in
    method: str           # interpolated | estimated_power | estimated_typical | unfilled
    reason: str = ""


def detect_gaps(ts_ns: I64, interval_ns: int, factor: float = 2.0) -> list[tuple[int, int, int]]:
    """Holes in a sampled series: (last ts before, first ts after, samples missing).

    A hole is two consecutive samples more than ``factor`` × the interval apart.

    >>> detect_gaps(np.array([0, 60, 120, 600, 660]) * 10**9, 60 * 10**9)
    [(120000000000, 600000000000, 7)]
    """
    t = np.asarray(ts_ns, dtype=np.int64)
    if len(t) < 2:
        return []
    d = np.diff(t)
    idx = np.flatnonzero(d > factor * interval_ns)
    return [(int(t[i]), int(t[i + 1]), int(round(d[i] / interval_ns)) - 1) for i in idx]


@dataclass(frozen=True)
class CounterFill:
    """One counter's kWh per bucket after gap fill, with the filled parts broken out."""

    kwh: F64                           # per bucket, measured + filled
    interpolated: F64                  # per bucket, part that is interpolated
    estimated: F64                     # per bucket, part that is estimated
    gaps: tuple[GapSpan, ...] = ()
    resets: tuple[tuple[int, str], ...] = ()   # (bucket index, "reset" | "rollover")

    @property
    def total(self) -> float:
        return float(self.kwh.sum())


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs of True in a boolean array."""
    m = np.r_[False, np.asarray(mask, dtype=bool), False].astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def _step(prev: float, cur: float, rollover: float | None) -> tuple[float, str]:
    if cur >= prev:
        return cur - prev, "normal"
    if rollover is not None and prev - cur > rollover / 2:
        return cur + rollover - prev, "rollover"
    return cur, "reset"


def fill_counter(present: np.ndarray, delta: F64, first: F64, last: F64, *, est_kwh: F64 | None = None,
                 typical_kwh: float | None = None, rollover: float | None = None, method: GapFill = "auto",
                 max_bridge: int = 48) -> CounterFill:
    """Fill the missing buckets of one energy counter over a period's bucket grid.

    present:  bucket has data; delta: the store's increase per bucket (including the step from the
    previous bucket's last reading, so the first bucket after a hole carries the whole hole's
    increase); first/last: the counter's first and last reading in the bucket (NaN when unknown).
    est_kwh: an estimate per bucket from the machine's power readings (NaN where none);
    typical_kwh: fallback estimate per bucket. ``method``: ``auto`` interpolates where the counter
    bridges the hole and estimates elsewhere; ``estimate`` always estimates (the bridging step is
    dropped); ``none`` keeps the store's figures as they are and only reports the holes.

    Hand-worked (see tests/carbon/test_meters.py): readings last 100 in bucket 0, nothing in 1-2,
    first 130 and last 140 in bucket 3: 30 kWh counted across the hole, 10 kWh within bucket 3.
    The store's delta for bucket 3 is 40; ``auto`` gives buckets 1 and 2 15 kWh each
    (interpolated) and bucket 3 keeps its own 10.

    >>> r = fill_counter(np.array([True, False, False, True]), np.array([10.0, np.nan, np.nan, 40.0]),
    ...                  np.array([90.0, np.nan, np.nan, 130.0]), np.array([100.0, np.nan, np.nan, 140.0]))
    >>> r.kwh.tolist(), r.interpolated.tolist()
    ([10.0, 15.0, 15.0, 10.0], [0.0, 15.0, 15.0, 0.0])
    """
    present = np.asarray(present, dtype=bool)
    n = len(present)
    kwh = np.where(present, np.nan_to_num(np.asarray(delta, dtype=np.float64)), 0.0)
    interp = np.zeros(n)
    est = np.zeros(n)
    first = np.asarray(first, dtype=np.float64)
    last = np.asarray(last, dtype=np.float64)
    est_arr = np.full(n, np.nan) if est_kwh is None else np.asarray(est_kwh, dtype=np.float64)
    if typical_kwh is None:
        typical_kwh = float(np.median(kwh[present])) if present.any() else 0.0
    gaps: list[GapSpan] = []
    resets: list[tuple[int, str]] = []

    # counter drops between adjacent present buckets (reset or roll-over at the boundary)
    for j in range(1, n):
        if present[j] and present[j - 1] and not np.isnan(first[j]) and not np.isnan(last[j - 1]):
            _, kind = _step(last[j - 1], first[j], rollover)
            if kind != "normal":
                resets.append((j, kind))

    for i, j in _runs(~present):
        nmiss = j - i
        bridge_known = j < n and not np.isnan(first[j]) and not np.isnan(last[j])
        # part of delta[j] that is the step across the hole (the rest was counted within bucket j)
        bridge = float(kwh[j] - (last[j] - first[j])) if bridge_known else float("nan")
        can_interp = (bridge_known and i > 0 and not np.isnan(last[i - 1]) and nmiss <= max_bridge)
        kind = "normal"
        if can_interp:
            inc, kind = _step(last[i - 1], first[j], rollover)
            if kind != "normal":
                resets.append((j, kind))
            can_interp = kind != "reset"
        if method == "none":
            gaps.append(GapSpan(i, j, 0.0, "unfilled", "gap fill disabled"))
            continue
        if method == "auto" and can_interp:
            share = inc / nmiss
            kwh[i:j] = share
            interp[i:j] = share
            kwh[j] -= bridge
            gaps.append(GapSpan(i, j, float(inc), "interpolated", "counter continuous across the gap"))
            continue
        # estimate: from power readings where they exist, else the typical hourly energy
        e = est_arr[i:j]
        from_power = ~np.isnan(e)
        fill = np.where(from_power, e, typical_kwh)
        kwh[i:j] = fill
        est[i:j] = fill
        if bridge_known and not np.isnan(bridge) and (i > 0 or bridge > 0):
            kwh[j] -= max(bridge, 0.0)   # the store's catch-up step would double count the estimate
        if i == 0:
            reason = say("gap.start")
        elif j == n:
            reason = say("gap.end")
        elif kind == "reset":
            reason = say("gap.reset")
        elif nmiss > max_bridge:
            reason = say("gap.too_long", buckets=max_bridge)
        elif method == "estimate":
            reason = say("gap.estimate_selected")
        else:
            reason = say("gap.readings_unknown")
        how = "estimated_power" if from_power.all() else "estimated_typical"
        gaps.append(GapSpan(i, j, float(fill.sum()), how, reason))
    kwh = np.maximum(kwh, 0.0)
    return CounterFill(kwh=kwh, interpolated=interp, estimated=est, gaps=tuple(gaps), resets=tuple(resets))


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """A meter against the sum of what it feeds."""

    meter: str
    meter_kwh: float
    children_kwh: float
    children: tuple[str, ...]
    tolerance: float

    @property
    def difference_kwh(self) -> float:
        return self.meter_kwh - self.children_kwh

    @property
    def difference_share(self) -> float:
        return self.difference_kwh / self.meter_kwh if self.meter_kwh else 0.0

    @property
    def ok(self) -> bool:
        return abs(self.difference_share) <= self.tolerance


def reconcile(meters: Mapping[str, tuple[float, Sequence[str]]], kwh: Mapping[str, float],
              tolerance: float = 0.05) -> list[Reconciliation]:
    """Each meter's kWh against the sum of the machines or sub-meters it feeds.

    ``meters``: id -> (kWh read, ids fed); ``kwh``: kWh of every machine and meter. A difference
    beyond ``tolerance`` (share of the meter's reading) is flagged: a meter reading 1000 kWh whose
    machines sum to 940 is 6% apart and fails a 5% tolerance.

    >>> [r.ok for r in reconcile({"m": (1000.0, ["a", "b"])}, {"a": 500.0, "b": 440.0})]
    [False]
    >>> round(reconcile({"m": (1000.0, ["a", "b"])}, {"a": 500.0, "b": 480.0})[0].difference_share, 3)
    0.02
    """
    out = []
    for mid, (reading, feeds) in meters.items():
        children = [f for f in feeds if f in kwh]
        out.append(Reconciliation(mid, float(reading), float(sum(kwh[f] for f in children)), tuple(children),
                                  tolerance))
    return out


@dataclass(frozen=True)
class QualitySummary:
    """Data quality of a period's energy figures."""

    total_kwh: float
    interpolated_kwh: float
    estimated_kwh: float
    gaps: dict[str, tuple[GapSpan, ...]] = field(default_factory=dict)
    resets: dict[str, tuple[tuple[int, str], ...]] = field(default_factory=dict)
    reconciliations: tuple[Reconciliation, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def estimated_share(self) -> float:
        return self.estimated_kwh / self.total_kwh if self.total_kwh else 0.0

    @property
    def interpolated_share(self) -> float:
        return self.interpolated_kwh / self.total_kwh if self.total_kwh else 0.0

    @property
    def flagged_meters(self) -> list[Reconciliation]:
        return [r for r in self.reconciliations if not r.ok]
