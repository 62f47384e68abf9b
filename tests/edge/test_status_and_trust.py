"""Issue 12 item 2 (remainder), on the real broker: the forwarder's ack trust knows the buffer's
incarnation before any uplink's ack reader runs, and the retained status the edge publishes is
signed and carries nothing that helps a forger (no ``last_seq``)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiomqtt

from spinline.core import wire
from spinline.edge.forwarder import AsyncBuffer, Forwarder
from spinline.edge.uplink.base import sign_ack
from spinline.edge.uplink.mqtt import MqttUplink

from .test_hardening import SECRET, buffer_with, until


async def test_an_ack_of_another_incarnation_is_ignored_before_the_session_starts(
        tmp_path: Path, mqtt_broker: tuple[str, int]) -> None:
    host, port = mqtt_broker
    edge, mill = f"e{time.time_ns() % 10**9}", "m-trust"
    buf = buffer_with(tmp_path, 1)
    fwd = Forwarder(AsyncBuffer(buf), edge=edge, mill=mill, secret=SECRET)
    up = MqttUplink(f"mqtt://{host}:{port}", edge=edge, mill=mill, secret=SECRET, trust=fwd.trust)
    try:
        async with up, aiomqtt.Client(host, port) as cloud:
            # The reader runs; the forwarder's session has not started yet.
            ack = sign_ack(SECRET, {"seq": 1, "status": "stored", "stored": 2, "edge": edge, "inc": "0" * 16})
            await cloud.publish(wire.TOPIC_ACK.format(mill=mill, edge=edge), json.dumps(ack), qos=1)
            await until(lambda: fwd.trust.ignored == 1 or up.acks.qsize() > 0)
            assert fwd.trust.ignored == 1 and up.acks.qsize() == 0
    finally:
        buf.close()


async def test_published_status_is_signed_and_has_no_last_seq(tmp_path: Path, mqtt_broker: tuple[str, int]) -> None:
    host, port = mqtt_broker
    edge, mill = f"e{time.time_ns() % 10**9}", "m-status"
    buf = buffer_with(tmp_path, 2)
    st = {"edge": edge, "mill": mill, "buffer": buf.stats().as_dict(), "uplink": {"inflight": 0}}
    assert st["buffer"]["last_seq"] == 2
    up = MqttUplink(f"mqtt://{host}:{port}", edge=edge, mill=mill, secret=SECRET)
    topic = wire.TOPIC_STATUS.format(mill=mill, edge=edge)
    try:
        async with up:
            await up.publish_status(wire.encode_status(wire.public_status(st)))
        async with aiomqtt.Client(host, port) as reader:
            await reader.subscribe(topic, qos=1)
            msg = await asyncio.wait_for(anext(aiter(reader.messages)), 5.0)
            payload = bytes(msg.payload)  # type: ignore[arg-type]
        assert wire.verify_signed_status(payload, b"another secret") is None
        body = wire.verify_signed_status(payload, SECRET)
        assert body is not None
        got = wire.decode_status(body)
        assert "last_seq" not in got["buffer"] and got["buffer"]["batches"] == 2
        assert "last_seq" not in json.dumps(got)
    finally:
        buf.close()
        async with aiomqtt.Client(host, port) as c:   # clear the retained message
            await c.publish(topic, b"", qos=1, retain=True)
