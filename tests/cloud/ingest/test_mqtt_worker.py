"""Ingest workers on the real Mosquitto: a shared subscription splits the batches, storage is exactly once.

Every test runs in its own topic namespace, so other tests on the same broker never see its messages.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from spinline.cloud.ingest.mqtt_worker import IngestWorker
from spinline.cloud.storage.base import TimeSeriesStore
from spinline.cloud.storage.embedded import EmbeddedStore
from spinline.core.batch import Batch
from spinline.core.wire import TOPIC_BATCH, TOPIC_STATUS, encode_status

from .conftest import SECRETS

S = 10**9


class Edge:
    """A test publisher that collects the acks for its namespace."""

    def __init__(self, host: str, port: int, ns: str) -> None:
        self.ns = ns
        self.acks: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-edge-{uuid.uuid4().hex[:8]}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe(f"{ns}spinline/down/+/+/ack", qos=1)
        assert subscribed.wait(5)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.acks.append((msg.topic, json.loads(msg.payload)))

    def publish(self, mill: str, edge: str, data: bytes, topic: str = TOPIC_BATCH) -> None:
        self.client.publish(self.ns + topic.format(mill=mill, edge=edge), data, qos=1).wait_for_publish(5)

    def wait_acks(self, n: int, timeout: float = 30.0) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.acks) >= n:
                    return list(self.acks)
            time.sleep(0.02)
        raise AssertionError(f"{len(self.acks)} acks after {timeout} s, expected {n}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture()
def ns() -> str:
    return f"t-{uuid.uuid4().hex[:10]}/"


@pytest.fixture()
def edge(mqtt_broker: tuple[str, int], ns: str) -> Iterator[Edge]:
    e = Edge(*mqtt_broker, ns)
    yield e
    e.close()


@pytest.fixture(params=["embedded", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[TimeSeriesStore, TimeSeriesStore]]:
    """Two handles on one database, one per worker (the same object for DuckDB: one process owns the file)."""
    if request.param == "embedded":
        s = EmbeddedStore(tmp_path / "w.duckdb")
        s.migrate()
        yield s, s
        s.close()
    else:
        from spinline.cloud.storage.postgres import PostgresStore

        url = request.getfixturevalue("postgres_url")
        a, b = PostgresStore(url), PostgresStore(url)
        a.migrate()
        yield a, b
        a.close()
        b.close()


def test_two_workers_split_a_shared_subscription_and_store_every_point_once(
        mqtt_broker: tuple[str, int], ns: str, edge: Edge, stores: tuple[TimeSeriesStore, TimeSeriesStore],
        mill: Any) -> None:
    host, port = mqtt_broker
    group = f"ingest-{uuid.uuid4().hex[:6]}"
    workers = [IngestWorker(mill.service(s), host, port, group, namespace=ns, max_coalesce=4) for s in stores]
    half = len(mill.keys) // 2
    keys = np.array(sorted(mill.keys), dtype=np.int64)
    own = {"edge-a": keys[:half], "edge-b": keys[half:]}
    t0 = (time.time_ns() // S - 1000) * S
    sent: dict[str, list[Batch]] = {"edge-a": [], "edge-b": []}
    for w in workers:
        w.start()
    try:
        n = 20
        for i in range(n):
            for e, pts in own.items():
                ts = t0 + i * 10 * S + np.repeat(np.arange(10, dtype=np.int64), len(pts)) * S
                b = Batch.of(np.tile(pts, 10), ts, float(i), 0, i * 10 + np.repeat(np.arange(10), len(pts)))
                sent[e].append(b)
                edge.publish(mill.id, e, mill.payload(b, i + 1, e))
        for i in range(3):                                   # re-sends: the edge missed the acks
            edge.publish(mill.id, "edge-a", mill.payload(sent["edge-a"][i], i + 1, "edge-a"))
        status = b'{"buffer_depth": 0, "version": "test"}'
        edge.publish(mill.id, "edge-a", status, TOPIC_STATUS)                       # unsigned: refused, counted
        edge.publish(mill.id, "edge-a", encode_status(json.loads(status), key=SECRETS["edge-a"]), TOPIC_STATUS)
        acks = edge.wait_acks(2 * n + 3)
        deadline = time.monotonic() + 10
        while sum(w.stats.statuses + w.stats.statuses_refused for w in workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for w in workers:
            w.stop()
    # Both workers took part, and between them saw every message once.
    got = [w.stats.payloads for w in workers]
    assert all(g > 0 for g in got), got
    assert sum(got) == 2 * n + 3 + 2
    assert sum(w.stats.stored_batches for w in workers) == 2 * n
    assert sum(w.stats.duplicates for w in workers) == 3
    assert sum(w.stats.statuses for w in workers) == 1
    assert sum(w.stats.statuses_refused for w in workers) == 1
    # One ack per batch on the sender's own topic, after the commit.
    by_edge: dict[str, list[dict[str, Any]]] = {}
    for topic, a in acks:
        by_edge.setdefault(topic.split("/")[-2], []).append(a)
    assert sorted(a["seq"] for a in by_edge["edge-b"]) == list(range(1, n + 1))
    assert sorted((a["seq"], a["status"]) for a in by_edge["edge-a"]) == sorted(
        [(i, "stored") for i in range(1, n + 1)] + [(i, "duplicate") for i in (1, 2, 3)])
    assert all(a["stored"] == len(sent["edge-a"][0]) for a in by_edge["edge-a"] if a["status"] == "stored")
    # Every point stored exactly once: received rows per point = rows sent, no seq gaps, no duplicates.
    store = stores[0]
    comp = store.completeness([int(k) for k in keys], t0, t0 + n * 10 * S)
    assert {c.received for c in comp.values()} == {10 * n}
    assert all(not c.gaps for c in comp.values())
    total = sum(len(b) for bs in sent.values() for b in bs)
    assert sum(c.received for c in comp.values()) == total
    assert store.edge_status()["edge-a"].status["version"] == "test"


def test_bad_batch_over_mqtt_is_acked_rejected_and_the_next_is_stored(
        mqtt_broker: tuple[str, int], ns: str, edge: Edge, store: TimeSeriesStore, mill: Any) -> None:
    host, port = mqtt_broker
    good1 = mill.batch(n_ts=3, start_ns=(time.time_ns() // S - 100) * S, seq0=0)
    good2 = mill.batch(n_ts=3, start_ns=(time.time_ns() // S - 50) * S, seq0=3)
    bad = Batch(good1.point, good1.ts_ns + 3600 * S * 24, good1.value, good1.quality, good1.seq)
    with IngestWorker(mill.service(store), host, port, f"g-{uuid.uuid4().hex[:6]}", namespace=ns) as w:
        edge.publish(mill.id, "edge-a", mill.payload(good1, 1))
        edge.publish(mill.id, "edge-a", mill.payload(bad, 2))
        edge.publish(mill.id, "edge-a", b"\x00garbage")
        edge.publish(mill.id, "edge-b", mill.payload(good1, 9, "edge-a"))    # edge-a's batch on edge-b's topic
        edge.publish(mill.id, "edge-a", mill.payload(good2, 3))
        edge.wait_acks(3)
        time.sleep(0.5)                                  # nothing else comes
        acks = edge.wait_acks(3)
    # Refusals are acked at once, stored batches after their commit: compare without order. The garbage
    # and the batch on another edge's topic prove nothing about their sender: no ack (an ack on an
    # edge's topic would make it dead-letter its real batch of that seq), counted under "?".
    got = sorted(((t.split("/")[-2], a["seq"] or 0, a["status"], a["reason"] or "") for t, a in acks))
    assert got == [("edge-a", 1, "stored", ""), ("edge-a", 2, "rejected", "future_timestamp"),
                   ("edge-a", 3, "stored", "")]
    assert w.stats.rejected == 3 and w.stats.stored_points == len(good1) + len(good2)
    assert store.rejections() == {"edge-a": {"future_timestamp": 1}, "?": {"malformed": 1, "unauthorised": 1}}
