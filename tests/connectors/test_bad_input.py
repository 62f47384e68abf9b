"""Bad input from devices, through real peers: each case is counted under a named cause, logged once per
device and cause, and the good data around it is still collected.

MQTT cases go through the machine's Mosquitto (``mqtt_broker``) to a real ``MqttConnector``; Modbus
through a pymodbus server (``peers.ModbusPeer``); OPC UA through an asyncua server; the range check
and the status JSON through a real ``EdgeAgent``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
from asyncua import Server, ua

from spinline.connectors.base import LinkState
from spinline.connectors.modbus.connector import ModbusConnector
from spinline.connectors.mqtt import sparkplug
from spinline.connectors.mqtt.connector import MqttConnector
from spinline.connectors.opcua.connector import OpcUaConnector
from spinline.core.batch import Batch, Quality
from spinline.core.site import parse_site, point_key
from spinline.edge.agent import BUFFER_FILE, EdgeAgent
from spinline.edge.buffer import EdgeBuffer
from spinline.edge.settings import EdgeSettings
from spinline.health.features import featurize

peers = import_module("spinline_test_peers")


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def rows(got: list[Batch]) -> list[tuple[int, int, float, int]]:
    b = Batch.concat(got) if got else Batch.empty()
    return list(zip(b.point.tolist(), b.ts_ns.tolist(), b.value.tolist(), b.quality.tolist(), strict=True))


def warnings_about(caplog: pytest.LogCaptureFixture, cause: str) -> int:
    return sum(1 for r in caplog.records if r.levelno == logging.WARNING and f"({cause})" in r.getMessage())


def mqtt_site(tag: str, snapshot_s: float = 1.0) -> Any:
    return parse_site({"mills": [{"id": tag, "workshops": [{"id": "w", "lines": [{"id": "l", "machines": [
        {"id": "wd01", "type": "winder", "link": {"protocol": "mqtt", "format": "json"}, "points": [
            {"name": "speed", "unit": "m/min"}, {"name": "power", "unit": "kW"},
            {"name": "running", "unit": "dimensionless", "dtype": "bool"}]},
        {"id": "sp01", "type": "winder", "link": {"protocol": "mqtt", "format": "sparkplug_b"}, "points": [
            {"name": "temp", "unit": "degC"}, {"name": "count", "unit": "event", "dtype": "int32"}]},
        {"id": "fan01", "type": "winder", "link": {"protocol": "mqtt", "format": "json"},
         "points": [{"name": "speed", "unit": "m/min"}],
         "vibration": {"fs_hz": 25600, "snapshot_s": snapshot_s,
                       "channels": [{"name": "motor", "shaft_rpm": 1480}]}}]}]}]}]})


class MqttRig:
    """A connector on the real broker and a device client publishing at QoS 1 (ordered)."""

    def __init__(self, host: str, port: int, snapshot_s: float = 1.0) -> None:
        self.host, self.port = host, port
        self.tag = f"b{time.time_ns() % 10**10}"
        self.site = mqtt_site(self.tag, snapshot_s)
        self.pts = {p.tag.split("/", 1)[1]: p for p in self.site.points(self.tag)}
        vib = [p.machine for p in self.pts.values() if p.machine.vibration is not None][:1]
        self.conn = MqttConnector(host, port, list(self.pts.values()), mill=self.tag, vibration_machines=vib,
                                  featurizer=featurize)
        self.got: list[Batch] = []
        self.dev: aiomqtt.Client | None = None
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MqttRig:
        self.task = asyncio.create_task(self.conn.run(self.got.append))
        self.dev = aiomqtt.Client(self.host, self.port)
        await self.dev.__aenter__()
        # Ready when a probe arrives (the connector subscribed): a fan01 telemetry message.
        probe = f"spinline/{self.tag}/fan01/telemetry"
        for i in range(100):
            await self.dev.publish(probe, json.dumps({"ts": 1_000_000 + i, "speed": 1.0}), qos=1)
            await asyncio.sleep(0.1)
            if self.got:
                break
        assert self.got, "the connector never received the probe"
        self.got.clear()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None and self.dev is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.dev.__aexit__(None, None, None)

    async def send(self, topic: str, payload: bytes | str) -> None:
        assert self.dev is not None
        await self.dev.publish(topic, payload, qos=1)

    def key(self, tag: str) -> int:
        return self.pts[tag].key

    def bad(self, machine: str) -> dict[str, int]:
        return self.conn.health_for(machine).bad_input


async def test_mqtt_json_bad_payloads_fields_sizes_and_timestamps_are_counted_and_named(
        mqtt_broker: tuple[str, int], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="spinline")
    async with MqttRig(*mqtt_broker) as rig:
        topic = rig.pts["wd01/speed"].mqtt_topic()
        t0 = int(time.time() * 1000) - 60_000
        good = json.dumps({"ts": t0, "speed": 1000.0, "power": 3.0, "running": True})
        await rig.send(topic, good)
        await rig.send(topic, b"{not json")                                   # json_invalid
        await rig.send(topic, b"{still not json")                             # ... logged once, counted twice
        await rig.send(topic, b"[1, 2, 3]")                                   # json_not_object
        await rig.send(topic, json.dumps({"ts": t0 + 1000, "speed": "fast", "power": 3.1}))      # field_not_number
        await rig.send(topic, f'{{"ts": {t0 + 2000}, "speed": NaN, "power": Infinity}}')         # field_not_finite
        await rig.send(topic, json.dumps({"ts": t0 + 3000, "speed": True, "power": 3.3}))        # bool for a number
        await rig.send(topic, json.dumps({"ts": "yesterday", "power": 3.4}))                     # bad_timestamp
        huge = json.dumps({"ts": t0 + 4000, "speed": 5.0, "pad": "x" * (1 << 20)})
        await rig.send(topic, huge)                                                              # message_too_large
        await rig.send(topic, good)                                           # re-sent: duplicate_ts, dropped
        await rig.send(topic, json.dumps({"ts": t0 - 5000, "speed": 900.0}))  # older: out_of_order_ts, kept
        await rig.send(f"spinline/{rig.tag}/ghost01/telemetry", json.dumps({"speed": 1.0}))   # unknown device
        await rig.send(f"spinline/{rig.tag}/ghost01/telemetry", json.dumps({"speed": 2.0}))
        last = {"ts": t0 + 10_000, "speed": 1100.0, "power": 3.5}
        await rig.send(topic, json.dumps(last))
        spd, pwr = rig.key("wd01/speed"), rig.key("wd01/power")
        await until(lambda: (spd, (t0 + 10_000) * 1_000_000, 1100.0, 0) in rows(rig.got))

        bad = rig.bad("wd01")
        assert bad == {"json_invalid": 2, "json_not_object": 1, "field_not_number": 2, "field_not_finite": 2,
                       "bad_timestamp": 1, "message_too_large": 1, "duplicate_ts": 3,
                       # the speed at t0-5s, and the last power (older than the bad-ts row stamped on receipt)
                       "out_of_order_ts": 2}, bad
        h = rig.conn.health_for("wd01")
        assert h.state == LinkState.UP and h.link_errors == sum(bad.values())
        snap = h.snapshot()
        assert snap["bad_input"] == dict(sorted(bad.items())) and "wd01" in h.name
        assert rig.conn.unknown_devices() == {"messages": 2,
                                              "topics": {f"spinline/{rig.tag}/ghost01/telemetry": 2}}
        # Each cause logged once, naming the device and the problem.
        for cause in bad:
            assert warnings_about(caplog, cause) == 1, cause
        assert warnings_about(caplog, "unknown_device") == 1
        msg = next(r.getMessage() for r in caplog.records if "(json_invalid)" in r.getMessage())
        assert "wd01" in msg and "not JSON" in msg

        got = rows(rig.got)
        ts = lambda ms: ms * 1_000_000  # noqa: E731
        # Good data in and around the bad messages is collected, once.
        assert got.count((spd, ts(t0), 1000.0, 0)) == 1 and (pwr, ts(t0), 3.0, 0) in got
        assert (rig.key("wd01/running"), ts(t0), 1.0, 0) in got           # a bool where a bool is expected
        assert (pwr, ts(t0 + 1000), 3.1, 0) in got and (pwr, ts(t0 + 3000), 3.3, 0) in got
        assert any(r[0] == pwr and r[2] == 3.4 for r in got)             # bad ts: receipt time, value kept
        assert (spd, ts(t0 - 5000), 900.0, 0) in got                     # late, but kept
        assert (pwr, ts(t0 + 10_000), 3.5, 0) in got
        # Bad fields are BAD rows with NaN (visible), not silent gaps.
        for t in (t0 + 1000, t0 + 2000, t0 + 3000):
            r = next(r for r in got if r[0] == spd and r[1] == ts(t))
            assert r[3] == Quality.BAD and np.isnan(r[2])
        assert not any(r[1] == ts(t0 + 4000) for r in got)               # the huge message: dropped whole


async def test_mqtt_sparkplug_garbage_ndata_before_nbirth_and_unknown_nodes(
        mqtt_broker: tuple[str, int], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="spinline")
    async with MqttRig(*mqtt_broker) as rig:
        tag, t0 = rig.tag, int(time.time() * 1000) - 60_000
        temp, count = rig.key("sp01/temp"), rig.key("sp01/count")
        # NDATA before NBIRTH: the alias-only metric cannot be mapped; the named one still is.
        early = sparkplug.encode([(None, 1, sparkplug.DOUBLE, 39.0), ("count", None, sparkplug.INT32, 7)],
                                 timestamp_ms=t0, seq=5)
        await rig.send(sparkplug.topic(tag, "NDATA", "sp01"), early)
        await rig.send(sparkplug.topic(tag, "NDATA", "sp01"), b"\xff\xfe\x00garbage")           # undecodable
        birth = sparkplug.encode([("temp", 1, sparkplug.DOUBLE, 40.5), ("count", 2, sparkplug.INT32, 8)],
                                 timestamp_ms=t0 + 1000, seq=0)
        await rig.send(sparkplug.topic(tag, "NBIRTH", "sp01"), birth)
        await rig.send(sparkplug.topic(tag, "NDATA", "sp01"),
                       sparkplug.encode([(None, 1, sparkplug.DOUBLE, 41.0), (None, 9, sparkplug.DOUBLE, 1.0),
                                         (None, 2, sparkplug.STRING, "n/a")], timestamp_ms=t0 + 2000, seq=1))
        await rig.send(sparkplug.topic(tag, "NBIRTH", "ghostnode"), birth)                     # unknown node
        await rig.send(sparkplug.topic(tag, "DDATA", "sp01", "subdev"), birth)                 # unknown device
        await rig.send(sparkplug.topic(tag, "NDATA", "sp01"),
                       sparkplug.encode([(None, 1, sparkplug.DOUBLE, 42.0)], timestamp_ms=t0 + 3000, seq=2))
        await until(lambda: (temp, (t0 + 3000) * 1_000_000, 42.0, 0) in rows(rig.got))

        bad = rig.bad("sp01")
        assert bad == {"sparkplug_no_birth": 1, "sparkplug_undecodable": 1, "sparkplug_unknown_alias": 1,
                       "field_not_number": 1}, bad
        assert rig.conn.unknown_devices()["messages"] == 2
        got = rows(rig.got)
        assert (count, t0 * 1_000_000, 7.0, 0) in got                    # named metric of the early NDATA
        assert (temp, (t0 + 1000) * 1_000_000, 40.5, 0) in got and (temp, (t0 + 2000) * 1_000_000, 41.0, 0) in got
        r = next(r for r in got if r[0] == count and r[1] == (t0 + 2000) * 1_000_000)
        assert r[3] == Quality.BAD and np.isnan(r[2])                   # a string where a number is expected
        for cause in bad:
            assert warnings_about(caplog, cause) == 1, cause
        assert any("before any NBIRTH" in r.getMessage() for r in caplog.records)


def snapshot_payload(ts_ms: int, samples: np.ndarray | bytes, fs: float = 25600.0, **extra: Any) -> bytes:
    data = samples if isinstance(samples, bytes) else np.asarray(samples, dtype="<f4").tobytes()
    d = {"ts": ts_ms, "fs_hz": fs, "shaft_rpm": 1480.0, "unit": "g", "encoding": "f32le-b64",
         "samples": base64.b64encode(data).decode()} | extra
    return json.dumps(d).encode()


async def test_mqtt_vibration_snapshots_bad_samples_sizes_and_resends(
        mqtt_broker: tuple[str, int], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="spinline")
    async with MqttRig(*mqtt_broker, snapshot_s=10.0) as rig:
        topic = f"spinline/{rig.tag}/fan01/vibration/motor"
        rms = point_key(f"{rig.tag}/fan01/vib_motor_rms_g")
        t0 = int(time.time() * 1000) - 60_000
        rng = np.random.default_rng(1)
        x = lambda n: rng.normal(0, 0.1, n)  # noqa: E731
        await rig.send(topic, snapshot_payload(t0, x(25600)))                        # good (1 s)
        await rig.send(topic, snapshot_payload(t0 + 1000, x(10)))                    # too few samples
        await rig.send(topic, snapshot_payload(t0 + 2000, b"\x00" * 4099))           # truncated float32
        await rig.send(topic, json.dumps({"ts": t0 + 3000, "fs_hz": 25600, "samples": "!!not base64!!"}))
        nan = x(25600)
        nan[100:110] = np.nan
        await rig.send(topic, snapshot_payload(t0 + 4000, nan))                      # NaN samples
        await rig.send(topic, snapshot_payload(t0 + 5000, x(25600), fs="fast"))      # fs_hz not a number
        await rig.send(topic, snapshot_payload(t0, x(25600)))                        # re-sent ts: duplicate
        # 10 s at 25.6 kHz is ~1.4 MB: above the telemetry limit, within this site's snapshot limit.
        await rig.send(topic, snapshot_payload(t0 + 6000, x(256_000)))
        await rig.send(topic, snapshot_payload(t0 + 7000, x(700_000)))               # > 2 x fs x snapshot_s
        await rig.send(topic, snapshot_payload(t0 + 8000, x(25600)))                 # good again
        await until(lambda: any(r[0] == rms and r[1] == (t0 + 8000) * 1_000_000 for r in rows(rig.got)), 20)

        bad = rig.bad("fan01")
        assert bad == {"snapshot_sample_count": 2, "snapshot_bad_base64": 1, "snapshot_nan_samples": 1,
                       "snapshot_invalid": 1, "duplicate_ts": 1, "message_too_large": 1}, bad
        stamps = sorted(r[1] // 1_000_000 - t0 for r in rows(rig.got) if r[0] == rms)
        assert stamps == [0, 6000, 8000]                                             # the good ones, once each
        assert all(r[3] == Quality.GOOD for r in rows(rig.got) if r[0] == rms)
        for cause in bad:
            assert warnings_about(caplog, cause) == 1, cause


async def test_modbus_exception_codes_are_counted_per_code_and_other_blocks_still_read(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="spinline")
    async with peers.ModbusPeer({1: 50}) as dev:      # register 100 does not exist: illegal data address
        dev.hr[1][0] = 1234
        site = parse_site({"mills": [{"id": "m", "workshops": [{"id": "w", "lines": [{"id": "l", "machines": [
            {"id": "d1", "type": "energy_meter", "link": {"protocol": "modbus", "port": dev.port, "unit_id": 1},
             "points": [{"name": "ok", "unit": "kW", "dtype": "uint16", "modbus": {"register": 0}},
                        {"name": "far", "unit": "kW", "dtype": "uint16", "modbus": {"register": 100}}]}]}]}]}]})
        pts = site.points("m")
        async with ModbusConnector(pts[0].machine) as conn:
            for _ in range(3):
                b = await conn.read(pts)
        vals = dict(zip(b.point.tolist(), zip(b.value.tolist(), b.quality.tolist(), strict=True), strict=True))
        assert vals[pts[0].key] == (1234.0, 0)
        assert vals[pts[1].key][1] == Quality.BAD and np.isnan(vals[pts[1].key][0])
        assert conn.health.bad_input == {"modbus_exception": 3} and conn.health.link_errors == 3
        assert conn.health.state == LinkState.DEGRADED
        msgs = [r.getMessage() for r in caplog.records if "(modbus_exception)" in r.getMessage()]
        assert len(msgs) == 1 and "exception code 2 (illegal data address)" in msgs[0] and "d1" in msgs[0]


async def test_opcua_bad_status_values_are_counted_and_good_nodes_still_collected(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="spinline")
    port = peers.free_port()
    site = parse_site({"mills": [{"id": "mill", "workshops": [{"id": "w", "lines": [{"id": "l", "machines": [
        {"id": "m1", "type": "card", "link": {"protocol": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}/s"},
         "points": [{"name": "speed", "unit": "rpm", "interval_s": 0.1},
                    {"name": "temp", "unit": "degC", "interval_s": 0.1}]}]}]}]}]})
    pts = site.points("mill")
    srv = Server()
    await srv.init()
    srv.set_endpoint(f"opc.tcp://127.0.0.1:{port}/s")
    idx = await srv.register_namespace("urn:spinline:test")
    obj = await srv.nodes.objects.add_object(idx, "m1")
    speed = await obj.add_variable(ua.NodeId("m1.speed", idx), "speed", 1.0)
    await obj.add_variable(ua.NodeId("m1.temp", idx), "temp", 20.0)
    await srv.start()
    got: list[Batch] = []
    conn = OpcUaConnector(pts[0].machine.link.endpoint, pts, timeout_s=1.0, check_s=0.3)
    task = asyncio.create_task(conn.run(got.append))
    try:
        await until(lambda: len(rows(got)) >= 2)
        for v in (2.0, 3.0):   # a failed sensor: counted per value, logged once
            await speed.write_value(ua.DataValue(ua.Variant(v, ua.VariantType.Double),
                                                 StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure)))
            await asyncio.sleep(0.3)
        await speed.write_value(5.0)
        await until(lambda: (pts[0].key, 5.0, 0) in [(r[0], r[2], r[3]) for r in rows(got)])
        h = conn.healths()["m1"]
        bad = [r for r in rows(got) if r[0] == pts[0].key and r[3] == Quality.BAD]
        assert bad      # kept as BAD rows (asyncua sends no value with a Bad status: NaN)
        assert h.bad_input == {"opcua_bad_status": len(bad)} and h.state == LinkState.UP
        assert any(r[0] == pts[1].key and r[3] == 0 for r in rows(got))
        msgs = [r.getMessage() for r in caplog.records if "(opcua_bad_status)" in r.getMessage()]
        assert len(msgs) == 1 and "BadSensorFailure" in msgs[0] and "m1.speed" in msgs[0]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await srv.stop()


async def test_agent_counts_out_of_range_and_shows_bad_input_in_status_and_link_errors(
        mqtt_broker: tuple[str, int], tmp_path: Path) -> None:
    host, port = mqtt_broker
    tag = f"a{time.time_ns() % 10**10}"
    async with peers.ModbusPeer({1: 16}) as dev:
        dev.hr[1][0], dev.hr[1][1] = 500, 40     # 500 kW is outside [0, 200]; 40 degC is fine
        site = parse_site({"mills": [{"id": tag, "workshops": [{"id": "w", "lines": [{"id": "l", "machines": [
            {"id": "d1", "type": "energy_meter", "link": {"protocol": "modbus", "port": dev.port, "unit_id": 1},
             "points": [{"name": "kw", "unit": "kW", "dtype": "uint16", "interval_s": 0.1, "min": 0, "max": 200,
                         "modbus": {"register": 0}},
                        {"name": "t", "unit": "degC", "dtype": "uint16", "interval_s": 0.1,
                         "modbus": {"register": 1}}]},
            {"id": "wd01", "type": "winder", "link": {"protocol": "mqtt"},
             "points": [{"name": "speed", "unit": "m/min"}]}]}]}]}]})
        agent = EdgeAgent(site, tag, EdgeSettings(edge_id="e1", secret=None, data_dir=tmp_path, cloud_url=None,
                                                  device_mqtt=f"mqtt://{host}:{port}", flush_s=0.1,
                                                  status_every_s=0.2))
        async with agent, aiomqtt.Client(host, port) as c:
            deadline = time.monotonic() + 15
            st: dict[str, Any] = {}
            while time.monotonic() < deadline:
                await c.publish(f"spinline/{tag}/wd01/telemetry", b"garbage", qos=1)
                await c.publish(f"spinline/{tag}/nobody/telemetry", b"{}", qos=1)
                await asyncio.sleep(0.3)
                st = json.loads((tmp_path / "status.json").read_text()) if (tmp_path / "status.json").exists() \
                        else {}
                d = st.get("devices", {})
                if d.get("d1", {}).get("bad_input", {}).get("out_of_range", 0) >= 3 and \
                            d.get("wd01", {}).get("bad_input", {}).get("json_invalid") and st.get("unknown_devices"):
                    break
        d1, wd = st["devices"]["d1"], st["devices"]["wd01"]
        assert d1["bad_input"]["out_of_range"] >= 3 and "d1/kw = 500 kW" in d1["last_bad_input"]
        assert wd["bad_input"]["json_invalid"] >= 1 and st["bad_input_total"] >= 4
        assert list(st["unknown_devices"].values())[0]["topics"] == {
            f"spinline/{tag}/nobody/telemetry": list(st["unknown_devices"].values())[0]["messages"]}
    # In the buffer: the implausible value UNCERTAIN, the good register next to it GOOD, and d1's
    # link_errors point carrying the bad-input count.
    buf = EdgeBuffer(tmp_path / BUFFER_FILE).open()
    try:
        b = Batch.concat([sb.batch for sb in buf.read(limit=100_000)])
    finally:
        buf.close()
    kw, t, errs = (point_key(f"{tag}/d1/{n}") for n in ("kw", "t", "link_errors"))
    assert set(b.quality[b.point == kw].tolist()) == {int(Quality.UNCERTAIN)} and (b.value[b.point == kw] == 500).all()
    assert set(b.quality[b.point == t].tolist()) == {0} and (b.value[b.point == t] == 40).all()
    assert b.value[b.point == errs].max() >= 3
