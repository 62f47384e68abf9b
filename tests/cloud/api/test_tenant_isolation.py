"""Tenant isolation: a user or an edge of mill A tries every route against mill B's data.

The routes come from the app's own OpenAPI document, so a route added later (alarms, work orders,
energy ...) is covered the moment it exists: a route with a path parameter is called with mill B's
values and must answer 403 or 404; a route without one must be listed in ``UNSCOPED`` with a check
that it shows nothing of mill B, or this suite fails.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from spinline.cloud.maintenance.store import HealthStore
from spinline.core.site import point_key
from spinline.health.alarms import Alarm, Severity
from spinline.health.workorders import WorkOrder

from .conftest import Api, signed

B_POINT = "mill-b/rf01/spindle_speed"
A_POINT = "mill-a/rf01/spindle_speed"


def b_values(api: Api) -> dict[str, list[str]]:
    """Path-parameter values that name mill B's data (each route is tried with every variant)."""
    return {"mill": ["mill-b"], "ref": [B_POINT, str(point_key(B_POINT))], "edge_id": ["edge-b"],
            "user_id": [str(api.user_ids["bob"])],
            "month": ["2026-10"],  # with mill B in the path: a month of mill B's carbon figures
            "period": ["2026-10", "2026-W47"],  # with mill B in the path: mill B's production report
            "alarm_id": ["AL-B1"], "order_id": ["WO-B1"],   # mill B's real records (seeded in the test)
            "machine": ["rf01"],
            "action": ["acknowledge", "assign", "clear", "verify"],
            # a per-asset model of mill B (the fleet models per machine type are every mill's to read)
            "name": [B_MODEL], "version": [_b_model(api)],
            # a federated run spans every federated mill: only the zone operator starts or reads one
            "run_id": ["fl-000000000000"],
            # for routes of other parts: ids of mill B's records are looked up the same way
            }


B_MODEL = "mill-b.rf01.main_motor"


def _b_model(api: Api) -> str:
    """Register mill B's per-asset model once (a fitted detector: the registry refuses anything else)."""
    from spinline.health.anomaly import RobustZScore

    reg = api.cloud.models
    assert reg is not None
    have = reg.versions(name=B_MODEL)
    if have:
        return have[0].version
    det = RobustZScore(features=["a", "b"], min_samples=8)
    for i in range(12):
        det.learn_one({"a": 1.0 + i / 100, "b": 2.0 - i / 100})
    det.score_one({"a": 1.0, "b": 2.0})
    return reg.register(name=B_MODEL, scope_kind="asset", scope="mill-b/rf01/main_motor", mill="mill-b",
                        kind="asset_monitor/robust_z", params={"detector": det.to_dict(), "baseline": {"a": 1.0}},
                        actor="test").version


#: Bodies for write routes, keyed by (method, path template); others get {}.
BODIES: dict[tuple[str, str], Any] = {
    ("post", "/api/v1/models/{name}/{version}/canary"): {"reason": "take it", "mills": ["mill-b"]},
    ("post", "/api/v1/models/{name}/{version}/promote"): {"reason": "take it", "mills": ["mill-b"]},
    ("post", "/api/v1/models/{name}/{version}/retire"): {"reason": "take it"},
    ("post", "/api/v1/models/{name}/rollback"): {"reason": "take it"},
    ("post", "/api/v1/models/{name}/{version}/deploy"): {"mill": "mill-b", "selector_kind": "mill",
                                                         "selector": "mill-b"},
    ("post", "/api/v1/mills/{mill}/events"): {"kind": "note", "message": "x"},
    ("patch", "/api/v1/users/{user_id}"): {"full_name": "x"},
}

#: Query parameters that also name a mill: tried with mill B wherever a route declares them.
MILL_QUERY = {"mill": "mill-b"}


def _assert_no_b(payload: Any) -> None:
    text = httpx.Response(200, json=payload).text
    assert "mill-b" not in text and str(point_key(B_POINT)) not in text, text[:500]


Check = Callable[[Api, dict[str, str]], Awaitable[None]]


async def _mills(api: Api, h: dict[str, str]) -> None:
    r = await api.client.get("/api/v1/mills", headers=h)
    assert [m["id"] for m in r.json()] == ["mill-a"]


async def _edges(api: Api, h: dict[str, str]) -> None:
    r = await api.client.get("/api/v1/edges", headers=h)
    assert r.status_code == 200 and {e["mill"] for e in r.json()} == {"mill-a"}
    _assert_no_b(r.json())
    assert (await api.client.get("/api/v1/edges", headers=h, params=MILL_QUERY)).status_code == 404


async def _create_edge(api: Api, h: dict[str, str]) -> None:
    r = await api.client.post("/api/v1/edges", headers=h, json={"id": "edge-b9", "mill": "mill-b"})
    assert r.status_code in (403, 404), r.text
    assert api.cloud.meta.edge("edge-b9") is None


async def _zone_kpis(api: Api, h: dict[str, str]) -> None:
    r = await api.client.get("/api/v1/zone/kpis", headers=h)
    assert r.status_code == 200 and {x["mill"] for x in r.json()["rows"]} == {"mill-a"}
    _assert_no_b(r.json()["rows"])


async def _users(api: Api, h: dict[str, str]) -> None:
    assert (await api.client.get("/api/v1/users", headers=h)).status_code == 403


async def _create_user(api: Api, h: dict[str, str]) -> None:
    r = await api.client.post("/api/v1/users", headers=h, json={
        "username": "mallory", "password": "password123", "role": "mill_manager", "mills": ["mill-b"]})
    assert r.status_code == 403 and api.cloud.meta.user_by_name("mallory") is None


async def _me(api: Api, h: dict[str, str]) -> None:
    r = await api.client.get("/api/v1/users/me", headers=h)
    assert r.json()["username"] in ("alice", "vera", "erin") and r.json()["mills"] == ["mill-a"]
    assert "password" not in r.text and "argon2" not in r.text


async def _auth_me(api: Api, h: dict[str, str]) -> None:
    r = await api.client.get("/api/v1/auth/me", headers=h)
    assert r.status_code == 200 and r.json()["mills"] == ["mill-a"] and not r.json()["all_mills"]
    _assert_no_b(r.json())


async def _language(api: Api, h: dict[str, str]) -> None:
    r = await api.client.put("/api/v1/auth/me/language", headers=h, json={"language": "en"})
    assert r.status_code == 200 and r.json()["language"] == "en"
    assert api.cloud.meta.language(api.user_ids["bob"]) is None   # only the caller's own setting changed


async def _zone_overview(api: Api, h: dict[str, str]) -> None:
    r = await api.client.get("/api/v1/zone/overview", headers=h)
    assert r.status_code == 200 and [m["id"] for m in r.json()["mills"]] == ["mill-a"]
    _assert_no_b(r.json())


async def _alarms(api: Api, h: dict[str, str]) -> None:
    for path in ("/api/v1/alarms", "/api/v1/work-orders"):
        r = await api.client.get(path, headers=h)
        assert r.status_code == 200 and r.json()["total"] == 0, r.text   # mill B's record is not counted
        _assert_no_b(r.json())
        assert (await api.client.get(path, headers=h, params=MILL_QUERY)).status_code == 404


async def _models(api: Api, h: dict[str, str]) -> None:
    _b_model(api)
    r = await api.client.get("/api/v1/models", headers=h)
    assert r.status_code == 200 and B_MODEL not in r.text
    _assert_no_b(r.json())


async def _models_fleet(api: Api, h: dict[str, str]) -> None:
    r = await api.client.get("/api/v1/models/fleet", headers=h)
    assert r.status_code == 200 and list(r.json()) == ["mill-a"]
    _assert_no_b(r.json())
    assert (await api.client.get("/api/v1/models/fleet", headers=h, params=MILL_QUERY)).status_code == 404


async def _public(api: Api, h: dict[str, str]) -> None:
    """Login/logout and the own password act on the caller's own session and account (tests/cloud/api/
    test_sessions.py); ingest routes are covered by the edge tests below."""


async def _federated_run(api: Api, h: dict[str, str]) -> None:
    """A federated run trains a fleet model over every federated mill: the zone operator's alone."""
    r = await api.client.post("/api/v1/models/federated-runs", headers=h, json={"machine_type": "ring_frame"})
    assert r.status_code == 403, r.text


#: Routes without a path parameter: each with the check that it leaks nothing of mill B.
UNSCOPED: dict[tuple[str, str], Check] = {
    ("get", "/api/v1/mills"): _mills,
    ("get", "/api/v1/edges"): _edges,
    ("post", "/api/v1/edges"): _create_edge,
    ("get", "/api/v1/zone/kpis"): _zone_kpis,
    ("get", "/api/v1/users"): _users,
    ("post", "/api/v1/users"): _create_user,
    ("get", "/api/v1/users/me"): _me,
    ("post", "/api/v1/auth/login"): _public,
    ("post", "/api/v1/auth/session"): _public,
    ("delete", "/api/v1/auth/session"): _public,
    ("get", "/api/v1/auth/me"): _auth_me,
    ("put", "/api/v1/auth/me/password"): _public,
    ("put", "/api/v1/auth/me/language"): _language,
    ("get", "/api/v1/zone/overview"): _zone_overview,
    ("get", "/api/v1/alarms"): _alarms,
    ("get", "/api/v1/work-orders"): _alarms,
    ("post", "/api/v1/auth/logout"): _public,
    ("post", "/api/v1/ingest"): _public,
    ("post", "/api/v1/edge-status"): _public,
    ("post", "/api/v1/edge-events"): _public,
    ("post", "/api/v1/tuf/report"): _public,
    ("get", "/api/v1/models"): _models,
    ("get", "/api/v1/models/fleet"): _models_fleet,
    ("post", "/api/v1/models/federated-runs"): _federated_run,
}
#: Routes an edge signs (not a user's bearer token); their isolation is tested in tests/cloud/models and
#: (raw snapshots) tests/cloud/api/test_evidence.py.
EDGE_SIGNED = ("/api/v1/tuf/", "/api/v1/edge-snapshots")


@pytest.mark.parametrize("who", ["alice", "vera", "erin", "alice:session"])
async def test_every_route_refuses_mill_b_to_a_mill_a_user(api: Api, who: str) -> None:
    # mill B has data, an event and an edge, so a leak would show
    api.cloud.store.write(_batch(B_POINT, 123.0))
    api.cloud.meta.add_event(mill="mill-b", ts_ns=1, kind="note", message="mill-b secret plan")
    _seed_b_maintenance(api)
    _seed_b_snapshot(api)
    if who.endswith(":session"):
        # the same tour in a browser: the session cookie, with the CSRF header on writes
        who = who.partition(":")[0]
        api = dataclasses.replace(api, client=await api.browser(who))
        h: dict[str, str] = {}
    else:
        h = await api.login(who)
    spec = (await api.client.get("/api/v1/openapi.json")).json()
    values = b_values(api)
    tried = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            params = re.findall(r"{(\w+)}", path)
            if path.startswith(EDGE_SIGNED):
                continue
            if not params:
                check = UNSCOPED.get((method, path))
                assert check is not None, f"{method.upper()} {path} has no mill in its path: add it to UNSCOPED " \
                                          f"with a check that it shows nothing of another mill"
                await check(api, h)
                continue
            missing = [p for p in params if p not in values]
            assert not missing, f"{method.upper()} {path}: give a mill-B value for {missing} in b_values()"
            query = {q["name"]: MILL_QUERY[q["name"]] for q in op.get("parameters", [])
                     if q.get("in") == "query" and q["name"] in MILL_QUERY}
            for variant in range(max(len(values[p]) for p in params)):
                url = path
                for p in params:
                    url = url.replace("{" + p + "}", values[p][min(variant, len(values[p]) - 1)])
                body = BODIES.get((method, path), {}) if method in ("post", "put", "patch") else None
                r = await api.client.request(method.upper(), url, headers=h, json=body, params=query)
                assert r.status_code in (403, 404), f"{who}: {method.upper()} {url} -> {r.status_code} {r.text[:300]}"
                assert "mill-b secret plan" not in r.text and "123.0" not in r.text
                tried += 1
    assert tried >= 15
    # nothing was changed in mill B
    assert api.cloud.meta.edge("edge-b").active  # type: ignore[union-attr]
    assert [e.message for e in api.cloud.meta.events("mill-b")] == ["mill-b secret plan"]
    assert api.cloud.meta.user(api.user_ids["bob"]).full_name == ""  # type: ignore[union-attr]
    hs = HealthStore(api.cloud.meta.engine)
    alarm, order = hs.get_alarm("AL-B1"), hs.get_work_order("WO-B1")
    assert alarm is not None and alarm[1].state.value == "active" and len(alarm[1].history) == 1
    assert order is not None and order[1].state.value == "open" and order[1].assignee is None


def _seed_b_snapshot(api: Api) -> None:
    """A raw snapshot of mill B's rf01, so ``.../machines/rf01/snapshots/latest`` of mill B has something to leak:
    an uncertain one, with the edge's diagnosis and the cloud model's answer stored beside it."""
    import numpy as np

    from spinline.core.wire import encode_snapshot_upload
    from spinline.edge.evidence import EdgeDiagnosis, RawSnapshot, encode_snapshot

    body = encode_snapshot(RawSnapshot("mill-b/rf01/main_motor", 1_700_000_000 * 10**9, 1000.0,
                                       np.full(64, 123.0, np.float32)), "uncertain", "edge-b",
                           EdgeDiagnosis("unknown", 0.0))
    _, ack = api.app.state.evidence.handle(encode_snapshot_upload("edge-b", "mill-b", 1, body,
                                                                  key=api.secrets["edge-b"].encode()))
    assert ack.acked == (1,)
    (s,) = api.app.state.evidence.latest("mill-b", "rf01")
    assert s.cloud_diagnosis is not None and s.edge_diagnosis == {"fault": "unknown", "confidence": 0.0}


def _seed_b_maintenance(api: Api) -> None:
    """An alarm and a work order of mill B, so that each maintenance route is tried with a real id."""
    from datetime import datetime

    hs = HealthStore(api.cloud.meta.engine)
    hs.create_schema()
    t0 = datetime(2026, 11, 1, 8)
    hs.save_alarm("mill-b", Alarm(asset="rf01/main_motor", rule="anomaly", severity=Severity.CRITICAL,
                                  message="mill-b secret plan", raised_at=t0, value=1.0, id="AL-B1"))
    hs.save_work_order("mill-b", WorkOrder(asset="rf01/main_motor", title="mill-b secret plan", created_at=t0,
                                           created_by="bob", id="WO-B1"))


async def test_without_a_token_every_route_but_login_and_ingest_is_401(api: Api) -> None:
    spec = (await api.client.get("/api/v1/openapi.json")).json()
    values = {"mill": "mill-a", "ref": A_POINT, "edge_id": "edge-a", "user_id": "1", "month": "2026-10",
              "period": "2026-10",
              "alarm_id": "AL-1", "order_id": "WO-1", "action": "acknowledge", "machine": "rf01", "name": "x",
              "version": "v1", "file": "timestamp.json", "path": "desired/edge-a.json", "run_id": "fl-1"}
    for path, ops in spec["paths"].items():
        for method in ops:
            if path in ("/api/v1/auth/login", "/api/v1/ingest", "/api/v1/edge-status", "/api/v1/edge-events",
                        "/api/v1/edge-snapshots") \
                    or (method, path) == ("post", "/api/v1/auth/session"):
                continue
            url = re.sub(r"{(\w+)}", lambda m: values[m.group(1)], path)
            r = await api.client.request(method.upper(), url, json={} if method != "get" else None,
                                         headers={"Authorization": "Bearer not-a-token"})
            assert r.status_code == 401, f"{method.upper()} {url} -> {r.status_code}"


async def test_an_edge_of_mill_a_cannot_publish_for_mill_b(api: Api) -> None:
    secret_a = api.secrets["edge-a"]
    before = api.cloud.store.latest([point_key(B_POINT)])
    # 1. claims mill B in the header, signed with its own key: not its mill
    r = await api.ingest(signed("edge-a", "mill-b", 1, secret_a, {B_POINT: 99.0}))
    assert (r.status_code, r.json()["reason"]) == (401, "unauthorised")
    # 2. honest header (mill A) but mill B's point keys in the body
    r = await api.ingest(signed("edge-a", "mill-a", 2, secret_a, {B_POINT: 99.0}))
    assert (r.status_code, r.json()["reason"]) == (400, "unknown_point")
    # 3. mixed: one good mill-A row and one mill-B row: refused whole (unknown_point is a cloud-state
    #    reason: the batch waits at the edge), nothing of it stored, the mill-B row named
    r = await api.ingest(signed("edge-a", "mill-a", 3, secret_a, {A_POINT: 1.0, B_POINT: 99.0}))
    assert (r.status_code, r.json()["reason"], r.json()["refused"]) == (400, "unknown_point", {"unknown_point": 1})
    # 4. pretends to be edge-b (signs with its own key): the signature fails
    r = await api.ingest(signed("edge-b", "mill-b", 4, secret_a, {B_POINT: 99.0}))
    assert (r.status_code, r.json()["reason"]) == (401, "unauthorised")
    # 5. status for edge-b, signed with edge-a's key
    from spinline.cloud.api.routes.ingest import sign_status

    body = b'{"buffer": {"rows": 0}}'
    r = await api.client.post("/api/v1/edge-status", content=body, headers={
        "X-Spinline-Edge": "edge-b", "X-Spinline-Mill": "mill-b",
        "X-Spinline-Signature": sign_status(secret_a.encode(), body)})
    assert r.status_code == 401
    assert api.cloud.store.edge_status("mill-b") == {}
    after = api.cloud.store.latest([point_key(B_POINT), point_key(A_POINT)])
    assert len(before) == 0 and len(after) == 0   # nothing of mill B, and the mixed batch waits at the edge
    # the refusals are counted against edge-a (and the forged ones against edge-b), visible to each mill
    assert sum(api.cloud.store.rejections("edge-a")["edge-a"].values()) == 3


async def test_a_mill_b_manager_cannot_see_mill_a_edges_either(api: Api) -> None:
    h = await api.login("bob")
    assert {e["id"] for e in (await api.client.get("/api/v1/edges", headers=h)).json()} == {"edge-b"}
    assert (await api.client.get("/api/v1/edges/edge-a", headers=h)).status_code == 404
    assert (await api.client.delete("/api/v1/edges/edge-a", headers=h)).status_code == 404


def _batch(tag: str, value: float) -> Any:
    import time

    from spinline.core.batch import Batch

    return Batch.of([point_key(tag)], time.time_ns() - 10**9, [value])
