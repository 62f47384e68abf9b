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


async def test_point_display_metadata(api: Api) -> None:
    h = await api.login("vera")
    r = await api.client.get("/api/v1/mills/mill-a/points", headers=h, params={"machine": "rf01"})
    assert r.status_code == 200, r.text
    pts = {p["name"]: p for p in r.json()}
    assert {p["machine"] for p in pts.values()} == {"rf01"}
    st = pts["state"]
    assert st["kind"] == "state" and st["states"] == {"0": "running", "1": "idle", "2": "stopped", "3": "fault",
                                                      "4": "doffing"}
    sp = pts["spindle_speed"]
    assert (sp["min"], sp["max"], sp["unit"], sp["group"]) == (0, 30000, "rpm", "production")
    assert sp["key"] == str(point_key(SPEED)) and sp["machine_type"] == "ring_frame" and sp["line"]
    assert pts["vib_main_motor_velocity_rms"]["group"] == "vibration"
    assert pts["link_state"]["states"] == {"0": "up", "1": "degraded", "2": "down"}
    whole = (await api.client.get("/api/v1/mills/mill-a/points", headers=h)).json()
    assert len(whole) > len(pts) and {p["group"] for p in whole} == {"production", "vibration", "link", "edge"}


async def test_point_keys_are_strings_on_every_route(api: Api) -> None:
    """64-bit keys exceed JavaScript's 2^53: every JSON answer carries them as strings."""
    now = time.time_ns()
    _write(api, SPEED, np.array([now - 2 * 10**9]), np.array([15000.0]))
    api.cloud.store.refresh_rollups()
    h = await api.login("alice")
    ref = str(point_key(SPEED))
    answers = [(await api.client.get(u, headers=h)).json() for u in (
        "/api/v1/mills/mill-a/tree", "/api/v1/mills/mill-a/latest", f"/api/v1/points/{ref}/range",
        f"/api/v1/points/{ref}/rollup?resolution=1m", "/api/v1/mills/mill-a/points",
        f"/api/v1/mills/mill-a/series?tag={ref}")]

    def walk(x: object) -> int:
        n = 0
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "key":
                    assert isinstance(v, str) and -(2**63) <= int(v) < 2**63, (k, v)
                    n += 1
                n += walk(v)
        elif isinstance(x, list):
            n += sum(walk(v) for v in x)
        elif isinstance(x, int) and not isinstance(x, bool):
            assert abs(x) < 2**53, x
        return n

    assert all(walk(a) > 0 for a in answers)
