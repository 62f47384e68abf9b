"""What one request may cost: bounded spans, rows and bodies, work let go when the client hangs up,
a per-user concurrency limit, and hostile input (NUL, far dates, forged client addresses) refused
with a 4xx that names the problem (issue 13, items 1, 4 and 5)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from spinline.core.site import Site

from .conftest import Api
from .hardening_helpers import api_with, asgi_call

KPIS = "/api/v1/mills/mill-a/kpis"


def _code(r: object) -> str:
    return r.json()["code"]  # type: ignore[attr-defined, no-any-return]


# --- item 1: bounded work per request -----------------------------------------------------------

async def test_kpi_span_is_bounded_with_a_clear_422(api: Api) -> None:
    vera = await api.login("vera")                          # a viewer, as in the report
    r = await api.client.get(KPIS, headers=vera, params={"by": "shift", "start": "1990-01-01T00:00:00Z"})
    assert r.status_code == 422 and _code(r) == "span_too_large", r.text
    assert "93 days" in r.json()["detail"]                  # names the limit
    two_months = {"start": "2026-08-01T00:00:00Z", "end": "2026-10-01T00:00:00Z"}
    r = await api.client.get(KPIS, headers=vera, params={"by": "shift", **two_months})
    assert r.status_code == 422 and "by shift cover at most 31 days" in r.json()["detail"]
    r = await api.client.get(KPIS, headers=vera, params={"by": "mill", **two_months})
    assert r.status_code == 200
    r = await api.client.get(KPIS, headers=vera, params={"by": "shift", "start": "2026-09-10T00:00:00Z",
                                                         "end": "2026-10-01T00:00:00Z"})
    assert r.status_code == 200 and len(r.json()["rows"]) > 0
    r = await api.client.get("/api/v1/zone/kpis", headers=vera, params={"start": "2020-01-01T00:00:00Z"})
    assert r.status_code == 422 and _code(r) == "span_too_large"


async def test_range_rollup_and_event_spans_are_bounded(api: Api) -> None:
    h = await api.login("alice")
    ref = "mill-a/rf01/spindle_speed"
    october = {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}
    r = await api.client.get(f"/api/v1/points/{ref}/range", headers=h, params={"resolution": "raw", **october})
    assert r.status_code == 422 and "resolution raw" in r.json()["detail"]
    r = await api.client.get(f"/api/v1/points/{ref}/rollup", headers=h,
                             params={"resolution": "1m", "start": "2026-01-01T00:00:00Z", "end": october["end"]})
    assert r.status_code == 422 and _code(r) == "span_too_large"
    r = await api.client.get(f"/api/v1/points/{ref}/range", headers=h, params={"start": "2001-01-01T00:00:00Z"})
    assert r.status_code == 422 and _code(r) == "span_too_large"
    r = await api.client.get(f"/api/v1/points/{ref}/range", headers=h, params={"max_points": 10**9})
    assert r.status_code == 422
    r = await api.client.get("/api/v1/mills/mill-a/events", headers=h, params={"start": "1980-01-01T00:00:00Z"})
    assert r.status_code == 422 and _code(r) == "span_too_large"
    alarms = "/api/v1/mills/mill-a/maintenance/alarms"
    for i in range(3):
        await api.client.post(alarms, headers=h, json={"asset": f"rf0{i + 1}/x", "rule": "r", "message": "m"})
    assert (await api.client.get(alarms, headers=h, params={"limit": 10**6})).status_code == 422
    newest = (await api.client.get(alarms, headers=h, params={"limit": 2})).json()
    assert [a["asset"] for a in newest] == ["rf02/x", "rf03/x"]


async def test_work_is_let_go_when_the_client_hangs_up(tmp_path: Path, zone_site: Site) -> None:
    # A real heavy request (KPIs by shift over 9 months of an empty mill: ~4 s of work) with its limit lifted.
    async with api_with(tmp_path, zone_site, max_shift_kpi_span_days=10_000,
                        max_kpi_span_days=10_000) as api:
        token = (await api.login("alice"))["Authorization"]
        q = "by=shift&start=2026-03-01T00:00:00Z&end=2026-12-01T00:00:00Z"
        t0 = time.perf_counter()
        out = await asgi_call(api.app, "GET", KPIS, query=q, headers={"authorization": token},
                              disconnect_after_s=0.3)
        assert out["returned_after_s"] < 1.5, out     # the server let go: it does not wait for the work
        assert out["status"] is None                  # and nothing was sent to nobody
        assert time.perf_counter() - t0 < 2.0
        # the work itself stopped (between KPI windows): the request's slot is back long before 4 s
        alice = api.user_ids["alice"]
        while api.cloud.user_slots.held(alice) and time.perf_counter() - t0 < 10:
            await asyncio.sleep(0.05)
        assert api.cloud.user_slots.held(alice) == 0 and time.perf_counter() - t0 < 1.5


async def test_per_user_concurrency_limit(tmp_path: Path, zone_site: Site) -> None:
    async with api_with(tmp_path, zone_site, max_requests_per_user=2, max_heavy_requests=8,
                        max_shift_kpi_span_days=10_000,
                        max_kpi_span_days=10_000) as api:
        alice, bob = await api.login("alice"), await api.login("bob")
        params = {"by": "shift", "start": "2025-11-10T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
        slow = [asyncio.create_task(api.client.get(KPIS, headers=alice, params=params)) for _ in range(4)]
        await asyncio.sleep(0.3)
        other = await api.client.get("/api/v1/mills/mill-b", headers=bob)   # another user is not held up
        assert other.status_code == 200
        answers = await asyncio.gather(*slow)
        codes = sorted(r.status_code for r in answers)
        assert codes == [200, 200, 429, 429], codes
        refused = next(r for r in answers if r.status_code == 429)
        assert refused.headers["Retry-After"] == "1" and _code(refused) == "too_many_concurrent_requests"
        assert api.cloud.user_slots.held(api.user_ids["alice"]) == 0       # every slot given back


# --- item 4: hostile input is a 4xx naming the problem ------------------------------------------

@pytest.mark.parametrize("where", ["login", "query", "path", "body"])
async def test_nul_characters_are_refused(api: Api, where: str) -> None:
    h = await api.login("alice")
    c = api.client
    if where == "login":                                  # unauthenticated, straight to the user table
        r = await c.post("/api/v1/auth/login", json={"username": "al\x00ice", "password": "x" * 10})
    elif where == "query":
        r = await c.get("/api/v1/mills/mill-a/events", headers=h, params={"machine": "rf\x0001"})
    elif where == "path":
        r = await c.get("/api/v1/mills/mill-a%00/tree", headers=h)
    else:
        r = await c.post("/api/v1/mills/mill-a/events", headers=h, json={"kind": "note", "message": "a\x00b"})
    assert r.status_code == 422 and _code(r) == "nul_character" and "NUL" in r.json()["detail"], r.text


@pytest.mark.parametrize("params", [{"start": "0001-01-01T00:00:00Z"}, {"end": "9999-12-31T00:00:00Z"},
                                   {"start": "0001-01-01T00:00:00+01:00"}])
async def test_times_outside_the_supported_range(api: Api, params: dict[str, str]) -> None:
    h = await api.login("alice")
    r = await api.client.get("/api/v1/mills/mill-a/events", headers=h, params=params)
    assert r.status_code == 422 and _code(r) == "time_out_of_range" and "1970-01-01" in r.json()["detail"], r.text


async def test_an_event_in_1626_is_refused(api: Api) -> None:
    h = await api.login("alice")
    r = await api.client.post("/api/v1/mills/mill-a/events", headers=h,
                              json={"kind": "note", "message": "old", "ts": "1626-05-01T00:00:00Z"})
    assert r.status_code == 422 and "supported range" in r.json()["detail"], r.text
    assert r.json()["errors"][0]["loc"] == ["body", "ts"]


async def test_forwarded_client_address_longer_than_64_characters(tmp_path: Path, zone_site: Site) -> None:
    # uvicorn puts the X-Forwarded-For address of a trusted proxy into the scope's client.
    async with api_with(tmp_path, zone_site, client=("1.2.3.4," * 20, 0)) as api:
        r = await api.client.post("/api/v1/auth/login", json={"username": "alice", "password": "wrong password"})
        assert r.status_code == 400 and _code(r) == "bad_client_address" and "X-Forwarded-For" in r.json()["detail"]


# --- item 5: body size and field bounds ---------------------------------------------------------

async def test_body_over_the_limit_is_refused_before_it_is_read(api: Api) -> None:
    h = await api.login("alice")
    big = b'{"kind": "note", "message": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    out = await asgi_call(api.app, "POST", "/api/v1/mills/mill-a/events", body=big,
                          headers={"authorization": h["Authorization"], "content-type": "application/json"})
    assert out["status"] == 413 and out["json"]["code"] == "body_too_large"
    r = await api.client.post("/api/v1/mills/mill-a/maintenance/alarms", headers=h,
                              json={"asset": "rf01/x", "rule": "r", "message": "m", "evidence": {"x": "y" * 2_000_000}})
    assert r.status_code == 413


async def test_written_fields_are_bounded(api: Api) -> None:
    h = await api.login("alice")
    base = "/api/v1/mills/mill-a/maintenance/alarms"
    r = await api.client.post(base, headers=h, json={"asset": "rf01/x", "rule": "r", "message": "m",
                                                     "evidence": {f"k{i}": "v" * 100 for i in range(500)}})
    assert r.status_code == 422 and "evidence" in r.json()["detail"], r.text
    zone = await api.login("zone")
    r = await api.client.post("/api/v1/users", headers=zone, json={
        "username": "u1", "password": "long enough pw", "role": "viewer", "mills": ["m" * 65]})
    assert r.status_code == 422
    r = await api.client.post("/api/v1/edges", headers=zone, json={"id": "e9", "mill": "m" * 500})
    assert r.status_code == 422
