"""The edge agent against the real simulated mill: every connector kind, device failure and recovery.

``SimServer`` serves examples/mill.yaml (a private mill id, so parallel tests on the shared broker
never see each other's topics) on ephemeral Modbus and OPC UA ports and publishes the winders'
JSON and the vibration snapshots on the machine's Mosquitto. One in-process ``EdgeAgent`` (no
cloud: everything stays in its buffer, which the test then reads) collects from all of it.

Checked against the simulator's own values, recorded tick by tick:

* Modbus ring frames (f32/f64/u16/u32, big-endian) and meters (word order little) and compressors
  (u16 x 0.01 bar, u32 x 0.001 kWh): every value the edge stored is one the simulator served;
* OPC UA preparation machines and MQTT JSON winders: the same, and their rows carry the device's
  (simulated) timestamps;
* physical consistency from the edge's data alone: em-ring power = the ring frames' power + 0.8 %
  losses; a ring frame's spindle speed matches MillSim;
* vibration snapshots become feature rows whose RMS, peak and crest equal those of the waveform
  the simulator published (the test subscribes to it too);
* stopping the ring frames' Modbus port and the OPC UA server makes their ``link_state`` points
  go down (2) and then up (0) after ``start_port``, ``link_errors`` rise, the meters on the other
  port stay up, and every poller keeps polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import yaml

from spinline.connectors.base import LinkState
from spinline.connectors.mqtt.vibration import parse_snapshot
from spinline.core.batch import Batch, Quality
from spinline.core.site import (
    DataType,
    ModbusLink,
    MqttLink,
    OpcUaLink,
    PointRef,
    Site,
    derived_points,
    iter_machines,
    parse_site,
    point_key,
    rebind,
)
from spinline.edge.agent import BUFFER_FILE, EdgeAgent
from spinline.edge.buffer import EdgeBuffer
from spinline.edge.settings import EdgeSettings
from spinline.sim.server import SimServer

S = 1_000_000_000
INTEGER_TYPES = {DataType.UINT16, DataType.INT16, DataType.UINT32, DataType.INT32, DataType.UINT64,
                 DataType.INT64, DataType.BOOL}
RING_PORT, METER_PORT, OPCUA_PORT = 5020, 5021, 4840


def _site(mill_yaml: Path) -> tuple[Site, str]:
    """examples/mill.yaml with a private mill id and vibration snapshots every 2 s (not 300 s)."""
    doc: dict[str, Any] = yaml.safe_load(mill_yaml.read_text())
    mill_id = f"it-{uuid.uuid4().hex[:8]}"
    doc["mills"] = doc["mills"][:1]
    doc["mills"][0]["id"] = mill_id
    for ws in doc["mills"][0]["workshops"]:
        for line in ws["lines"]:
            for m in line["machines"]:
                if "vibration" in m:
                    m["vibration"]["every_s"] = 2.0
    return parse_site(doc), mill_id


class Recorder:
    """Every value and timestamp the simulator served (sampled in its own event loop)."""

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.ts: list[int] = []
        self.values: list[np.ndarray] = []

    def record(self) -> None:
        sim = self.server.sim
        if not self.ts or sim.last_ts_ns != self.ts[-1]:
            self.ts.append(sim.last_ts_ns)
            self.values.append(sim.last_values.copy())

    async def run(self) -> None:
        while True:
            self.record()
            await asyncio.sleep(0.05)


async def _snapshots(host: str, port: int, mill: str, out: dict[tuple[str, int], bytes],
                     ready: asyncio.Event) -> None:
    async with aiomqtt.Client(host, port, identifier=f"it-vib-{uuid.uuid4().hex[:8]}") as c:
        await c.subscribe(f"spinline/{mill}/+/vibration/+", qos=0)
        ready.set()
        async for msg in c.messages:
            payload = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
            out[(str(msg.topic), int(json.loads(payload)["ts"]))] = payload


def _rows(data_dir: Path) -> Batch:
    with EdgeBuffer(data_dir / BUFFER_FILE) as buf:
        return Batch.concat([sb.batch for sb in buf.read(limit=1_000_000)])


def _served_tolerance(ref: PointRef, v: np.ndarray) -> np.ndarray:
    """How far a decoded value may sit from the simulator's float64 value (the wire type's resolution)."""
    link = ref.machine.link
    if isinstance(link, MqttLink):
        return np.maximum(1e-9 * np.abs(v), 1e-12)           # JSON carries the float64 itself
    scale = ref.point.modbus.scale if isinstance(link, ModbusLink) and ref.point.modbus else 1.0
    if ref.point.dtype in INTEGER_TYPES:
        return np.full(len(v), 0.5 * abs(scale) + 1e-9)
    if ref.point.dtype == DataType.FLOAT64:
        return np.maximum(1e-12 * np.abs(v), 1e-12)
    return np.maximum(1e-6 * np.abs(v), 1e-9)               # float32


async def test_edge_collects_every_connector_kind_from_the_simulated_mill(
        mill_yaml: Path, mqtt_broker: tuple[str, int], tmp_path: Path) -> None:
    site, mill_id = _site(mill_yaml)
    host, port = mqtt_broker
    snaps: dict[tuple[str, int], bytes] = {}
    ready = asyncio.Event()
    listener = asyncio.create_task(_snapshots(host, port, mill_id, snaps, ready))
    await asyncio.wait_for(ready.wait(), 10)
    events: dict[str, int] = {}
    try:
        async with SimServer(site, mill_id, speed=1.0, ephemeral=True, mqtt=(host, port)) as sim:
            rec = Recorder(sim)
            rec.record()
            recording = asyncio.create_task(rec.run())
            edge_site = rebind(site, sim.ports)
            agent = EdgeAgent(edge_site, mill_id, EdgeSettings(edge_id="it", secret=None, data_dir=tmp_path / "edge",
                                                               cloud_url=None, device_mqtt=f"mqtt://{host}:{port}",
                                                               flush_s=0.2))
            async with agent:
                events["edge_start"] = time.time_ns()
                await asyncio.sleep(8.0)
                polls_before = {c.name: c.polls for c in agent.pollers}
                events["stop"] = time.time_ns()
                await sim.stop_port(RING_PORT)
                await sim.stop_port(OPCUA_PORT)
                await asyncio.sleep(4.0)
                healths = agent.healths()
                down_during = {m: h.state for m, h in healths.items()}
                events["start"] = time.time_ns()
                await sim.start_port(RING_PORT)
                await sim.start_port(OPCUA_PORT)
                deadline = time.monotonic() + 25
                while time.monotonic() < deadline and any(h.state != LinkState.UP for h in agent.healths().values()):
                    await asyncio.sleep(0.25)
                await asyncio.sleep(3.0)        # link points of the recovered state reach the buffer
                polls_after = {c.name: c.polls for c in agent.pollers}
                final_health = {m: (h.state, h.errors) for m, h in agent.healths().items()}
                events["end"] = time.time_ns()
            recording.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recording
            spindle_sim = sim.sim.value("rf01", "spindle_speed")
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await listener

    rows = _rows(tmp_path / "edge")
    by_key: dict[int, Batch] = {int(k): rows.take(rows.point == k) for k in np.unique(rows.point)}
    refs = site.points(mill_id)
    hist_v, hist_t = np.vstack(rec.values), np.asarray(rec.ts, dtype=np.int64)

    # --- every device point of every connector kind arrived, with the values the simulator served ---
    silent = [r.tag for r in refs if r.key not in by_key]
    assert not silent, f"{len(silent)} device points never arrived, e.g. {silent[:5]}"
    wrong: list[str] = []
    for col, ref in enumerate(refs):
        b = by_key[ref.key]
        good = np.isfinite(b.value) & (b.quality < Quality.BAD)
        v = b.value[good]
        served = np.unique(hist_v[:, col][np.isfinite(hist_v[:, col])])
        assert len(served), ref.tag
        i = np.clip(np.searchsorted(served, v), 1, max(1, len(served) - 1))
        near = np.minimum(np.abs(v - served[i - 1]), np.abs(v - served[np.minimum(i, len(served) - 1)]))
        if (near > _served_tolerance(ref, v)).any():
            wrong.append(f"{ref.tag}: {v[near > _served_tolerance(ref, v)][:3]} not in {served[:5]}...")
    assert not wrong, f"{len(wrong)} points hold values the simulator never served: {wrong[:5]}"
    kinds = {type(r.machine.link).__name__ for r in refs}
    assert kinds == {"ModbusLink", "OpcUaLink", "MqttLink"}

    # Device-stamped rows (OPC UA SourceTimestamp, MQTT "ts") carry the simulator's clock; Modbus rows the edge's.
    sim_ts = set(hist_t.tolist())
    sim_ms = {t // 1_000_000 * 1_000_000 for t in sim_ts}
    for ref in refs:
        ts = by_key[ref.key].ts_ns
        if isinstance(ref.machine.link, OpcUaLink):
            assert set(ts.tolist()) <= sim_ts, f"{ref.tag}: OPC UA rows not at the simulator's SourceTimestamps"
        elif isinstance(ref.machine.link, MqttLink):
            assert set(ts.tolist()) <= sim_ms, f"{ref.tag}: MQTT rows not at the payload's ts"
        else:
            assert ((ts >= events["edge_start"] - S) & (ts <= events["end"] + S)).all(), ref.tag

    # --- mutually consistent values, from the edge's data alone --------------------------------------
    def series(machine: str, point: str) -> Batch:
        return by_key[point_key(f"{mill_id}/{machine}/{point}")]

    def at(machine: str, point: str, t: np.ndarray) -> np.ndarray:
        b = series(machine, point)
        i = np.searchsorted(b.ts_ns, t, side="right") - 1
        return np.where(i >= 0, b.value[np.maximum(i, 0)], np.nan)

    frames = [f"rf{i:02d}" for i in range(1, 10)]
    meter = series("em-ring", "power")                   # deadband 0.2 kW: few rows, each within 0.2 kW
    ring_sum = np.sum([at(f, "power", meter.ts_ns) for f in frames], axis=0)
    ratio = meter.value / ring_sum
    assert len(ratio) >= 2 and np.all(np.abs(ratio - 1.008) < 0.02), \
        f"em-ring / sum(ring frames) power = {ratio} (expected 1.008 for 0.8 % losses)"
    # Energy counters (deadband 0, exact f64): align the edge's rows on the simulator tick they were read
    # in, then em-ring's energy is the ring frames' energy + 0.8 % at every tick where all were read.
    cols = {r.tag: c for c, r in enumerate(refs)}

    def by_tick(machine: str) -> dict[int, float]:
        col = hist_v[:, cols[f"{mill_id}/{machine}/energy"]]
        return {int(np.flatnonzero(col == v)[0]): v for v in series(machine, "energy").value.tolist()
                if (col == v).any()}

    meter_e, frame_e = by_tick("em-ring"), [by_tick(f) for f in frames]
    common = sorted(set(meter_e).intersection(*map(set, frame_e)))
    assert len(common) >= 5, f"only {len(common)} ticks where the meter and all ring frames were read"
    e_ratio = np.array([meter_e[t] / sum(f[t] for f in frame_e) for t in common])
    assert np.all(np.abs(e_ratio - 1.008) < 0.005), f"em-ring / sum(ring frames) energy per tick: {e_ratio}"
    spindle = series("rf01", "spindle_speed").value
    assert 10_000 < spindle[-1] < 25_000 and abs(spindle[-1] - spindle_sim) <= max(5.0, 0.01 * spindle_sim), \
        f"rf01 spindle_speed at the edge {spindle[-1]:.1f} vs MillSim {spindle_sim:.1f}"
    pressure = series("ac01", "pressure").value
    assert ((pressure > 5.0) & (pressure < 8.0)).all(), f"compressor pressure (u16 x 0.01 bar): {pressure}"
    winding = series("wd01", "winding_speed").value
    assert (winding >= 0).all() and (winding < 2000).all(), winding
    for m in ("ca01", "df01", "rv01", "wd01", "rf01", "ac01"):
        assert set(np.unique(series(m, "state").value).tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}, m

    # --- vibration snapshots -> features equal to the published waveform's ------------------------
    vib_rows = 0
    for _, _, machine in iter_machines(site.mill(mill_id)):
        if machine.vibration is None:
            continue
        for ch in machine.vibration.channels:
            rms = series(machine.id, f"vib_{ch.name}_rms_g")
            peak = series(machine.id, f"vib_{ch.name}_peak_g")
            crest = series(machine.id, f"vib_{ch.name}_crest")
            zone = series(machine.id, f"vib_{ch.name}_iso_zone")
            vel = series(machine.id, f"vib_{ch.name}_velocity_rms")
            assert len(rms) >= 2, f"{machine.id}/{ch.name}: {len(rms)} snapshots featurised"
            topic = f"spinline/{mill_id}/{machine.id}/vibration/{ch.name}"
            matched = 0
            for t, r in zip(rms.ts_ns.tolist(), rms.value.tolist(), strict=True):
                payload = snaps.get((topic, t // 1_000_000))
                if payload is None:
                    continue
                x = parse_snapshot(payload, 0).samples
                xc = x - x.mean()
                assert abs(r - float(np.sqrt(np.mean(xc * xc)))) <= 1e-6 + 1e-4 * r, f"{topic} rms"
                matched += 1
            assert matched >= 1, f"{topic}: no featurised snapshot matched a published one"
            assert np.allclose(crest.value, peak.value / rms.value, rtol=1e-6), topic
            assert set(np.unique(zone.value).tolist()) <= {0.0, 1.0, 2.0, 3.0}, topic
            assert ((vel.value > 0) & (vel.value < 50)).all(), f"{topic} velocity_rms {vel.value}"
            vib_rows += len(rms)
    assert vib_rows >= 10

    # --- link health: down while the port is stopped, up again after, the rest untouched --------------
    link_machines = {r.machine.id: r.machine.link for r in derived_points(site, mill_id)
                     if r.point.name == "link_state"}
    for mid in link_machines:
        for name in ("link_state", "link_errors", "link_latency_ms"):
            assert len(series(mid, name)) >= 5, f"{mid}/{name}: link health points did not arrive"
    ring_ids = [m for m, link in link_machines.items() if isinstance(link, ModbusLink) and link.port == RING_PORT]
    opc_ids = [m for m, link in link_machines.items() if isinstance(link, OpcUaLink)]
    other_ids = [m for m, link in link_machines.items() if isinstance(link, ModbusLink) and link.port == METER_PORT]
    assert len(ring_ids) == 9 and len(opc_ids) >= 15 and len(other_ids) == 7
    transitions: dict[str, list[float]] = defaultdict(list)
    for mid in ring_ids + opc_ids + other_ids:
        st = series(mid, "link_state")
        after = st.ts_ns >= events["edge_start"] + 2 * S
        for v in st.value[after].tolist():
            if not transitions[mid] or transitions[mid][-1] != v:
                transitions[mid].append(v)
    for mid in ring_ids + opc_ids:
        assert down_during[mid] == LinkState.DOWN, f"{mid}: {down_during[mid]!r} while its server was stopped"
        assert transitions[mid][-1] == 0.0 and 2.0 in transitions[mid], f"{mid}: link_state went {transitions[mid]}"
        errs = series(mid, "link_errors").value
        assert errs[-1] > errs[0], f"{mid}: link_errors did not rise"
        st, lat = series(mid, "link_state"), series(mid, "link_latency_ms")
        while_down = np.isin(lat.ts_ns, st.ts_ns[st.value == 2])   # one self-points batch: one timestamp
        assert while_down.any() and np.isnan(lat.value[while_down]).all(), f"{mid}: latency while down"
        assert final_health[mid][0] == LinkState.UP
    for mid in other_ids:
        assert transitions[mid] == [0.0], f"{mid} on the other port went {transitions[mid]}"
        ms = series(mid, "link_latency_ms").value[-5:]
        assert np.isfinite(ms).all() and (ms > 0).all() and (ms < 1000).all(), (mid, ms)
    # No poller died: each one kept polling after its device came back.
    for name, n in polls_after.items():
        assert n > polls_before[name] + 2, f"{name}: {polls_before[name]} -> {n} polls (poller stuck or dead)"
    # A recovered ring frame delivers fresh, served values again.
    fresh = series("rf01", "state").ts_ns
    assert (fresh > events["start"]).any(), "rf01 rows after the port came back"
    by_kind: dict[str, int] = defaultdict(int)
    for r in refs:
        by_kind[type(r.machine.link).__name__] += len(by_key[r.key])
    print(f"\nsim integration: {len(refs)} device points, rows {dict(by_kind)}, {vib_rows} vibration snapshots "
          f"featurised; em-ring/sum(ring) power {np.round(ratio, 4).tolist()}, energy over {len(common)} ticks "
          f"{e_ratio.min():.5f}..{e_ratio.max():.5f}; rf01 spindle {spindle[-1]:.0f} vs MillSim {spindle_sim:.0f} rpm; "
          f"link_state ring {transitions['rf01']}, opcua {transitions['ca01']}, meters {transitions['em-ring']}")
