"""Logs under trouble (issue 13, items 6 and 8): an ingest worker during a database outage logs the
failure once and the recovery once with its count, not a traceback per payload; a newline in a topic
cannot forge a log line."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from spinline.cloud.ingest.mqtt_worker import IngestWorker
from spinline.cloud.storage.postgres import PostgresStore
from spinline.core.wire import TOPIC_EVENTS

from ..pg_proxy import StallingProxy
from .test_mqtt_worker import Edge

S = 10**9


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def of(self, level: int) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= level and r.name.startswith("spinline")]


@pytest.fixture()
def records() -> Any:
    h = Records()
    root = logging.getLogger()
    old = root.level
    root.addHandler(h)
    root.setLevel(logging.INFO)
    yield h
    root.removeHandler(h)
    root.setLevel(old)


async def test_store_outage_is_logged_once_each_way(postgres_url: str, mqtt_broker: tuple[str, int], mill: Any,
                                                    records: Records) -> None:
    proxy = StallingProxy()
    await proxy.start()
    store = PostgresStore(proxy.url(postgres_url) + "&connect_timeout=2")
    await asyncio.to_thread(store.migrate)
    service = await asyncio.to_thread(mill.service, store)
    ns = f"t-{uuid.uuid4().hex[:10]}/"
    edge = await asyncio.to_thread(Edge, *mqtt_broker, ns)
    worker = IngestWorker(service, *mqtt_broker, f"g-{uuid.uuid4().hex[:6]}", namespace=ns, max_coalesce=4)
    await asyncio.to_thread(worker.start)
    try:
        t0 = (time.time_ns() // S - 600) * S
        first = mill.batch(n_ts=1, start_ns=t0, seq0=0)
        await asyncio.to_thread(edge.publish, mill.id, "edge-a", mill.payload(first, 1))
        await asyncio.to_thread(edge.wait_acks, 1)
        await proxy.stop()                                       # the database goes away
        for i in range(2, 32):
            b = mill.batch(n_ts=1, start_ns=t0 + i * S, seq0=i)
            await asyncio.to_thread(edge.publish, mill.id, "edge-a", mill.payload(b, i))
        for _ in range(100):
            if worker.stats.failed_writes >= 5 and worker._queue.empty():
                break
            await asyncio.sleep(0.1)
        assert worker.stats.failed_writes >= 5
        loud = records.of(logging.WARNING)
        assert len(loud) == 1 and loud[0].exc_info is None, [r.getMessage() for r in loud]   # once, no traceback
        assert "failing" in loud[0].getMessage()
        await proxy.start()                                      # back
        b = mill.batch(n_ts=1, start_ns=t0 + 40 * S, seq0=40)
        await asyncio.to_thread(edge.publish, mill.id, "edge-a", mill.payload(b, 40))
        for _ in range(100):
            if worker.stats.stored_batches >= 2:
                break
            await asyncio.sleep(0.1)
        loud = records.of(logging.WARNING)
        assert len(loud) == 2 and "recovered after" in loud[1].getMessage(), [r.getMessage() for r in loud]
        assert sum(len(r.getMessage()) for r in records.records if r.name.startswith("spinline")) < 2000
    finally:
        await asyncio.to_thread(worker.stop)
        await asyncio.to_thread(edge.close)
        store.close()
        await proxy.stop()


def test_topics_are_escaped_in_logs(mqtt_broker: tuple[str, int], mill: Any, store: Any, records: Records) -> None:
    # Mosquitto refuses control characters in topics; other brokers deliver them. The message is handed
    # to the worker's paho callback as a permissive broker would deliver it.
    ns = f"t-{uuid.uuid4().hex[:10]}/"
    with IngestWorker(mill.service(store), *mqtt_broker, f"g-{uuid.uuid4().hex[:6]}", namespace=ns,
                      events=_RaisingEvents()) as w:  # type: ignore[arg-type]
        forged = "mill-a\n2026-12-04 12:00:00,000 ERROR spinline.cloud.auth: admin logged in"
        msg = mqtt.MQTTMessage(topic=(ns + TOPIC_EVENTS.format(mill=forged, edge="edge-a")).encode())
        msg.payload = b"junk"
        w._on_message(w._client, None, msg)  # type: ignore[arg-type]
        for _ in range(100):
            if w.stats.unexpected:
                break
            time.sleep(0.05)
    lines = [r.getMessage() for r in records.records if r.name.startswith("spinline")]
    assert any("mill-a\\n2026" in line for line in lines), lines
    assert not any("\n2026-12-04" in line for line in lines)


class _RaisingEvents:
    """An events handler that fails unexpectedly, so the worker logs the payload's topic."""

    def handle(self, payload: bytes, topic: tuple[str, str] | None = None) -> Any:
        raise RuntimeError("unexpected")
