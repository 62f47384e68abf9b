"""A learned model (scikit-learn isolation forest exported with skl2onnx) travels like the JSON ones and
runs at the edge with onnxruntime inside the real scorer; a file that is not a loadable ONNX graph is
refused by the registry and could not be installed at the edge either."""

from __future__ import annotations

import base64
import math
from pathlib import Path

import numpy as np
import pytest

from spinline.cloud.models.registry import RegistryError
from spinline.health.anomaly import VIB_LOG_KEYS, VIB_MODEL_KEYS, BaselineDetector
from spinline.health.onnx_detector import fit_isolation_forest

from .conftest import Zone
from .test_canary import Edge

KEYS = list(VIB_MODEL_KEYS)
LOGS = [k for k in VIB_LOG_KEYS if k in KEYS]


def _rows(rng: np.random.Generator, n: int, fault: bool = False) -> list[dict[str, float]]:
    out = []
    for _ in range(n):
        r = {k: float(abs(rng.normal(1.0, 0.05))) for k in KEYS}
        if fault:   # a late bearing defect: impacts raise the envelope lines, kurtosis and the amplitudes
            for k in ("env_bpfo", "env_bpfi", "env_bsf", "rms_g", "peak_g", "velocity_rms"):
                r[k] *= 3.0
            r["kurtosis"] *= 2.0
        out.append(r)
    return out


def test_an_onnx_model_is_registered_shipped_and_scored_at_the_edge(zone: Zone, zone_yaml: Path) -> None:
    rng = np.random.default_rng(0)
    det = fit_isolation_forest(_rows(rng, 300), KEYS, LOGS, far=0.01, seed=0, n_estimators=25)
    params = {"detector": det.to_dict(), "baseline": {k: 1.0 for k in KEYS}, "iso_class": "I"}
    m = zone.registry.register(name="ring_frame.iforest", scope_kind="machine_type", scope="ring_frame",
                               kind="asset_monitor/onnx", params=params, actor="trainer")
    assert m.format == "onnx" and m.target.endswith(".json")
    zone.registry.promote(m.name, m.version, mills=["mill-a"], actor="zone", reason="learned model")
    a = Edge(zone, "edge-a", zone_yaml)
    assert a.updater.check_once().state == "ok"
    assert {s.version for s in a.updater.slots.values()} == {m.version}
    # the real scorer runs it: healthy snapshots mostly below 1, a bearing defect above
    scores = []
    for r in _rows(rng, 30):
        a.ts += 60 * 10**9
        out = a.scorer.score("rf01", "main_motor", a.ts, 24.7, r)
        scores.append(out["anomaly_score"])
    assert all(math.isfinite(s) for s in scores) and np.mean(np.array(scores) > 1) < 0.2
    loaded = BaselineDetector.from_dict(det.to_dict())
    faulty = [loaded.score_one(r) for r in _rows(rng, 50, fault=True)]
    assert np.mean(np.array(faulty) > 1) > 0.9 and np.median(faulty) > 2 * np.median(scores)
    assert a.scoring.errors == 0
    ev = a.updater.evidence[("mill-a/rf01/main_motor", m.version)]
    assert ev.scored == 30 and ev.latency_s_max > 0


def test_a_broken_onnx_file_is_refused() -> None:
    d = {"kind": "onnx", "model_b64": base64.b64encode(b"\x08\x07not a graph").decode(),
         "params": {"features": KEYS, "center": 0.0, "threshold": 1.0}}
    with pytest.raises(ValueError, match="ONNX"):
        BaselineDetector.from_dict(d)
    import sqlalchemy as sa

    from spinline.cloud.models.registry import ModelRegistry

    reg = ModelRegistry(sa.create_engine("sqlite://"))
    reg.create_schema()
    with pytest.raises(RegistryError, match="do not load"):
        reg.register(name="x.onnx", scope_kind="machine_type", scope="card", kind="asset_monitor/onnx",
                     params={"detector": d, "baseline": {"a": 1.0}}, actor="t")
