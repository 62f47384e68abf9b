"""The pure pieces: chart reduction, counter steps, bucket runs, and the store factory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinline.cloud.storage import downsample, shared
from spinline.cloud.storage.counters import step
from spinline.cloud.storage.embedded import EmbeddedStore
from spinline.cloud.storage.factory import open_store
from spinline.cloud.storage.postgres import PostgresStore


def test_minmax_keeps_extremes_and_bounds_the_length() -> None:
    ts = np.arange(100_000, dtype=np.int64)
    v = np.sin(ts / 1000.0)
    v[12_345], v[54_321] = 9.0, -9.0
    v[777] = np.nan
    t2, v2 = downsample.minmax(ts, v, 200)
    assert len(t2) <= 200 and np.all(np.diff(t2) > 0)
    assert v2.max() == 9.0 and v2.min() == -9.0 and not np.isnan(v2).any()
    same_t, same_v = downsample.minmax(ts[:10], v[:10], 200)
    assert same_t is ts[:10].base or np.array_equal(same_t, ts[:10])
    with pytest.raises(ValueError):
        downsample.minmax(ts, v, 1)


def test_counter_step_rises_wraps_and_resets() -> None:
    prev = np.array([np.nan, 10.0, 990.0, 500.0, 10.0])
    cur = np.array([5.0, 15.0, 5.0, 3.0, 4.0])
    roll = np.array([1000.0, 1000.0, 1000.0, 1000.0, np.nan])
    assert step(prev, cur, roll).tolist() == [0.0, 5.0, 15.0, 3.0, 4.0]


def test_runs_and_resolution_choice() -> None:
    m = shared.MINUTE_NS
    assert shared.runs(np.array([0, m, 2 * m, 5 * m], dtype=np.int64), m) == [(0, 3 * m), (5 * m, 6 * m)]
    day = 86400 * 10**9
    assert shared.pick_resolution(30 * day, 1000) == "1m"
    assert shared.pick_resolution(365 * day, 1000) == "1h"
    assert shared.pick_resolution(day // 24, 1000) == "raw"
    assert shared.pick_resolution(365 * day, None) == "raw"


def test_open_store_picks_the_backend_without_connecting(tmp_path: Path) -> None:
    s = open_store(f"embedded:{tmp_path / 'x.duckdb'}")
    assert isinstance(s, EmbeddedStore) and not (tmp_path / "x.duckdb").exists()   # no I/O yet
    assert isinstance(open_store("postgresql://nobody@127.0.0.1:1/none"), PostgresStore)
    with pytest.raises(ValueError, match="unknown store"):
        open_store("mysql://x")
