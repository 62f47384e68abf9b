"""Rows written while a rollup refresh runs are counted exactly once (both backends).

A refresh reads what was written before it and clears it; a write landing meanwhile must be neither
lost (cleared unread) nor merged twice (read by this refresh from raw rows and again by the next from
its partials). Each test pauses one side at the edge and checks the rollups against a computation
from all rows at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from tests.cloud.storage.test_store import COUNTER, GAUGE, MIN, T0, _check, info

from spinline.cloud.storage import partials
from spinline.cloud.storage.base import TimeSeriesStore
from spinline.core.batch import Batch, Quality

S = 10**9


def _rows(start_s: int, n: int, step_s: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Times, counter values and gauge values of ``n`` rows every ``step_s`` from ``start_s``."""
    ts = T0 + (start_s + np.arange(n, dtype=np.int64) * step_s) * S
    return ts, 1000.0 + 3.0 * (ts - T0) / S, np.cos((ts - T0) / S / 11.0) * 5


def _batch(ts: np.ndarray, ctr: np.ndarray, gauge: np.ndarray) -> Batch:
    return Batch.of(np.r_[np.full(len(ts), COUNTER), np.full(len(ts), GAUGE)], np.r_[ts, ts], np.r_[ctr, gauge],
                    Quality.GOOD)


def _pair(make_store: Callable[..., TimeSeriesStore]) -> tuple[TimeSeriesStore, TimeSeriesStore]:
    """A refreshing store and a writing one on the same data (their own connections)."""
    refresher, writer = make_store(), make_store()
    refresher.register_points([info(GAUGE), info(COUNTER, "counter")])
    return refresher, writer


def _run(fn: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 (re-raised by the test)
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, errors


def _check_all(store: TimeSeriesStore, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    ts = np.concatenate([p[0] for p in parts])
    _check(store, COUNTER, ts, np.concatenate([p[1] for p in parts]), np.nan)
    _check(store, GAUGE, ts, np.concatenate([p[2] for p in parts]), np.nan, counter=False)


def test_rows_written_while_a_refresh_folds_are_counted_once(make_store, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    refresher, writer = _pair(make_store)
    first = _rows(0, 60, 2)                                   # minutes 0-1, even seconds
    writer.write(_batch(*first))
    paused, go = threading.Event(), threading.Event()
    fold = partials.fold_partials

    def slow_fold(*a: Any, **k: Any) -> Any:
        if threading.current_thread() is not threading.main_thread() and not paused.is_set():
            paused.set()
            assert go.wait(30)
        return fold(*a, **k)

    monkeypatch.setattr(partials, "fold_partials", slow_fold)
    t, errors = _run(refresher.refresh_rollups)
    assert paused.wait(30)
    # Inside the refresh's transaction: rows in the minutes it is rebuilding (odd seconds, so a
    # counter's increase spans both writes) and in a new minute.
    second = _rows(1, 90, 2)
    writer.write(_batch(*second))
    go.set()
    t.join(60)
    assert not t.is_alive() and not errors, errors
    refresher.refresh_rollups()
    _check_all(refresher, [first, second])


def test_a_write_committing_across_a_whole_refresh_is_counted_once(make_store, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # The writer has stored its rows (and, on PostgreSQL, its partials) but not committed when the
    # refresh starts: the refresh waits for it (PostgreSQL: the drained table's lock) or leaves it
    # to the next one (embedded: not in its snapshot); either way it is merged exactly once.
    refresher, writer = _pair(make_store)
    first = _rows(0, 60, 2)
    writer.write(_batch(*first))
    stored, go = threading.Event(), threading.Event()
    cls = type(writer)
    insert = cls._insert                                      # type: ignore[attr-defined]

    def held_insert(self: Any, cur: Any, batch: Batch) -> None:
        insert(self, cur, batch)
        if threading.current_thread() is not threading.main_thread():
            stored.set()
            assert go.wait(30)

    monkeypatch.setattr(cls, "_insert", held_insert)
    second = _rows(1, 90, 2)
    w, w_errors = _run(lambda: writer.write(_batch(*second)))
    assert stored.wait(30)
    r, r_errors = _run(refresher.refresh_rollups)
    deadline = time.monotonic() + 10
    while r.is_alive() and not _waiting_on_a_lock(refresher) and time.monotonic() < deadline:
        time.sleep(0.02)
    go.set()
    for t in (w, r):
        t.join(60)
        assert not t.is_alive()
    assert not w_errors and not r_errors, (w_errors, r_errors)
    refresher.refresh_rollups()
    _check_all(refresher, [first, second])


def _waiting_on_a_lock(store: TimeSeriesStore) -> bool:
    """PostgreSQL: whether some session waits on a lock (the refresh on the drained table)."""
    from spinline.cloud.storage.postgres import PostgresStore

    if not isinstance(store, PostgresStore):
        return False
    import psycopg

    with psycopg.connect(store.url, autocommit=True) as c:
        row = c.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
    return bool(row and row[0])


def test_postgres_writer_that_read_the_slot_before_a_flip_is_merged_once(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A writer reads the active slot, then a whole refresh flips it, drains and truncates that very
    # table; the writer appends there afterwards. Its partials sit in the now-live table and are
    # deleted and merged by the next refresh, once.
    from spinline.cloud.storage.postgres import PostgresStore

    refresher, writer = PostgresStore(postgres_url), PostgresStore(postgres_url)
    refresher.migrate()
    refresher.register_points([info(GAUGE), info(COUNTER, "counter")])
    try:
        _writer_before_the_flip(refresher, writer, monkeypatch)
    finally:
        refresher.close()
        writer.close()


def _writer_before_the_flip(refresher: Any, writer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from spinline.cloud.storage.postgres import PostgresStore

    first = _rows(0, 60, 2)
    writer.write(_batch(*first))
    chosen, go = threading.Event(), threading.Event()
    pick = PostgresStore._partial_table

    def late_pick(cur: Any) -> str:
        table = pick(cur)
        if threading.current_thread() is not threading.main_thread():
            chosen.set()
            assert go.wait(30)
        return table

    monkeypatch.setattr(PostgresStore, "_partial_table", staticmethod(late_pick))
    second = _rows(1, 90, 2)
    w, errors = _run(lambda: writer.write(_batch(*second)))
    assert chosen.wait(30)
    refresher.refresh_rollups()                               # completes: the writer holds no lock it needs
    go.set()
    w.join(60)
    assert not w.is_alive() and not errors, errors
    refresher.refresh_rollups()
    _check_all(refresher, [first, second])
    assert len(refresher.rollup([GAUGE], T0, T0 + 4 * MIN, "1m")) == 3
