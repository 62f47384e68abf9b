"""Health index, its rollups, and remaining-useful-life estimation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spinline.health.health_index import health_index, rollup, status
from spinline.health.rul import estimate_rul


def test_health_index_bands_and_driver() -> None:
    assert health_index(anomaly_score=0.2, velocity_rms=0.3, machine_class="I").value > 95  # deep in zone A
    h = health_index(anomaly_score=1.0, velocity_rms=0.5, machine_class="I")
    assert h.value == pytest.approx(70) and h.driver == "anomaly_score" and h.status == "watch"
    h = health_index(anomaly_score=0.1, velocity_rms=4.5, machine_class="I")  # C/D boundary of class I
    assert h.value == pytest.approx(35) and h.driver.startswith("velocity_rms") and h.status == "plan maintenance"
    assert health_index(velocity_rms=4.5, machine_class="III").value > 60  # same velocity, bigger machine
    h = health_index(anomaly_score=16.0)
    assert h.value == pytest.approx(10) and h.status == "act now"
    assert health_index(anomaly_score=100.0).value == 0
    assert "anomaly_score" in h.explain()
    assert health_index(extra={"temp_rise": 55}).driver == "temp_rise"
    assert health_index().value == 100


def test_health_index_is_monotone_in_score() -> None:
    vals = [health_index(anomaly_score=s).value for s in np.linspace(0, 10, 50)]
    assert all(a >= b for a, b in zip(vals, vals[1:], strict=False))


def test_status_bands() -> None:
    assert [status(v) for v in (100, 80, 79.9, 60, 59, 30, 29, 0)] == [
        "good", "good", "watch", "watch", "plan maintenance", "plan maintenance", "act now", "act now"]


def test_rollup_min_rule_with_mean_and_worst() -> None:
    r = rollup([("mill", "L1", "card1", "cyl", 90), ("mill", "L1", "card1", "lickerin", 40),
                ("mill", "L1", "card2", "cyl", 85), ("mill", "L2", "ring1", "motor", 70)])
    card1 = r.find("card1")
    assert card1 is not None and card1.value == 40 and card1.worst == "lickerin" and card1.mean == 65
    l1 = r.find("L1")
    assert l1 is not None and l1.value == 40 and l1.worst == "card1" and l1.mean == pytest.approx(62.5)
    assert r.value == 40 and r.worst == "L1" and r.level == "mill"
    assert r.mean == pytest.approx((40 + 70) / 2)  # mean of the children's (min) values
    with pytest.raises(ValueError, match="one mill"):
        rollup([("a", "l", "m", "x", 1.0), ("b", "l", "m", "x", 1.0)])


def test_rul_linear_trend_with_band() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(0, 20) * 86400.0
    hi = 100 - 3.0 * np.arange(20) + rng.normal(0, 1.0, 20)  # 3 points/day down: from ~43 to 20 in ~7.7 days
    r = estimate_rul(t, hi, failure_hi=20, onset_hi=101)
    true_days = (hi[-1] - 20) / 3.0
    assert r.model == "linear"
    assert r.rul_s / 86400 == pytest.approx(true_days, abs=1.5)
    assert r.lower_s <= r.rul_s <= r.upper_s
    assert r.slope_per_day == pytest.approx(-3.0, abs=0.3)
    assert "days" in r.explanation


def test_rul_exponential_degradation_is_recognised() -> None:
    t = np.arange(0, 30) * 3600.0
    hi = 100 - 2.0 * np.exp(0.12 * np.arange(30))  # accelerating wear
    r = estimate_rul(t, hi, failure_hi=20)
    assert r.model == "exponential"
    t_fail = math.log(80 / 2.0) / 0.12  # hours from start
    assert r.rul_s / 3600 == pytest.approx(t_fail - 29, rel=0.1)


def test_rul_no_trend_is_infinite_and_says_why() -> None:
    rng = np.random.default_rng(1)
    r = estimate_rul(np.arange(30) * 3600.0, 95 + rng.normal(0, 1, 30))
    assert math.isinf(r.rul_s) and "no significant" in r.explanation
    assert math.isinf(estimate_rul([0, 1], [50, 40]).rul_s)
    assert estimate_rul(np.arange(6.0), [50, 40, 30, 25, 20, 10]).rul_s == 0


def _run_to_failure(seed: int, kind: str) -> float:
    """Coverage of the 90 % RUL band over one simulated run to failure, estimated as ``assess`` does.

    The anomaly score's trend grows from 0.3 (healthy) after row 400, exponentially (``"exp"``: the
    health index then falls in a straight line, the fit is well specified) or as wear squared
    (``"sq"``: the index falls ever more slowly, neither candidate fits); the score read carries
    AR(1) noise (lag-1 correlation 0.7, 25 % multiplicative), so consecutive rows are not independent.
    The true RUL is known: the time at which the noise-free index reaches 20."""
    rng = np.random.default_rng(seed)
    n, onset = 1400, 400
    k = np.arange(n)
    t = k * 600.0
    trend = (np.where(k > onset, 0.3 * np.exp((k - onset) / 160.0), 0.3) if kind == "exp"
             else 0.3 + np.where(k > onset, 12 * ((k - onset) / 1000.0) ** 2, 0.0))
    e = np.zeros(n)
    for i in range(1, n):
        e[i] = 0.7 * e[i - 1] + math.sqrt(1 - 0.7**2) * rng.standard_normal()
    hi = np.array([health_index(anomaly_score=float(s)).value for s in trend * np.exp(0.25 * e)])
    hi_true = np.array([health_index(anomaly_score=float(s)).value for s in trend])
    fail = int(np.argmax(hi_true <= 20))
    hits = []
    for i in range(onset, fail, 10):
        if hi[i] >= 80:
            continue
        est = estimate_rul(t[max(0, i - 299):i + 1], hi[max(0, i - 299):i + 1])  # assess: RUL_WINDOW rows
        if math.isfinite(est.rul_s):
            hits.append(est.lower_s <= (fail - i) * 600.0 <= est.upper_s)
    assert len(hits) >= 20
    return float(np.mean(hits))


def test_rul_band_covers_the_true_rul_at_about_its_nominal_level() -> None:
    # Nominal 90 %; tolerance: 80-98 % pooled over 6 runs (~220 estimates, each run's estimates are
    # strongly dependent). The band before 2026-12-05 (prediction interval, every point independent):
    # 78 % here and 35 % on the misspecified runs below.
    cov = float(np.mean([_run_to_failure(s, "exp") for s in range(6)]))
    assert 0.80 <= cov <= 0.98, cov


def test_rul_band_stays_honest_when_the_trend_misfits() -> None:
    # Wear squared: the index decelerates and both candidate trends run early. The backtested drift
    # widens the band (84 % measured; the bar is 75 %, below the nominal 90 %, as documented).
    cov = float(np.mean([_run_to_failure(s, "sq") for s in range(6)]))
    assert cov >= 0.75, cov
