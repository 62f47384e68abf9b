"""Health history of a machine's assets from the feature rollups, and the latest bearing defect lines."""

from __future__ import annotations

import time

import numpy as np
import pytest

from spinline.core.batch import Batch
from spinline.core.bearing import defect_frequencies
from spinline.core.site import point_key

from .conftest import Api

MIN = 60 * 10**9
P = "mill-a/rf01/vib_main_motor_"


async def test_history_falls_with_its_drivers_and_the_latest_defect_lines(api: Api) -> None:
    now = time.time_ns() // MIN * MIN
    start = now - 180 * MIN
    ts = start + np.arange(180) * MIN
    hi = np.linspace(90, 40, 180)
    hi[100] = 20.0                                   # one bad minute the thinned history must keep
    feats = {"health_index": hi, "anomaly_score": np.linspace(0.5, 4.0, 180), "velocity_rms": np.linspace(1, 6, 180),
             "iso_zone": np.r_[np.zeros(90), np.full(90, 2.0)], "env_bpfo": np.linspace(1, 9, 180),
             "env_bpfi": np.ones(180), "env_bsf": np.ones(180), "env_ftf": np.ones(180)}
    for f, v in feats.items():
        api.cloud.store.write(Batch.of(np.full(180, point_key(P + f)), ts, v))
    api.cloud.store.refresh_rollups()
    h = await api.login("vera")
    r = await api.client.get("/api/v1/mills/mill-a/machines/rf01/health/history", headers=h, params={
        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start / 1e9)), "max_points": 30})
    assert r.status_code == 200, r.text
    body = r.json()
    (asset,) = body["assets"]
    assert asset["asset"] == "rf01/main_motor" and asset["resolution"] == "1m"
    samples = asset["samples"]
    assert len(samples) == 30
    assert samples[0]["health_index"] > 85 and samples[-1]["health_index"] < 45
    assert min(x["health_index"] for x in samples) == 20.0
    assert samples[0]["iso_zone"] == "A" and samples[-1]["iso_zone"] == "C"
    assert samples[-1]["source"] == "edge" and samples[-1]["driver"] and samples[-1]["envelope"]["env_bpfo"] > 8
    assert samples[-1]["anomaly_score"] == pytest.approx(4.0, rel=0.02)
    (snap,) = body["latest"]
    lines = {x["line"]: x for x in snap["lines"]}
    expected = defect_frequencies(8, 34.0, 125.0, 0.0, 1480 / 60)
    assert lines["bpfo"]["freq_hz"] == pytest.approx(float(expected["bpfo"]), abs=0.01)
    assert lines["bpfo"]["envelope_ratio"] == pytest.approx(9.0) and lines["bpfi"]["envelope_ratio"] == 1.0
    assert snap["bearing"] == "SKF 6316" and snap["shaft_rpm"] == 1480 and snap["spectrum"] is None
    # a machine without vibration channels answers with no assets; an unknown one 404
    r = await api.client.get("/api/v1/mills/mill-a/machines/em-main/health/history", headers=h)
    assert r.status_code == 200 and r.json()["assets"] == []
    assert (await api.client.get("/api/v1/mills/mill-a/machines/zz99/health/history", headers=h)).status_code == 404
