"""Raw evidence end to end over the real HTTP uplink into the real API (issue 11 item 7: send, store, request).

The cloud app (real stores, the ``api`` fixture) is served by uvicorn on a loopback port; the edge side is
the real buffer file, ``EvidenceKeeper``, ``Forwarder`` and ``MeteredUplink(HttpUplink)``. An alarm's
snapshot is queued, committed, sent while the cloud is down (kept), sent after it comes back, acked
(deleted from the buffer), booked as ``snapshot`` traffic and served by
``GET .../snapshots/latest`` with its spectra, to mill A's users only. A user's request reaches the edge
in the answer to its status post, the edge queues the latest waveform and it arrives. Forged and
tampered messages are refused and counted; the per-channel retention holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest
import uvicorn

from spinline.core import wire
from spinline.edge.buffer import EdgeBuffer
from spinline.edge.buffer_io import AsyncBuffer
from spinline.edge.evidence import (
    EvidenceKeeper,
    EvidenceSettings,
    RawSnapshot,
    commit_snapshots,
    encode_snapshot,
    pending_snapshots,
)
from spinline.edge.forwarder import Forwarder
from spinline.edge.traffic import MeteredUplink, TrafficLedger
from spinline.edge.uplink.http import HttpUplink

from .conftest import Api

ASSET = "mill-a/rf01/main_motor"
LATEST = "/api/v1/mills/mill-a/machines/rf01/snapshots/latest"


def _wave(t: float, f_hz: float = 120.0, fs: float = 25600.0) -> RawSnapshot:
    x = np.sin(2 * np.pi * f_hz * np.arange(int(fs)) / fs).astype(np.float32)
    return RawSnapshot(ASSET, int(t * 1e9), fs, x)


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _serve(api: Api, port: int) -> AsyncIterator[str]:
    server = uvicorn.Server(uvicorn.Config(api.app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        await _until(lambda: server.started or task.done())
        assert server.started
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_alarm_snapshot_offline_then_sent_stored_served_and_a_request_comes_back(
        api: Api, tmp_path: Path) -> None:
    secret = api.secrets["edge-a"].encode()
    buf = EdgeBuffer(tmp_path / "b.sqlite").open()
    ab = AsyncBuffer(buf)
    now = time.time()
    # a daily budget of exactly the alarm's and the requested snapshot's bytes: a third is refused
    budget = sum(len(encode_snapshot(_wave(now, f), r, "edge-a")) for f, r in ((120.0, "alarm"), (300.0, "request")))
    keeper = EvidenceKeeper("edge-a", EvidenceSettings(samples_per_channel_per_day=0, daily_bytes=budget))
    fwd = Forwarder(ab, edge="edge-a", mill="mill-a", secret=secret, ack_timeout_s=1.0)
    fwd.on_request = keeper.request
    ledger = TrafficLedger()
    keeper.offer(_wave(now - 1))
    keeper.request_alarm(ASSET)
    commit_snapshots(buf.db, keeper.take())
    assert len(pending_snapshots(buf.db)) == 1

    # 1. offline: the cloud's port is closed; the session ends and the snapshot stays in the buffer.
    port = _free_port()
    up = MeteredUplink(HttpUplink(f"http://127.0.0.1:{port}", edge="edge-a", mill="mill-a", secret=secret,
                                  trust=fwd.trust, timeout_s=2.0), ledger)
    async with up:
        with pytest.raises(Exception):  # noqa: B017,PT011 - the transport error ends the session
            await asyncio.wait_for(fwd.run_session(up), 10)
    assert len(pending_snapshots(buf.db)) == 1 and ledger.bytes_today("snapshot") == 0

    # 2. back online: sent, stored, acked (signed), deleted from the buffer, booked as snapshot traffic.
    async with _serve(api, port) as url:
        up = MeteredUplink(HttpUplink(url, edge="edge-a", mill="mill-a", secret=secret, trust=fwd.trust), ledger)
        async with up:
            task = asyncio.create_task(fwd.run_session(up))
            try:
                await _until(lambda: fwd.stats.snapshots_acked == 1)
                assert pending_snapshots(buf.db) == []
                assert ledger.bytes_today("snapshot") > 1000
                assert fwd.trust.signed_seen

                # the API serves it: the 120 Hz tone is the spectrum's peak
                h = await api.login("alice")
                r = await api.client.get(LATEST, headers=h, params={"max_points": 2048})
                assert r.status_code == 200, r.text
                ch = r.json()["channels"]
                assert [c["channel"] for c in ch] == ["main_motor"] and ch[0]["reason"] == "alarm"
                assert ch[0]["n"] == 25600 and ch[0]["fs_hz"] == 25600.0 and len(ch[0]["samples"]) <= 2048
                spec = ch[0]["spectrum"]
                peak = spec["freq_hz"][int(np.argmax(spec["amplitude"]))]
                assert abs(peak - 120.0) < 15, peak
                assert abs(max(spec["amplitude"]) - 1.0) < 0.1
                # another mill's manager and an unauthenticated caller see nothing
                bob = await api.login("bob")
                assert (await api.client.get(LATEST, headers=bob)).status_code in (403, 404)
                assert (await api.client.get(LATEST)).status_code == 401

                # 3. a user's request: 202, delivered in the status answer, the latest waveform comes up.
                keeper.offer(_wave(time.time(), f_hz=300.0))
                vera = await api.login("vera")     # a viewer may not ask
                req = "/api/v1/mills/mill-a/machines/rf01/snapshot-requests"
                assert (await api.client.post(req, headers=vera, json={})).status_code == 403
                assert (await api.client.post(req, headers=bob, json={})).status_code in (403, 404)
                r = await api.client.post(req, headers=h, json={"channel": "main_motor"})
                assert r.status_code == 202, r.text
                assert r.json()["assets"] == [ASSET] and r.json()["edges"] == 1
                await up.publish_status(wire.encode_status({"edge": "edge-a", "mill": "mill-a"}))
                await _until(lambda: fwd.stats.snapshot_requests == 1)
                assert keeper.stats()["queued"]["request"] == 1
                commit_snapshots(buf.db, keeper.take())
                fwd.notify_snapshots()
                await _until(lambda: fwd.stats.snapshots_acked == 2)

                # 4. the day's budget is spent: a further request is refused and counted, nothing is queued
                r = await api.client.post(req, headers=h, json={})
                assert r.status_code == 202
                await up.publish_status(wire.encode_status({"edge": "edge-a", "mill": "mill-a"}))
                await _until(lambda: fwd.stats.snapshot_requests == 2)
                st = keeper.stats()
                assert st["refused_by_reason"]["request"] == 1 and st["refused"] == 1, st
                assert keeper.take() == [] and pending_snapshots(buf.db) == []
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        r = await api.client.get(LATEST, headers=h)
        ch = r.json()["channels"][0]
        assert ch["reason"] == "request"
        peak = ch["spectrum"]["freq_hz"][int(np.argmax(ch["spectrum"]["amplitude"]))]
        assert abs(peak - 300.0) < 15, peak
    assert not api.cloud.store.rejections()
    buf.close()


async def test_forged_tampered_and_foreign_snapshots_are_refused_and_counted(api: Api) -> None:
    good = encode_snapshot(_wave(time.time()), "alarm", "edge-a")
    post = "/api/v1/edge-snapshots"
    hdr = {"Content-Type": wire.SNAPSHOT_CONTENT_TYPE}
    # signed with another edge's secret / unsigned
    forged = wire.encode_snapshot_upload("edge-a", "mill-a", 1, good, key=api.secrets["edge-b"].encode())
    assert (await api.client.post(post, content=forged, headers=hdr)).status_code == 401
    unsigned = wire.encode_snapshot_upload("edge-a", "mill-a", 1, good, key=None)
    assert (await api.client.post(post, content=unsigned, headers=hdr)).status_code == 401
    # samples altered after signing
    signed = wire.encode_snapshot_upload("edge-a", "mill-a", 1, good, key=api.secrets["edge-a"].encode())
    tampered = signed[:-10] + bytes(10)
    assert (await api.client.post(post, content=tampered, headers=hdr)).status_code == 401
    # edge B claims mill A / a mill-B asset from edge A: refused
    b_for_a = wire.encode_snapshot_upload("edge-b", "mill-a", 1, good, key=api.secrets["edge-b"].encode())
    assert (await api.client.post(post, content=b_for_a, headers=hdr)).status_code == 401
    other = encode_snapshot(RawSnapshot("mill-b/rf01/main_motor", time.time_ns(), 25600.0,
                                        np.zeros(100, np.float32)), "alarm", "edge-a")
    r = await api.client.post(post, content=wire.encode_snapshot_upload(
        "edge-a", "mill-a", 2, other, key=api.secrets["edge-a"].encode()), headers=hdr)
    assert r.status_code == 200 and r.json()["rejected"] == [{"id": 2, "reason": "invalid"}]
    assert wire.verify_ack(api.secrets["edge-a"].encode(), r.json()) is True
    # larger than the limit: 413 before anything is parsed
    big = signed + bytes(wire.MAX_SNAPSHOT_BYTES)
    assert (await api.client.post(post, content=big, headers=hdr)).status_code == 413
    rej = api.cloud.store.rejections()
    assert rej == {"?": {"unauthorised": 3, "oversized": 1}, "edge-b": {"unauthorised": 1},
                   "edge-a": {"invalid": 1}}, rej
    # the good one is stored once (a re-send is acked again, not stored twice)
    for _ in range(2):
        r = await api.client.post(post, content=signed, headers=hdr)
        assert r.status_code == 200 and r.json()["acked"] == [1], r.text
    assert api.app.state.evidence.count("mill-a", "rf01", "main_motor") == 1


async def test_retention_keeps_the_newest_per_channel(api: Api) -> None:
    ev = api.app.state.evidence
    key = api.secrets["edge-a"].encode()
    t0 = time.time() - 100
    for i in range(1, ev.keep_per_channel + 6):
        body = encode_snapshot(_wave(t0 + i), "sample", "edge-a")
        _, ack = ev.handle(wire.encode_snapshot_upload("edge-a", "mill-a", i, body, key=key))
        assert ack.acked == (i,)
    assert ev.count("mill-a", "rf01", "main_motor") == ev.keep_per_channel
    # requests: one waiting per (edge, asset), handed over once
    assert [ev.request("mill-a", ASSET, ["edge-a"], "alice") for _ in range(3)] == [1, 0, 0]
    assert ev.take_requests("edge-a") == [ASSET] and ev.take_requests("edge-a") == []
    (latest,) = ev.latest("mill-a", "rf01")
    assert latest.ts_ns == int((t0 + ev.keep_per_channel + 5) * 1e9)


async def test_over_mosquitto_snapshot_acked_and_a_request_published_to_the_edge(
        api: Api, tmp_path: Path, mqtt_broker: tuple[str, int]) -> None:
    """The same over the machine's Mosquitto: the cloud's MQTT ingest worker keeps the snapshot and acks it
    on the snapshot-ack topic; a user's request is published on the edge's requests topic at once."""
    import uuid

    from spinline.cloud.ingest.mqtt_worker import IngestWorker
    from spinline.edge.uplink.mqtt import MqttUplink

    eid = f"e-{uuid.uuid4().hex[:8]}"        # unique: the broker is shared with other test runs
    secret = api.cloud.edges.create(edge_id=eid, mill="mill-a", created_by="test")[1].encode()
    buf = EdgeBuffer(tmp_path / "b.sqlite").open()
    keeper = EvidenceKeeper(eid, EvidenceSettings(samples_per_channel_per_day=0))
    fwd = Forwarder(AsyncBuffer(buf), edge=eid, mill="mill-a", secret=secret, ack_timeout_s=2.0)
    fwd.on_request = keeper.request
    keeper.offer(_wave(time.time() - 1))
    keeper.request_alarm(ASSET)
    commit_snapshots(buf.db, keeper.take())
    host, port = mqtt_broker
    worker = IngestWorker(api.cloud.ingest, host, port, group=f"g{uuid.uuid4().hex[:6]}",
                          evidence=api.cloud.evidence)
    ledger = TrafficLedger()
    with worker:
        api.cloud.publish_requests = worker.publish_requests
        up = MeteredUplink(MqttUplink(f"mqtt://{host}:{port}", edge=eid, mill="mill-a", secret=secret,
                                      trust=fwd.trust), ledger)
        async with up:
            task = asyncio.create_task(fwd.run_session(up))
            try:
                await _until(lambda: fwd.stats.snapshots_acked == 1, 15)
                assert pending_snapshots(buf.db) == [] and ledger.bytes_today("snapshot") > 1000
                keeper.offer(_wave(time.time(), f_hz=300.0))
                h = await api.login("zone")
                r = await api.client.post("/api/v1/mills/mill-a/machines/rf01/snapshot-requests", headers=h,
                                          json={})
                assert r.status_code == 202, r.text
                await _until(lambda: fwd.stats.snapshot_requests == 1, 15)
                commit_snapshots(buf.db, keeper.take())
                fwd.notify_snapshots()
                await _until(lambda: fwd.stats.snapshots_acked == 2, 15)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    assert worker.stats.snapshots == 2
    (s,) = api.cloud.evidence.latest("mill-a", "rf01")
    assert (s.edge, s.reason) == (eid, "request")
    buf.close()


async def test_the_amplitude_spectrum_can_end_low_so_slow_running_speed_harmonics_separate(api: Api) -> None:
    """A 980 rpm fan's 1x (16.3 Hz) and 2x (32.7 Hz): on the whole 12.8 kHz, 1,024 pooled bins are 12.5 Hz
    wide and both sit against 0 Hz; ended at 1 kHz the bins are 1 Hz apart and each peak stands alone."""
    ev = api.app.state.evidence
    key = api.secrets["edge-a"].encode()
    fs, t = 25600.0, np.arange(25600) / 25600.0
    x = (0.03 * np.sin(2 * np.pi * 16.33 * t) + 0.01 * np.sin(2 * np.pi * 32.67 * t)).astype(np.float32)
    body = encode_snapshot(RawSnapshot(ASSET, int((time.time() - 10) * 1e9), fs, x), "request", "edge-a")
    _, ack = ev.handle(wire.encode_snapshot_upload("edge-a", "mill-a", 1, body, key=key))
    assert ack.acked == (1,)
    h = await api.login("alice")
    full = (await api.client.get(LATEST, headers=h, params={"max_points": 1024})).json()["channels"][0]["spectrum"]
    low = (await api.client.get(LATEST, headers=h, params={"max_points": 1024, "spectrum_max_hz": 1000})
           ).json()["channels"][0]["spectrum"]
    assert full["freq_hz"][-1] > 12000 and sum(f <= 1000 for f in full["freq_hz"]) < 100   # 12.5 Hz bins
    assert low["freq_hz"][-1] <= 1000 and len(low["freq_hz"]) > 900                        # 1 Hz bins
    f, a = np.asarray(low["freq_hz"]), np.asarray(low["amplitude"])
    near = {hz: a[(f > hz - 2) & (f < hz + 2)].max() for hz in (16.33, 24.5, 32.67)}
    assert near[16.33] > 2 * near[32.67] > 10 * near[24.5], near   # two peaks with a trough between
    bad = await api.client.get(LATEST, headers=h, params={"spectrum_max_hz": 0})
    assert bad.status_code == 422
