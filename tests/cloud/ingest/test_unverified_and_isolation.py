"""Unverified payloads get no ack and are not counted against the edge they name; one poison payload
or one bad batch in a group cannot take the others down; the incarnation is part of the key."""

from __future__ import annotations

import json
import struct
import time
from typing import Any

import pytest

from spinline.cloud.ingest.mqtt_worker import IngestWorker
from spinline.cloud.ingest.service import UNVERIFIED_EDGE, Accepted, IngestService
from spinline.cloud.storage.base import TimeSeriesStore, WriteResult
from spinline.core.batch import Batch
from spinline.core.errors import StorageError
from spinline.core.wire import Envelope, encode, verify_ack

from .conftest import SECRETS

S = 10**9
TOPIC = "spinline/up/{mill}/{edge}/batch"


class Publisher:
    """Stands in for the paho client: records what the worker publishes."""

    def __init__(self) -> None:
        self.acks: list[tuple[str, dict[str, Any]]] = []

    def publish(self, topic: str, payload: str | bytes, qos: int) -> None:
        """Records the ack after checking its signature (every ack to an edge is signed with its key)."""
        ack = json.loads(payload)
        assert verify_ack(SECRETS[ack["edge"]], ack) is True, ack
        self.acks.append((topic, {k: v for k, v in ack.items() if k not in ("sig", "edge", "inc")}))


def _worker(svc: IngestService) -> tuple[IngestWorker, Publisher]:
    w = IngestWorker(svc)
    pub = Publisher()
    w._client = pub  # type: ignore[assignment]
    return w, pub


def _good(mill: Any, k: int) -> Batch:
    base = (time.time_ns() // S - 600) * S
    return mill.batch(n_ts=2, start_ns=base + k * 10 * S, seq0=k * 2)


def _forged(mill: str, edge: str, seq: int, version: int = 9) -> bytes:
    hdr = json.dumps({"edge": edge, "mill": mill, "seq": seq, "n": 0, "created_ns": 1}).encode()
    return struct.pack("<4sBBHI", b"SPLB", version, 0, 0, len(hdr)) + hdr


def test_forged_unsigned_payload_gets_no_ack_and_is_not_counted_against_the_edge(
        store: TimeSeriesStore, mill: Any) -> None:
    svc = mill.service(store)
    w, pub = _worker(svc)
    now = time.time_ns()
    forged = [_forged(mill.id, "edge-a", 5), _forged(mill.id, "edge-a", 5, version=1),
              mill.payload(_good(mill, 1), 5, key=b"guessed" * 5), mill.payload(_good(mill, 1), 5, key=b""),
              b"SPLB\x01\x00\x00\x00\x05\x00\x00\x00" + b'{"edge":"<b>x</b>"']
    w._process([(TOPIC.format(mill=mill.id, edge="edge-a"), p, now) for p in forged])
    assert pub.acks == []
    assert w.stats.rejected == len(forged)
    counts = store.rejections()
    assert set(counts) == {UNVERIFIED_EDGE}
    assert sum(counts[UNVERIFIED_EDGE].values()) == len(forged)
    details = [r.detail for r in store.recent_rejections(UNVERIFIED_EDGE, 100)]
    assert details and all("edge-a" not in d and "<b>" not in d for d in details)
    # the real edge's batch of that seq is still stored and acked as it should be
    w._process([(TOPIC.format(mill=mill.id, edge="edge-a"), mill.payload(_good(mill, 0), 5), now)])
    assert pub.acks == [(f"spinline/down/{mill.id}/edge-a/ack",
                         {"seq": 5, "status": "stored", "reason": None, "stored": len(_good(mill, 0))})]


def test_signed_payload_replayed_on_another_edges_topic_gets_no_ack(store: TimeSeriesStore, mill: Any) -> None:
    svc = mill.service(store)
    w, pub = _worker(svc)
    w._process([(TOPIC.format(mill=mill.id, edge="edge-b"), mill.payload(_good(mill, 0), 3, "edge-a"),
                 time.time_ns())])
    assert pub.acks == [] and set(store.rejections()) == {UNVERIFIED_EDGE}


def test_signed_but_undecodable_payload_is_acked_rejected_with_its_seq(store: TimeSeriesStore, mill: Any) -> None:
    """The edge proved it sent it: it must learn it is refused for good (and dead-letter it)."""
    svc = mill.service(store, max_rows=3)
    w, pub = _worker(svc)
    w._process([(TOPIC.format(mill=mill.id, edge="edge-a"), mill.payload(_good(mill, 0), 11), time.time_ns())])
    assert pub.acks == [(f"spinline/down/{mill.id}/edge-a/ack",
                         {"seq": 11, "status": "rejected", "reason": "oversized", "stored": 0})]
    assert store.rejections() == {"edge-a": {"oversized": 1}}


def test_http_unverified_refusal_is_answered_but_not_recorded_as_the_edges(store: TimeSeriesStore, mill: Any) -> None:
    svc = mill.service(store)
    r = svc.handle(_forged(mill.id, "edge-a", 5))
    assert (r.status, r.reason, r.verified, r.seq, r.edge) == ("rejected", "unsupported_version", False, None, None)
    assert store.rejections() == {UNVERIFIED_EDGE: {"unsupported_version": 1}}


POISON = [
    b'{"edge":"x","mill":"m","seq":Infinity,"n":0,"created_ns":1}',
    b'{"edge":"x","mill":"m","seq":1,"n":0,"created_ns":-Infinity}',
    b'{"edge":"x","mill":"m","seq":1,"n":0,"created_ns":1,"meta":' + b"[" * 5000 + b"]" * 5000 + b"}",
]


@pytest.mark.parametrize("header", POISON)
def test_poison_header_does_not_lose_the_group(header: bytes, store: TimeSeriesStore, mill: Any) -> None:
    svc = mill.service(store)
    w, pub = _worker(svc)
    now = time.time_ns()
    poison = struct.pack("<4sBBHI", b"SPLB", 1, 0, 0, len(header)) + header
    w._process([(TOPIC.format(mill=mill.id, edge="edge-a"), mill.payload(_good(mill, 0), 1), now),
                (TOPIC.format(mill=mill.id, edge="x"), poison, now),
                (TOPIC.format(mill=mill.id, edge="x"), b"XXXX" + poison[4:], now),
                (TOPIC.format(mill=mill.id, edge="edge-a"), mill.payload(_good(mill, 1), 2), now)])
    assert [(t, a["seq"], a["status"]) for t, a in pub.acks] == [
        (f"spinline/down/{mill.id}/edge-a/ack", 1, "stored"), (f"spinline/down/{mill.id}/edge-a/ack", 2, "stored")]


def test_unexpected_error_in_one_payload_is_isolated(store: TimeSeriesStore, mill: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    svc = mill.service(store)
    w, pub = _worker(svc)
    real = svc.prepare
    calls = {"n": 0}

    def flaky(payload: bytes, received_ns: int, *, topic: tuple[str, str] | None = None) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RecursionError("something nobody thought of")
        return real(payload, received_ns, topic=topic)

    monkeypatch.setattr(svc, "prepare", flaky)
    now = time.time_ns()
    w._process([(TOPIC.format(mill=mill.id, edge="edge-a"), mill.payload(_good(mill, k), k + 1), now)
                for k in range(3)])
    assert sorted(a["seq"] for _, a in pub.acks) == [1, 3]


def test_failed_group_write_is_retried_batch_by_batch(store: TimeSeriesStore, mill: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    svc = mill.service(store)
    w, pub = _worker(svc)
    real = store.write_many

    def picky(items: list[tuple[Batch, str | None]], **kw: Any) -> list[WriteResult]:
        if any(k == "edge-a:2" for _, k in items):
            raise StorageError("this batch cannot be written")
        return real(items, **kw)

    monkeypatch.setattr(store, "write_many", picky)
    now = time.time_ns()
    w._process([(TOPIC.format(mill=mill.id, edge="edge-a"), mill.payload(_good(mill, k), k + 1), now)
                for k in range(3)])
    assert sorted((a["seq"], a["status"]) for _, a in pub.acks) == [(1, "stored"), (3, "stored")]
    assert w.stats.stored_batches == 2 and w.stats.failed_writes == 2     # the group, then batch 2 alone


def test_same_seq_under_a_new_incarnation_is_stored_not_duplicate(store: TimeSeriesStore, mill: Any) -> None:
    svc = mill.service(store)

    def payload(k: int, inc: str) -> bytes:
        env = Envelope(edge="edge-a", mill=mill.id, seq=1, batch=_good(mill, k), created_ns=time.time_ns(),
                       incarnation=inc)
        return encode(env, key=SECRETS["edge-a"])

    first = svc.handle(payload(0, ""))
    resent = payload(1, "inc-2")              # a re-send is the same bytes (same rows: a duplicate)
    restarted, again = svc.handle(resent), svc.handle(resent)
    assert (first.status, restarted.status, again.status) == ("stored", "stored", "duplicate")
    assert svc.handle(payload(2, "inc-3")).status == "stored"
    # the key the service writes is the envelope's
    prepared = svc.prepare(payload(3, "inc-4"), time.time_ns())
    assert isinstance(prepared, Accepted) and prepared.envelope.idempotency_key == "edge-a:inc-4:1"
