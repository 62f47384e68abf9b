"""Raw evidence on demand at the edge (issue 11 item 7, edge side): what is queued, the budget, durability.

Pure: the keeper queues the first waveform of each channel per UTC day (sparse sample), the latest on
an alarm or a request (or the next one when none is recent), refuses past the daily byte budget
(counted per reason), and starts afresh the next day. Real: queued snapshots are committed to the
edge's buffer file and are still there after reopening it; an ``EdgeAgent`` collecting from the
simulated mill's vibration sensors over the machine's Mosquitto queues one sample per channel and
shows it in its status, with nothing sent while it has no cloud.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from spinline.core.site import parse_site, rebind
from spinline.core.wire import sign_ack
from spinline.edge.agent import BUFFER_FILE, STATUS_FILE, EdgeAgent
from spinline.edge.buffer import EdgeBuffer
from spinline.edge.cli import _fmt_status
from spinline.edge.evidence import (
    EvidenceKeeper,
    EvidenceSettings,
    RawSnapshot,
    commit_snapshots,
    decode_snapshot,
    pending_snapshots,
)
from spinline.edge.settings import EdgeSettings
from spinline.sim.server import SimServer

DAY0 = 1_780_000_000.0 - 1_780_000_000.0 % 86400 + 3600   # 01:00 UTC


def _snap(asset: str, t: float, seed: int = 0) -> RawSnapshot:
    rng = np.random.default_rng(seed)
    return RawSnapshot(asset, int(t * 1e9), 25600.0, rng.normal(0, 0.3, 25600).astype(np.float32))


def test_sample_per_channel_per_day_alarm_request_and_budget() -> None:
    now = [DAY0]
    size = len(_keeper_payload())
    k = EvidenceKeeper("e1", EvidenceSettings(daily_bytes=int(size * 4.5)), clock=lambda: now[0])
    for i in range(5):                                   # five snapshots of each channel: one sample each
        now[0] += 60
        k.offer(_snap("m/rf01/motor", now[0], i))
        k.offer(_snap("m/rf02/motor", now[0], i))
    assert [(s.asset, r) for s, r, _ in k.take()] == [("m/rf01/motor", "sample"), ("m/rf02/motor", "sample")]
    k.request_alarm("m/rf01/motor")                     # alarm: the latest waveform of that asset
    assert k.request("m/rf02/motor")                    # a user's request
    got = k.take()
    assert [(s.asset, r) for s, r, _ in got] == [("m/rf01/motor", "alarm"), ("m/rf02/motor", "request")]
    head, samples = decode_snapshot(got[0][2])
    assert head["reason"] == "alarm" and head["asset"] == "m/rf01/motor" and head["edge"] == "e1"
    np.testing.assert_array_equal(samples, k.latest["m/rf01/motor"].samples)
    assert not k.request("m/rf01/motor")                # the 5th would pass the budget: refused, counted
    st = k.stats()
    assert st["refused"] == 1 and st["refused_by_reason"]["request"] == 1
    assert st["queued"] == {"alarm": 1, "request": 1, "sample": 2, "uncertain": 0}
    assert st["queued_bytes"] <= st["budget_bytes"]
    # an asset with no recent waveform: the request waits for the next one
    assert k.request("m/hv01/fan") and k.stats()["waiting"] == ["m/hv01/fan"]
    now[0] += 86400                                      # next day: fresh budget, fresh samples
    k.offer(_snap("m/hv01/fan", now[0]))
    k.offer(_snap("m/rf01/motor", now[0]))
    assert [(s.asset, r) for s, r, _ in k.take()] == [("m/hv01/fan", "request"), ("m/rf01/motor", "sample")]
    assert k.stats()["refused"] == 0


def test_latest_waveform_is_held_as_float32_and_sent_unchanged() -> None:
    """The featuriser's float64 copy of a float32 sensor waveform is held as float32: same bytes go up."""
    k = EvidenceKeeper("e1", clock=lambda: DAY0)
    wide = _snap("m/rf01/motor", DAY0).samples.astype(np.float64)
    k.offer(RawSnapshot("m/rf01/motor", int(DAY0 * 1e9), 25600.0, wide))
    held = k.latest["m/rf01/motor"].samples
    assert held.dtype == np.float32 and held.nbytes == wide.nbytes // 2
    _, sent = decode_snapshot(k.take()[0][2])
    np.testing.assert_array_equal(sent, wide)


def _keeper_payload() -> bytes:
    from spinline.edge.evidence import encode_snapshot
    return encode_snapshot(_snap("m/rf01/motor", DAY0), "sample", "e1")


def test_queued_snapshots_are_durable_in_the_buffer_file(tmp_path: Path) -> None:
    k = EvidenceKeeper("e1", clock=lambda: DAY0)
    k.offer(_snap("m/rf01/motor", DAY0))
    items = k.take()
    with EdgeBuffer(tmp_path / "b.sqlite") as buf:
        ids = commit_snapshots(buf.db, items)
    assert len(ids) == 1
    with EdgeBuffer(tmp_path / "b.sqlite") as buf:      # reopened: still there, byte for byte
        pend = pending_snapshots(buf.db)
    assert [(i, a, r) for i, a, r, _ in pend] == [(ids[0], "m/rf01/motor", "sample")]
    assert pend[0][3] == items[0][2]


async def test_agent_queues_a_sample_per_vibration_channel(mill_yaml: Path, mqtt_broker: tuple[str, int],
                                                           tmp_path: Path) -> None:
    doc: dict[str, Any] = yaml.safe_load(mill_yaml.read_text())
    mill_id = f"ev-{uuid.uuid4().hex[:8]}"
    doc["mills"] = doc["mills"][:1]
    doc["mills"][0]["id"] = mill_id
    channels = []
    for ws in doc["mills"][0]["workshops"]:
        for line in ws["lines"]:
            for m in line["machines"]:
                if "vibration" in m:
                    m["vibration"]["every_s"] = 1.0
                    channels += [f"{mill_id}/{m['id']}/{c['name']}" for c in m["vibration"]["channels"]]
    site = parse_site(doc)
    host, port = mqtt_broker
    async with SimServer(site, mill_id, speed=1.0, ephemeral=True, mqtt=(host, port)) as sim:
        agent = EdgeAgent(rebind(site, sim.ports), mill_id,
                          EdgeSettings(edge_id="ev", data_dir=tmp_path / "edge", device_mqtt=f"mqtt://{host}:{port}",
                                       flush_s=0.2, status_every_s=0.2, secret=b"s" * 32))
        async with agent:
            for _ in range(100):
                await asyncio.sleep(0.2)
                if agent.evidence is not None and agent.evidence.committed >= len(channels):
                    break
            # the cloud model's answer to an uncertain snapshot, as an uplink hands it over: a signed one is
            # recorded, a forged one refused; both show in status.json and ``spinline edge status``
            assert agent.forwarder.on_diagnoses is not None
            item = {"asset": channels[0], "snapshot": 3, "fault": "bearing_outer", "confidence": 0.97}
            agent.forwarder.on_diagnoses(sign_ack(b"s" * 32, {"edge": "ev", "diagnoses": [item]}))
            agent.forwarder.on_diagnoses(sign_ack(b"x" * 32, {"edge": "ev", "diagnoses": [item | {"snapshot": 4}]}))
            await asyncio.sleep(3.0)                     # more snapshots arrive: no more samples today
            st = await agent.status()
            on_disk = json.loads((tmp_path / "edge" / STATUS_FILE).read_text())
    assert st["evidence"]["queued"]["sample"] == len(channels) == 6
    assert st["evidence"]["refused"] == 0
    cd = on_disk["evidence"]["cloud_diagnoses"]
    assert cd["accepted"] == 1 and cd["refused_by_reason"]["bad_signature"] == 1
    assert cd["by_asset"][channels[0]]["fault"] == "bearing_outer" and cd["by_asset"][channels[0]]["snapshot"] == 3
    shown = "\n".join(_fmt_status(on_disk))
    assert "cloud diagnoses of uncertain snapshots  accepted 1  refused 1 (bad_signature 1)" in shown
    assert f"{channels[0]:<28} bearing_outer (confidence 0.97)  snapshot 3" in shown
    with EdgeBuffer(tmp_path / "edge" / BUFFER_FILE) as buf:
        pend = pending_snapshots(buf.db, limit=100)
    assert sorted(a for _, a, _, _ in pend) == sorted(channels)
    for _, _, _, payload in pend:
        head, samples = decode_snapshot(payload)
        assert head["fs_hz"] == 25600 and len(samples) == head["n"] > 0 and np.isfinite(samples).all()


class _RecordingUplink:
    """An uplink that records what it was handed, in order, and acks batches and snapshots itself
    (the forwarder's ordering is under test here, not the transport: that is tests/cloud/api/test_evidence.py)."""

    def __init__(self) -> None:
        from spinline.core.wire import EventsAck
        from spinline.edge.uplink.base import Ack

        self.acks: asyncio.Queue[Ack] = asyncio.Queue()
        self.event_acks: asyncio.Queue[EventsAck] = asyncio.Queue()
        self.snapshot_acks: asyncio.Queue[EventsAck] = asyncio.Queue()
        self.requests: asyncio.Queue[str] = asyncio.Queue()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.order: list[str] = []

    async def send(self, seq: int, payload: bytes) -> None:
        from spinline.edge.uplink.base import Ack

        self.order.append(f"batch{seq}")
        await asyncio.sleep(0.05)              # a slow link: the snapshot must wait for the live batches
        self.acks.put_nowait(Ack(seq, "stored"))

    async def send_events(self, payload: bytes) -> None:
        pass

    async def publish_status(self, payload: bytes) -> None:
        pass

    async def send_snapshot(self, payload: bytes) -> None:
        from spinline.core.wire import EventsAck, decode_snapshot_upload

        up = decode_snapshot_upload(payload, key_lookup=lambda _e: b"s" * 32)   # signed with the edge's key
        self.order.append(f"snapshot{up.id}")
        self.snapshot_acks.put_nowait(EventsAck(acked=(up.id,)))


async def test_forwarder_sends_snapshots_after_live_batches_and_deletes_them_on_ack(tmp_path: Path) -> None:
    from spinline.core.batch import Batch
    from spinline.core.site import Priority
    from spinline.edge.buffer_io import AsyncBuffer
    from spinline.edge.forwarder import Forwarder

    buf = EdgeBuffer(tmp_path / "b.sqlite").open()
    fwd = Forwarder(AsyncBuffer(buf), edge="e1", mill="m", secret=b"s" * 32)
    up = _RecordingUplink()
    task = asyncio.create_task(fwd.run_session(up))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0.3)
        k = EvidenceKeeper("e1", EvidenceSettings())
        k.offer(_snap("m/rf01/motor", DAY0))
        commit_snapshots(buf.db, k.take())          # queued first ...
        for i in range(5):                          # ... but live data goes first
            t = 1_780_000_000 * 10**9 + i
            buf.append(Batch.of(np.full(2, 1), t + np.arange(2, dtype=np.int64), np.ones(2), 0),
                       priority=Priority.NORMAL)
        fwd.notify()
        fwd.notify_snapshots()
        for _ in range(100):
            if fwd.stats.snapshots_acked == 1 and fwd.stats.acked == 5:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert up.order[-1] == "snapshot1" and up.order.count("snapshot1") == 1, up.order
    assert sorted(up.order[:-1]) == [f"batch{i}" for i in range(1, 6)], up.order
    assert pending_snapshots(buf.db) == [] and fwd.stats.snapshots_sent == 1
    buf.close()


async def test_a_federated_mills_edge_sends_scores_but_no_feature_row_or_snapshot(
        mill_yaml: Path, mqtt_broker: tuple[str, int], tmp_path: Path) -> None:
    """``federated: true``: the same simulated mill, but what waits for the cloud in the edge's buffer file (its
    only way out) holds the vibration scores and no feature point; no snapshot is queued, each is counted."""
    from spinline.core.site import point_key
    from spinline.health.features import FEATURE_NAMES

    doc: dict[str, Any] = yaml.safe_load(mill_yaml.read_text())
    mill_id = f"fed-{uuid.uuid4().hex[:8]}"
    doc["mills"] = doc["mills"][:1]
    doc["mills"][0]["id"] = mill_id
    doc["mills"][0]["federated"] = True
    feats, scores = set(), set()
    for ws in doc["mills"][0]["workshops"]:
        for line in ws["lines"]:
            for m in line["machines"]:
                if "vibration" in m:
                    m["vibration"]["every_s"] = 1.0
                    for c in m["vibration"]["channels"]:
                        feats |= {point_key(f"{mill_id}/{m['id']}/vib_{c['name']}_{n}") for n in FEATURE_NAMES}
                        scores.add(point_key(f"{mill_id}/{m['id']}/vib_{c['name']}_anomaly_score"))
    site = parse_site(doc)
    host, port = mqtt_broker
    async with SimServer(site, mill_id, speed=1.0, ephemeral=True, mqtt=(host, port)) as sim:
        agent = EdgeAgent(rebind(site, sim.ports), mill_id,
                          EdgeSettings(edge_id="fed", data_dir=tmp_path / "edge", device_mqtt=f"mqtt://{host}:{port}",
                                       flush_s=0.2, status_every_s=0.2))
        async with agent:
            for _ in range(100):
                await asyncio.sleep(0.2)
                if agent.evidence is not None and agent.evidence.withheld >= 6:
                    break
            await asyncio.sleep(1.0)
            st = await agent.status()
    assert st["evidence"]["withheld_federated"] >= 6 and st["evidence"]["queued"].get("sample", 0) == 0
    with EdgeBuffer(tmp_path / "edge" / BUFFER_FILE) as buf:
        assert pending_snapshots(buf.db, limit=100) == []
        sent = {int(p) for b in buf.read(limit=100_000) for p in b.batch.point.tolist()}
    assert sent & scores, "the edge still scores and sends its scores"
    assert not sent & feats, "a feature point of a federated mill is waiting to go to the cloud"
    # the rows stay on the edge, for its Flower client: labelled by the verified fault windows it is given
    from spinline.edge.feature_log import FeatureLog
    from spinline.health.anomaly import VIB_MODEL_KEYS

    log = FeatureLog(tmp_path / "edge")
    try:
        asset = f"{mill_id}/{_channels(doc)[0]}"
        rows, labels = log.labelled([asset], list(VIB_MODEL_KEYS), {}, 0, 1 << 62)
        assert len(rows) >= 1 and labels == [0] * len(rows) and all(len(r) == len(VIB_MODEL_KEYS) for r in rows)
        assert sum(np.isfinite(r).sum() for r in np.asarray(rows)) > len(rows) * len(VIB_MODEL_KEYS) // 2
        ts = [t for t, in log.db.execute("SELECT ts_ns FROM rows WHERE asset = ? ORDER BY ts_ns", (asset,))]
        _, marked = log.labelled([asset], list(VIB_MODEL_KEYS), {asset.split("/", 1)[1]: [(ts[0], ts[0] + 1)]},
                                 0, 1 << 62)
        assert marked[0] == 1 and sum(marked) == 1
    finally:
        log.close()


def _channels(doc: dict[str, Any]) -> list[str]:
    return [f"{m['id']}/{c['name']}" for ws in doc["mills"][0]["workshops"] for line in ws["lines"]
            for m in line["machines"] if "vibration" in m for c in m["vibration"]["channels"]]
