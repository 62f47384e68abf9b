"""The pure pieces: chart reduction, counter steps, bucket runs, and the store factory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinline.cloud.storage import downsample, partials, shared
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


def test_counter_small_step_back_is_not_a_reset() -> None:
    # A counter resumed a little behind where it stood (restored PLC, resumed simulator): +0, not its value.
    prev = np.array([27646.0, 27646.0, 120.0])
    cur = np.array([27600.0, 27700.0, 100.0])
    roll = np.array([np.nan, np.nan, 1000.0])
    assert step(prev, cur, roll).tolist() == [0.0, 54.0, 0.0]


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


def test_folding_partials_of_split_batches_equals_the_partials_of_all_rows() -> None:
    """The numpy refresh: partials of batches written in any order fold to those of the whole, and a
    merge with a stored row is exact only when a counter's rows do not overlap it in time."""
    from spinline.core.batch import Batch

    rng = np.random.default_rng(3)
    minute, s = 60 * 10**9, 10**9
    n = 600
    ts = np.sort(rng.choice(np.arange(0, 7200) * s, n, replace=False))
    ctr_val = np.cumsum(rng.integers(0, 5, n)).astype(float) % 1000.0          # wraps at 1000
    point = np.r_[np.full(n, 7), np.full(n, 9)]
    whole = Batch.of(point, np.r_[ts, ts], np.r_[ctr_val, rng.normal(5, 1, n)], 0)
    keys, roll = np.array([7]), np.array([1000.0])
    want = shared.minute_partials(whole, keys, roll)
    chunks = [whole.take(np.arange(i, 2 * n, 7)) for i in range(7)]           # interleaved: overlap in time
    split = [shared.minute_partials(c, keys, roll) for c in reversed(chunks)]
    cat = shared.Partials(*(np.concatenate([getattr(p, f) for p in split]) for f in shared.Partials.__slots__))
    got = partials.fold_partials(cat, minute, keys, roll)
    order = np.lexsort((want.bucket, want.point))
    for f in ("point", "bucket", "min", "max", "count", "first_ts", "first", "last_ts", "last"):
        assert np.array_equal(getattr(got.parts, f), getattr(want, f)[order]), f
    assert np.allclose(got.parts.sum, want.sum[order])
    gauge = got.parts.point == 9
    assert np.allclose(got.parts.inc[gauge], 0)              # gauges: no increase (order matters to counters only)
    assert not got.ordered[~gauge].all()                    # interleaved counter chunks: recompute
    # sequential halves fold exactly, counter increase across the seam included
    half = [whole.take(np.flatnonzero((whole.ts_ns < 3600 * s) == first)) for first in (True, False)]
    hp = [shared.minute_partials(h, keys, roll) for h in half]
    hours = partials.fold_partials(shared.Partials(*(np.concatenate([getattr(p, f) for p in hp])
                                                   for f in shared.Partials.__slots__)), 3600 * s, keys, roll)
    stored_first = partials.fold_partials(hp[0], 3600 * s, keys, roll).parts
    later = partials.fold_partials(hp[1], 3600 * s, keys, roll)
    merged, redo, had = partials.merge_stored(later, stored_first)
    assert not had.any() and not redo.any()                 # different hours: nothing to merge with
    same_hour = partials.fold_partials(shared.minute_partials(whole.take(np.flatnonzero(whole.ts_ns < 1800 * s)),
                                                            keys, roll), 3600 * s, keys, roll)
    rest = partials.fold_partials(shared.minute_partials(
        whole.take(np.flatnonzero((whole.ts_ns >= 1800 * s) & (whole.ts_ns < 3600 * s))), keys, roll),
        3600 * s, keys, roll)
    merged, redo, had = partials.merge_stored(rest, same_hour.parts)
    assert had.all() and not redo.any()
    first_hour = hours.parts.bucket == 0
    for f in ("min", "max", "count", "first", "last", "first_ts", "last_ts"):
        assert np.array_equal(getattr(merged, f), getattr(hours.parts, f)[first_hour]), f
    assert np.allclose(merged.inc, hours.parts.inc[first_hour]) and np.allclose(merged.sum, hours.parts.sum[first_hour])
    # the other way round (new rows before the stored ones) is exact too; overlapping ones are not
    back, redo_back, _ = partials.merge_stored(same_hour, rest.parts)
    assert not redo_back.any() and np.allclose(back.inc, hours.parts.inc[first_hour])
    _, redo_overlap, _ = partials.merge_stored(same_hour, same_hour.parts)
    assert redo_overlap.tolist() == [True, False]          # the counter (7) overlaps itself; the gauge merges
