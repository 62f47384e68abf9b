"""Hostile device messages through the real Mosquitto (``mqtt_broker``): a timestamp that does not fit
int64, JSON nested past the parser's recursion limit, a Sparkplug metric stamped in the year 10**9, and a
bug in a decoder are each counted on their machine and never end the broker session."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import pytest

from spinline.connectors.mqtt import sparkplug
from spinline.connectors.mqtt.connector import MqttConnector
from spinline.connectors.mqtt.json_map import ts_from
from spinline.core.batch import Batch
from spinline.core.site import parse_site


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def site(tag: str) -> Any:
    return parse_site({"mills": [{"id": tag, "workshops": [{"id": "w", "lines": [{"id": "l", "machines": [
        {"id": "wd01", "type": "winder", "link": {"protocol": "mqtt", "format": "json"}, "points": [
            {"name": "speed", "unit": "m/min"}]},
        {"id": "sp01", "type": "winder", "link": {"protocol": "mqtt", "format": "sparkplug_b"}, "points": [
            {"name": "temp", "unit": "degC"}]}]}]}]}]})


def test_ts_from_refuses_timestamps_outside_int64_ns() -> None:
    now_ms = int(time.time() * 1000)
    assert ts_from(now_ms) == now_ms * 1_000_000
    for bad in (10**30, -(10**30), 1e300, -5, 2**63, float("nan"), True, "1"):
        assert ts_from(bad) is None, bad


async def test_overflowing_ts_deep_nesting_and_decoder_bugs_never_end_the_session(
        mqtt_broker: tuple[str, int]) -> None:
    host, port = mqtt_broker
    tag = f"h{time.time_ns() % 10**10}"
    pts = {p.tag.split("/", 1)[1]: p for p in site(tag).points(tag)}
    conn = MqttConnector(host, port, list(pts.values()), mill=tag)
    got: list[Batch] = []
    task = asyncio.create_task(conn.run(got.append))
    spd, temp = pts["wd01/speed"].key, pts["sp01/temp"].key
    topic = pts["wd01/speed"].mqtt_topic()
    spb = sparkplug.topic(tag, "NBIRTH", "sp01")
    t0 = int(time.time() * 1000) - 60_000

    def seen(key: int, value: float) -> bool:
        return any(int(k) == key and float(v) == value for b in got for k, v in zip(b.point, b.value, strict=True))

    try:
        async with aiomqtt.Client(host, port) as dev:
            for i in range(100):                                   # ready once the connector is subscribed
                await dev.publish(topic, json.dumps({"ts": t0 + i, "speed": 1.0}), qos=1)
                await asyncio.sleep(0.1)
                if got:
                    break
            assert got, "the connector never received the probe"
            sessions_errors = conn.health_for("wd01").errors

            await dev.publish(topic, json.dumps({"ts": 10**30, "speed": 2.0}), qos=1)        # OverflowError before
            await dev.publish(topic, b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", qos=1)  # RecursionError
            await dev.publish(topic, json.dumps({"ts": -5, "speed": 3.0}), qos=1)             # before 1970
            await dev.publish(spb, sparkplug.encode([("temp", None, sparkplug.DOUBLE, 21.5)],
                                                    timestamp_ms=2**64 - 1, seq=0), qos=1)
            real_decode = conn.json.decode

            def buggy(t: str, payload: bytes, received_ns: int, problems: Any = None) -> Batch:
                if b"boom" in payload:
                    raise KeyError("a decoder bug")
                return real_decode(t, payload, received_ns, problems)

            conn.json.decode = buggy  # type: ignore[method-assign,assignment]
            await dev.publish(topic, json.dumps({"ts": t0 + 500, "speed": 4.0, "boom": 1}), qos=1)
            await dev.publish(topic, json.dumps({"ts": t0 + 1000, "speed": 5.0}), qos=1)
            await until(lambda: seen(spd, 5.0))

        bad = conn.health_for("wd01").bad_input
        assert bad.get("bad_timestamp") == 2 and bad.get("json_invalid") == 1 and bad.get("undecodable") == 1, bad
        assert conn.health_for("sp01").bad_input.get("bad_timestamp") == 1
        # The rows of the bad-ts messages are kept on the receipt time; the session never went down.
        assert seen(spd, 2.0) and seen(spd, 3.0) and seen(temp, 21.5)
        assert conn.health_for("wd01").errors == sessions_errors
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("payload", [b'{"ts": 1000000000000000000000000000000, "speed": 1}',
                                     b"[" * 50_000 + b"]" * 50_000])
def test_handle_never_raises_for_hostile_json(payload: bytes) -> None:
    tag = "hx"
    pts = site(tag).points(tag)
    conn = MqttConnector("127.0.0.1", 1, pts, mill=tag)
    machine, b = conn.handle(pts[0].mqtt_topic(), payload, time.time_ns())
    assert machine == "wd01" and conn.health_for("wd01").bad_input_total == 1
    assert all(int(t) >= 0 for t in b.ts_ns)
