"""Embedded (DuckDB) only: library errors become StorageError; dirty minutes of older databases."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from spinline.cloud.storage.base import PointInfo
from spinline.cloud.storage.embedded import EmbeddedStore
from spinline.core.batch import Batch, Quality
from spinline.core.errors import StorageError

S = 10**9
T0 = 1_767_225_600 * S


def _store(tmp_path: Path) -> EmbeddedStore:
    store = EmbeddedStore(tmp_path / "x.duckdb")
    store.migrate()
    store.register_points([PointInfo(k, f"m/a/{k}", "m", "a", str(k), "", "gauge", 1.0) for k in (1, 2)])
    return store


def test_duckdb_errors_are_raised_as_storage_error(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.write(Batch.of([1, 2], [T0, T0], [1.0, 2.0], Quality.GOOD))
    store._cur().close()                         # this thread's cursor dies under the store
    calls: list[Callable[[], object]] = [
        store.refresh_rollups, lambda: store.apply_retention(T0), lambda: store.range(1, T0, T0 + S),
        lambda: store.range(1, T0, T0 + S, resolution="1m"), lambda: store.write(Batch.of([1], [T0], [1.0], 0)),
        lambda: store.rollup([1], T0, T0 + S, "1m"), store.rejections, lambda: store.latest([1])]
    for call in calls:
        with pytest.raises(StorageError, match="failed"):
            call()
    store.close()


def test_injected_failure_in_refresh_is_a_storage_error_and_keeps_the_dirty_minutes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import spinline.cloud.storage.embedded_rollups as emb

    store = _store(tmp_path)
    store.write(Batch.of([1, 1], [T0, T0 + S], [1.0, 3.0], Quality.GOOD))
    monkeypatch.setattr(emb, "_HOUR_MINUTES", "SELECT * FROM no_such_table")
    with pytest.raises(StorageError, match="rollup refresh failed"):
        store.refresh_rollups()
    monkeypatch.undo()
    store.refresh_rollups()                      # rolled back: the minute is still dirty
    assert store.rollup([1], T0, T0 + 60 * S, "1m").mean.tolist() == [2.0]
    store.close()


def test_dirty_minutes_without_a_point_refresh_only_points_with_raw_rows(tmp_path: Path) -> None:
    # Rows of rollup_dirty written before schema 3 carry no point: every point with raw rows there.
    store = _store(tmp_path)
    store.write(Batch.of([1, 2], [T0, T0], [1.0, 2.0], Quality.GOOD))
    store.refresh_rollups()
    store._cur().execute("DELETE FROM samples WHERE point = 2")      # retention took point 2's rows
    store._cur().execute("INSERT INTO samples VALUES (1, ?, 5.0, 0, NULL)", [T0 + S])
    store._cur().execute("INSERT INTO rollup_dirty (bucket) VALUES (?)", [T0])
    store.refresh_rollups()
    r = store.rollup([1, 2], T0, T0 + 60 * S, "1m")
    assert r.point.tolist() == [1, 2] and r.count.tolist() == [2, 1] and np.allclose(r.mean, [3.0, 2.0])
    store.close()
