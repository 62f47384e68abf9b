"""Remaining useful life from the health-index trend, with an uncertainty band.

Method: fit the recent health-index history (since degradation began: the last point at which
the index was still >= ``onset_hi``) with two candidate models and keep the better (lower
residual sum of squares, ties to the simpler):

* linear:       HI(t) = a + b t
* exponential:  100 - HI(t) = exp(a + b t)   (wear that accelerates, typical of bearing spalls)

The RUL is the time from the last sample until the fitted curve reaches ``failure_hi``. The band
comes from the regression's prediction interval at level ``confidence`` (t-distribution, in the
fitted space): the earliest and latest times at which the band crosses
the failure level. With no downward trend (slope >= 0 or not significant) the RUL is infinite
and the explanation says why. Everything used is returned, so the figure can be audited.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class RulEstimate:
    rul_s: float
    lower_s: float
    upper_s: float
    model: str
    slope_per_day: float
    n_points: int
    explanation: str


def estimate_rul(t_s: Sequence[float] | np.ndarray, hi: Sequence[float] | np.ndarray, *, failure_hi: float = 20.0,
                 onset_hi: float = 90.0, confidence: float = 0.9, min_points: int = 5) -> RulEstimate:
    t = np.asarray(t_s, dtype=np.float64)
    h = np.asarray(hi, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(h)
    t, h = t[ok], h[ok]
    if t.size < min_points:
        return RulEstimate(math.inf, math.inf, math.inf, "none", 0.0, int(t.size),
                           f"only {t.size} points (need {min_points})")
    healthy = np.nonzero(h >= onset_hi)[0]
    start = int(healthy[-1]) if healthy.size and healthy[-1] < t.size - min_points else 0
    t, h = t[start:], h[start:]
    now = float(t[-1])
    if h[-1] <= failure_hi:
        return RulEstimate(0.0, 0.0, 0.0, "none", 0.0, int(t.size), f"health {h[-1]:.0f} is at or below the "
                           f"failure level {failure_hi:.0f}")
    from scipy import stats  # on use: ~50 MB resident that an edge (its monitors never estimate RUL) is spared

    tt = (t - now) / 86400.0  # days relative to now: well conditioned
    fits = []
    for name in ("linear", "exponential"):
        y = h if name == "linear" else np.log(np.maximum(100.0 - h, 1e-3))
        res = stats.linregress(tt, y)
        pred = res.intercept + res.slope * tt
        hi_pred = pred if name == "linear" else 100.0 - np.exp(pred)
        sse = float(np.sum((h - hi_pred) ** 2))
        fits.append((sse * (1.0 if name == "linear" else 1.02), name, res, y))
    _, name, res, y = min(fits, key=lambda f: f[0])
    degrading = res.slope < 0 if name == "linear" else res.slope > 0
    if not degrading or res.pvalue > 1 - confidence:
        return RulEstimate(math.inf, math.inf, math.inf, name, float(res.slope), int(t.size),
                           f"no significant downward trend over {t.size} points (p={res.pvalue:.2f})")
    target = failure_hi if name == "linear" else math.log(100.0 - failure_hi)
    n = tt.size
    resid = y - (res.intercept + res.slope * tt)
    s = math.sqrt(float(resid @ resid) / max(n - 2, 1))
    q = float(stats.t.ppf(0.5 + confidence / 2, max(n - 2, 1)))
    sxx = float(((tt - tt.mean()) ** 2).sum())
    t_cross = (target - res.intercept) / res.slope
    horizon = max(10.0 * max(t_cross, 1e-3), 10.0 * (tt[-1] - tt[0]) + 1.0)
    grid = np.linspace(0.0, horizon, 4000)
    mean = res.intercept + res.slope * grid
    # Prediction interval (not the narrower confidence interval of the mean): the band must cover
    # where this one asset's index will actually be, scatter included.
    half = q * s * np.sqrt(1.0 + 1.0 / n + (grid - tt.mean()) ** 2 / max(sxx, 1e-12))
    sign = -1.0 if name == "linear" else 1.0  # direction in which the fitted quantity moves towards failure
    early_curve = mean + sign * half
    late_curve = mean - sign * half

    def crossing(curve: np.ndarray) -> float:
        hit = np.nonzero(sign * (curve - target) >= 0)[0]
        return float(grid[hit[0]]) if hit.size else math.inf

    lo, up = crossing(early_curve), crossing(late_curve)
    rul = max(float(t_cross), 0.0)
    slope_hi_per_day = float(res.slope) if name == "linear" else float(-res.slope * (100.0 - h[-1]))
    expl = (f"{name} fit of the health index over the last {n} points "
            f"({(t[-1] - t[0]) / 86400:.1f} days, trend {slope_hi_per_day:+.2f}/day now): reaches {failure_hi:.0f} "
            f"in {rul:.1f} days ({confidence:.0%} band {lo:.1f}-{up:.1f} days)")
    return RulEstimate(rul * 86400.0, lo * 86400.0, up * 86400.0, name, slope_hi_per_day, n, expl)
