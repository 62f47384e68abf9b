"""Edge hardening: nothing lost when a commit fails, no dead letters from a proxy's 4xx or a forged ack,
a fresh buffer file is a new incarnation for the cloud, and an exposed secret file is flagged.

Real parts throughout: SQLite buffers (a commit refused by a second connection holding the write lock),
a uvicorn server on loopback, the machine's Mosquitto (``mqtt_broker``), the cloud's ``IngestService``
over an ``EmbeddedStore``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import aiomqtt
import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from spinline.core import wire
from spinline.core.batch import Batch
from spinline.core.errors import StorageError, UplinkError
from spinline.core.site import Priority, load_site
from spinline.edge.agent import BUFFER_FILE, EdgeAgent
from spinline.edge.buffer import EdgeBuffer
from spinline.edge.cli import read_secret
from spinline.edge.forwarder import AsyncBuffer, Forwarder
from spinline.edge.settings import EdgeSettings
from spinline.edge.uplink.base import Ack, AckTrust, parse_ack, sign_ack, verify_ack
from spinline.edge.uplink.http import INGEST_PATH, HttpUplink
from spinline.edge.uplink.mqtt import MqttUplink

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"edge-secret-for-tests"


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def rows(key: int, n: int, v0: float = 1.0, t0: int | None = None) -> Batch:
    t = (time.time_ns() - 5 * 10**9) if t0 is None else t0
    return Batch.of(np.full(n, key), t + np.arange(n, dtype=np.int64) * 10**6, v0 + np.arange(n, dtype=np.float64), 0)


def agent(tmp_path: Path, **kw: Any) -> EdgeAgent:
    site = load_site(ROOT / "examples" / "mill.yaml")
    return EdgeAgent(site, site.mills[0].id, EdgeSettings(edge_id="e1", secret=SECRET, data_dir=tmp_path / "edge",
                                                          cloud_url=None, **kw))


# --- 1. a failed commit keeps the rows ------------------------------------------------------------


async def test_flush_keeps_rows_while_the_buffer_is_locked_and_commits_them_next(tmp_path: Path) -> None:
    ag = agent(tmp_path)
    ag.buffer.buffer.busy_timeout_s = 0.1
    await ag.buffer.open()
    try:
        key = ag.points[0].key
        ag.collector.pending[Priority.HIGH].append(rows(key, 3, 10.0))
        ag.collector.pending[Priority.LOW].append(rows(key, 2, 20.0))
        ag.collector.quarantine.append(rows(key, 1, 30.0, t0=1))
        ag.collector.pending_meta["clock_corrected_rows"] += 4
        other = sqlite3.connect(ag.buffer.buffer.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")                       # another writer holds the lock: a busy database
        with pytest.raises(StorageError):
            await ag.flush()
        ag.collector.pending[Priority.NORMAL].append(rows(key, 2, 40.0))  # collected while the buffer was failing
        with pytest.raises(StorageError):
            await ag.flush()
        assert ag.collector.pending_rows == 7 and len(ag.collector.quarantine) == 1
        other.execute("ROLLBACK")
        other.close()
        assert await ag.flush() == 7
        st = await ag.buffer.stats()
        assert (st.rows, st.quarantined_rows, ag.memory_dropped_rows) == (7, 1, 0)
        stored = await ag.buffer.call(ag.buffer.buffer.read, limit=10)
        assert sorted(len(s.batch) for s in stored) == [2, 2, 3]
        assert all(s.meta["clock_corrected_rows"] == 4 for s in stored)
        assert not ag.collector.pending or not any(ag.collector.pending.values())
    finally:
        await ag.buffer.close()


class FailingBuffer(EdgeBuffer):
    """A real buffer whose commits fail while ``failing`` (a disk that is full)."""

    failing = True

    def append(self, batch: Batch, **kw: Any) -> Any:
        if self.failing:
            raise StorageError("buffer commit failed: database or disk is full")
        return super().append(batch, **kw)


async def test_memory_cap_drops_oldest_low_priority_rows_counted_and_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="spinline")
    ag = agent(tmp_path, max_pending_rows=10)
    ag.buffer.buffer = FailingBuffer(tmp_path / "edge" / BUFFER_FILE)
    await ag.buffer.open()
    try:
        key = ag.points[0].key
        low = [rows(key, 4, 100.0 + 10 * i) for i in range(3)]
        ag.collector.pending[Priority.LOW].extend(low)
        ag.collector.pending[Priority.HIGH].append(rows(key, 5, 1.0))
        for _ in range(3):
            with pytest.raises(StorageError):
                await ag.flush()
        # 17 rows, cap 10: the oldest low-priority batch whole and 3 rows of the next one go.
        assert ag.memory_dropped_rows == 7
        pending = ag.collector.pending
        assert [len(b) for b in pending[Priority.HIGH]] == [5] and [len(b) for b in pending[Priority.LOW]] == [1, 4]
        assert float(ag.collector.pending[Priority.LOW][0].value[0]) == 113.0
        assert sum("dropping the oldest" in r.getMessage() for r in caplog.records) == 1
        st = await ag.status()
        assert st["memory_dropped_rows"] == 7 and st["pending_rows"] == 10
        pts = ag.reporter.self_points(st)
        assert float(pts.value[pts.point == ag.reporter.edge_keys["buffer_dropped"]][0]) == 7.0
        ag.buffer.buffer.failing = False  # type: ignore[attr-defined]
        assert await ag.flush() == 10
        assert sum("commits work again" in r.getMessage() for r in caplog.records) == 1
    finally:
        await ag.buffer.close()


# --- 2. HTTP: only the cloud's own refusal is final ------------------------------------------------


class Cloud:
    """A uvicorn server on loopback answering POST {prefix}/api/v1/ingest as ``answer`` says."""

    def __init__(self, answer: Callable[[bytes], Response]) -> None:
        self.answer = answer
        self.posts = 0

        async def ingest(request: Request) -> Response:
            self.posts += 1
            return self.answer(await request.body())

        self.app = Starlette(routes=[Route("/good" + INGEST_PATH, ingest, methods=["POST"])])
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="error", lifespan="off"))
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        await until(lambda: self.server.started)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await self.task

    def url(self, prefix: str = "/good") -> str:
        return f"http://127.0.0.1:{self.port}{prefix}"


def buffer_with(tmp_path: Path, n: int = 1) -> EdgeBuffer:
    buf = EdgeBuffer(tmp_path / "b.sqlite").open()
    for i in range(n):
        buf.append(rows(1, 2, 10.0 * i), priority=Priority.NORMAL)
    return buf


async def session(fwd: Forwarder, up: Any, done: Callable[[], bool], timeout: float = 10.0) -> BaseException | None:
    """Run one forwarder session until ``done()`` or it ends; returns what ended it."""
    async with up:
        task = asyncio.create_task(fwd.run_session(up))
        try:
            await until(lambda: done() or task.done(), timeout)
        finally:
            if not task.done():
                task.cancel()
            res = await asyncio.gather(task, return_exceptions=True)
    return res[0] if isinstance(res[0], BaseException) and not isinstance(res[0], asyncio.CancelledError) else None


@pytest.mark.parametrize(("prefix", "answer"), [
    ("/wrong", None),                                                   # 404 from a wrong path prefix
    ("/good", lambda _b: PlainTextResponse("<html>413 Request Entity Too Large</html>", 413)),   # a proxy
    ("/good", lambda _b: PlainTextResponse("Request blocked", 400)),                              # a WAF
    ("/good", lambda _b: JSONResponse({"reason": "policy_violation"}, 400)),                      # unknown reason
])
async def test_http_4xx_that_is_not_a_spinline_refusal_ends_the_session_and_keeps_the_batch(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, prefix: str, answer: Any) -> None:
    caplog.set_level(logging.WARNING, logger="spinline")
    buf = buffer_with(tmp_path)
    fwd = Forwarder(AsyncBuffer(buf), edge="e1", mill="m", secret=SECRET)
    async with Cloud(answer or (lambda _b: JSONResponse({"seq": 1, "status": "stored"}))) as cloud:
        for _ in range(2):
            ended = await session(fwd, HttpUplink(cloud.url(prefix), edge="e1", mill="m", secret=SECRET),
                                  lambda: False)
            assert isinstance(ended, UplinkError) and "not a spinline refusal" in str(ended)
    st = buf.stats()
    assert (st.batches, st.dead_letters, fwd.stats.rejected) == (1, 0, 0)
    assert sum("not a spinline refusal" in r.getMessage() for r in caplog.records) == 1   # logged once
    buf.close()


async def test_http_json_refusal_with_a_known_reason_is_final(tmp_path: Path) -> None:
    buf = buffer_with(tmp_path, 2)
    fwd = Forwarder(AsyncBuffer(buf), edge="e1", mill="m", secret=SECRET)

    def answer(body: bytes) -> Response:
        seq = wire.decode(body).seq
        if seq == 1:
            # A refusal for the batch's own data (a cloud-state one, unknown_point, is held: test_row_retry).
            return JSONResponse({"reason": "wrong_type", "detail": "fractional state"}, 422)
        return JSONResponse({"seq": seq, "status": "stored", "stored": 2})

    async with Cloud(answer) as cloud:
        up = HttpUplink(cloud.url(), edge="e1", mill="m", secret=SECRET)
        assert await session(fwd, up, lambda: buf.stats().batches == 0) is None
    assert (buf.stats().dead_letters, fwd.stats.rejected, fwd.stats.acked) == (1, 1, 1)
    buf.close()


# --- 3. forged acks ----------------------------------------------------------------------------------


def test_ack_signature_contract() -> None:
    ack = {"seq": 7, "status": "rejected", "reason": "unknown_point", "stored": 0, "edge": "e1", "inc": "ab"}
    signed = sign_ack(SECRET, ack)
    canonical = json.dumps(ack, sort_keys=True, separators=(",", ":")).encode()
    import hashlib
    import hmac
    assert signed["sig"] == hmac.new(SECRET, canonical, hashlib.sha256).hexdigest()
    assert verify_ack(SECRET, signed) is True and verify_ack(SECRET, ack) is None
    assert verify_ack(b"other", signed) is False and verify_ack(SECRET, signed | {"seq": 8}) is False
    # Key order and spacing of the JSON on the wire do not matter.
    assert verify_ack(SECRET, json.loads(json.dumps(dict(reversed(list(signed.items())))))) is True
    trust = AckTrust(SECRET, "e1")
    trust.incarnation = "ab"
    assert trust.accept(ack)                                            # unsigned: trusted until a signed one
    assert trust.accept(signed) and trust.signed_seen
    assert not trust.accept(ack)                                        # ... then no more
    assert not trust.accept(sign_ack(SECRET, ack | {"inc": "zz"}))     # another incarnation's ack
    assert not trust.accept(sign_ack(SECRET, ack | {"edge": "e2"}))
    assert not AckTrust(SECRET, "e1", required=True).accept(ack)
    assert not parse_ack({"seq": 1, "status": "rejected", "reason": "pwned"}).final
    assert not parse_ack({"seq": 1, "status": "rejected", "reason": "duplicate"}).final
    assert Ack(1, "rejected", "non_finite").final


class AckRig:
    """A forwarder on the real broker through ``MqttUplink``; ``publish`` plays the cloud (or an attacker)."""

    def __init__(self, tmp_path: Path, host: str, port: int, *, required: bool = False, n: int = 3) -> None:
        self.host, self.port = host, port
        self.edge, self.mill = f"e{time.time_ns() % 10**9}", "m-acks"
        self.buf = buffer_with(tmp_path, n)
        self.abuf = AsyncBuffer(self.buf)
        self.fwd = Forwarder(self.abuf, edge=self.edge, mill=self.mill, secret=SECRET,
                             ack_timeout_s=3600, require_signed_acks=required)
        self.up = MqttUplink(f"mqtt://{host}:{port}", edge=self.edge, mill=self.mill, secret=SECRET,
                             trust=self.fwd.trust)
        self.topic = wire.TOPIC_ACK.format(mill=self.mill, edge=self.edge)
        self.task: asyncio.Task[None] | None = None
        self.cloud: aiomqtt.Client | None = None

    async def __aenter__(self) -> Self:
        await self.up.__aenter__()
        self.cloud = aiomqtt.Client(self.host, self.port)
        await self.cloud.__aenter__()
        self.task = asyncio.create_task(self.fwd.run_session(self.up))
        await until(lambda: self.fwd.stats.sent == self.buf.stats().batches)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None and self.cloud is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.up.__aexit__(None, None, None)
        await self.cloud.__aexit__(None, None, None)
        # On the buffer's own thread, after any ack still running there: closing the SQLite connection
        # under a running statement from another thread crashed the interpreter (seen in CI).
        await self.abuf.close()

    def ignored(self) -> int:
        return self.fwd._ignored + self.fwd.trust.ignored

    async def publish(self, ack: dict[str, Any], *, expect_ignored: bool = False) -> None:
        assert self.cloud is not None
        before = self.ignored()
        await self.cloud.publish(self.topic, json.dumps(ack), qos=1)
        if expect_ignored:
            await until(lambda: self.ignored() == before + 1)


async def test_forged_rejected_acks_do_not_dead_letter_batches(tmp_path: Path, mqtt_broker: tuple[str, int]) -> None:
    async with AckRig(tmp_path, *mqtt_broker) as rig:
        # Unsigned acks are still trusted (the cloud has not signed one yet), but a rejection counts only for a batch
        # in flight and with a final reason.
        await rig.publish({"seq": 99, "status": "rejected", "reason": "unknown_point"}, expect_ignored=True)
        await rig.publish({"seq": 1, "status": "rejected", "reason": "http_404"})
        await rig.publish({"seq": 3, "status": "stored", "stored": 2})
        await until(lambda: rig.fwd.stats.acked == 1)
        assert rig.buf.stats().dead_letters == 0 and rig.buf.seqs() == [1, 2]
        # The cloud starts signing: from then on unsigned and badly signed acks are ignored.
        await rig.publish(sign_ack(SECRET, {"seq": 2, "status": "stored", "stored": 2, "edge": rig.edge,
                                            "inc": rig.buf.incarnation}))
        await until(lambda: rig.fwd.stats.acked == 2)
        await rig.publish({"seq": 1, "status": "rejected", "reason": "unknown_point"}, expect_ignored=True)
        await rig.publish(sign_ack(b"guessed", {"seq": 1, "status": "rejected", "reason": "unknown_point"}),
                          expect_ignored=True)
        await rig.publish({"seq": 1, "status": "stored", "stored": 2, "sig": "00" * 32}, expect_ignored=True)
        await rig.publish(sign_ack(SECRET, {"seq": 1, "status": "rejected", "reason": "unknown_point",
                                            "inc": "an-old-incarnation"}), expect_ignored=True)
        assert rig.buf.seqs() == [1] and rig.buf.stats().dead_letters == 0
        # A genuine signed rejection for the batch's own data still dead-letters (a cloud-state one is held).
        await rig.publish(sign_ack(SECRET, {"seq": 1, "status": "rejected", "reason": "wrong_type"}))
        await until(lambda: rig.buf.stats().dead_letters == 1)
        assert rig.fwd.stats.acks_ignored == rig.ignored() == 5


def test_signed_acks_are_required_by_default(tmp_path: Path) -> None:
    """An unsigned ack on the broker is anyone's: by default the edge acts only on signed ones."""
    from spinline.edge.settings import EdgeSettings

    assert EdgeSettings(edge_id="e1", secret=SECRET, data_dir=tmp_path).require_signed_acks
    buf = buffer_with(tmp_path)
    fwd = Forwarder(AsyncBuffer(buf), edge="e1", mill="m", secret=SECRET)
    assert fwd.trust.required and not fwd.trust.accept({"seq": 1, "status": "stored", "stored": 2})
    assert fwd.trust.accept(sign_ack(SECRET, {"seq": 1, "status": "stored", "stored": 2}))
    # without a secret (authentication off) there is nothing to verify with
    assert not Forwarder(AsyncBuffer(buf), edge="e1", mill="m", secret=None).trust.required
    buf.close()


async def test_stored_ack_for_a_batch_not_in_flight_deletes_nothing_and_is_counted(
        tmp_path: Path, mqtt_broker: tuple[str, int]) -> None:
    """A forged (or stale) ``stored`` ack must not delete buffered rows nor count as acked."""
    async with AckRig(tmp_path, *mqtt_broker, n=2) as rig:
        await rig.publish({"seq": 42, "status": "stored", "stored": 2}, expect_ignored=True)
        await rig.publish({"seq": 43, "status": "duplicate", "stored": 0}, expect_ignored=True)
        assert rig.buf.seqs() == [1, 2] and rig.fwd.stats.acked == 0
        await rig.publish({"seq": 1, "status": "stored", "stored": 2})          # in flight: acted on
        # the counter moves once the buffer's delete has returned: wait for both
        await until(lambda: rig.fwd.stats.acked == 1)
        assert rig.buf.seqs() == [2] and rig.fwd.stats.acks_ignored == 2


async def test_required_signatures_ignore_every_unsigned_ack(tmp_path: Path, mqtt_broker: tuple[str, int]) -> None:
    async with AckRig(tmp_path, *mqtt_broker, required=True, n=1) as rig:
        await rig.publish({"seq": 1, "status": "rejected", "reason": "unknown_point"}, expect_ignored=True)
        await rig.publish({"seq": 1, "status": "stored", "stored": 2}, expect_ignored=True)
        assert rig.buf.seqs() == [1]
        await rig.publish(sign_ack(SECRET, {"seq": 1, "status": "stored", "stored": 2}))
        await until(lambda: rig.buf.seqs() == [])
        assert rig.buf.stats().dead_letters == 0


# --- 4. a new buffer file is a new incarnation ---------------------------------------------------


class IngestUplink:
    """An uplink that hands each payload to the cloud's real ``IngestService`` and queues its ack."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.acks: asyncio.Queue[Ack] = asyncio.Queue()
        self.event_acks: asyncio.Queue[wire.EventsAck] = asyncio.Queue()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.results: list[Any] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def send(self, seq: int, payload: bytes) -> None:
        r = await asyncio.to_thread(self.service.handle, payload)
        self.results.append(r)
        self.acks.put_nowait(parse_ack(r.ack()))

    async def publish_status(self, payload: bytes) -> None:
        return None

    async def send_events(self, payload: bytes) -> None:
        return None


async def test_a_wiped_buffer_is_a_new_incarnation_and_its_seq_1_is_stored(tmp_path: Path) -> None:
    from spinline.cloud.ingest.service import IngestService
    from spinline.cloud.storage.catalog import point_infos
    from spinline.cloud.storage.embedded import EmbeddedStore

    site = load_site(ROOT / "examples" / "mill.yaml")
    mill = site.mills[0].id
    ref = next(p for p in site.points(mill) if p.point.kind == "gauge")
    store = EmbeddedStore(tmp_path / "cloud.duckdb")
    store.migrate()
    store.register_points(point_infos(site, mill))
    service = IngestService(store, {"e1": SECRET}.get, {"e1": mill}.get,
                            lambda m: frozenset(p.key for p in site.points(mill)))
    data = tmp_path / "edge"
    t0 = time.time_ns() - 60 * 10**9
    incs = []
    try:
        for run, value in enumerate((1.0, 2.0)):
            if run:
                for f in data.glob(BUFFER_FILE + "*"):     # the data dir is wiped, same edge id
                    os.remove(f)
            buf = EdgeBuffer(data / BUFFER_FILE).open()
            incs.append(buf.incarnation)
            sb = buf.append(Batch.of([ref.key], [t0 + run * 10**9], [value], 0))
            assert sb.seq == 1
            fwd = Forwarder(AsyncBuffer(buf), edge="e1", mill=mill, secret=SECRET)
            up = IngestUplink(service)
            assert await session(fwd, up, lambda b=buf: b.stats().batches == 0) is None  # type: ignore[misc]
            assert [r.status for r in up.results] == ["stored"], up.results
            buf.close()
        assert len(set(incs)) == 2 and all(len(i) == 16 for i in incs)
        got = store.range(ref.key, t0 - 1, t0 + 5 * 10**9, resolution="raw")
        assert sorted(np.asarray(got.value).tolist()) == [1.0, 2.0]
    finally:
        store.close()


def test_incarnation_is_kept_across_reopen_and_a_pre_incarnation_file_keeps_the_old_key(tmp_path: Path) -> None:
    with EdgeBuffer(tmp_path / "a.sqlite") as a:
        inc = a.incarnation
        a.append(rows(1, 1))
    with EdgeBuffer(tmp_path / "a.sqlite") as a:
        assert a.incarnation == inc and len(inc) == 16
    with EdgeBuffer(tmp_path / "old.sqlite") as old:   # a file from before incarnations: no ``info`` table
        old.append(rows(1, 1))
        old.db.execute("DROP TABLE info")
    with EdgeBuffer(tmp_path / "old.sqlite") as old:
        assert old.incarnation == ""
    with EdgeBuffer(tmp_path / "old.sqlite") as old:
        assert old.incarnation == ""


# --- 6. secret file mode -------------------------------------------------------------------------


def test_secret_file_readable_by_others_is_warned_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="spinline")
    f = tmp_path / "edge.key"
    f.write_text("s3cret\n")
    f.chmod(0o600)
    assert read_secret(f, tmp_path) == b"s3cret"
    assert not [r for r in caplog.records if "chmod 600" in r.getMessage()]
    f.chmod(0o640)
    for _ in range(3):
        assert read_secret(f, tmp_path) == b"s3cret"
    msgs = [r.getMessage() for r in caplog.records if "chmod 600" in r.getMessage()]
    assert len(msgs) == 1 and "0o640" in msgs[0] and str(f) in msgs[0]
