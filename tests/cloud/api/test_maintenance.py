"""Maintenance routes: alarms and work orders through their lifecycles, scoped per mill."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from spinline.cloud.api.routes import maintenance

BASE = "/api/v1/mills/{mill}/maintenance"


@pytest.fixture()
async def mapi(api):  # type: ignore[no-untyped-def]
    # Mounted here until app.ROUTERS lists it (then this is a no-op).
    paths = {getattr(r, "path", "") for r in api.app.routes}
    if "/api/v1/mills/{mill}/maintenance/alarms" not in paths:
        api.app.include_router(maintenance.router, prefix="/api/v1")
    return api


async def test_alarm_to_verified_work_order(mapi) -> None:  # type: ignore[no-untyped-def]
    alice = await mapi.login("alice")
    c = mapi.client
    base = BASE.format(mill="mill-a")
    r = await c.post(f"{base}/alarms", headers=alice,
                     json={"asset": "ca01/cylinder", "rule": "anomaly", "severity": "critical", "message": "BPFO 12x",
                           "value": 3.2, "evidence": {"fault": "bearing_outer"}})
    assert r.status_code == 201, r.text
    alarm = r.json()
    assert alarm["state"] == "active" and alarm["evidence"]["recorded_by"] == "alice"
    r = await c.post(f"{base}/alarms/{alarm['id']}/acknowledge", headers=alice, json={"comment": "on it"})
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    assert r.json()["history"][-1] | {"at": None} == {"state": "acknowledged", "by": "alice", "comment": "on it",
                                                       "at": None,
                                                       "comment_lines": [{"text": "on it", "parts": [], "prefix": ""}]}
    r = await c.post(f"{base}/alarms/{alarm['id']}/acknowledge", headers=alice, json={})
    assert r.status_code == 409 and "cannot acknowledge when acknowledged" in r.text

    r = await c.post(f"{base}/work-orders", headers=alice, json={"alarm_id": alarm["id"], "health_index": 35})
    assert r.status_code == 201, r.text
    wo = r.json()
    assert (wo["priority"], wo["fault"], wo["state"], wo["hi_at_open"]) == ("urgent", "bearing_outer", "open", 35)
    oid = wo["id"]
    for action, body, state in [("assign", {"assignee": "fitter-7"}, "assigned"), ("start", {}, "in_progress"),
                                ("resolve", {"comment": "bearing replaced"}, "resolved")]:
        r = await c.post(f"{base}/work-orders/{oid}/{action}", headers=alice, json=body)
        assert r.status_code == 200 and r.json()["state"] == state, r.text
    r = await c.post(f"{base}/work-orders/{oid}/verify", headers=alice, json={"health_index": 50})
    assert r.status_code == 409 and "health 50" in r.text
    r = await c.post(f"{base}/work-orders/{oid}/verify", headers=alice, json={})
    assert r.status_code == 422
    r = await c.post(f"{base}/work-orders/{oid}/verify", headers=alice, json={"health_index": 91})
    assert r.status_code == 200 and r.json()["hi_at_verify"] == 91
    r = await c.post(f"{base}/work-orders/{oid}/close", headers=alice, json={})
    assert r.json()["state"] == "closed"
    assert [s["state"] for s in r.json()["history"]] == ["open", "assigned", "in_progress", "resolved", "verified",
                                                         "closed"]
    r = await c.post(f"{base}/work-orders/{oid}/start", headers=alice, json={})
    assert r.status_code == 409

    r = await c.get(f"{base}/report", headers=alice, params={"month": datetime.now().strftime("%Y-%m")})
    assert r.status_code == 200
    rep = r.json()
    assert rep["faults_found"] == {"bearing_outer": 1} and rep["orders_verified"] == 1
    assert rep["downtime_avoided_h"] > 0 and rep["text"][0].startswith("Maintenance report")
    r = await c.get(f"{base}/alarms", headers=alice, params={"state": "acknowledged"})
    assert [a["id"] for a in r.json()] == [alarm["id"]]


async def test_manual_order_overdue_and_plan(mapi) -> None:  # type: ignore[no-untyped-def]
    alice = await mapi.login("alice")
    base = BASE.format(mill="mill-a")
    past = (datetime.now() - timedelta(days=10)).isoformat()
    r = await mapi.client.post(f"{base}/work-orders", headers=alice,
                               json={"asset": "rf01/main_motor", "title": "grease", "due_at": past, "priority": "low"})
    assert r.status_code == 201 and r.json()["overdue"] is True
    r = await mapi.client.get(f"{base}/work-orders/overdue", headers=alice)
    assert [w["title"] for w in r.json()] == ["grease"]
    r = await mapi.client.get(f"{base}/plan", headers=alice)
    assert r.status_code == 200 and r.json()[0]["overdue"] is True
    r = await mapi.client.post(f"{base}/work-orders", headers=alice, json={"title": "no asset"})
    assert r.status_code == 422


async def test_scoping_and_permissions(mapi) -> None:  # type: ignore[no-untyped-def]
    alice, bob, vera = [await mapi.login(u) for u in ("alice", "bob", "vera")]
    c = mapi.client
    r = await c.post(f"{BASE.format(mill='mill-a')}/work-orders", headers=alice, json={"asset": "x", "title": "t"})
    oid = r.json()["id"]
    # another tenant: 404 on the mill and on the record through its own mill
    assert (await c.get(f"{BASE.format(mill='mill-a')}/work-orders", headers=bob)).status_code == 404
    assert (await c.get(f"{BASE.format(mill='mill-b')}/work-orders/{oid}", headers=bob)).status_code == 404
    assert (await c.post(f"{BASE.format(mill='mill-b')}/work-orders/{oid}/start", headers=bob,
                         json={})).status_code == 404
    # a viewer reads but may not change
    assert (await c.get(f"{BASE.format(mill='mill-a')}/work-orders/{oid}", headers=vera)).status_code == 200
    assert (await c.post(f"{BASE.format(mill='mill-a')}/work-orders/{oid}/assign", headers=vera,
                         json={"assignee": "v"})).status_code == 403
    assert (await c.get(f"{BASE.format(mill='mill-a')}/alarms")).status_code == 401
