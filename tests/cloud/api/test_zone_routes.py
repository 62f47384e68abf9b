"""The zone overview and the cross-mill alarm and work-order lists (filters, paging, totals, scope)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from spinline.cloud.api.services.zone import day_start_ns
from spinline.cloud.maintenance.store import HealthStore
from spinline.core.batch import Batch
from spinline.core.site import point_key
from spinline.health.alarms import Alarm, Severity
from spinline.health.workorders import WorkOrder

from .conftest import Api

MIN = 60 * 10**9


def _counter(tag: str, start_ns: int, n: int, per_min: float) -> Batch:
    ts = start_ns + np.arange(n + 1) * MIN
    return Batch.of(np.full(n + 1, point_key(tag)), ts, np.arange(n + 1) * per_min)


def seed_today(api: Api) -> tuple[int, float]:
    """Today's minutes of rf01 of mill-a (output 0.5 kg/min, running, 10 breaks/h, 3 kWh/min); returns (minutes, kg)."""
    now = time.time_ns()
    start = day_start_ns("Asia/Shanghai", now)
    n = max(1, (now - start) // MIN - 1)
    st = api.cloud.store
    spindles = 1824
    for name, per_min in (("output", 0.5), ("run_hours", 1 / 60), ("spindle_hours", spindles / 60),
                          ("breaks", 10 / 60), ("energy", 3.0)):
        st.write(_counter(f"mill-a/rf01/{name}", start, n, per_min))
    ts = start + np.arange(n + 1) * MIN
    for gauge, v in (("spindle_speed", 16000.0), ("twist", 900.0)):
        st.write(Batch.of(np.full(n + 1, point_key(f"mill-a/rf01/{gauge}")), ts, np.full(n + 1, v)))
    # the health of one asset, and mill B's figures that must never show to a mill-A user
    for feat, v in (("health_index", 42.0), ("anomaly_score", 3.0), ("velocity_rms", 4.0)):
        st.write(Batch.of([point_key(f"mill-a/rf01/vib_main_motor_{feat}")], [now - 10**9], [v]))
    st.write(_counter("mill-b/rf01/output", start, n, 7.0))
    st.refresh_rollups()
    st.record_edge_status("edge-a", "mill-a", {"uplink": {"lag_s": 2.5, "state": "connected"}}, now)
    return int(n), 0.5 * n


def seed_maintenance(api: Api) -> HealthStore:
    hs = HealthStore(api.cloud.meta.engine)
    t0 = datetime(2026, 11, 1, 8, 0)
    for i in range(7):
        sev = [Severity.INFO, Severity.WARNING, Severity.CRITICAL][i % 3]
        a = Alarm(asset=f"rf0{1 + i % 2}/main_motor", rule="anomaly", severity=sev, message=f"a{i}",
                  raised_at=t0 + timedelta(hours=i), value=1.0, id=f"AL-A{i}")
        if i == 0:
            a.acknowledge("alice", t0, "seen")
            a.clear("alice", t0 + timedelta(hours=1), "fixed")
        hs.save_alarm("mill-a", a)
        wo = WorkOrder(asset=a.asset, title=f"fix {i}", created_at=t0 + timedelta(hours=i), created_by="x",
                       due_at=t0 if i < 3 else datetime(2099, 1, 1), id=f"WO-A{i}")
        hs.save_work_order("mill-a", wo)
    hs.save_alarm("mill-b", Alarm(asset="rf01/main_motor", rule="anomaly", severity=Severity.CRITICAL,
                                  message="mill-b secret", raised_at=t0, value=1.0, id="AL-B1"))
    hs.save_work_order("mill-b", WorkOrder(asset="rf01/main_motor", title="mill-b secret", created_at=t0,
                                           created_by="x", id="WO-B1"))
    return hs


async def test_zone_overview_has_every_mill_in_scope_with_todays_figures(api: Api) -> None:
    n, kg = seed_today(api)
    seed_maintenance(api)
    zone = await api.login("zone")
    r = await api.client.get("/api/v1/zone/overview", headers=zone)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "today" in body["carbon_basis"] and body["standard_ne"] == 40.0
    mills = {m["id"]: m for m in body["mills"]}
    assert list(mills) == ["mill-a", "mill-b", "mill-c"]
    a = mills["mill-a"]
    assert a["status"] == "running" and a["edges"] == {**a["edges"], "online": 1, "total": 1, "max_lag_s": 2.5}
    assert a["output_today_kg"] == pytest.approx(kg, rel=1e-6)
    assert a["kwh_per_kg"] is not None and a["kwh_per_kg"] > 0
    assert a["kgco2e_per_kg_today"] == pytest.approx(a["kwh_per_kg"] * _grid(api), rel=1e-2)
    assert a["carbon_factor"] and a["spindles"] > 10000
    assert a["ends_down_per_1000_spindle_h"] == pytest.approx(10 / 1824 * 1000, rel=0.05)
    assert 0 < a["efficiency_pct"] < 100 and a["std_output_today_kg"] > 0
    # the same figure the mill's own KPIs of today give (no minute of the current hour still to come in it)
    alice = await api.login("alice")
    own = (await api.client.get("/api/v1/mills/mill-a/kpis", headers=alice,
                                params={"by": "mill", "start": a["day_start"]})).json()
    own_rows = own["rows"] if isinstance(own, dict) else own
    assert a["efficiency_pct"] == pytest.approx(own_rows[0]["efficiency_pct"], abs=0.5)
    assert a["health"]["worst_asset"] == "rf01/main_motor" and a["health"]["value"] == 42.0
    assert a["alarms_open"] == {"info": 2, "warning": 2, "critical": 2, "total": 6}   # AL-A0 is cleared
    assert (a["work_orders_open"], a["work_orders_overdue"]) == (7, 3)
    assert mills["mill-b"]["status"] == "offline" and mills["mill-b"]["edges"]["total"] == 1
    assert mills["mill-c"]["health"] is None and mills["mill-c"]["output_today_kg"] == 0
    # today's KPIs are kept (the rollups they read change only when refreshed); the app recomputes them
    # in the background, and a row says when they were computed
    now = time.time_ns()
    api.cloud.store.write(Batch.of([point_key("mill-a/rf01/output")], [now - 10**9], [kg + 500.0]))
    api.cloud.store.refresh_rollups()
    again = {m["id"]: m for m in (await api.client.get("/api/v1/zone/overview", headers=zone)).json()["mills"]}
    assert again["mill-a"]["output_today_kg"] == a["output_today_kg"] and again["mill-a"]["kpis_at"] == a["kpis_at"]
    api.cloud.zone.refresh([m for m in api.cloud.meta.mills()], 40.0)
    again = {m["id"]: m for m in (await api.client.get("/api/v1/zone/overview", headers=zone)).json()["mills"]}
    assert again["mill-a"]["output_today_kg"] == pytest.approx(kg + 500.0, rel=1e-6)
    assert again["mill-a"]["kpis_at"] > a["kpis_at"]
    # a mill-A user sees mill A only
    alice = await api.login("alice")
    r = await api.client.get("/api/v1/zone/overview", headers=alice)
    assert [m["id"] for m in r.json()["mills"]] == ["mill-a"] and "mill-b" not in r.text


def _grid(api: Api) -> float:
    from spinline.carbon.factors import grid_regions

    m = api.cloud.meta.mill("mill-a")
    assert m is not None
    lib = api.cloud.zone.library()
    return lib.select("grid_location", grid_regions(m.config.province, m.config.grid_region),
                      datetime.now(UTC).year).factor.value


async def test_alarm_list_filters_pages_and_totals(api: Api) -> None:
    seed_maintenance(api)
    h = await api.login("alice")
    r = await api.client.get("/api/v1/alarms", headers=h, params={"limit": 3})
    body = r.json()
    assert body["total"] == 7 and [a["id"] for a in body["items"]] == ["AL-A6", "AL-A5", "AL-A4"]
    r = await api.client.get("/api/v1/alarms", headers=h, params={"limit": 3, "offset": 6})
    assert [a["id"] for a in r.json()["items"]] == ["AL-A0"]
    r = await api.client.get("/api/v1/alarms", headers=h, params={"severity": ["critical", "warning"],
                                                                   "state": "active"})
    assert r.json()["total"] == 4 and {a["severity"] for a in r.json()["items"]} == {"critical", "warning"}
    r = await api.client.get("/api/v1/alarms", headers=h, params={"machine": "rf02"})
    assert r.json()["total"] == 3 and all(a["asset"].startswith("rf02/") for a in r.json()["items"])
    r = await api.client.get("/api/v1/alarms", headers=h, params={"start": "2026-11-01T10:00:00Z",
                                                                   "end": "2026-11-01T12:00:00Z"})
    assert [a["id"] for a in r.json()["items"]] == ["AL-A3", "AL-A2"]
    r = await api.client.get("/api/v1/alarms", headers=h, params={"mill": "mill-a"})
    assert r.json()["total"] == 7 and "mill-b" not in r.text
    # another mill, by name: 404 as for any out-of-scope mill
    assert (await api.client.get("/api/v1/alarms", headers=h, params={"mill": "mill-b"})).status_code == 404
    assert (await api.client.get("/api/v1/alarms", headers=h, params={"limit": 501})).status_code == 422
    zone = await api.login("zone")
    r = await api.client.get("/api/v1/alarms", headers=zone)
    assert r.json()["total"] == 8 and {a["mill"] for a in r.json()["items"]} == {"mill-a", "mill-b"}


async def test_work_order_list_filters_and_transitions_with_the_cookie(api: Api) -> None:
    seed_maintenance(api)
    b = await api.browser("alice")
    r = await b.get("/api/v1/work-orders", params={"overdue": True})
    assert r.json()["total"] == 3 and all(w["overdue"] for w in r.json()["items"])
    r = await b.get("/api/v1/work-orders", params={"overdue": False, "limit": 2})
    assert r.json()["total"] == 4 and len(r.json()["items"]) == 2
    r = await b.get("/api/v1/work-orders", params={"state": ["open"], "machine": "rf01"})
    assert r.json()["total"] == 4 and "mill-b" not in r.text
    # a transition from the list, with the cookie and the CSRF header
    r = await b.post("/api/v1/mills/mill-a/maintenance/work-orders/WO-A1/assign", json={"assignee": "mia"})
    assert r.status_code == 200 and r.json()["state"] == "assigned"
    r = await b.get("/api/v1/work-orders", params={"state": "assigned"})
    assert [w["id"] for w in r.json()["items"]] == ["WO-A1"]
    r = await b.post("/api/v1/mills/mill-a/maintenance/alarms/AL-A6/acknowledge", json={})
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    # a viewer may list but not act
    v = await api.browser("vera")
    assert (await v.get("/api/v1/work-orders")).json()["total"] == 7
    assert (await v.post("/api/v1/mills/mill-a/maintenance/work-orders/WO-A2/start", json={})).status_code == 403


async def test_console_routes_document_their_answers(api: Api) -> None:
    """The console generates its types from the OpenAPI document: every route it reads names its model."""
    spec = (await api.client.get("/api/v1/openapi.json")).json()
    routes = [("post", "/api/v1/auth/session"), ("get", "/api/v1/auth/me"), ("put", "/api/v1/auth/me/language"),
              ("get", "/api/v1/zone/overview"), ("get", "/api/v1/alarms"), ("get", "/api/v1/work-orders"),
              ("get", "/api/v1/mills/{mill}/series"), ("get", "/api/v1/mills/{mill}/points"),
              ("get", "/api/v1/mills/{mill}/machines/{machine}/health/history"),
              ("get", "/api/v1/mills/{mill}/carbon/trend")]
    for method, path in routes:
        schema = spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in schema or schema.get("type") == "array" and "$ref" in schema["items"], (path, schema)
    schemes = spec["components"]["securitySchemes"]
    assert schemes["SessionCookie"] == {**schemes["SessionCookie"], "type": "apiKey", "in": "cookie",
                                        "name": "spinline_session"}
    overview = spec["components"]["schemas"]["MillOverviewPublic"]["properties"]
    assert "TODAY" in overview["kgco2e_per_kg_today"]["description"]


async def test_the_app_keeps_every_mills_kpis_fresh_in_the_background(api: Api) -> None:
    """From start-up on, one mill at a time: a later overview computes nothing in the request."""
    from spinline.cloud.app import _refresh_zone

    seed_today(api)
    task = asyncio.create_task(_refresh_zone(api.cloud, 0.3))
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if len(api.cloud.zone._kept) == 3:
                break
        assert {m for m, _ in api.cloud.zone._kept} == {"mill-a", "mill-b", "mill-c"}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    calls = {"n": 0}
    real = api.cloud.kpis.mill_kpis

    def counting(*a: object, **kw: object) -> object:
        calls["n"] += 1
        return real(*a, **kw)  # type: ignore[arg-type]

    api.cloud.kpis.mill_kpis = counting  # type: ignore[method-assign]
    r = await api.client.get("/api/v1/zone/overview", headers=await api.login("zone"))
    assert r.status_code == 200 and r.json()["mills"][0]["output_today_kg"] > 0 and calls["n"] == 0


async def test_cancelling_the_background_refresh_waits_for_the_mill_in_hand(api: Api) -> None:
    """At shutdown the stores close right after the tasks are cancelled: no thread may still be using them."""
    import threading

    from spinline.cloud.app import _refresh_zone

    busy, done = threading.Event(), threading.Event()
    real = api.cloud.zone.refresh

    def slow(*a: object, **kw: object) -> None:
        busy.set()
        time.sleep(0.3)
        real(*a, **kw)  # type: ignore[arg-type]
        done.set()

    api.cloud.zone.refresh = slow  # type: ignore[method-assign]
    task = asyncio.create_task(_refresh_zone(api.cloud, 10.0))
    while not busy.is_set():
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert done.is_set()
