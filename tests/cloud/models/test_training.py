"""Learning from verified repairs: labels from work orders, mill-wise evaluation, a candidate only when it
beats the active model on mills it never saw."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from spinline.cloud.app import open_stores
from spinline.cloud.maintenance.store import HealthStore
from spinline.cloud.models.registry import ModelRegistry
from spinline.cloud.models.training import MillRows, load_rows, split_mills
from spinline.cloud.settings import Settings
from spinline.core.batch import Batch
from spinline.core.site import load_site, point_key
from spinline.health.alarms import Alarm, Severity
from spinline.health.anomaly import VIB_MODEL_KEYS, RobustZScore
from spinline.health.workorders import WorkOrder

MILLS = ("mill-a", "mill-b", "mill-c", "mill-d")


def _row(rng: np.random.Generator, fault: bool) -> dict[str, float]:
    r = {k: float(np.exp(rng.normal(0.0, 0.05))) for k in VIB_MODEL_KEYS}
    if fault:   # an outer-race defect: the BPFO envelope line and the kurtosis rise
        r["env_bpfo"] *= 3.0
        r["kurtosis"] *= 1.6
    return r


def _data(seed: int = 0, faults: bool = True) -> dict[str, MillRows]:
    rng = np.random.default_rng(seed)
    out = {}
    for i, m in enumerate(MILLS):
        mr = MillRows()
        for j in range(120):
            mr.add(_row(rng, faults and j % 6 == 0), int(faults and j % 6 == 0))
        out[m] = mr
        assert i >= 0
    return out


def _poor_params() -> dict[str, object]:
    """An active model that watches the wrong feature (skewness only)."""
    rng = np.random.default_rng(9)
    det = RobustZScore(features=["skewness"], min_samples=8)
    for _ in range(60):
        det.learn_one(_row(rng, False))
    det.score_one(_row(rng, False))
    return {"detector": det.to_dict(), "baseline": {"skewness": 1.0}}


def test_split_is_mill_wise() -> None:
    for seed in range(5):
        tr, te = split_mills(MILLS, seed=seed)
        assert set(tr).isdisjoint(te) and set(tr) | set(te) == set(MILLS) and tr and te
    with pytest.raises(ValueError):
        split_mills(["only"])


def test_a_candidate_is_proposed_only_when_it_beats_the_active_model(tmp_path: Path) -> None:
    import sqlalchemy as sa

    reg = ModelRegistry(sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}"))
    reg.create_schema()
    poor = reg.register(name="ring_frame.mahalanobis", scope_kind="machine_type", scope="ring_frame",
                        kind="asset_monitor/robust_z", params=_poor_params(), actor="test")
    # (a different kind in the same line is allowed: the line is what a machine type runs)
    with reg.engine.begin() as con:
        from spinline.cloud.models import tables as t

        con.execute(t.versions.update().where(t.versions.c.id == poor.id).values(status="active"))
    data = _data()
    res, cand = reg.train("ring_frame", data, actor="trainer")
    assert cand is not None and res.propose
    # no mill on both sides; the comparison is stored with the candidate
    assert set(cand.train_mills).isdisjoint(cand.comparison["held_out_mills"])
    assert cand.comparison["candidate"]["auc"] > cand.comparison["active"]["auc"] + 0.2
    assert cand.metrics["detection_rate"] > 0.8 and cand.metrics["false_alarm_rate"] < 0.1
    assert cand.parent == poor.version and cand.status == "candidate"
    assert cand.transitions[0].reason.startswith("trained: candidate AUC")
    # the artefact that travels to every mill's edges carries the fitted state, not the training rows
    import json

    det = json.loads(reg.artefact(cand))["params"]["detector"]
    assert det["rows"] == [] and det["speeds"] == [] and det["state"] is not None
    # now that model is active: the same data gives nothing better, so nothing is proposed
    reg.promote(cand.name, cand.version, mills=["mill-a"], actor="zone", reason="better")
    res2, none = reg.train("ring_frame", data, actor="trainer")
    assert none is None and not res2.propose and "does not beat" in res2.comparison["why"]
    # with no verified fault on the held-out mills there is nothing to judge on: no candidate either
    res3, none3 = reg.train("card", _data(faults=False), actor="trainer")
    assert none3 is None and "no verified fault" in res3.comparison["why"]


def test_a_verified_work_order_becomes_a_label(tmp_path: Path, zone_yaml: Path) -> None:
    site = load_site(zone_yaml)
    settings = Settings(db=f"embedded:{tmp_path / 'cloud'}", secret_key=base64.urlsafe_b64encode(b"k" * 32).decode())
    store, meta = open_stores(settings, site=site)
    hs = HealthStore(meta.engine)
    hs.create_schema()
    try:
        t0 = datetime(2026, 11, 2, tzinfo=UTC)
        rng = np.random.default_rng(1)
        tags = {k: f"mill-a/rf01/vib_main_motor_{k}" for k in VIB_MODEL_KEYS}
        keys, ts, vals = [], [], []
        for h in range(48):
            at = int((t0 + timedelta(hours=h)).timestamp() * 1e9)
            r = _row(rng, h >= 30)
            for k, tag in tags.items():
                keys.append(point_key(tag))
                ts.append(at)
                vals.append(r[k])
        store.write(Batch.of(keys, ts, vals))
        alarm = Alarm(asset="rf01/main_motor", rule="anomaly", severity=Severity.CRITICAL, message="x",
                      raised_at=t0 + timedelta(hours=40), value=3.0)
        wo = WorkOrder.from_alarm(alarm, at=t0 + timedelta(hours=40), fault="unknown")
        orders_of = {"mill-a": [wo]}
        span = (int(t0.timestamp() * 1e9), int((t0 + timedelta(days=3)).timestamp() * 1e9))
        rows = load_rows(store, lambda m: orders_of.get(m, []), {"mill-a": site.mills[0]}, "ring_frame", *span,
                         lead=timedelta(hours=10))
        assert len(rows["mill-a"].rows) == 48 and sum(rows["mill-a"].labels) == 0   # not verified: no label
        # the technician finds an outer-race defect (correcting the fault), repairs it, the machine verifies it
        wo.assign("tech", by="mgr", at=t0 + timedelta(hours=41))
        wo.start(by="tech", at=t0 + timedelta(hours=42))
        wo.update_fault("bearing_outer", by="tech", at=t0 + timedelta(hours=43), comment="outer race pitting")
        wo.resolve(by="tech", at=t0 + timedelta(hours=44))
        wo.verify(95.0, by="mgr", at=t0 + timedelta(hours=46))
        hs.save_work_order("mill-a", wo)
        orders_of = {"mill-a": hs.list_work_orders("mill-a")}
        rows = load_rows(store, lambda m: orders_of.get(m, []), {"mill-a": site.mills[0]}, "ring_frame", *span,
                         lead=timedelta(hours=10))
        # the window: 10 h before the order (h 30) up to its resolution (h 44): 14 fault rows
        assert sum(rows["mill-a"].labels) == 14
    finally:
        store.close()
        meta.close()
