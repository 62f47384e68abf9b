"""Through the API: no cross-mill overwrite of alarms, spoofed refusals not counted against an edge,
edge events with out-of-range values refused one by one, and the small ones (UTC event times,
month validation, a neutral 409 for a taken edge id)."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime

import pytest

from spinline.cloud.api.routes import maintenance
from spinline.cloud.ingest.service import UNVERIFIED_EDGE
from spinline.core.wire import EVENTS_CONTENT_TYPE, EVENTS_PATH, decode_events_ack, sign_status

from .conftest import Api

BASE = "/api/v1/mills/{mill}/maintenance"


@pytest.fixture()
async def mapi(api: Api) -> Api:
    paths = {getattr(r, "path", "") for r in api.app.routes}
    if "/api/v1/mills/{mill}/maintenance/alarms" not in paths:
        api.app.include_router(maintenance.router, prefix="/api/v1")
    return api


async def test_alarm_id_of_another_mill_is_never_overwritten(mapi: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = await mapi.login("alice"), await mapi.login("bob")
    c = mapi.client
    body = {"asset": "rf01/main_motor", "rule": "r", "message": "victim alarm", "raised_at": "2026-01-01T00:00:00Z"}
    r = await c.post(BASE.format(mill="mill-a") + "/alarms", json=body, headers=alice)
    assert r.status_code == 201
    victim = r.json()["id"]
    # the same request in another mill gets a different id (no per-process counter to collide on)
    r = await c.post(BASE.format(mill="mill-b") + "/alarms", json={**body, "message": "bob's alarm"}, headers=bob)
    assert r.status_code == 201 and r.json()["id"] != victim
    # and were the id ever to repeat, the other mill's record is refused (409), not replaced
    import spinline.health.alarms as alarms_mod

    monkeypatch.setattr(alarms_mod, "new_id", lambda prefix, at: victim)
    r = await c.post(BASE.format(mill="mill-b") + "/alarms", json={**body, "message": "bob's alarm"}, headers=bob)
    assert r.status_code == 409 and "mill-a" not in r.text
    got = (await c.get(BASE.format(mill="mill-a") + "/alarms", headers=alice)).json()
    assert [(a["id"], a["message"]) for a in got] == [(victim, "victim alarm")]


async def test_unverified_requests_are_not_counted_against_the_edge_they_name(api: Api) -> None:
    zone = await api.login("zone")
    for _ in range(5):
        r = await api.client.post("/api/v1/edge-status", content=b"{}", headers={
            "X-Spinline-Edge": "edge-a", "X-Spinline-Mill": "<script>x</script>"})
        assert r.status_code == 401
        r = await api.client.post("/api/v1/edge-status", content=b"{}", headers={
            "X-Spinline-Edge": "edge-a", "X-Spinline-Mill": "mill-a", "X-Spinline-Signature": "00" * 32})
        assert r.status_code == 401
    hdr = b'{"edge":"edge-a","mill":"mill-a","seq":1,"n":0,"created_ns":1}'
    for version in (1, 9):
        r = await api.ingest(struct.pack("<4sBBHI", b"SPLB", version, 0, 0, len(hdr)) + hdr)
        assert r.status_code in (400, 401)
    edge = (await api.client.get("/api/v1/edges/edge-a", headers=zone)).json()
    assert edge["rejected"] == {}
    assert (await api.client.get("/api/v1/edges/edge-a/rejections", headers=zone)).json() == []
    counted = api.cloud.store.rejections()[UNVERIFIED_EDGE]
    assert sum(counted.values()) == 12
    details = [x.detail for x in api.cloud.store.recent_rejections(UNVERIFIED_EDGE, 100)]
    assert all("<script>" not in d and "edge-a" not in d for d in details)
    # a verified edge's own refusals still count against it
    status = b"[1]"
    r = await api.client.post("/api/v1/edge-status", content=status, headers={
        "X-Spinline-Edge": "edge-a", "X-Spinline-Mill": "mill-a",
        "X-Spinline-Signature": sign_status(api.secrets["edge-a"].encode(), status)})
    assert r.status_code == 401
    assert (await api.client.get("/api/v1/edges/edge-a", headers=zone)).json()["rejected"] == {"malformed": 1}


async def test_edge_event_with_out_of_range_time_is_rejected_alone(api: Api) -> None:
    secret = api.secrets["edge-a"].encode()
    tag = "mill-a/rf01/main_motor"
    ts = 1_767_225_600 * 10**9
    events = [
        {"id": 1, "asset": tag, "ts_ns": ts, "kind": "alarm_raised", "severity": "warning", "model_version": "v1",
         "rule": "anomaly", "alarm_key": f"{tag}:anomaly:{ts}"},
        {"id": 2, "asset": tag, "ts_ns": 10**30, "kind": "alarm_raised", "severity": "warning", "model_version": "v1",
         "rule": "anomaly"},
        {"id": 3, "asset": tag, "ts_ns": ts, "kind": "alarm_raised", "severity": "warning", "model_version": "v1",
         "rule": "iso_zone", "alarm_key": f"{tag}:iso_zone:{'9' * 40}"},
        {"id": 4, "asset": tag, "ts_ns": ts, "kind": "alarm_cleared", "severity": "info", "model_version": "v1",
         "alarm_key": f"{tag}:iso_zone:{'9' * 40}"},
    ]
    body = json.dumps({"v": 1, "edge": "edge-a", "mill": "mill-a", "events": events}).encode()
    payload = body + b"\n" + sign_status(secret, body).encode()
    r = await api.client.post(EVENTS_PATH, content=payload, headers={"Content-Type": EVENTS_CONTENT_TYPE})
    assert r.status_code == 200, r.text
    ack = decode_events_ack(r.content)
    assert ack.acked == (1, 3, 4) and ack.rejected == ((2, "malformed"),)


async def test_unverified_events_are_not_counted_against_the_edge(api: Api) -> None:
    body = json.dumps({"v": 1, "edge": "edge-a", "mill": "mill-a", "events": []}).encode()
    for payload in (body, body + b"\n" + b"0" * 64, b'{"v": 2, "edge": "edge-a"}'):
        r = await api.client.post(EVENTS_PATH, content=payload, headers={"Content-Type": EVENTS_CONTENT_TYPE})
        assert r.status_code in (400, 401)
    assert "edge-a" not in api.cloud.store.rejections()


async def test_naive_event_time_is_utc(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Kolkata")            # a server not on UTC (+05:30)
    time.tzset()
    alice = await api.login("alice")
    r = await api.client.post("/api/v1/mills/mill-a/events", headers=alice,
                              json={"ts": "2026-03-01T12:00:00", "kind": "note", "message": "naive"})
    assert r.status_code == 201, r.text
    got = datetime.fromisoformat(r.json()["ts"].replace("Z", "+00:00"))
    monkeypatch.undo()
    time.tzset()
    assert got == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def test_month_out_of_range_is_422(mapi: Api) -> None:
    alice = await mapi.login("alice")
    for month in ("2026-13", "2026-00"):
        r = await mapi.client.get(BASE.format(mill="mill-a") + f"/report?month={month}", headers=alice)
        assert r.status_code == 422, r.text
    r = await mapi.client.get(BASE.format(mill="mill-a") + "/report?month=2026-12", headers=alice)
    assert r.status_code == 200


async def test_taken_edge_id_409_does_not_say_whose(api: Api) -> None:
    bob = await api.login("bob")
    r = await api.client.post("/api/v1/edges", json={"id": "edge-a", "mill": "mill-b"}, headers=bob)
    assert r.status_code == 409
    assert "edge-a" not in r.text and "exist" not in r.text
    mine = await api.client.post("/api/v1/edges", json={"id": "edge-b", "mill": "mill-b"}, headers=bob)
    assert mine.status_code == 409 and mine.json() == r.json()             # the same answer for one's own id
