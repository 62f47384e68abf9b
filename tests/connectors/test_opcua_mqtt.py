from __future__ import annotations

import asyncio
import json
import time
from importlib import import_module

import aiomqtt
import numpy as np
import pytest
from asyncua import Server, ua

from spinline.connectors.base import LinkState
from spinline.connectors.mqtt import sparkplug
from spinline.connectors.mqtt.connector import MqttConnector
from spinline.connectors.opcua.connector import OpcUaConnector
from spinline.core.batch import Batch, Quality
from spinline.core.site import parse_site

peers = import_module("spinline_test_peers")


def one_machine(link: dict, points: list[dict], mid: str = "m1"):
    return parse_site({"mills": [{"id": "mill", "workshops": [{"id": "w", "lines": [{"id": "l", "machines": [
        {"id": mid, "type": "card", "points": points, "link": link}]}]}]}]})


async def opc_server(port: int, values: dict[str, float]) -> tuple[Server, dict[str, object]]:
    srv = Server()
    await srv.init()
    srv.set_endpoint(f"opc.tcp://127.0.0.1:{port}/spinline")
    idx = await srv.register_namespace("urn:spinline:test")
    assert idx == 2
    obj = await srv.nodes.objects.add_object(idx, "m1")
    nodes = {}
    for name, v in values.items():
        nodes[name] = await obj.add_variable(ua.NodeId(f"m1.{name}", idx), name, v)
    await srv.start()
    return srv, nodes


async def test_opcua_subscription_delivers_and_resubscribes_after_server_restart() -> None:
    port = peers.free_port()
    site = one_machine({"protocol": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}/spinline"},
                       [{"name": "speed", "unit": "rpm", "interval_s": 0.1},
                        {"name": "temp", "unit": "degC", "interval_s": 0.2}])
    pts = site.points("mill")
    got: list[Batch] = []
    srv, nodes = await opc_server(port, {"speed": 1.0, "temp": 20.0})
    conn = OpcUaConnector(pts[0].machine.link.endpoint, pts, timeout_s=1.0, check_s=0.3)
    task = asyncio.create_task(conn.run(got.append))
    try:
        for _ in range(40):
            await asyncio.sleep(0.1)
            if got:
                break
        await nodes["speed"].write_value(2.5)
        await asyncio.sleep(0.8)
        rows = Batch.concat(got)
        vals = dict(zip(rows.point.tolist(), rows.value.tolist(), strict=True))
        assert vals[pts[0].key] == 2.5 and vals[pts[1].key] == 20.0
        assert conn.mode == "subscription" and conn.healths()["m1"].state == LinkState.UP
        # device timestamps (SourceTimestamp) are kept and plausible
        assert abs(int(rows.ts_ns.max()) - time.time_ns()) < 10e9
        await srv.stop()
        await asyncio.sleep(2.0)
        assert conn.healths()["m1"].state == LinkState.DOWN
        assert not task.done()
        srv, nodes = await opc_server(port, {"speed": 7.0, "temp": 21.0})
        got.clear()
        for _ in range(100):
            await asyncio.sleep(0.1)
            if any((b.value == 7.0).any() for b in got):
                break
        assert any((b.value == 7.0).any() for b in got), "no data after the server restart"
        assert conn.sessions >= 2 and conn.healths()["m1"].state == LinkState.UP
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await srv.stop()


async def test_mqtt_json_and_sparkplug_through_a_real_broker(mqtt_broker) -> None:
    host, port = mqtt_broker
    tag = f"t{time.time_ns() % 10**9}"
    site = parse_site({"mills": [{"id": tag, "workshops": [{"id": "w", "lines": [{"id": "l", "machines": [
        {"id": "wd01", "type": "winder", "link": {"protocol": "mqtt", "format": "json"}, "points": [
            {"name": "speed", "unit": "m/min"},
            {"name": "power", "unit": "kW", "mqtt": {"field": "elec.kw"}}]},
        {"id": "sp01", "type": "winder", "link": {"protocol": "mqtt", "format": "sparkplug_b"}, "points": [
            {"name": "temp", "unit": "degC"}, {"name": "count", "unit": "event", "dtype": "int32"}]}]}]}]}]})
    pts = {p.tag.split("/", 1)[1]: p for p in site.points(tag)}
    got: list[Batch] = []
    conn = MqttConnector(host, port, list(pts.values()), mill=tag)
    task = asyncio.create_task(conn.run(got.append))
    try:
        await asyncio.sleep(0.5)
        ts_ms = int(time.time() * 1000) - 1000
        async with aiomqtt.Client(host, port) as dev:
            await dev.publish(pts["wd01/speed"].mqtt_topic(),
                              json.dumps({"ts": ts_ms, "speed": 1200.5, "elec": {"kw": 3.5}}), qos=1)
            await dev.publish(pts["wd01/speed"].mqtt_topic(), json.dumps({"ts": ts_ms, "speed": "broken"}), qos=1)
            birth = sparkplug.encode([("temp", 1, sparkplug.DOUBLE, 40.5), ("count", 2, sparkplug.INT32, -3)],
                                     timestamp_ms=ts_ms, seq=0)
            await dev.publish(sparkplug.topic(tag, "NBIRTH", "sp01"), birth, qos=1)
            data = sparkplug.encode([(None, 1, sparkplug.DOUBLE, 41.0)], timestamp_ms=ts_ms + 1, seq=1)
            await dev.publish(sparkplug.topic(tag, "NDATA", "sp01"), data, qos=1)
            for _ in range(30):
                await asyncio.sleep(0.1)
                if sum(len(b) for b in got) >= 6:
                    break
            rows = Batch.concat(got)
            seen = list(zip(rows.point.tolist(), rows.value.tolist(), rows.quality.tolist(), strict=True))
            assert (pts["wd01/speed"].key, 1200.5, 0) in seen
            assert (pts["wd01/power"].key, 3.5, 0) in seen
            bad = [r for r in seen if r[0] == pts["wd01/speed"].key and r[2] == Quality.BAD]
            assert bad and np.isnan(bad[0][1])
            assert (pts["sp01/temp"].key, 40.5, 0) in seen and (pts["sp01/count"].key, -3.0, 0) in seen
            assert (pts["sp01/temp"].key, 41.0, 0) in seen        # NDATA by alias only
            assert int(rows.ts_ns.min()) == ts_ms * 1_000_000      # device timestamps kept
            assert conn.healths()["sp01"].state == LinkState.UP
            await dev.publish(sparkplug.topic(tag, "NDEATH", "sp01"), sparkplug.encode([], timestamp_ms=ts_ms),
                              qos=1)
            await asyncio.sleep(0.5)
            assert conn.healths()["sp01"].state == LinkState.DOWN
            assert conn.healths()["wd01"].state == LinkState.UP
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_mqtt_broker_outage_marks_links_down_and_recovers() -> None:
    broker = peers.Mosquitto()
    broker.start()
    site = one_machine({"protocol": "mqtt", "format": "json"}, [{"name": "speed", "unit": "m/min"}], "wd09")
    pts = site.points("mill")
    got: list[Batch] = []
    conn = MqttConnector("127.0.0.1", broker.port, pts, mill="mill", backoff_s=(0.2, 1.0))
    task = asyncio.create_task(conn.run(got.append))
    try:
        await asyncio.sleep(0.5)
        broker.stop()
        await asyncio.sleep(1.0)
        assert conn.healths()["wd09"].state == LinkState.DOWN and not task.done()
        broker.start()
        await asyncio.sleep(2.0)
        async with aiomqtt.Client("127.0.0.1", broker.port) as dev:
            await dev.publish(pts[0].mqtt_topic(), json.dumps({"speed": 5}), qos=1)
            for _ in range(30):
                await asyncio.sleep(0.1)
                if got:
                    break
        assert got and conn.healths()["wd09"].state == LinkState.UP
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        broker.stop()


def test_sparkplug_codec_roundtrip_signed_types() -> None:
    data = sparkplug.encode([("a", None, sparkplug.INT8, -1), ("b", None, sparkplug.INT64, -(2**40)),
                             ("c", None, sparkplug.UINT32, 4_000_000_000), ("d", None, sparkplug.BOOLEAN, True),
                             ("e", None, sparkplug.FLOAT, None)], timestamp_ms=5, seq=9)
    ts, seq, ms = sparkplug.decode(data)
    assert (ts, seq) == (5, 9)
    assert [m.value for m in ms[:4]] == [-1.0, float(-(2**40)), 4e9, 1.0] and np.isnan(ms[4].value)
    assert sparkplug.parse_topic("spBv1.0/g/NDATA/n/dev") == sparkplug.Topic("g", "NDATA", "n", "dev")
    assert sparkplug.parse_topic("other/x") is None
    with pytest.raises(Exception):  # noqa: B017
        sparkplug.decode(b"\xff\xff\xff")
