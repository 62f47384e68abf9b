"""The API end to end over real stores: tree, values, ranges, rollups, KPIs, events, edges, ingest."""

from __future__ import annotations

import json
import time

import numpy as np

from spinline.cloud.api.routes.ingest import sign_status
from spinline.core.batch import Batch
from spinline.core.site import point_key

from .conftest import Api, signed

SPEED_A = "mill-a/rf01/spindle_speed"


async def test_openapi_documents_every_route(api: Api) -> None:
    spec = (await api.client.get("/api/v1/openapi.json")).json()
    paths = spec["paths"]
    for p in ("/api/v1/mills/{mill}/tree", "/api/v1/points/{ref}/range", "/api/v1/mills/{mill}/kpis",
              "/api/v1/zone/kpis", "/api/v1/edges", "/api/v1/ingest", "/api/v1/mills/{mill}/stream"):
        assert p in paths
    assert "application/x-spinline-batch" in paths["/api/v1/ingest"]["post"]["requestBody"]["content"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_tree_and_mills(api: Api) -> None:
    h = await api.login("alice")
    mills = (await api.client.get("/api/v1/mills", headers=h)).json()
    assert [m["id"] for m in mills] == ["mill-a"]
    assert mills[0]["spindles"] > 10000 and [s["name"] for s in mills[0]["shifts"]] == ["A", "B", "C"]
    tree = (await api.client.get("/api/v1/mills/mill-a/tree", headers=h)).json()
    machines = {m["id"]: m for ws in tree["workshops"] for line in ws["lines"] for m in line["machines"]}
    assert machines["rf01"]["spindles"] == 1824
    speed = next(p for p in machines["rf01"]["points"] if p["name"] == "spindle_speed")
    assert speed["tag"] == SPEED_A and speed["key"] == str(point_key(SPEED_A))
    zone = await api.login("zone")
    assert [m["id"] for m in (await api.client.get("/api/v1/mills", headers=zone)).json()] == \
        ["mill-a", "mill-b", "mill-c"]


async def test_names_in_other_languages_come_from_the_site_file(api: Api) -> None:
    """The site file's ``names`` reach the console beside each default name (the console picks its language)."""
    h = await api.login("alice")
    mill = (await api.client.get("/api/v1/mills", headers=h)).json()[0]
    assert mill["name"] == "Demo Cotton Spinning No.1" and mill["names"] == {"zh-CN": "示范棉纺一厂"}
    tree = (await api.client.get("/api/v1/mills/mill-a/tree", headers=h)).json()
    assert tree["names"] == {"zh-CN": "示范棉纺一厂"}
    ws = {w["id"]: w for w in tree["workshops"]}
    assert ws["prep"]["name"] == "Preparation" and ws["prep"]["names"] == {"zh-CN": "前纺"}
    line = next(ln for ln in ws["spinning"]["lines"] if ln["id"] == "ring-c32")
    assert line["names"] == {"zh-CN": "32英支普梳细纱线"}
    assert all(m["names"] == {} for m in line["machines"])  # machines named by id only: none given
    zone = await api.login("zone")
    over = (await api.client.get("/api/v1/zone/overview", headers=zone)).json()
    assert {m["id"]: m["names"].get("zh-CN") for m in over["mills"]} == {
        "mill-a": "示范棉纺一厂", "mill-b": "示范粗支纱二厂", "mill-c": "示范细支纱三厂"}


async def test_ingest_then_latest_range_and_rollup(api: Api) -> None:
    now = time.time_ns() // 10**9 * 10**9
    # edge-a sends an hour of 1 s spindle speeds through the HTTP ingest route, in 4 batches
    start = now - 3600 * 10**9
    ts = start + np.arange(3600) * 10**9
    speed = 15000 + 1000 * np.sin(np.arange(3600) / 300)
    speed[1800] = 25000.0                                   # one spike the chart must keep
    from spinline.core.wire import Envelope, encode, verify_ack

    for i, chunk in enumerate(np.array_split(np.arange(3600), 4)):
        b = Batch.of(np.full(len(chunk), point_key(SPEED_A)), ts[chunk], speed[chunk])
        r = await api.ingest(encode(Envelope("edge-a", "mill-a", i + 1, b, int(ts[chunk][-1])),
                                    key=api.secrets["edge-a"].encode()))
        assert r.status_code == 200, r.text
        ack = r.json()
        # signed with the edge's key, so the edge can trust it (spinline.core.wire.sign_ack)
        assert verify_ack(api.secrets["edge-a"].encode(), ack) is True and ack["edge"] == "edge-a"
        assert {k: ack[k] for k in ("seq", "status", "stored")} == {"seq": i + 1, "status": "stored",
                                                                     "stored": len(chunk)}
    # the same batch again is a duplicate, stored once
    b = Batch.of(np.full(900, point_key(SPEED_A)), ts[:900], speed[:900])
    r = await api.ingest(encode(Envelope("edge-a", "mill-a", 1, b, int(ts[899])), key=api.secrets["edge-a"].encode()))
    assert r.json()["status"] == "duplicate" and r.json()["stored"] == 0

    h = await api.login("vera")
    latest = (await api.client.get("/api/v1/mills/mill-a/latest", headers=h, params={"points": "rf01/spindle_speed"}))
    assert latest.status_code == 200
    (v,) = latest.json()
    assert v["tag"] == SPEED_A and v["value"] == speed[-1]

    params = {"start": _iso(start), "end": _iso(now), "max_points": 200}
    rng = (await api.client.get(f"/api/v1/points/{SPEED_A}/range", headers=h, params=params)).json()
    assert rng["reduced"] and len(rng["value"]) <= 200
    assert max(rng["value"]) == 25000.0                     # min/max-preserving: the spike survives
    by_key = (await api.client.get(f"/api/v1/points/{point_key(SPEED_A)}/range", headers=h, params=params)).json()
    assert by_key["value"] == rng["value"]
    raw = (await api.client.get(f"/api/v1/points/{SPEED_A}/range", headers=h,
                                params={**params, "max_points": 100000})).json()
    assert len(raw["value"]) == 3600 and not raw["reduced"]

    api.cloud.store.refresh_rollups()
    roll = (await api.client.get(f"/api/v1/points/{SPEED_A}/rollup", headers=h,
                                 params={"start": _iso(start - 3600 * 10**9), "end": _iso(now + 3600 * 10**9),
                                         "resolution": "1m"})).json()
    assert sum(roll["count"]) == 3600 and max(roll["max"]) == 25000.0


async def test_kpis_endpoints(api: Api) -> None:
    # 2 h of a ring frame's counters in mill-a, aligned on whole hours
    end = time.time_ns() // (3600 * 10**9) * 3600 * 10**9
    start = end - 2 * 3600 * 10**9
    mins = np.arange(-1, 120)
    ts = start + mins * 60 * 10**9
    rows = []
    for name, per_min in (("output", 0.2), ("run_hours", 1 / 60), ("spindle_hours", 1800 / 60),
                          ("breaks", 0.9)):
        rows.append(Batch.of(np.full(len(ts), point_key(f"mill-a/rf01/{name}")), ts, (mins + 1) * per_min))
    for name, value in (("spindle_speed", 18000.0), ("twist", 820.0)):
        rows.append(Batch.of(np.full(120, point_key(f"mill-a/rf01/{name}")), ts[1:], value))
    api.cloud.store.write(Batch.concat(rows))
    api.cloud.store.refresh_rollups()
    h = await api.login("alice")
    r = await api.client.get("/api/v1/mills/mill-a/kpis", headers=h,
                             params={"start": _iso(start), "end": _iso(end), "by": "machine"})
    assert r.status_code == 200, r.text
    rf01 = next(x for x in r.json()["rows"] if x["id"] == "rf01")
    # 24 kg in 2 h; theoretical 18000·60·(590.5/32)·1824/(820·1e6) = 44.33 kg/h × 2 h -> 27.07 %
    theo = 18000 * 60 * (590.5 / 32) * 1824 / (820 * 1e6) * 2
    assert rf01["output_kg"] == approx_(24.0) and rf01["efficiency_pct"] == approx_(100 * 24 / theo)
    # 108 breaks in 3600 spindle-h -> 30 per 1000 spindle-h; utilisation 3600 / (1824 × 2) = 98.68 %
    assert rf01["ends_down_per_1000_spindle_h"] == approx_(30.0)
    assert rf01["spindle_utilisation_pct"] == approx_(100 * 3600 / 3648)
    # the week's production report as a file: a Chinese PDF with charts by default, CSV on request
    from datetime import UTC, datetime

    from spinline.core.pdf import text_of

    y, w, _ = datetime.fromtimestamp(start / 1e9, UTC).isocalendar()
    r = await api.client.get(f"/api/v1/mills/mill-a/reports/production/{y}-W{w:02d}", headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf", r.text[:200]
    assert "生产报表" in text_of(r.content) and "逐日产量" in text_of(r.content)
    r = await api.client.get(f"/api/v1/mills/mill-a/reports/production/{y}-W{w:02d}", headers=h,
                             params={"format": "csv"})
    assert r.status_code == 200 and "rf01" in r.text
    r = await api.client.get("/api/v1/mills/mill-a/reports/production/2026-13", headers=h)
    assert r.status_code == 422 and "month" in r.text
    assert (await api.client.get("/api/v1/mills/mill-b/reports/production/2026-10", headers=h)).status_code == 404
    for by in ("line", "mill", "shift"):
        r = await api.client.get("/api/v1/mills/mill-a/kpis", headers=h,
                                 params={"start": _iso(start), "end": _iso(end), "by": by})
        assert r.status_code == 200 and r.json()["rows"], (by, r.text)
    zone = (await api.client.get("/api/v1/zone/kpis", headers=await api.login("zone"),
                                 params={"start": _iso(start), "end": _iso(end), "standard_ne": 40})).json()
    assert [x["mill"] for x in zone["rows"]] == ["mill-a", "mill-b", "mill-c"]
    a = zone["rows"][0]
    # 40s-equivalent: 24 kg of Ne 32 × (32/40)^1.5 = 24 × 0.715542 = 17.17 kg
    assert a["std_output_kg"] == approx_(24 * 0.8 ** 1.5)


async def test_events(api: Api) -> None:
    h = await api.login("erin")
    r = await api.client.post("/api/v1/mills/mill-a/events", headers=h,
                              json={"kind": "note", "message": "compressor ac02 serviced", "machine": "ac02"})
    assert r.status_code == 201 and r.json()["source"] == "erin"
    events = (await api.client.get("/api/v1/mills/mill-a/events", headers=h)).json()
    assert [e["message"] for e in events] == ["compressor ac02 serviced"]
    viewer = await api.login("vera")
    assert (await api.client.post("/api/v1/mills/mill-a/events", headers=viewer, json={"kind": "note"})).status_code \
        == 403


async def test_edges_create_fleet_status_and_revoke(api: Api) -> None:
    h = await api.login("alice")
    r = await api.client.post("/api/v1/edges", headers=h, json={"id": "edge-a2", "mill": "mill-a"})
    assert r.status_code == 201
    secret = r.json()["secret"]
    assert len(secret) >= 40
    # the secret is stored sealed, never in clear, and never shown again
    assert secret not in api.cloud.meta.edge("edge-a2").secret_sealed  # type: ignore[union-attr]
    listing = (await api.client.get("/api/v1/edges", headers=h)).text
    assert secret not in listing and "secret" not in json.loads(listing)[0]
    # the new edge stores data; a payload signed with a wrong key is refused and counted
    assert (await api.ingest(signed("edge-a2", "mill-a", 1, secret, {SPEED_A: 1.0}))).status_code == 200
    bad = await api.ingest(signed("edge-a2", "mill-a", 2, "not-the-secret", {SPEED_A: 1.0}))
    assert bad.status_code == 401 and bad.json()["reason"] == "unauthorised"
    assert (await api.ingest(b"garbage")).status_code == 400
    # status, signed with the edge's secret
    status = json.dumps({"buffer": {"rows": 12, "bytes": 3400}, "uplink": {"lag_s": 1.5, "state": "connected"},
                         "versions": {"agent": "0.1.0"}}).encode()
    r = await api.client.post("/api/v1/edge-status", content=status, headers={
        "X-Spinline-Edge": "edge-a2", "X-Spinline-Mill": "mill-a",
        "X-Spinline-Signature": sign_status(secret.encode(), status)})
    assert r.status_code == 204
    unsigned = await api.client.post("/api/v1/edge-status", content=status, headers={
        "X-Spinline-Edge": "edge-a2", "X-Spinline-Mill": "mill-a"})
    assert unsigned.status_code == 401
    e = (await api.client.get("/api/v1/edges/edge-a2", headers=h)).json()
    assert (e["buffer_rows"], e["lag_s"], e["uplink_state"], e["versions"]) == (12, 1.5, "connected",
                                                                             {"agent": "0.1.0"})
    # the wrong-key batch and the unsigned status prove nothing about their sender: they are counted
    # under the neutral edge "?", not against edge-a2
    assert e["last_seen"] is not None and e["rejected"] == {}
    assert (await api.client.get("/api/v1/edges/edge-a2/rejections", headers=h)).json() == []
    assert api.cloud.store.rejections()["?"]["unauthorised"] == 2
    # revoke: 204, then its payloads are refused
    assert (await api.client.delete("/api/v1/edges/edge-a2", headers=h)).status_code == 204
    r = await api.ingest(signed("edge-a2", "mill-a", 3, secret, {SPEED_A: 1.0}))
    assert r.status_code == 401
    assert (await api.client.get("/api/v1/edges/edge-a2", headers=h)).json()["active"] is False
    assert (await api.client.delete("/api/v1/edges/edge-a2", headers=h)).status_code == 404
    # the id is not reused; a viewer may not create edges
    assert (await api.client.post("/api/v1/edges", headers=h, json={"id": "edge-a2", "mill": "mill-a"})).status_code \
        == 409
    viewer = await api.login("vera")
    assert (await api.client.post("/api/v1/edges", headers=viewer,
                                  json={"id": "edge-a3", "mill": "mill-a"})).status_code == 403


async def test_oversized_ingest_is_413(api: Api) -> None:
    api.cloud.settings = api.cloud.settings.model_copy(update={"max_ingest_bytes": 1000})
    r = await api.ingest(signed("edge-a", "mill-a", 1, api.secrets["edge-a"], {SPEED_A: 1.0}) + b"x" * 2000)
    assert r.status_code == 413 and r.json()["reason"] == "oversized"


def _iso(ns: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat()


def approx_(x: float) -> object:
    import pytest

    return pytest.approx(x, rel=1e-6)
