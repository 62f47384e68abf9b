"""From calibrated scores to what a person reads: alarms per asset, health index, remaining life.

Alarm defaults by data rate (``default_alarm_settings``), overridable on the command line. A
score over 1 happens on healthy rows at the false-alarm rate the model was calibrated to (1 % by
default); an alarm needs the **mean score of the asset's last ``on_delay`` rows** over 1
(``alarm_states``; the mean is written as ``score_smoothed``) and clears after ``off_delay`` rows
of that mean back under ``1 - hysteresis``. Consecutive healthy rows are correlated, so the delay
is set in time as well as in rows: a human wants to hear about a sustained change, not a spike.
Until 2026-12-04 the on-delay counted *consecutive* rows over 1; a real fault whose score
flickers around the threshold (8 rows of 10 over it) then never alarmed: on SKAB that logic
found fewer faults than the raw score. The mean over the same window keeps the delay and the
robustness to a single spike (one row at 5 among nine at 0.5 averages under 1) without that.

=====================  ========  =========  ==========  =================================
rows arrive every       on-delay  off-delay  hysteresis  a fault must persist for about
=====================  ========  =========  ==========  =================================
<= 2 s                  10 rows   30 rows    0.3         10-20 s
2 s - 1 min             5 rows    10 rows    0.3         10 s - 5 min
1 - 15 min              3 rows    6 rows     0.3         3-45 min
> 15 min                2 rows    3 rows     0.3         30 min and more
unknown (no time)       3 rows    6 rows     0.3         3 rows
=====================  ========  =========  ==========  =================================

Remaining useful life (``rul``): per asset, causally, from the health-index history up to each
row once the index has left "good" (< 80), by ``spinline.health.rul.estimate_rul`` (linear or
exponential trend of the index to 20, with a 90 % band from the trend's uncertainty: ``rul.py``).
In hours when the table has a time column, else in rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from spinline.health.alarms import AlarmEngine, AnomalyRule
from spinline.health.health_index import health_index
from spinline.health.rul import estimate_rul

#: (rows arrive at most every ... s, on-delay, off-delay, label); see the module docstring.
ALARM_DEFAULTS: tuple[tuple[float, int, int, str], ...] = (
    (2.0, 10, 30, "<= 2 s"), (60.0, 5, 10, "2 s - 1 min"), (900.0, 3, 6, "1 - 15 min"),
    (math.inf, 2, 3, "> 15 min"))
RUL_WINDOW = 300
RUL_FROM_HI = 80.0


@dataclass(frozen=True, slots=True)
class AlarmSettings:
    on_delay: int
    off_delay: int
    hysteresis: float
    basis: str

    def describe(self) -> str:
        return (f"on-delay {self.on_delay} rows, off-delay {self.off_delay} rows, hysteresis {self.hysteresis} "
                f"({self.basis})")


def default_alarm_settings(dt_s: float | None) -> AlarmSettings:
    if dt_s is None or not math.isfinite(dt_s) or dt_s <= 0:
        return AlarmSettings(3, 6, 0.3, "default for data without a time column")
    for max_dt, on, off, label in ALARM_DEFAULTS:
        if dt_s <= max_dt:
            return AlarmSettings(on, off, 0.3, f"default for rows every {label}; median interval {dt_s:.3g} s")
    raise AssertionError("unreachable")


def median_interval_s(t_s: np.ndarray, assets: np.ndarray) -> float | None:
    d = []
    for a in pd.unique(assets):
        ts = t_s[assets == a]
        dd = np.diff(ts)
        d.append(dd[np.isfinite(dd) & (dd > 0)])
    allv = np.concatenate(d) if d else np.array([])
    return float(np.median(allv)) if allv.size else None


def alarm_states(scores: np.ndarray, assets: np.ndarray, settings: AlarmSettings
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(smoothed score, alarm raised on this row, alarm active) per row, alarm state per asset.

    The smoothed score is the causal mean of the asset's last ``on_delay`` scores (fewer at its
    start); the alarm rule sees that mean with no further delay, clears after ``off_delay`` rows
    under ``1 - hysteresis``. Rows are taken in file order within each asset."""
    n = scores.size
    rule = AnomalyRule(hysteresis=settings.hysteresis, on_delay=1, off_delay=settings.off_delay)
    engine = AlarmEngine([rule], rearm_s=0)
    smooth = np.zeros(n)
    raised = np.zeros(n, dtype=int)
    active = np.zeros(n, dtype=int)
    t0 = datetime(1970, 1, 1)
    w = max(int(settings.on_delay), 1)
    for name in pd.unique(assets):
        rows = np.flatnonzero(assets == name)
        v = np.nan_to_num(np.asarray(scores[rows], dtype=np.float64))
        c = np.concatenate([[0.0], np.cumsum(v)])
        k = np.arange(rows.size)
        lo = np.maximum(0, k + 1 - w)
        smooth[rows] = (c[k + 1] - c[lo]) / (k + 1 - lo)
        key = str(name)
        for j, i in enumerate(rows):
            at = t0 + timedelta(seconds=float(j))
            raised[i] = int(bool(engine.evaluate(key, at, {"anomaly_score": float(smooth[i])})))
            active[i] = int(bool(engine.open_alarms(key)))
    return smooth, raised, active


def assess(scores: np.ndarray, z: np.ndarray, features: Sequence[str], assets: np.ndarray, t_s: np.ndarray | None,
           settings: AlarmSettings, *, velocity: np.ndarray | None = None, machine_class: str = "I",
           with_rul: bool = True) -> pd.DataFrame:
    """One output row per input row (same order): alarm state per asset, health index, RUL with its band."""
    n = scores.size
    smooth, raised, active = alarm_states(scores, assets, settings)
    hi = np.zeros(n)
    status: list[str] = [""] * n
    driver: list[str] = [""] * n
    rul = np.full(n, np.nan)
    lo = np.full(n, np.nan)
    up = np.full(n, np.nan)
    t_use = t_s if t_s is not None else np.arange(n, dtype=np.float64)
    unit = 3600.0 if t_s is not None else 1.0
    for name in pd.unique(assets):
        rows = np.flatnonzero(assets == name)
        for i in rows:
            v = float(velocity[i]) if velocity is not None else None
            h = health_index(anomaly_score=float(scores[i]), velocity_rms=v, machine_class=machine_class)
            hi[i], status[i], driver[i] = h.value, h.status, h.driver
        if not with_rul:
            continue
        tt, hh = t_use[rows], hi[rows]
        for k, i in enumerate(rows):
            if hh[k] >= RUL_FROM_HI or k < 5:
                continue
            a0 = max(0, k + 1 - RUL_WINDOW)
            est = estimate_rul(tt[a0:k + 1], hh[a0:k + 1])
            if math.isfinite(est.rul_s):
                rul[i], lo[i], up[i] = est.rul_s / unit, est.lower_s / unit, est.upper_s / unit
    moved = np.where(scores > 1.0, np.asarray(features, dtype=object)[np.argmax(np.abs(z), axis=1)], "") \
        if z.size else np.full(n, "", dtype=object)
    suffix = "h" if t_s is not None else "rows"
    return pd.DataFrame({"anomaly_score": np.round(scores, 4), "score_smoothed": np.round(smooth, 4),
                         "alarm_raised": raised, "alarm_active": active,
                         "health_index": hi, "status": status, "driver": driver, "moved_most": moved,
                         f"rul_{suffix}": np.round(rul, 3), f"rul_low_{suffix}": np.round(lo, 3),
                         f"rul_high_{suffix}": np.round(up, 3)})


def rul_metrics(pred: np.ndarray, low: np.ndarray, high: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """RMSE, PHM08 score (mean per row; late predictions cost more) and band coverage where a RUL was given.

    PHM08 (Saxena et al. 2008): d = predicted - true; exp(-d/13) - 1 if early, exp(d/10) - 1 if late.
    """
    ok = np.isfinite(pred) & np.isfinite(true)
    if not ok.any():
        return {"n": 0, "rmse": math.nan, "phm08_mean": math.nan, "coverage": math.nan}
    d = pred[ok] - true[ok]
    phm = np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(np.minimum(d / 10.0, 50.0)) - 1.0)
    cov = (low[ok] <= true[ok]) & (true[ok] <= np.where(np.isfinite(high[ok]), high[ok], np.inf))
    return {"n": int(ok.sum()), "rmse": float(np.sqrt(np.mean(d**2))), "phm08_mean": float(np.mean(phm)),
            "coverage": float(np.mean(cov))}
