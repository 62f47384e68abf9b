"""The consensus detector and the mean-window alarm logic (the defaults of `spinline health`)."""

from __future__ import annotations

import json

import numpy as np

from spinline.health.assess import AlarmSettings, alarm_states
from spinline.health.checks import roc_auc
from spinline.health.consensus import MEMBERS, ConsensusDetector
from spinline.health.fleet import BEST, fit_fleet


def _normal(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n)
    return np.column_stack([a, 0.9 * a + 0.3 * rng.standard_normal(n), rng.standard_normal(n)])


def test_consensus_members_read_one_at_their_own_tail_and_round_trip_json() -> None:
    z = _normal(600, 0)
    det = ConsensusDetector(far=0.01, seed=0)
    shape = json.loads(json.dumps(det.fit_standardised(z)))  # plain JSON, no pickles
    assert all(shape[f"{m}.scale"] > 0 for m in MEMBERS)
    d_fit = det.distance(z)
    assert 0.3 < float(np.median(d_fit)) < 1.0  # each member is divided by its 99 % point: typical rows < 1
    again = ConsensusDetector(far=0.01, seed=0)
    again.load_standardised(shape)
    probe = _normal(200, 1) + np.array([0.0, 3.0, 0.0])  # a broken relationship
    np.testing.assert_allclose(again.distance(probe), det.distance(probe), rtol=1e-9)
    assert roc_auc(det.distance(_normal(200, 2)), det.distance(probe)) > 0.9


def test_fit_fleet_keeps_the_consensus_by_default_and_the_best_single_on_request() -> None:
    x = np.vstack([_normal(400, 3), _normal(400, 4) + 5.0])
    assets = np.array(["a"] * 400 + ["b"] * 400, dtype=object)
    normal = np.ones(800, dtype=bool)
    fm = fit_fleet(x, assets, normal, features=["p", "q", "r"], floors=[0.0] * 3, far=0.01)
    assert fm.kind == "consensus" and "consensus of" in fm.selection["why"]
    assert fm.selection["candidates"]["consensus"]["members"]
    s, _, _ = fm.score(_normal(300, 5), None, np.array(["a"] * 300, dtype=object))
    assert 0.0 < float(np.mean(s > 1)) < 0.05  # calibrated like any detector: ~1 % on healthy rows
    best = fit_fleet(x, assets, normal, features=["p", "q", "r"], floors=[0.0] * 3, far=0.01, rule=BEST)
    assert best.kind in ("robust_z", "mahalanobis", "pca_t2q", "iforest")


def test_alarm_reads_the_mean_of_the_on_delay_window() -> None:
    settings = AlarmSettings(on_delay=10, off_delay=5, hysteresis=0.3, basis="test")
    flicker = np.tile([1.6, 1.6, 1.6, 1.6, 0.9, 1.6, 1.6, 1.6, 1.6, 0.9], 5)  # over 1 on 8 rows of 10
    spike = np.r_[np.full(20, 0.5), 5.0, np.full(29, 0.5)]  # one row at 5 among rows at 0.5
    scores = np.r_[flicker, spike]
    assets = np.array(["f"] * 50 + ["s"] * 50, dtype=object)
    smooth, raised, active = alarm_states(scores, assets, settings)
    assert raised[:50].sum() == 1 and active[10:50].all()  # a consecutive-rows on-delay never alarmed here
    assert raised[50:].sum() == 0 and smooth[50:].max() < 1  # a single spike does not
    assert smooth[50] == 0.5  # state and window restart per asset
