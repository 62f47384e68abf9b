"""Issue 12 item 3 (edge half) and the ``conflicting_duplicate`` gap: one bad value never poisons a flush.

* a fractional state, a negative counter or a NaN of good quality is refused at the edge where the
  point is defined, counted per cause and device, and never buffered;
* rows the cloud refuses for its own state (here ``unknown_point``: its site file lags the edge's) are
  held at the edge and re-sent with backoff; the rest of their batch is stored at once; nothing is
  dead-lettered; once the cloud knows the point the held rows are stored too (real ``IngestService``,
  over the ack path and over HTTP through the real route's refusal);
* a re-used key with other rows (``conflicting_duplicate``) is dead-lettered, counted, flagged and logged
  once instead of being re-sent forever; ``spinline edge redrive`` sends dead letters again.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.responses import JSONResponse, Response
from typer.testing import CliRunner

from spinline.core.batch import Batch, Quality
from spinline.core.site import PointKind, Priority, load_site
from spinline.edge.buffer import EdgeBuffer
from spinline.edge.buffer_retry import RetryPolicy
from spinline.edge.forwarder import AsyncBuffer, Forwarder
from spinline.edge.status import alarms
from spinline.edge.uplink.http import HttpUplink

from .test_hardening import ROOT, SECRET, Cloud, IngestUplink, agent, rows, session

FAST = RetryPolicy(base_s=0.2, cap_s=0.5, max_attempts=50)


async def test_bad_values_are_refused_at_the_edge_counted_and_never_buffered(tmp_path: Path) -> None:
    ag = agent(tmp_path)
    await ag.buffer.open()
    try:
        by_kind = {k: next(p for p in ag.points if p.point.kind == k) for k in PointKind}
        gauge, state, counter = by_kind[PointKind.GAUGE], by_kind[PointKind.STATE], by_kind[PointKind.COUNTER]
        t = rows(gauge.key, 1).ts_ns[0]
        b = Batch(np.asarray([gauge.key, state.key, counter.key, gauge.key, state.key, counter.key], dtype=np.int64),
                  t + np.arange(6, dtype=np.int64),
                  np.asarray([1.5, 2.0, 10.0, np.nan, 1.5, -3.0]),
                  np.asarray([0, 0, 0, 0, 0, 0], dtype=np.uint8))
        ag.collector.ingest(b)
        ag.collector.ingest(Batch.of([gauge.key], t + 10, np.asarray([np.nan]), int(Quality.BAD)))   # says it failed
        await ag.collector.flush(ag.buffer)
        buf = ag.buffer.buffer
        stored = Batch.concat([sb.batch for sb in buf.read()])
        assert sorted(stored.value[np.isfinite(stored.value)].tolist()) == [1.5, 2.0, 10.0]
        assert int(np.isnan(stored.value).sum()) == 1          # the bad-quality NaN is kept
        assert ag.collector.refused_rows == {"non_finite": 1, "wrong_type": 2}
        bad = [h.bad_input for h in ag.collector.health_of.values()]     # per device, as status.json shows
        assert sum(d.get("wrong_type", 0) for d in bad) == 2 and sum(d.get("non_finite", 0) for d in bad) == 1
        st = await ag.status()
        assert st["refused_rows"] == {"non_finite": 1, "wrong_type": 2}
    finally:
        await ag.buffer.close()


def _cloud(tmp_path: Path, known: set[int]) -> tuple[Any, Any, str]:
    from spinline.cloud.ingest.service import IngestService
    from spinline.cloud.storage.catalog import point_infos
    from spinline.cloud.storage.embedded import EmbeddedStore

    site = load_site(ROOT / "examples" / "mill.yaml")
    mill = site.mills[0].id
    store = EmbeddedStore(tmp_path / "cloud.duckdb")
    store.migrate()
    store.register_points(point_infos(site, mill))
    # A fresh set per call: the cloud's site file can change under it (here: it learns a point).
    service = IngestService(store, {"e1": SECRET}.get, {"e1": mill}.get, lambda m: frozenset(known))
    return store, service, mill


def _http_answer(service: Any) -> Callable[[bytes], Response]:
    """The real route's answers (``cloud.api.routes.ingest``): a signed ack, or a signed refusal."""
    from spinline.cloud.api.routes.ingest import refusal
    from spinline.core import wire

    def answer(body: bytes) -> Response:
        result = service.handle(body)
        signed = service.signed_ack(result)
        if result.status == "rejected":
            return refusal(result.reason or "malformed", result.detail, key=SECRET,
                           ack={k: v for k, v in signed.items() if k != wire.ACK_SIG_FIELD})
        return JSONResponse(signed)
    return answer


@pytest.mark.parametrize("transport", ["ack", "http"])
@pytest.mark.parametrize("all_unknown", [False, True])
async def test_rows_refused_for_the_clouds_state_are_held_and_stored_once_it_knows(
        tmp_path: Path, transport: str, all_unknown: bool) -> None:
    site = load_site(ROOT / "examples" / "mill.yaml")
    pts = [p for p in site.points(site.mills[0].id) if p.point.kind == PointKind.GAUGE][:2]
    good, new = pts[0].key, pts[1].key
    known = {p.key for p in site.points(site.mills[0].id)} - {new}
    store, service, mill = _cloud(tmp_path, known)
    buf = EdgeBuffer(tmp_path / "b.sqlite").open()
    a = rows(good, 30, 1.0)
    b = rows(new, 20, 100.0, t0=int(a.ts_ns[0]) + 500)
    batch = b if all_unknown else Batch.concat([a, b])
    buf.append(batch, priority=Priority.NORMAL)
    fwd = Forwarder(AsyncBuffer(buf), edge="e1", mill=mill, secret=SECRET, retry=FAST, ack_timeout_s=30)

    async def run(done: Callable[[], bool]) -> None:
        if transport == "ack":
            assert await session(fwd, IngestUplink(service), done) is None
        else:
            async with Cloud(_http_answer(service)) as cloud:
                assert await session(fwd, HttpUplink(cloud.url(), edge="e1", mill=mill, secret=SECRET), done) is None

    def raw(key: int, ref: Batch) -> list[float]:
        got = store.range(key, int(ref.ts_ns.min()), int(ref.ts_ns.max()) + 1, resolution="raw")
        return np.asarray(got.value).tolist()

    await run(lambda: buf.stats().batches == 0 and fwd.stats.rows_held == 20)
    st = buf.stats()
    assert st.dead_letters == 0 and st.held == {"rows": 20, "batches": 1, "by_reason": {"unknown_point": 20},
                                                "next_ns": st.held["next_ns"]}
    assert "cloud_refusing_rows" in alarms(st.as_dict(), {"state": "connected"})
    assert raw(good, a) == ([] if all_unknown else a.value.tolist())   # the good rows are stored at once
    assert raw(new, b) == []
    known.add(new)                                                       # the cloud's site file catches up
    await run(lambda: raw(new, b) == b.value.tolist())
    await run(lambda: buf.stats().batches == 0 and not fwd._inflight)
    st = buf.stats()
    assert (st.dead_letters, st.held["rows"]) == (0, 0)
    assert fwd.stats.held_released >= 1 and fwd.stats.dead_lettered == {}
    if not all_unknown:
        assert raw(good, a) == a.value.tolist()                          # stored once, not twice
    buf.close()


async def test_held_rows_are_dead_lettered_with_their_cause_after_the_last_attempt(tmp_path: Path) -> None:
    site = load_site(ROOT / "examples" / "mill.yaml")
    new = next(p for p in site.points(site.mills[0].id) if p.point.kind == PointKind.GAUGE).key
    store, service, mill = _cloud(tmp_path, set())
    buf = EdgeBuffer(tmp_path / "b.sqlite").open()
    buf.append(rows(new, 5), priority=Priority.NORMAL)
    fwd = Forwarder(AsyncBuffer(buf), edge="e1", mill=mill, secret=SECRET,
                    retry=RetryPolicy(base_s=0.05, cap_s=0.05, max_attempts=2))
    assert await session(fwd, IngestUplink(service), lambda: bool(fwd.stats.dead_lettered)) is None
    st = buf.stats()
    assert st.dead_letters_by_reason == {"unknown_point": {"batches": 1, "rows": 5}} and not st.held["rows"]
    assert fwd.stats.dead_lettered == {"unknown_point": 1}
    buf.close()


def _restored(tmp_path: Path, inc: str) -> EdgeBuffer:
    """A buffer file restored from an old snapshot: same incarnation, its seq counter rolled back."""
    path = tmp_path / "restored.sqlite"
    EdgeBuffer(path).open().close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE info SET value = ? WHERE name = 'incarnation'", (inc,))
    return EdgeBuffer(path).open()


@pytest.mark.parametrize("transport", ["ack", "http"])
async def test_conflicting_duplicate_is_dead_lettered_counted_flagged_and_logged_once(
        tmp_path: Path, transport: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="spinline.edge")
    site = load_site(ROOT / "examples" / "mill.yaml")
    key = next(p for p in site.points(site.mills[0].id) if p.point.kind == PointKind.GAUGE).key
    store, service, mill = _cloud(tmp_path, {p.key for p in site.points(site.mills[0].id)})
    first = EdgeBuffer(tmp_path / "b.sqlite").open()
    for i in range(3):
        first.append(rows(key, 4, 10.0 * i), priority=Priority.NORMAL)
    fwd = Forwarder(AsyncBuffer(first), edge="e1", mill=mill, secret=SECRET)
    assert await session(fwd, IngestUplink(service), lambda: first.stats().batches == 0) is None
    buf = _restored(tmp_path, first.incarnation)
    first.close()
    for i in range(3):                                    # seqs 1..3 again, other rows
        buf.append(rows(key, 4, 500.0 + i, t0=int(rows(key, 1).ts_ns[0]) + 10**9), priority=Priority.NORMAL)
    fwd = Forwarder(AsyncBuffer(buf), edge="e1", mill=mill, secret=SECRET, ack_timeout_s=0.2)

    async def run() -> None:
        # old code: re-sent forever, never 0; the forwarder counts a dead letter after the buffer's write,
        # so the session runs until both are done
        done = lambda: buf.stats().batches == 0 and sum(fwd.stats.dead_lettered.values()) == 3  # noqa: E731
        if transport == "ack":
            assert await session(fwd, IngestUplink(service), done) is None
        else:
            async with Cloud(_http_answer(service)) as cloud:
                assert await session(fwd, HttpUplink(cloud.url(), edge="e1", mill=mill, secret=SECRET), done) is None

    await run()
    st = buf.stats()
    assert st.dead_letters_by_reason == {"conflicting_duplicate": {"batches": 3, "rows": 12}}
    assert fwd.stats.dead_lettered == {"conflicting_duplicate": 3}
    assert "conflicting_duplicate" in alarms(st.as_dict(), {"state": "connected"})
    logged = [r for r in caplog.records if "conflicting_duplicate" in r.getMessage()
              and r.name.startswith("spinline.edge")]
    assert len(logged) == 1
    buf.close()


def test_redrive_lists_dead_letters_by_cause_and_requeues_them(tmp_path: Path) -> None:
    from spinline.edge.agent import BUFFER_FILE
    from spinline.edge.cli import app

    with EdgeBuffer(tmp_path / BUFFER_FILE) as buf:
        for i in range(3):
            buf.append(rows(1, 2, 10.0 * i), priority=Priority.NORMAL)
        buf.dead_letter(1, "unknown_point")
        buf.dead_letter(2, "unknown_point")
        buf.dead_letter(3, "wrong_type")
        before = buf.stats()
        runner = CliRunner()
        dry = runner.invoke(app, ["redrive", "--data-dir", str(tmp_path), "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert "would re-send 2 batch(es), 4 rows: unknown_point" in dry.output
        assert "would re-send 1 batch(es), 2 rows: wrong_type" in dry.output
        assert buf.stats().batches == 0
        res = runner.invoke(app, ["redrive", "--data-dir", str(tmp_path), "--reason", "unknown_point"])
        assert res.exit_code == 0 and "re-queued 2 batch(es), 4 rows: unknown_point" in res.output
        st = buf.stats()   # the other process's commit is noticed: the cached totals are recounted
        assert (st.batches, st.rows, st.dead_letters_by_reason) == (2, 4, {"wrong_type": {"batches": 1, "rows": 2}})
        assert buf.seqs() == [before.last_seq + 1, before.last_seq + 2]
        assert st.redriven_batches == 2


async def test_the_configured_held_row_backoff_is_the_one_the_agent_uses(tmp_path: Path) -> None:
    """``EdgeSettings.held_retry_base_s`` / ``held_retry_cap_s`` set when held rows go again (item 12)."""
    ag = agent(tmp_path, held_retry_base_s=7.0, held_retry_cap_s=9.0)
    assert [ag.forwarder.retry.delay_s(a) for a in (1, 2, 3)] == [7.0, 9.0, 9.0]   # doubled, then capped
    new = next(p for p in ag.points if p.point.kind == PointKind.GAUGE).key
    store, service, mill = _cloud(tmp_path, set())           # the cloud knows none of the points yet
    await ag.buffer.open()
    try:
        ag.buffer.buffer.append(rows(new, 5), priority=Priority.NORMAL)
        before = time.time_ns()
        assert await session(ag.forwarder, IngestUplink(service),
                             lambda: ag.forwarder.stats.rows_held == 5) is None
        after = time.time_ns()
        next_ns = ag.buffer.buffer.stats().held["next_ns"]
        assert before + 7 * 10**9 <= next_ns <= after + 7 * 10**9   # the first attempt waits base_s, not 30 s
    finally:
        await ag.buffer.close()
        store.close()


def test_held_row_backoff_settings_are_checked() -> None:
    from spinline.edge.settings import EdgeSettings

    with pytest.raises(ValueError, match="held_retry_cap_s"):
        EdgeSettings(edge_id="e1", held_retry_base_s=60.0, held_retry_cap_s=30.0)
    with pytest.raises(ValueError, match="held_retry_base_s"):
        EdgeSettings(edge_id="e1", held_retry_base_s=0.0)
    assert EdgeSettings(edge_id="e1").held_retry == RetryPolicy()   # the defaults are the policy's own
