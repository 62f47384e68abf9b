"""Issue 12 item 6: an MQTT device message is acknowledged to the broker only after its rows are committed.

With the real Mosquitto: an edge process receives a QoS 1 message and is SIGKILLed before the flush
that would commit it; after the restart (same client id, persistent session) the broker delivers the
message again. Once the restarted edge commits it, it is acknowledged and not delivered a third time.
(Before: acknowledged on receipt and with a clean session, so the message was gone with the process.)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt

from spinline.connectors.base import Commits
from spinline.connectors.mqtt.connector import MqttConnector
from spinline.core.batch import Batch
from spinline.core.site import parse_site

CHILD = """
import asyncio, json, sys
from spinline.connectors.base import Commits
from spinline.connectors.mqtt.connector import MqttConnector
from spinline.core.site import parse_site
site = parse_site(json.loads(sys.argv[1]))
mill = site.mills[0].id

async def main():
    conn = MqttConnector(sys.argv[2], int(sys.argv[3]), site.points(mill), mill=mill, client_id=sys.argv[4])
    conn.commits = Commits()          # a flush that never comes: killed between receipt and commit

    def sink(b):
        print("received", b.value.tolist(), flush=True)
    def subscribed():
        print("subscribed", flush=True)
    task = asyncio.create_task(conn.run(sink))
    while conn.sessions == 0:
        await asyncio.sleep(0.05)
    subscribed()
    await task
asyncio.run(main())
"""


def _site(tag: str) -> dict[str, object]:
    return {"mills": [{"id": tag, "workshops": [{"id": "w", "lines": [{"id": "l", "machines": [
        {"id": "wd01", "type": "winder", "link": {"protocol": "mqtt", "format": "json"},
         "points": [{"name": "speed", "unit": "m/min"}]}]}]}]}]}


async def _line(proc: subprocess.Popen[str], want: str, timeout: float = 20.0) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = await asyncio.to_thread(proc.stdout.readline)
        if line.startswith(want):
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"child never said {want!r}")


async def _receive(host: str, port: int, site: dict[str, object], client_id: str, *, commit: bool,
                   wait_s: float) -> list[float]:
    """Run a connector (persistent session) for ``wait_s``; commit what it got when ``commit``."""
    s = parse_site(site)
    mill = s.mills[0].id
    conn = MqttConnector(host, port, s.points(mill), mill=mill, client_id=client_id)
    commits = Commits()
    conn.commits = commits
    got: list[Batch] = []
    task = asyncio.create_task(conn.run(got.append))
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not got:
            await asyncio.sleep(0.05)
        if got and commit:
            commits.committed(commits.seal())              # the flush holding the rows is in the buffer
            while conn.acked_after_commit == 0:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)                       # the PUBACK reaches the broker
        return [v for b in got for v in b.value.tolist()]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_message_received_but_not_committed_is_delivered_again_after_a_kill(mqtt_broker) -> None:
    host, port = mqtt_broker
    tag = f"ack{time.time_ns() % 10**9}"
    site = _site(tag)
    client_id = f"spinline-test-{tag}"
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(site), host, str(port), client_id],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        await _line(proc, "subscribed")
        ts_ms = int(time.time() * 1000) - 1000
        async with aiomqtt.Client(host, port) as dev:
            await dev.publish(f"spinline/{tag}/wd01/telemetry", json.dumps({"ts": ts_ms, "speed": 1234.5}), qos=1)
        assert "1234.5" in await _line(proc, "received")
        proc.send_signal(signal.SIGKILL)                   # between receipt and the commit
        proc.wait(10)
        # Restarted: the broker delivers the message again; this time it is committed and acked.
        assert await _receive(host, port, site, client_id, commit=True, wait_s=15.0) == [1234.5]
        # Acked after its commit: not delivered a third time.
        assert await _receive(host, port, site, client_id, commit=True, wait_s=1.5) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        s = parse_site(site)
        sid = MqttConnector(host, port, s.points(tag), mill=tag, client_id=client_id).session_id()
        async with aiomqtt.Client(host, port, identifier=sid, clean_session=True):
            pass                                           # drop the persistent session on the shared broker


async def test_a_broker_that_speaks_only_mqtt_311_gets_a_persistent_311_session() -> None:
    """The demo's embedded broker (amqtt) drops an MQTT 5 CONNECT: the connector falls back to 3.1.1
    (clean_session=False) instead of losing every MQTT device of the mill (the demo's winders)."""
    from spinline.demo.broker import EmbeddedBroker

    tag = f"a311{time.time_ns() % 10**9}"
    site = _site(tag)
    s = parse_site(site)
    async with EmbeddedBroker() as broker:
        conn = MqttConnector(broker.host, broker.port, s.points(tag), mill=tag, client_id=f"spinline-test-{tag}")
        commits = Commits()
        conn.commits = commits
        got: list[Batch] = []
        task = asyncio.create_task(conn.run(got.append))
        try:
            deadline = time.monotonic() + 20
            while conn.sessions == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert conn.sessions == 1 and conn._mqtt311   # noqa: SLF001 - the fallback was taken
            async with aiomqtt.Client(broker.host, broker.port) as dev:
                await dev.publish(f"spinline/{tag}/wd01/telemetry",
                                  json.dumps({"ts": int(time.time() * 1000) - 1000, "speed": 42.0}), qos=1)
            while not got and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            commits.committed(commits.seal())
            while conn.acked_after_commit == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert [v for b in got for v in b.value.tolist()] == [42.0]
    assert conn.acked_after_commit == 1
