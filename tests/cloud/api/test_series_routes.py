"""Many points in one series call: whole machine or chosen tags, min/max-preserving, rollups for long spans."""

from __future__ import annotations

import time

import numpy as np

from spinline.core.batch import Batch
from spinline.core.site import point_key

from .conftest import Api

SPEED = "mill-a/rf01/spindle_speed"
POWER = "mill-a/rf01/power"


def _write(api: Api, tag: str, ts: np.ndarray, v: np.ndarray) -> None:
    api.cloud.store.write(Batch.of(np.full(len(ts), point_key(tag)), ts, v))


async def test_a_machine_in_one_call_keeps_peaks(api: Api) -> None:
    now = time.time_ns() // 10**9 * 10**9
    start = now - 3600 * 10**9
    ts = start + np.arange(3600) * 10**9
    speed = 15000 + 100 * np.sin(np.arange(3600) / 100)
    speed[1234] = 30000.0                     # one spike the reduced chart must keep
    _write(api, SPEED, ts, speed)
    _write(api, POWER, ts, np.full(3600, 80.0))
    h = await api.login("vera")
    params = {"machine": "rf01", "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start / 1e9)),
              "max_points": 200}
    r = await api.client.get("/api/v1/mills/mill-a/series", headers=h, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    by_tag = {x["tag"]: x for x in body["series"]}
    assert len(by_tag) > 20 and all(t.startswith("mill-a/rf01/") for t in by_tag)
    sp = by_tag[SPEED]
    assert sp["key"] == str(point_key(SPEED)) and isinstance(sp["key"], str) and sp["unit"] == "rpm"
    assert sp["reduced"] and len(sp["points"]) <= 200
    assert max(v for _, v in sp["points"]) == 30000.0
    assert [t for t, _ in sp["points"]] == sorted(t for t, _ in sp["points"])
    assert by_tag[POWER]["points"][0][1] == 80.0
    assert by_tag["mill-a/rf01/twist"]["points"] == []             # no data: an empty series, not an error
    # chosen tags (by tag, key or machine/point), with names that match nothing reported back
    r = await api.client.get("/api/v1/mills/mill-a/series", headers=h, params=[
        ("tag", SPEED), ("tag", str(point_key(POWER))), ("tag", "rf01/twist"), ("tag", "mill-b/rf01/spindle_speed"),
        ("tag", "nope"), ("start", params["start"])])
    body = r.json()
    assert sorted(x["tag"] for x in body["series"]) == sorted([SPEED, POWER, "mill-a/rf01/twist"])
    assert body["unknown"] == ["mill-b/rf01/spindle_speed", "nope"]
    # neither machine nor tag; or too many points at once
    r = await api.client.get("/api/v1/mills/mill-a/series", headers=h)
    assert r.status_code == 422
    r = await api.client.get("/api/v1/mills/mill-a/series", headers=h, params={"tag": [SPEED]})
    assert r.status_code == 200


async def test_a_long_span_reads_rollups(api: Api) -> None:
    now = time.time_ns() // 10**9 * 10**9
    start = now - 2 * 86400 * 10**9
    ts = start + np.arange(0, 2 * 86400, 10) * 10**9
    v = np.full(len(ts), 15000.0)
    v[5000] = 1.0                              # a dip
    _write(api, SPEED, ts, v)
    api.cloud.store.refresh_rollups()
    h = await api.login("alice")
    r = await api.client.get("/api/v1/mills/mill-a/series", headers=h, params={
        "tag": SPEED, "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start / 1e9)), "max_points": 500})
    sp = r.json()["series"][0]
    assert sp["resolution"] == "1m" and sp["reduced"] and len(sp["points"]) <= 500
    assert min(x for _, x in sp["points"]) == 1.0 and max(x for _, x in sp["points"]) == 15000.0
