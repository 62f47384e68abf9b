"""Edge-side per-asset scoring: model slots, the scoring path, the events contract, and the real thing.

Unit tests run the connector's real featurisation (``VibrationMap.features``) on seeded synthetic
snapshots (``spinline.health.synthetic``) of examples/mill.yaml's rf01 motor bearing; the
integration test runs the simulated mill (``SimServer``, a progressive outer-race fault on rf01)
through the real edge agent and the machine's Mosquitto, with a minimal cloud that verifies and
acks the events on the contract's topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
import yaml

from spinline.connectors.mqtt.vibration import VIB_TOPIC, VibrationMap
from spinline.core import wire
from spinline.core.batch import Batch, Quality
from spinline.core.errors import PayloadError
from spinline.core.site import Fault, FaultType, Machine, Site, iter_machines, load_site, parse_site, point_key, rebind
from spinline.edge.agent import BUFFER_FILE, EdgeAgent
from spinline.edge.buffer import EdgeBuffer
from spinline.edge.models import MODELS_DIR, ModelRecord, ModelRejected, ModelSlot, slot_filename
from spinline.edge.scoring import EdgeScoring, ScoringConfig
from spinline.edge.scoring_stage import ScoringStage
from spinline.edge.settings import EdgeSettings
from spinline.health.features import featurize
from spinline.health.synthetic import snapshot
from spinline.sim.mqtt_publisher import vibration_payload
from spinline.sim.server import SimServer

S = 1_000_000_000
SECRET = b"scoring-test-secret"
SHAFT_HZ = 1480 / 60.0


def _rf01(mill_yaml: Path) -> tuple[Site, Machine]:
    site = load_site(mill_yaml)
    m = next(m for _, _, m in iter_machines(site.mills[0]) if m.id == "rf01")
    return site, m


class Feed:
    """rf01's vibration channel: synthetic snapshots -> the connector's features (+ the scorer's)."""

    def __init__(self, mill_yaml: Path, data_dir: Path, commissioning_n: int = 24) -> None:
        site, self.machine = _rf01(mill_yaml)
        self.mill = site.mills[0].id
        self.scoring = EdgeScoring(self.mill, [self.machine], {"rf01": "II"}, data_dir,
                                   ScoringConfig(commissioning_n=commissioning_n))
        # The agent's wiring: the connector's features go to the scoring stage, its scores join them.
        self.scored: list[Batch] = []
        self.stage = ScoringStage(self.scoring, self.mill, self.scored.append)
        self.vib = VibrationMap(self.mill, [self.machine], {"rf01": "II"}, featurizer=featurize,
                                sink=self.stage.submit)
        self.topic = VIB_TOPIC.format(mill=self.mill, machine="rf01", channel="main_motor")
        self.bearing = self.machine.bearings[0]
        self.t_ns = 1_790_000_000 * S
        self.i = 0

    def key(self, feature: str) -> int:
        return point_key(f"{self.mill}/rf01/vib_main_motor_{feature}")

    def step(self, fault: str | None = None, severity: float = 0.0, rpm: float = 1480.0) -> dict[str, float]:
        self.i += 1
        self.t_ns += 60 * S
        x = snapshot(shaft_hz=rpm / 60.0, bearing=self.bearing, fault=fault, severity=severity, seed=self.i)
        b = self.vib.features(self.topic, vibration_payload(self.t_ns // 1_000_000, x.astype(np.float32), 25600.0,
                                                            rpm), 0)
        self.stage.drain()
        b = Batch.concat([b, *self.scored])
        self.scored.clear()
        assert (b.ts_ns == self.t_ns).all()   # model outputs carry the snapshot's timestamp
        names = ("anomaly_score", "health_index", "rms_g")
        return {n: float(b.value[b.point == self.key(n)][0]) for n in names if (b.point == self.key(n)).any()}


# --- model slot -----------------------------------------------------------------------------------

def test_model_slot_persists_atomically_and_sets_aside_a_corrupt_file(tmp_path: Path) -> None:
    slot = ModelSlot("m/rf01/main_motor", tmp_path)
    assert slot.load() is None and slot.version is None
    rec = ModelRecord(asset="m/rf01/main_motor", kind="asset_monitor/mahalanobis", version="v1",
                      params={"rows": [{"a": 1.0, "b": math.nan}]})
    slot.save(rec)
    assert not list(tmp_path.glob(".*.tmp")), "no temp file left behind"
    again = ModelSlot("m/rf01/main_motor", tmp_path)
    got = again.load()
    assert got is not None and got.version == "v1" and math.isnan(got.params["rows"][0]["b"])
    # A torn or foreign file is set aside (kept for inspection), and the asset starts commissioning again.
    (tmp_path / slot_filename("m/rf01/main_motor")).write_text('{"record_version": 1, "asset": "m/rf01/main_mo')
    assert ModelSlot("m/rf01/main_motor", tmp_path).load() is None
    assert len(list(tmp_path.glob("*.bad-*"))) == 1
    with pytest.raises(ValueError, match="slot of"):
        slot.save(ModelRecord(asset="other", kind="k", version="v", params={}))


def test_scoring_commissions_freezes_and_a_restart_keeps_the_baseline(mill_yaml: Path, tmp_path: Path) -> None:
    feed = Feed(mill_yaml, tmp_path, commissioning_n=24)
    # Commissioning: the score is NaN (no baseline yet), the health index comes from velocity alone.
    for _ in range(10):
        out = feed.step()
        assert math.isnan(out["anomaly_score"]) and 0 < out["health_index"] <= 100
    feed.scoring.persist()
    # kill -9 mid-commissioning: a new process goes on counting from the saved rows.
    feed2 = Feed(mill_yaml, tmp_path, commissioning_n=24)
    feed2.i, feed2.t_ns = feed.i, feed.t_ns
    feed2.scoring.load()
    asset = feed2.scoring.assets[("rf01", "main_motor")]
    assert asset.state == "commissioning" and len(asset.rows) == 10
    for _ in range(14):
        assert math.isnan(feed2.step()["anomaly_score"])
    assert asset.state == "frozen" and asset.version.startswith("local-")
    events = feed2.scoring.take_events()
    assert [e.kind for e in events] == ["model_commissioned"] and events[0].model_version == asset.version
    healthy = [feed2.step() for _ in range(20)]
    scores = np.array([h["anomaly_score"] for h in healthy])
    assert np.isfinite(scores).all() and np.median(scores) < 0.8 and (scores < 1.0).mean() >= 0.9, scores
    assert min(h["health_index"] for h in healthy) >= 70
    assert feed2.scoring.take_versions() == {asset.asset: asset.version}
    feed2.scoring.persist()
    files = list((tmp_path / MODELS_DIR).glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["state"] == "frozen"

    # Restart after commissioning: the frozen model loads and scores the very first snapshot.
    feed3 = Feed(mill_yaml, tmp_path, commissioning_n=24)
    feed3.i, feed3.t_ns = feed2.i, feed2.t_ns
    feed3.scoring.load()
    first = feed3.step()
    assert math.isfinite(first["anomaly_score"]) and first["anomaly_score"] < 1.5
    assert feed3.scoring.assets[("rf01", "main_motor")].version == asset.version
    assert feed3.scoring.take_events() == []      # no re-commissioning
    # A stopped machine is neither scored nor learned from.
    assert "anomaly_score" not in feed3.step(rpm=0.0)


def test_outer_race_fault_raises_an_alarm_with_diagnosis_then_clears(mill_yaml: Path, tmp_path: Path) -> None:
    feed = Feed(mill_yaml, tmp_path, commissioning_n=24)
    for _ in range(24):
        feed.step()
    base = [feed.step() for _ in range(10)]
    feed.scoring.take_events()
    ramp = [feed.step("bearing_outer", s) for s in np.linspace(0.05, 1.0, 16)]
    assert ramp[-1]["anomaly_score"] > 4 * max(b["anomaly_score"] for b in base)
    assert ramp[-1]["health_index"] < min(b["health_index"] for b in base) - 20
    raised = [e for e in feed.scoring.take_events() if e.kind == "alarm_raised"]
    assert raised, "no alarm raised by a developing outer-race fault"
    anomaly = next(e for e in raised if e.rule == "anomaly")
    assert anomaly.fault == "bearing_outer" and anomaly.confidence is not None and anomaly.confidence >= 0.5
    assert "BPFO" in anomaly.evidence and anomaly.asset == f"{feed.mill}/rf01/main_motor"
    assert anomaly.severity == "warning" and anomaly.model_version.startswith("local-")
    # Repaired (healthy again): the alarm clears, and the clear names the alarm it ends.
    for _ in range(8):
        feed.step()
    cleared = [e for e in feed.scoring.take_events() if e.kind == "alarm_cleared"]
    assert anomaly.alarm_key in {e.alarm_key for e in cleared}


def test_registry_replace_verifies_validates_and_swaps_the_model(mill_yaml: Path, tmp_path: Path) -> None:
    donor = Feed(mill_yaml, tmp_path / "donor")
    for _ in range(24):
        donor.step()
    donor.scoring.persist()
    trained = donor.scoring.assets[("rf01", "main_motor")].slot.record
    assert trained is not None

    class Refuse:
        def verify(self, record: ModelRecord) -> None:
            if record.signature != "good":
                raise ModelRejected("bad signature")

    feed = Feed(mill_yaml, tmp_path / "edge")
    asset = feed.scoring.assets[("rf01", "main_motor")]
    asset.slot.verifier = Refuse()
    assert math.isnan(feed.step()["anomaly_score"])          # commissioning
    with pytest.raises(ModelRejected, match="signature"):
        feed.scoring.replace("rf01", "main_motor", "fleet-7", trained.params, signature="forged")
    with pytest.raises(ModelRejected, match="does not load"):
        feed.scoring.replace("rf01", "main_motor", "fleet-7", {"detector": {"kind": "nope"}}, signature="good")
    assert not (tmp_path / "edge" / MODELS_DIR).exists(), "a refused model must not be written"
    rec = feed.scoring.replace("rf01", "main_motor", "fleet-7", trained.params, signature="good")
    assert rec.source == "registry" and rec.version == "fleet-7"
    out = feed.step()                                         # swapped on the next snapshot: scores at once
    assert math.isfinite(out["anomaly_score"]) and asset.version == "fleet-7"
    assert [e.kind for e in feed.scoring.take_events()] == ["model_replaced"]
    again = ModelSlot(asset.asset, tmp_path / "edge" / MODELS_DIR).load()
    assert again is not None and again.version == "fleet-7" and again.signature == "good"


# --- events: wire contract and buffer --------------------------------------------------------------

def _event(i: int = 0, **kw: Any) -> wire.EdgeEvent:
    d: dict[str, Any] = {"asset": "m/rf01/main_motor", "ts_ns": 1_790_000_000 * S + i, "kind": "alarm_raised",
                         "severity": "warning", "model_version": "local-abc", "rule": "anomaly", "value": 3.2,
                         "fault": "bearing_outer", "confidence": 0.8, "evidence": "BPFO line\nkurtosis 4",
                         "alarm_key": f"m/rf01/main_motor:anomaly:{i}"}
    d.update(kw)
    return wire.EdgeEvent(**d)


def test_events_wire_roundtrip_signature_and_validation() -> None:
    evs = [_event(1, id=7), _event(2, id=8, kind="alarm_cleared", value=math.nan, fault=None, confidence=None)]
    data = wire.encode_events("e1", "m", evs, key=SECRET)
    got = wire.decode_events(data, key_lookup=lambda e: SECRET if e == "e1" else None)
    assert got.edge == "e1" and got.mill == "m" and got.events[0] == evs[0]
    assert got.events[1].value is None and got.events[1].evidence == evs[1].evidence
    with pytest.raises(PayloadError) as bad:
        wire.decode_events(data.replace(b"bearing_outer", b"bearing_inner"), key_lookup=lambda e: SECRET)
    assert bad.value.reason == "unauthorised"
    with pytest.raises(PayloadError, match="unauthorised"):
        wire.decode_events(wire.encode_events("e1", "m", evs), key_lookup=lambda e: SECRET)   # unsigned
    with pytest.raises(PayloadError, match="unauthorised"):
        wire.decode_events(data, key_lookup=lambda e: None)                                  # unknown edge
    assert wire.decode_events(wire.encode_events("e1", "m", evs)).events == got.events      # auth off
    bad_kind = json.dumps({"v": 1, "edge": "e1", "mill": "m", "events": [{**evs[0].to_dict(), "kind": "x"}]})
    with pytest.raises(PayloadError, match="malformed"):
        wire.decode_events(bad_kind.encode())
    with pytest.raises(PayloadError, match="unsupported_version"):
        wire.decode_events(b'{"v": 2, "edge": "e1", "mill": "m", "events": []}')
    ack = wire.EventsAck(acked=(7, 8), rejected=((9, "malformed"),))
    assert wire.decode_events_ack(wire.encode_events_ack(ack)) == ack
    with pytest.raises(PayloadError):
        wire.decode_events_ack(b'{"acked": ["x"]}')


def test_buffer_events_are_durable_acked_rejected_and_bounded(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with EdgeBuffer(path, max_events=5) as buf:
        stored = buf.append_events([_event(i) for i in range(3)])
        assert [e.id for e in stored] == [1, 2, 3]
    with EdgeBuffer(path, max_events=5) as buf:             # reopened: still there, ids never reused
        assert [e.id for e in buf.pending_events()] == [1, 2, 3] and buf.stats().events == 3
        assert buf.pending_events()[0] == stored[0]
        assert buf.ack_events([1, 99]) == 1
        assert buf.reject_events([(2, "malformed")]) == 1
        more = buf.append_events([_event(10 + i) for i in range(6)])
        assert more[0].id == 4
        st = buf.stats()
        assert st.events == 5 and st.dropped_events == 2 and st.dead_events == 1   # over max: oldest dropped, counted
        assert [e.id for e in buf.pending_events(limit=2)] == [5, 6]
        assert buf.db.execute("SELECT reason FROM dead_events WHERE id = 2").fetchone()[0] == "malformed"


# --- integration: simulator -> MQTT -> edge agent -> events to a cloud that acks ---------------------

def _sim_site(mill_yaml: Path) -> tuple[Site, str]:
    """examples/mill.yaml cut down to ring frame rf01 (Modbus + a vibration channel), snapshots every 2 s."""
    doc: dict[str, Any] = yaml.safe_load(mill_yaml.read_text())
    mill_id = f"sc-{uuid.uuid4().hex[:8]}"
    mill = doc["mills"][0]
    mill["id"] = mill_id
    ws = next(w for w in mill["workshops"] if w["id"] == "spinning")
    line = next(ln for ln in ws["lines"] if ln["id"] == "ring-c32")
    line["machines"] = [m for m in line["machines"] if m["id"] == "rf01"]
    line["machines"][0]["vibration"]["every_s"] = 2.0
    ws["lines"], mill["workshops"], doc["mills"] = [line], [ws], [mill]
    mill["faults"] = []           # the example's schedule names machines cut away here; the test injects its own
    return parse_site(doc), mill_id


class EventsCloud:
    """The cloud side of the events contract: verify, keep once per (edge, id), ack on TOPIC_EVENTS_ACK."""

    def __init__(self, host: str, port: int, mill: str) -> None:
        self.host, self.port, self.mill = host, port, mill
        self.events: dict[tuple[str, int], wire.EdgeEvent] = {}
        self.refused = 0
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with aiomqtt.Client(self.host, self.port, identifier=f"sc-cloud-{uuid.uuid4().hex[:8]}") as c:
            await c.subscribe(wire.TOPIC_EVENTS.format(mill=self.mill, edge="+"), qos=1)
            self.ready.set()
            async for msg in c.messages:
                data = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
                try:
                    p = wire.decode_events(data, key_lookup=lambda e: SECRET if e == "sc" else None)
                except PayloadError:
                    self.refused += 1
                    continue
                for e in p.events:
                    self.events.setdefault((p.edge, e.id), e)
                await c.publish(wire.TOPIC_EVENTS_ACK.format(mill=p.mill, edge=p.edge),
                                wire.encode_events_ack(wire.EventsAck(acked=tuple(e.id for e in p.events))), qos=1)

    def of(self, kind: str) -> list[wire.EdgeEvent]:
        return [e for e in self.events.values() if e.kind == kind]


async def test_sim_outer_race_fault_scored_alarmed_and_sent_through_the_real_edge(
        mill_yaml: Path, mqtt_broker: tuple[str, int], tmp_path: Path) -> None:
    site, mill_id = _sim_site(mill_yaml)
    host, port = mqtt_broker
    cloud = EventsCloud(host, port, mill_id)
    cloud_task = asyncio.create_task(cloud.run())
    await asyncio.wait_for(cloud.ready.wait(), 10)
    # 20x speed, a tick (one snapshot) every 0.1 s: 24 commissioning snapshots ~ 50 sim-s, healthy until 110 s,
    # then an outer-race defect growing to failure over 200 s.
    fault = Fault(machine="rf01", type=FaultType.BEARING_OUTER, start_s=110.0, ramp_s=200.0, severity=1.0)
    data = tmp_path / "edge"
    try:
        async with SimServer(site, mill_id, speed=20.0, tick_s=0.1, ephemeral=True, mqtt=(host, port),
                             faults=[fault], seed=5) as sim:
            onset_ns = sim.sim.faults.ground_truth[0].onset_ns
            agent = EdgeAgent(rebind(site, sim.ports), mill_id, EdgeSettings(
                edge_id="sc", secret=SECRET, data_dir=data, cloud_url=f"mqtt://{host}:{port}",
                device_mqtt=f"mqtt://{host}:{port}", flush_s=0.2,
                max_clock_skew_s=3600.0,    # the simulator's clock runs 20x
                ack_timeout_s=3.0, scoring=ScoringConfig(commissioning_n=24)))
            async with agent:
                deadline = time.monotonic() + 45
                while time.monotonic() < deadline and not (
                        any(e.fault == "bearing_outer" for e in cloud.of("alarm_raised"))
                        and sim.sim.t_s > fault.start_s + 0.5 * fault.ramp_s):
                    await asyncio.sleep(0.5)
                await asyncio.sleep(1.5)            # last flush + event acks
                status = await agent.status()
                uplink = agent.forwarder.stats.as_dict()
    finally:
        cloud_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await cloud_task

    asset = f"{mill_id}/rf01/main_motor"
    # Events: commissioning, then an alarm diagnosed as an outer-race defect, verified and acked by the cloud.
    commissioned = cloud.of("model_commissioned")
    assert len(commissioned) == 1 and commissioned[0].asset == asset, cloud.events
    version = commissioned[0].model_version
    alarms = [e for e in cloud.of("alarm_raised") if e.fault == "bearing_outer"]
    seen = [(e.kind, e.rule, e.fault) for e in cloud.events.values()]
    assert alarms, f"no outer-race alarm reached the cloud: {seen}"
    a = alarms[0]
    assert a.ts_ns >= onset_ns and a.model_version == version and "BPFO" in a.evidence, a
    assert cloud.refused == 0 and uplink["events_acked"] >= 2
    assert status["models"][asset]["version"] == version and status["buffer"]["events"] == 0

    with EdgeBuffer(data / BUFFER_FILE) as buf:
        assert buf.pending_events() == [], "acked events must have left the edge buffer"
        stored = buf.read(limit=100_000)
    rows = {k: [] for k in ("anomaly_score", "health_index", "rms_g")}
    metas = [sb.meta.get("models", {}) for sb in stored]
    for sb in stored:
        for name, out in rows.items():
            sel = sb.batch.point == point_key(f"{mill_id}/rf01/vib_main_motor_{name}")
            out += list(zip(sb.batch.ts_ns[sel].tolist(), sb.batch.value[sel].tolist(),
                            sb.batch.quality[sel].tolist(), strict=True))
    score = sorted(rows["anomaly_score"])
    health = dict((t, v) for t, v, _ in rows["health_index"])
    assert {t for t, _, _ in score} <= {t for t, _, _ in rows["rms_g"]}, "scores share their snapshot's timestamp"
    learning = [s for s in score if math.isnan(s[1])]
    assert len(learning) >= 20 and all(q == Quality.BAD for _, _, q in learning)
    scored = [(t, v) for t, v, _ in score if math.isfinite(v)]
    before = np.array([v for t, v in scored if t < onset_ns])
    after = [(t, v) for t, v in scored if t >= onset_ns]
    assert len(before) >= 10 and len(after) >= 20, (len(before), len(after))
    assert np.median(before) < 0.8 and (before < 1.0).mean() >= 0.9, before
    hi_before = np.array([health[t] for t, v in scored if t < onset_ns])
    assert hi_before.min() >= 60, hi_before
    late = np.array([v for _, v in after[-8:]])
    hi_late = np.array([health[t] for t, _ in after[-8:]])
    assert np.median(late) > 3.0 and np.median(late) > 5 * np.median(before), late
    assert np.median(hi_late) < np.median(hi_before) - 20, (hi_before, hi_late)
    assert any(m.get(asset) == version for m in metas), "the model version travels in the batches' meta"
    print(f"\nscoring sim: {len(learning)} commissioning snapshots, healthy score median {np.median(before):.2f} "
          f"(health {np.median(hi_before):.0f}), late score median {np.median(late):.1f} "
          f"(health {np.median(hi_late):.0f}); alarm at +{(a.ts_ns - onset_ns) / S:.0f} sim-s: "
          f"{a.evidence.splitlines()[1].strip()}")


async def test_http_uplink_events_ack_and_a_cloud_without_the_route(tmp_path: Path) -> None:
    """Logic around the HTTP boundary (MockTransport): 200 -> ack; 404 (old cloud) -> kept, session lives on."""
    import httpx

    from spinline.edge.uplink.http import HttpUplink

    seen: list[httpx.Request] = []
    route = {"exists": False}

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        if req.url.path != wire.EVENTS_PATH or not route["exists"]:
            return httpx.Response(404, json={"detail": "Not Found"})
        p = wire.decode_events(req.content, key_lookup=lambda e: SECRET)
        return httpx.Response(200, content=wire.encode_events_ack(wire.EventsAck(tuple(e.id for e in p.events))))

    payload = wire.encode_events("sc", "m", [_event(1, id=1), _event(2, id=2)], key=SECRET)
    async with HttpUplink("http://cloud.invalid", edge="sc", mill="m", secret=SECRET) as up:
        assert up._client is not None
        await up._client.aclose()
        up._client = httpx.AsyncClient(base_url=up.base, transport=httpx.MockTransport(handler))
        await up.send_events(payload)
        assert up.event_acks.empty() and not up.closed.done()
        route["exists"] = True
        await up.send_events(payload)
        assert up.event_acks.get_nowait() == wire.EventsAck(acked=(1, 2))
    assert seen[-1].headers["content-type"] == wire.EVENTS_CONTENT_TYPE


def test_open_alarms_survive_a_restart_no_new_raise_and_the_clear_names_the_old_alarm(
        mill_yaml: Path, tmp_path: Path) -> None:
    feed = Feed(mill_yaml, tmp_path, commissioning_n=24)
    for _ in range(34):
        feed.step()
    feed.scoring.take_events()
    for s in np.linspace(0.05, 1.0, 16):
        feed.step("bearing_outer", s)
    raised = [e for e in feed.scoring.take_events() if e.kind == "alarm_raised"]
    assert raised, "no alarm raised by a developing outer-race fault"
    asset = feed.scoring.assets[("rf01", "main_motor")]
    assert asset.alarms_dirty
    feed.scoring.persist()
    alarm_files = list((tmp_path / MODELS_DIR).glob("*.alarms"))
    assert len(alarm_files) == 1 and not asset.alarms_dirty
    assert {r for r, v in json.loads(alarm_files[0].read_text())["rules"].items() if v["alarm"]} == \
        {e.rule for e in raised}

    # kill -9 and restart with the fault still present: nothing new is raised.
    feed2 = Feed(mill_yaml, tmp_path, commissioning_n=24)
    feed2.i, feed2.t_ns = feed.i, feed.t_ns
    feed2.scoring.load()
    asset2 = feed2.scoring.assets[("rf01", "main_motor")]
    assert sorted(a.rule for a in asset2.engine.open_alarms(asset2.asset)) == sorted(e.rule for e in raised)
    assert feed2.scoring.snapshot()[asset2.asset]["open_alarms"]
    for _ in range(6):
        feed2.step("bearing_outer", 1.0)
    assert [e for e in feed2.scoring.take_events() if e.kind == "alarm_raised"] == []
    # Repaired after the restart: the clear carries the key of the alarm raised before it.
    for _ in range(8):
        feed2.step()
    cleared = {e.alarm_key for e in feed2.scoring.take_events() if e.kind == "alarm_cleared"}
    anomaly = next(e for e in raised if e.rule == "anomaly")
    assert anomaly.alarm_key in cleared
    feed2.scoring.persist()
    assert not any(v["alarm"] for v in json.loads(alarm_files[0].read_text())["rules"].values())
    st = feed2.scoring.snapshot()[asset2.asset]
    assert st["health_index"] is not None and st["version"] == asset2.version and st["open_alarms"] == []


def test_an_unusable_alarm_state_file_is_set_aside(mill_yaml: Path, tmp_path: Path) -> None:
    feed = Feed(mill_yaml, tmp_path)
    asset = feed.scoring.assets[("rf01", "main_motor")]
    asset.alarms_path.parent.mkdir(parents=True)
    asset.alarms_path.write_text("{half a file")
    feed.scoring.load()
    assert asset.engine.open_alarms() == [] and not asset.alarms_path.exists()
    assert list(asset.alarms_path.parent.glob("*.alarms.bad-*"))
