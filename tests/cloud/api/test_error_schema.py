"""Honest errors and a truthful schema (issue 13, item 9; issue 10, item 3's error codes and times):
one error body with a stable code on every refusal, those refusals documented on every operation,
UTC times with ``Z`` on every route, nullable KPI numbers typed as such."""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np

from spinline.core.batch import Batch
from spinline.core.site import point_key
from spinline.core.wire import Envelope, encode

from .conftest import Api

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def _is_error(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    body = r.json()
    assert r.status_code == status, r.text
    assert set(body) == {"code", "detail", "key", "params", "errors"}, body
    assert (body["key"] is None) == (body["params"] is None), body   # a message key comes with its parameters
    assert isinstance(body["code"], str) and body["code"] and isinstance(body["detail"], str), body
    if code is not None:
        assert body["code"] == code, body
    return body  # type: ignore[no-any-return]


async def test_every_refusal_has_one_shape_and_a_code(api: Api) -> None:
    c = api.client
    alice, vera = await api.login("alice"), await api.login("vera")
    _is_error(await c.get("/api/v1/mills"), 401, "not_authenticated")
    _is_error(await c.post("/api/v1/mills/mill-a/events", headers=vera, json={"kind": "note"}), 403, "forbidden")
    _is_error(await c.get("/api/v1/mills/mill-b", headers=alice), 404, "not_found")
    zone = await api.login("zone")
    taken = {"username": "alice", "password": "long enough", "role": "viewer", "mills": ["mill-a"]}
    _is_error(await c.post("/api/v1/users", headers=zone, json=taken), 409, "conflict")
    body = _is_error(await c.get("/api/v1/mills/mill-a/kpis", headers=alice, params={"by": "bogus"}), 422,
                     "invalid_request")
    assert body["errors"][0]["loc"] == ["query", "by"] and "by" in body["detail"]   # a list where a list is said
    _is_error(await c.get("/api/v1/mills/mill-a/kpis", headers=alice,
                          params={"start": "2026-10-02T00:00:00Z", "end": "2026-10-01T00:00:00Z"}), 422, "empty_span")
    _is_error(await c.post("/api/v1/mills/mill-a/events", headers={**alice, "content-type": "application/json"},
                           content=b" " * 2_000_000), 413, "body_too_large")
    for _ in range(5):
        await c.post("/api/v1/auth/login", json={"username": "bob", "password": "wrong password"})
    r = await c.post("/api/v1/auth/login", json={"username": "bob", "password": "wrong password"})
    _is_error(r, 429, "login_rate_limited")
    _is_error(await c.get("/api/v1/nowhere", headers=alice), 404)


async def test_openapi_documents_the_refusals(api: Api) -> None:
    doc = (await api.client.get("/api/v1/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and set(schemas["ErrorPublic"]["required"]) >= {"code", "detail"}
    ref = {"$ref": "#/components/schemas/ErrorPublic"}
    checked = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            assert responses["422"]["content"]["application/json"]["schema"] == ref, (method, path)
            assert responses["503"]["content"]["application/json"]["schema"] == ref, (method, path)
            if path.endswith(("/ingest", "/edge-status", "/edge-events", "/auth/login")) or "/tuf/" in path:
                continue
            for code in ("400", "401", "403", "404", "429"):
                assert responses[code]["content"]["application/json"]["schema"] == ref, (method, path, code)
            if method in ("post", "patch", "put"):
                assert "409" in responses and "413" in responses, (method, path)
            checked += 1
    assert checked >= 25


async def test_kpi_numbers_that_can_be_null_are_typed_so(api: Api) -> None:
    doc = (await api.client.get("/api/v1/openapi.json")).json()
    props = doc["components"]["schemas"]["KpiPublic"]["properties"]
    for name, schema in props.items():
        types = {s.get("type") for s in schema.get("anyOf", [schema])}
        if "number" in types and name != "hours":           # the window's length is never missing
            assert "null" in types, name


def _times(x: Any, where: str = "") -> list[tuple[str, str]]:
    if isinstance(x, dict):
        return [t for k, v in x.items() for t in _times(v, f"{where}.{k}")]
    if isinstance(x, list):
        return [t for v in x for t in _times(v, where)]
    return [(where, x)] if isinstance(x, str) and ISO.match(x) else []


async def test_every_route_sends_utc_times_with_z(api: Api) -> None:
    c = api.client
    alice = await api.login("alice")
    now = time.time_ns() // 10**9 * 10**9
    ts = now - np.arange(120)[::-1] * 10**9
    tag = "mill-a/rf01/spindle_speed"
    b = Batch.of(np.full(120, point_key(tag)), ts, np.linspace(14000, 15000, 120))
    assert (await api.ingest(encode(Envelope("edge-a", "mill-a", 1, b, int(ts[-1])),
                                    key=api.secrets["edge-a"].encode()))).status_code == 200
    await c.post("/api/v1/mills/mill-a/events", headers=alice, json={"kind": "note", "message": "x"})
    base = "/api/v1/mills/mill-a/maintenance"
    alarm = (await c.post(f"{base}/alarms", headers=alice, json={"asset": "rf01/spindle", "rule": "r", "message": "m",
                                                                 "raised_at": "2026-10-01T08:00:00+08:00"})).json()
    order = (await c.post(f"{base}/work-orders", headers=alice,
                          json={"alarm_id": alarm["id"], "due_at": "2026-10-03T00:00:00"})).json()
    await c.post(f"{base}/work-orders/{order['id']}/assign", headers=alice, json={"assignee": "li"})
    seen: list[tuple[str, str]] = []
    for path in ("/users/me", "/mills/mill-a/latest", "/mills/mill-a/events", "/mills/mill-a/kpis", "/edges",
                 "/edges/edge-a", "/mills/mill-a/maintenance/alarms", "/mills/mill-a/maintenance/work-orders",
                 f"/mills/mill-a/maintenance/work-orders/{order['id']}", "/mills/mill-a/maintenance/plan",
                 "/mills/mill-a/health", "/zone/kpis"):
        r = await c.get(f"/api/v1{path}", headers=alice)
        assert r.status_code == 200, (path, r.text)
        seen += [(f"{path}{w}", v) for w, v in _times(r.json())]
    assert len(seen) > 10
    bad = [(w, v) for w, v in seen if not v.endswith("Z")]
    assert not bad, bad
    assert alarm["raised_at"] == "2026-10-01T00:00:00Z"            # +08:00 converted, not dropped
