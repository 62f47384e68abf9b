"""Anomaly models beyond the contract (speed conditioning, calibration, persistence) and diagnosis rules."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from spinline.core.site import Bearing
from spinline.health import synthetic
from spinline.health.anomaly import Mahalanobis, RobustZScore, vibration_detector
from spinline.health.diagnosis import FaultClassifier, diagnose, macro_f1
from spinline.health.features import bearing_frequencies, featurize

MOTOR = Bearing(name="m", n_balls=8, ball_diameter_mm=34.0, pitch_diameter_mm=125.0)


def _speed_rows(n: int, seed: int, speeds: np.ndarray) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [{"vib": float(2.0 * (s / 25.0) ** 2 * np.exp(0.03 * rng.standard_normal())),
             "temp": float(40 + rng.standard_normal()), "shaft_hz": float(s)} for s in speeds[:n]]


def test_speed_conditioning_removes_the_speed_effect() -> None:
    rng = np.random.default_rng(0)
    train = _speed_rows(300, 1, rng.uniform(20, 30, 300))
    m = Mahalanobis(far=0.01, speed_key="shaft_hz", log_keys=("vib",), seed=0)
    plain = Mahalanobis(far=0.01, log_keys=("vib",), seed=0)
    for r in train:
        m.learn_one(r)
        plain.learn_one({k: v for k, v in r.items() if k != "shaft_hz"})
    test = _speed_rows(200, 2, rng.uniform(20, 30, 200))
    assert np.mean([m.score_one(r) > 1 for r in test]) <= 0.05  # speed changes alone: no alarms
    # Vibration up 80 % at low speed is still inside what the machine shows at full speed: only a
    # speed-conditioned baseline sees it.
    faulty = [{**r, "vib": r["vib"] * 1.8} for r in _speed_rows(100, 3, rng.uniform(20, 22, 100))]
    assert np.mean([m.score_one(r) > 1 for r in faulty]) > 0.9
    assert np.mean([plain.score_one({k: v for k, v in r.items() if k != "shaft_hz"}) > 1 for r in faulty]) < 0.3
    ex = m.explain_one(faulty[0])
    assert max(ex, key=lambda k: abs(ex[k])) == "vib"


def test_not_ready_until_min_samples_and_p_value() -> None:
    m = RobustZScore(min_samples=10)
    for i in range(9):
        m.learn_one({"a": float(i)})
    assert m.score_one({"a": 100.0}) == 0.0 and m.p_value_one({"a": 100.0}) == 1.0 and math.isnan(m.threshold)
    m.learn_one({"a": 4.0})
    assert m.score_one({"a": 100.0}) > 1 and m.p_value_one({"a": 100.0}) < 0.2
    assert m.n_baseline == 10


def test_bad_parameters_refused() -> None:
    with pytest.raises(ValueError, match="far"):
        RobustZScore(far=0.0)
    with pytest.raises(ValueError, match="min_samples"):
        RobustZScore(min_samples=2)
    with pytest.raises(ValueError, match="shrinkage"):
        Mahalanobis(shrinkage=2.0)


def test_short_baseline_extrapolates_a_strict_threshold() -> None:
    rng = np.random.default_rng(3)
    m = Mahalanobis(far=0.001, min_samples=20, seed=1)
    data = rng.standard_normal((5000, 3))
    for row in data[:40]:
        m.learn_one({"a": row[0], "b": row[1], "c": row[2]})
    rate = np.mean(m.score_many(data[40:]) > 1)
    assert rate < 0.01  # 20 calibration samples alone could not promise better than 1/21


def test_reservoir_keeps_the_buffer_bounded_and_json_round_trips() -> None:
    m = RobustZScore(max_samples=50, seed=3)
    for i in range(500):
        m.learn_one({"a": float(i % 7)})
    assert m.n_baseline == 50
    m2 = RobustZScore.from_dict(json.loads(json.dumps(m.to_dict())))
    assert m2.score_one({"a": 30.0}) == pytest.approx(m.score_one({"a": 30.0}))
    assert repr(m2) == repr(m)


def _feats(fault: str | None, severity: float, seed: int) -> dict[str, float]:
    x = synthetic.snapshot(n=12800, bearing=MOTOR, fault=fault, severity=severity, seed=seed)
    f = featurize(x, 25600.0, 24.7, MOTOR, extended=True)
    return {k: float(v[0]) for k, v in f.items()}


@pytest.fixture(scope="module")
def baseline() -> dict[str, float]:
    rows = [_feats(None, 0.0, s) for s in range(30)]
    return {k: float(np.median([r[k] for r in rows])) for k in rows[0]}


@pytest.mark.parametrize("fault", synthetic.FAULTS)
def test_rules_name_each_fault_with_evidence(baseline: dict[str, float], fault: str) -> None:
    fd = {k: float(v) for k, v in bearing_frequencies(MOTOR, 24.7).items()}
    d = diagnose(_feats(fault, 0.6, 100), baseline, defect_hz=fd, shaft_hz=24.7)
    assert d.fault == fault, d.explain()
    assert d.confidence >= 0.5 and d.evidence
    if fault == "bearing_outer":
        assert d.evidence[0].feature == "env_bpfo" and d.evidence[0].frequency_hz == pytest.approx(fd["bpfo"])
        assert "BPFO" in d.explain()


def test_healthy_is_unknown(baseline: dict[str, float]) -> None:
    d = diagnose(_feats(None, 0.0, 999), baseline)
    assert d.fault == "unknown" and d.confidence == 0.0


def test_speed_drop_points_at_belt_slip(baseline: dict[str, float]) -> None:
    x = {**_feats(None, 0.0, 5), "speed_deviation_pct": -4.0}
    d = diagnose(x, baseline)
    assert d.fault == "belt_slip" and d.evidence[0].feature == "speed_deviation_pct"


def test_fault_classifier_learns_and_macro_f1() -> None:
    rows = [_feats(f, 0.5, 200 + i) for f in ("bearing_outer", "bearing_inner", "imbalance") for i in range(6)]
    y = [f for f in ("bearing_outer", "bearing_inner", "imbalance") for _ in range(6)]
    clf = FaultClassifier(["env_bpfo", "env_bpfi", "order_1x"], log_keys=("env_bpfo", "env_bpfi", "order_1x"))
    clf.fit(rows[::2], y[::2])
    m, per = macro_f1(y[1::2], clf.predict(rows[1::2]))
    assert m == 1.0 and set(per) == set(y)
    assert macro_f1(["a", "b"], ["b", "a"])[0] == 0.0


def test_vibration_detector_preset() -> None:
    d = vibration_detector()
    assert d.speed_key == "shaft_hz" and "env_bpfo" in (d.features or ()) and "env_bpfo" in d.log_keys
