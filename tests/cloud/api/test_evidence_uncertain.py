"""An uncertain snapshot gets the cloud model's answer (issue 11 item 7: the uncertain path, cloud and round trip).

Cloud (the real app and stores, the ``api`` fixture): an edge alarm with an ``unknown`` diagnosis opens a work
order; the edge's ``uncertain`` snapshot of a simulated outer-race fault (``sim.vibration.synthesize``, its
impacts ringing a 1.2 kHz resonance the edge's envelope band misses) is stored with the cloud diagnosis
``bearing_outer``, the order gets a keyed system comment and its fault (the edge's ``unknown`` kept in the
history), the latest-snapshot API shows both diagnoses, and the answer rides back in the signed snapshot ack.
A snapshot that arrives before its alarm's work order is noted when the order opens.

Round trip over the real stack: the edge's ``EvidenceKeeper`` / ``Forwarder`` / ``HttpUplink`` against the app
served by uvicorn, and over the machine's Mosquitto with the cloud's MQTT ingest worker: the edge receives the
signed answer and shows it; an answer forged on its requests topic is refused and counted.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from spinline.core import wire
from spinline.core.wire import EdgeEvent
from spinline.edge.buffer import EdgeBuffer
from spinline.edge.buffer_io import AsyncBuffer
from spinline.edge.cloud_answers import CloudAnswers
from spinline.edge.evidence import EdgeDiagnosis, EvidenceKeeper, EvidenceSettings, RawSnapshot, commit_snapshots
from spinline.edge.evidence import encode_snapshot as edge_encode
from spinline.edge.forwarder import Forwarder
from spinline.edge.traffic import MeteredUplink, TrafficLedger
from spinline.edge.uplink.http import HttpUplink
from spinline.sim.vibration import synthesize

from .conftest import Api
from .test_evidence import _serve, _until

MILL = "mill-a"
ASSET = f"{MILL}/rf01/main_motor"
FS, RPM = 25600.0, 1480.0
POST = "/api/v1/edge-snapshots"
HDR = {"Content-Type": wire.SNAPSHOT_CONTENT_TYPE}


def _fault_wave(api: Api, asset: str = ASSET, rpm: float = RPM, resonance_hz: float = 1200.0,
                level: float = 0.6) -> RawSnapshot:
    """A simulated outer-race fault of the site's bearing of ``asset``'s channel, 1 s at 25.6 kHz."""
    _, machine, channel = asset.split("/")
    m = next(m for _, _, m in _machines(api) if m.id == machine)
    ch = next(c for c in m.vibration.channels if c.name == channel)
    bearing = next(b for b in m.bearings if b.name == ch.bearing)
    x = synthesize(FS, 1.0, rpm, bearing, {"bearing_outer": level}, np.random.default_rng(11),
                   resonance_hz=resonance_hz)
    return RawSnapshot(asset, time.time_ns() - 10**9, FS, x, shaft_hz=rpm / 60)


def _machines(api: Api) -> list[tuple[object, object, object]]:
    from spinline.core.site import iter_machines

    rec = api.cloud.meta.mill(MILL)
    assert rec is not None
    return list(iter_machines(rec.config))  # type: ignore[arg-type]


async def _alarm(api: Api, asset: str, ident: int, fault: str = "unknown", conf: float = 0.0) -> None:
    """The edge's alarm event (critical: the cloud opens a work order) with its weak diagnosis."""
    ts = time.time_ns() - 60 * 10**9
    ev = EdgeEvent(asset=asset, ts_ns=ts, kind="alarm_raised", severity="critical", model_version="local-x",
                   rule="anomaly", value=3.2, fault=fault, confidence=conf, evidence="unknown (confidence 0.00)",
                   alarm_key=f"{asset}:anomaly:{ts}", id=ident)
    body = wire.encode_events("edge-a", MILL, [ev], key=api.secrets["edge-a"].encode())
    r = await api.client.post(wire.EVENTS_PATH, content=body, headers={"Content-Type": wire.EVENTS_CONTENT_TYPE})
    assert r.status_code == 200, r.text


UNSURE = EdgeDiagnosis("unknown", 0.0)


def _upload(snap: RawSnapshot, ident: int, key: bytes, edge: str = "edge-a", said: EdgeDiagnosis = UNSURE) -> bytes:
    body = edge_encode(snap, "uncertain", edge, said)
    return wire.encode_snapshot_upload(edge, MILL, ident, body, key=key)


async def _order(api: Api, asset: str) -> dict[str, object]:
    h = await api.login("alice")
    r = await api.client.get(f"/api/v1/mills/{MILL}/maintenance/work-orders", headers=h)
    assert r.status_code == 200, r.text
    (row,) = [w for w in r.json() if w["asset"] == asset]
    r = await api.client.get(f"/api/v1/mills/{MILL}/maintenance/work-orders/{row['id']}", headers=h)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_uncertain_snapshot_gets_the_cloud_diagnosis_stored_noted_and_answered(api: Api) -> None:
    key = api.secrets["edge-a"].encode()
    await _alarm(api, ASSET, 1)
    before = await _order(api, "rf01/main_motor")
    assert before["fault"] == "unknown"

    snap = _fault_wave(api)
    r = await api.client.post(POST, content=_upload(snap, 7, key), headers=HDR)
    assert r.status_code == 200, r.text
    ans = r.json()
    assert ans["acked"] == [7] and wire.verify_ack(key, ans) is True
    (d,) = ans["diagnoses"]
    assert (d["asset"], d["snapshot"], d["fault"]) == (ASSET, 7, "bearing_outer") and d["confidence"] >= 0.9
    assert d["ts_ns"] == snap.ts_ns

    # the work order: a keyed system comment (both languages via the catalogues) and the fault updated,
    # the edge's "unknown" kept in the history
    wo = await _order(api, "rf01/main_motor")
    assert wo["fault"] == "bearing_outer"
    steps = wo["history"]
    note = next(s for s in steps if s["by"] == "cloud-model" and "cloud diagnosis" in s["comment"])
    (part,) = note["comment_lines"][0]["parts"]
    assert part["key"] == "wo.comment.cloud_diagnosis"
    assert part["params"]["fault"] == "bearing_outer" and part["params"]["edge_fault"] == "unknown"
    assert part["params"]["snapshot"] == "7" and part["params"]["edge"] == "edge-a"
    change = next(s for s in steps if s["comment"] == "diagnosis: unknown -> bearing_outer")
    assert change["by"] == "cloud-model" and change["comment_lines"][0]["parts"][0]["key"] == "wo.comment.diagnosis"

    # the latest-snapshot API shows both diagnoses
    h = await api.login("alice")
    r = await api.client.get(f"/api/v1/mills/{MILL}/machines/rf01/snapshots/latest", headers=h,
                             params={"max_points": 256})
    (ch,) = r.json()["channels"]
    assert ch["reason"] == "uncertain" and ch["edge_diagnosis"] == {"fault": "unknown", "confidence": 0.0}
    cd = ch["cloud_diagnosis"]
    assert cd["fault"] == "bearing_outer" and cd["work_order"] == wo["id"] and cd["fault_updated"] is True
    lo, hi = cd["band_hz"]
    assert lo <= 1200.0 <= hi                                  # the band that holds the resonance

    # handed over once: the next status answer has nothing
    st = wire.encode_status({"edge": "edge-a", "mill": MILL})
    r = await api.client.post(wire.STATUS_PATH, content=st, headers={
        "Content-Type": "application/json", "X-Spinline-Edge": "edge-a", "X-Spinline-Mill": MILL,
        wire.STATUS_SIGNATURE_HEADER: wire.sign_status(key, st)})
    assert r.status_code == 204, r.text
    # a re-send (the edge lost the ack, so perhaps the answer) is acked and answered again, not diagnosed or
    # noted again
    r = await api.client.post(POST, content=_upload(snap, 7, key), headers=HDR)
    assert r.json()["acked"] == [7] and r.json()["diagnoses"] == [d]
    wo2 = await _order(api, "rf01/main_motor")
    assert len(wo2["history"]) == len(steps)
    assert not api.cloud.store.rejections()


async def test_a_confident_same_answer_only_comments_and_an_early_snapshot_waits_for_its_order(api: Api) -> None:
    key = api.secrets["edge-a"].encode()
    asset = f"{MILL}/ca01/cylinder"
    # the snapshot comes first (the edge sends snapshots after live data): no order to note it on yet
    said = EdgeDiagnosis("bearing_outer", 0.52)
    r = await api.client.post(POST, content=_upload(_fault_wave(api, asset, rpm=500.0), 3, key, said=said),
                              headers=HDR)
    assert r.status_code == 200 and r.json()["diagnoses"][0]["fault"] == "bearing_outer"
    # the alarm arrives (the edge said bearing_outer, unsure): its order is opened, then the answer is noted
    await _alarm(api, asset, 2, fault="bearing_outer", conf=0.52)
    wo = await _order(api, "ca01/cylinder")
    assert wo["fault"] == "bearing_outer"
    notes = [s for s in wo["history"] if s["by"] == "cloud-model"]
    assert len(notes) == 1 and notes[0]["comment"].endswith("the edge said bearing_outer (confidence 0.52)")
    # an answer whose order never opened in time is given up: it does not land on a later episode's order
    opinion = api.cloud.evidence.opinion
    assert opinion is not None
    late = f"{MILL}/ca02/cylinder"
    r = await api.client.post(POST, content=_upload(_fault_wave(api, late, rpm=500.0), 4, key), headers=HDR)
    assert r.json()["diagnoses"][0]["fault"] == "bearing_outer"
    opinion.note_within_s = 0.0
    await _alarm(api, late, 3)
    wo = await _order(api, "ca02/cylinder")
    assert wo["fault"] == "unknown" and not [s for s in wo["history"] if s["by"] == "cloud-model"]


def _answers(key: bytes, edge: str) -> CloudAnswers:
    return CloudAnswers(key, edge, {ASSET}, lambda a: False)


async def test_round_trip_over_http_the_edge_receives_and_shows_the_signed_answer(
        api: Api, tmp_path: Path) -> None:
    from .test_evidence import _free_port

    secret = api.secrets["edge-a"].encode()
    buf = EdgeBuffer(tmp_path / "b.sqlite").open()
    keeper = EvidenceKeeper("edge-a", EvidenceSettings(samples_per_channel_per_day=0))
    fwd = Forwarder(AsyncBuffer(buf), edge="edge-a", mill=MILL, secret=secret, ack_timeout_s=2.0)
    answers = _answers(secret, "edge-a")
    fwd.on_diagnoses = answers.offer
    await _alarm(api, ASSET, 1)
    keeper.offer(_fault_wave(api))
    assert keeper.request_alarm(ASSET, "unknown", 0.0, diagnosed=True) == "uncertain"
    commit_snapshots(buf.db, keeper.take())
    async with _serve(api, _free_port()) as url:
        up = MeteredUplink(HttpUplink(url, edge="edge-a", mill=MILL, secret=secret, trust=fwd.trust), TrafficLedger())
        async with up:
            task = asyncio.create_task(fwd.run_session(up))
            try:   # the ack and the answer come in one HTTP answer, consumed by two tasks: wait for both
                await _until(lambda: answers.accepted == 1 and fwd.stats.snapshots_acked == 1, 20)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    got = answers.stats()["by_asset"][ASSET]
    assert got["fault"] == "bearing_outer" and got["snapshot"] == 1 and got["confidence"] >= 0.9
    assert fwd.stats.snapshots_acked == 1 and answers.stats()["refused"] == 0
    buf.close()


async def test_round_trip_over_mosquitto_and_a_forged_answer_is_refused(
        api: Api, tmp_path: Path, mqtt_broker: tuple[str, int]) -> None:
    import aiomqtt

    from spinline.cloud.ingest.mqtt_worker import IngestWorker
    from spinline.edge.uplink.mqtt import MqttUplink

    eid = f"e-{uuid.uuid4().hex[:8]}"        # unique: the broker is shared with other test runs
    secret = api.cloud.edges.create(edge_id=eid, mill=MILL, created_by="test")[1].encode()
    buf = EdgeBuffer(tmp_path / "b.sqlite").open()
    keeper = EvidenceKeeper(eid, EvidenceSettings(samples_per_channel_per_day=0))
    fwd = Forwarder(AsyncBuffer(buf), edge=eid, mill=MILL, secret=secret, ack_timeout_s=2.0)
    answers = _answers(secret, eid)
    fwd.on_diagnoses = answers.offer
    keeper.offer(_fault_wave(api))
    keeper.request_alarm(ASSET, "unknown", 0.0, diagnosed=True)
    commit_snapshots(buf.db, keeper.take())
    host, port = mqtt_broker
    worker = IngestWorker(api.cloud.ingest, host, port, group=f"g{uuid.uuid4().hex[:6]}",
                          evidence=api.cloud.evidence)
    with worker:
        up = MeteredUplink(MqttUplink(f"mqtt://{host}:{port}", edge=eid, mill=MILL, secret=secret,
                                      trust=fwd.trust), TrafficLedger())
        async with up:
            task = asyncio.create_task(fwd.run_session(up))
            try:
                await _until(lambda: answers.accepted == 1, 20)
                # someone on the broker forges a "confident" answer on the edge's requests topic
                forged = wire.sign_ack(b"not the edge secret" * 2, {"edge": eid, "requests": [], "diagnoses": [
                    {"asset": ASSET, "snapshot": 99, "fault": "imbalance", "confidence": 1.0}]})
                unsigned = {"edge": eid, "requests": [], "diagnoses": [
                    {"asset": ASSET, "snapshot": 98, "fault": "looseness", "confidence": 1.0}]}
                async with aiomqtt.Client(host, port) as c:
                    topic = wire.TOPIC_REQUESTS.format(mill=MILL, edge=eid)
                    for msg in (forged, unsigned):
                        await c.publish(topic, json.dumps(msg), qos=1)
                await _until(lambda: answers.stats()["refused"] == 2, 15)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    st = answers.stats()
    assert st["by_asset"][ASSET]["fault"] == "bearing_outer" and st["by_asset"][ASSET]["snapshot"] == 1
    assert st["refused_by_reason"]["bad_signature"] == 1 and st["refused_by_reason"]["unsigned"] == 1
    assert st["accepted"] == 1 and worker.stats.snapshots == 1
    (s,) = api.cloud.evidence.latest(MILL, "rf01")
    assert s.reason == "uncertain" and s.cloud_diagnosis is not None and s.cloud_diagnosis["fault"] == "bearing_outer"
    buf.close()


@pytest.mark.parametrize("bad", [{"fault": "", "confidence": 0.5}, {"fault": "x", "confidence": 2.0}, "unknown"])
async def test_a_malformed_edge_diagnosis_in_the_header_is_refused_for_good(api: Api, bad: object) -> None:
    key = api.secrets["edge-a"].encode()
    body = edge_encode(_fault_wave(api), "uncertain", "edge-a")
    head, _, rest = body.partition(b"\n")
    h = json.loads(head) | {"diagnosis": bad}
    up = wire.encode_snapshot_upload("edge-a", MILL, 5, json.dumps(h).encode() + b"\n" + rest, key=key)
    r = await api.client.post(POST, content=up, headers=HDR)
    assert r.status_code == 200 and r.json()["rejected"] == [{"id": 5, "reason": "malformed"}], r.text
