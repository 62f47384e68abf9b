"""Components that come back by themselves: ``spinline cloud`` started before PostgreSQL and the
broker waits for them (saying so) instead of exiting; the simulator's MQTT face reconnects after a
broker restart. Real PostgreSQL (behind a TCP relay that refuses connections until it is opened)
and a private Mosquitto on a free port."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from importlib import import_module
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiomqtt
import httpx

from spinline.sim.mqtt_publisher import MqttFace

h = import_module("spinline_e2e_helpers")

FAST_ENV = {"SPINLINE_ARGON2_TIME_COST": "1", "SPINLINE_ARGON2_MEMORY_KIB": "64", "SPINLINE_ARGON2_PARALLELISM": "1"}


async def _until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def test_cloud_started_before_postgres_and_broker_waits_for_them(
        postgres_url: str, zone_yaml: Path, tmp_path: Path) -> None:
    pg = urlsplit(postgres_url)
    relay = h.Relay(pg.port or 5432)                 # not listening yet: PostgreSQL is "down"
    broker = h.Broker()                              # not started yet
    db = urlunsplit(pg._replace(netloc=pg.netloc.replace(f":{pg.port or 5432}", f":{relay.port}")
                                if pg.port else f"{pg.netloc}:{relay.port}"))
    port = h.free_port()
    log = tmp_path / "cloud.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "spinline.cloud", "--db", db, "--data-dir", str(tmp_path),
                                 "--site", str(zone_yaml), "--port", str(port), "--log-level", "info",
                                 "--mqtt", f"mqtt://127.0.0.1:{broker.port}"],
                                env=os.environ | FAST_ENV, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        await _until(lambda: log.read_text().count("cannot be reached") >= 2, 20, "two 'cannot be reached' lines")
        assert proc.poll() is None, log.read_text()[-2000:]
        assert "retrying in" in log.read_text()
        await relay.restore()                        # PostgreSQL comes up
        await _until(lambda: _healthy(base), 30, "the API once PostgreSQL is reachable")
        assert "reached after" in log.read_text()
        await _until(lambda: "MQTT ingest: cannot reach" in log.read_text(), 20, "the broker wait line")
        broker.start()                               # the broker comes up
        await _until(lambda: "MQTT ingest subscribed" in log.read_text(), 40, "the ingest worker to subscribe")
        assert proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        await relay.close()
        broker.stop()


async def test_simulator_mqtt_face_reconnects_after_a_broker_restart() -> None:
    broker = h.Broker()
    broker.start()
    face = MqttFace("127.0.0.1", broker.port, f"sim-face-{os.getpid()}", backoff_s=(0.2, 1.0))
    topic = f"spinline-test/{os.getpid()}/{time.time_ns()}"
    try:
        await face.start()
        assert face.connected and face.connects == 1
        broker.stop()
        broker.start()                               # same port, a fresh broker
        for _ in range(100):                         # the sim publishes every tick
            await face.publish(topic, b"{}")
            if face.connects >= 2:
                break
            await asyncio.sleep(0.1)
        assert face.connects >= 2 and face.connected, "the MQTT face did not reconnect"
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"sub-{os.getpid()}") as sub:
            await sub.subscribe(topic)
            await face.publish(topic, json.dumps({"after": "restart"}).encode())
            msg = await asyncio.wait_for(anext(aiter(sub.messages)), 5)
            assert json.loads(bytes(msg.payload)) == {"after": "restart"}  # type: ignore[arg-type]
    finally:
        await face.stop()
        broker.stop()
