"""The storage contract: the same tests on the embedded (DuckDB) and PostgreSQL backends."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from spinline.cloud.storage.base import PointInfo, Rejection, TimeSeriesStore
from spinline.core.batch import Batch, Quality

S = 10**9
MIN = 60 * S
HOUR = 3600 * S
DAY = 86400 * S
T0 = 1_767_225_600 * S            # 2026-01-01T00:00:00Z, aligned to the hour

GAUGE = 101
COUNTER = 102
SPARSE = 103                      # deadband > 0: no time-gap judgement
WRAP = 104                        # counter with roll-over at 1000


def info(key: int, kind: str = "gauge", *, mill: str = "m1", deadband: float = 0.0,
         rollover: float | None = None, interval_s: float = 1.0) -> PointInfo:
    return PointInfo(key=key, tag=f"{mill}/mc/{key}", mill=mill, machine="mc", name=str(key), unit="kW",
                     kind=kind, interval_s=interval_s, deadband=deadband, rollover=rollover)


@pytest.fixture()
def ready(store: TimeSeriesStore) -> TimeSeriesStore:
    store.register_points([info(GAUGE), info(COUNTER, "counter"), info(SPARSE, deadband=0.5),
                           info(WRAP, "counter", rollover=1000.0), info(999, mill="m2")])
    return store


def seconds(point: int, start_ns: int, n: int, values: Any, seq0: int = 0) -> Batch:
    ts = start_ns + np.arange(n, dtype=np.int64) * S
    return Batch.of(np.full(n, point), ts, values, Quality.GOOD, seq0 + np.arange(n))


# --- writes, reads, idempotency ----------------------------------------------------------------

def test_points_registered_and_filtered_by_mill(ready: TimeSeriesStore) -> None:
    assert {p.key for p in ready.points()} == {GAUGE, COUNTER, SPARSE, WRAP, 999}
    m1 = ready.points("m1")
    assert {p.key for p in m1} == {GAUGE, COUNTER, SPARSE, WRAP}
    wrap = next(p for p in m1 if p.key == WRAP)
    assert wrap.kind == "counter" and wrap.rollover == 1000.0
    ready.register_points([info(GAUGE, interval_s=5.0)])          # update in place
    assert next(p for p in ready.points("m1") if p.key == GAUGE).interval_s == 5.0


def test_write_then_read_raw_roundtrip(ready: TimeSeriesStore) -> None:
    b = seconds(GAUGE, T0, 100, np.linspace(0, 99, 100))
    r = ready.write(b, idempotency_key="e1:1")
    assert (r.stored, r.duplicate) == (100, False)
    s = ready.range(GAUGE, T0, T0 + 100 * S, resolution="raw")
    assert s.resolution == "raw" and not s.reduced
    assert np.array_equal(s.ts_ns, b.ts_ns) and np.array_equal(s.value, b.value)
    assert len(ready.range(GAUGE, T0 + 10 * S, T0 + 20 * S).ts_ns) == 10   # [start, end)


def test_idempotency_key_stores_once(ready: TimeSeriesStore) -> None:
    b = seconds(GAUGE, T0, 50, 1.0)
    assert ready.write(b, idempotency_key="e1:7").stored == 50
    again = ready.write(b, idempotency_key="e1:7")
    assert (again.stored, again.duplicate) == (0, True)
    assert len(ready.range(GAUGE, T0, T0 + DAY, resolution="raw").ts_ns) == 50
    # No key: stored every time (the caller opted out of exactly-once).
    ready.write(seconds(COUNTER, T0, 5, 1.0))
    ready.write(seconds(COUNTER, T0, 5, 1.0))
    assert len(ready.range(COUNTER, T0, T0 + DAY, resolution="raw").ts_ns) == 10


def test_same_key_with_other_content_is_a_conflict_not_a_duplicate(ready: TimeSeriesStore) -> None:
    """A buffer restored from a snapshot reuses (edge, incarnation, seq) for new rows: never acked as done."""
    first = seconds(GAUGE, T0, 30, 1.0)
    assert ready.write(first, idempotency_key="e1:i:5", note='{"refused": {}}').stored == 30
    same = ready.write(seconds(GAUGE, T0, 30, 1.0), idempotency_key="e1:i:5")
    assert (same.stored, same.duplicate, same.conflict, same.note) == (0, True, False, '{"refused": {}}')
    other = ready.write(seconds(GAUGE, T0 + 30 * S, 30, 2.0), idempotency_key="e1:i:5")
    assert (other.stored, other.duplicate, other.conflict) == (0, False, True)
    # In one call: the second item with the key is judged against the first one's content.
    res = ready.write_many([(seconds(GAUGE, T0 + 60 * S, 5, 3.0), "e1:i:6"),
                            (seconds(GAUGE, T0 + 60 * S, 5, 3.0), "e1:i:6"),
                            (seconds(GAUGE, T0 + 90 * S, 5, 4.0), "e1:i:6")])
    assert [(r.stored, r.duplicate, r.conflict) for r in res] == [(5, False, False), (0, True, False), (0, False, True)]
    # An explicit digest (the whole payload's, when only some rows were stored) is what is compared.
    ready.write(seconds(GAUGE, T0 + 120 * S, 5, 1.0), idempotency_key="e1:i:7", digest="abc")
    assert ready.write(seconds(GAUGE, T0 + 120 * S, 3, 1.0), idempotency_key="e1:i:7", digest="abc").duplicate
    assert ready.write(seconds(GAUGE, T0 + 120 * S, 5, 1.0), idempotency_key="e1:i:7", digest="abd").conflict
    assert len(ready.range(GAUGE, T0, T0 + DAY, resolution="raw").ts_ns) == 40


def test_write_many_one_transaction_mixed_keys(ready: TimeSeriesStore) -> None:
    ready.write(seconds(GAUGE, T0, 10, 1.0), idempotency_key="e1:1")
    res = ready.write_many([(seconds(GAUGE, T0, 10, 1.0), "e1:1"),          # seen before
                            (seconds(GAUGE, T0 + 10 * S, 10, 2.0), "e1:2"),  # new
                            (seconds(GAUGE, T0 + 10 * S, 10, 2.0), "e1:2"),  # repeated in the call
                            (seconds(COUNTER, T0, 3, 1.0), None)])
    assert [(r.stored, r.duplicate) for r in res] == [(0, True), (10, False), (0, True), (3, False)]
    assert len(ready.range(GAUGE, T0, T0 + DAY, resolution="raw").ts_ns) == 20


def test_two_writers_same_key_store_once(make_store) -> None:  # type: ignore[no-untyped-def]
    a, b = make_store(), make_store()
    a.register_points([info(GAUGE)])
    batch = seconds(GAUGE, T0, 20_000, np.arange(20_000.0))
    barrier = threading.Barrier(2)
    results = []

    def go(store: TimeSeriesStore) -> None:
        barrier.wait()
        results.append(store.write(batch, idempotency_key="e9:1"))

    threads = [threading.Thread(target=go, args=(s,)) for s in (a, b, a)]
    barrier = threading.Barrier(3)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.duplicate for r in results) == [False, True, True]
    assert sum(r.stored for r in results) == 20_000
    assert len(a.range(GAUGE, T0, T0 + DAY, resolution="raw").ts_ns) == 20_000


def test_latest_keeps_newest_row_per_point(ready: TimeSeriesStore) -> None:
    ready.write(seconds(GAUGE, T0 + 100 * S, 3, [1.0, 2.0, 3.0]))
    ready.write(seconds(GAUGE, T0, 3, [7.0, 8.0, 9.0]))                  # older, arrives later
    ready.write(seconds(COUNTER, T0, 2, [5.0, 6.0]))
    lt = ready.latest([GAUGE, COUNTER, SPARSE])
    got = dict(zip(lt.point.tolist(), zip(lt.ts_ns.tolist(), lt.value.tolist(), strict=True), strict=True))
    assert got == {GAUGE: (T0 + 102 * S, 3.0), COUNTER: (T0 + S, 6.0)}


# --- rollups and charts ------------------------------------------------------------------------

def test_rollups_of_a_gauge(ready: TimeSeriesStore) -> None:
    v = np.arange(2 * 3600, dtype=np.float64) % 60          # 0..59 every minute
    v[65] = 1000.0                                          # one spike in minute 1
    b = seconds(GAUGE, T0, len(v), v)
    bad = Batch.of([GAUGE], [T0 + 30 * S + S // 2], [np.nan], Quality.BAD)   # ignored by rollups
    ready.write(Batch.concat([b, bad]))
    ready.refresh_rollups()
    r = ready.rollup([GAUGE], T0, T0 + 2 * HOUR, "1m")
    assert len(r) == 120
    assert np.array_equal(r.bucket_ns, T0 + np.arange(120) * MIN)
    assert r.count.tolist() == [60] * 120
    assert r.min[0] == 0 and r.max[0] == 59 and r.max[1] == 1000.0 and r.last[0] == 59
    assert r.mean[0] == pytest.approx(29.5)
    assert np.isnan(r.delta).all()                          # gauges have no delta
    h = ready.rollup([GAUGE], T0, T0 + 2 * HOUR, "1h")
    assert h.count.tolist() == [3600, 3600] and h.max.tolist() == [1000.0, 59.0]
    assert h.mean[1] == pytest.approx(29.5) and h.last[1] == 59.0


def test_counter_deltas_with_rollover_and_reset(ready: TimeSeriesStore) -> None:
    # +3 per second for 2 h on a register that wraps at 1000, reset to 0 once at 01:30.
    n = 2 * 3600
    inc = np.full(n, 3.0)
    total = np.cumsum(inc) - 3.0
    wrapped = total % 1000.0
    reset_at = 5400
    wrapped[reset_at:] = np.cumsum(inc[reset_at:]) - 3.0    # restart from 0 (reset: +0 that second)
    wrapped[reset_at:] %= 1000.0
    ready.write(seconds(WRAP, T0, n, wrapped))
    # A plain counter without roll-over: +2 per second, written in two batches across a minute edge.
    ready.write(seconds(COUNTER, T0, 90, 100 + 2.0 * np.arange(90)))
    ready.write(seconds(COUNTER, T0 + 90 * S, 90, 280 + 2.0 * np.arange(90)))
    ready.refresh_rollups()
    m = ready.rollup([WRAP], T0, T0 + 2 * HOUR, "1m")
    expected_total = 3.0 * (n - 1) - 3.0                    # every step +3 except the reset step (+0)
    assert m.delta.sum() == pytest.approx(expected_total)
    assert m.delta[1] == pytest.approx(180.0)               # a full minute, incl. the step into it
    h = ready.rollup([WRAP], T0, T0 + 2 * HOUR, "1h")
    assert h.delta.sum() == pytest.approx(expected_total)
    assert h.delta[1] == pytest.approx(3.0 * 3600 - 3.0)    # the hour with the reset
    c = ready.rollup([COUNTER], T0, T0 + 3 * MIN, "1m")
    assert c.delta.tolist() == pytest.approx([118.0, 120.0, 120.0])
    # A query starting mid-series still counts the step into its first bucket.
    c2 = ready.rollup([COUNTER], T0 + MIN, T0 + 3 * MIN, "1m")
    assert c2.delta.tolist() == pytest.approx([120.0, 120.0])


def test_late_data_recomputes_its_buckets(ready: TimeSeriesStore) -> None:
    ready.write(seconds(GAUGE, T0, 60, 1.0))
    ready.write(seconds(GAUGE, T0 + 2 * MIN, 60, 1.0))
    ready.refresh_rollups()
    assert ready.rollup([GAUGE], T0, T0 + HOUR, "1m").count.tolist() == [60, 60]
    ready.write(seconds(GAUGE, T0 + MIN, 30, 5.0))          # the edge's backlog, minutes late
    ready.write(seconds(GAUGE, T0 + 30 * S + S // 2, 1, 9.0))  # into an already rolled-up minute
    ready.refresh_rollups()
    r = ready.rollup([GAUGE], T0, T0 + HOUR, "1m")
    assert r.count.tolist() == [61, 30, 60] and r.max.tolist() == [9.0, 5.0, 1.0]
    h = ready.rollup([GAUGE], T0, T0 + HOUR, "1h")
    assert h.count.tolist() == [151] and h.max.tolist() == [9.0]


def test_chart_of_a_long_range_reads_rollups_and_keeps_the_spike(ready: TimeSeriesStore) -> None:
    n = 86400                                               # one day of 1 s data
    v = np.sin(np.arange(n) / 600.0)
    v[43_210] = 50.0
    ready.write(seconds(GAUGE, T0, n, v))
    ready.refresh_rollups()
    s = ready.range(GAUGE, T0, T0 + DAY, max_points=1000)
    assert s.resolution == "1m" and s.reduced and len(s.ts_ns) <= 1000
    assert s.value.max() == 50.0 and s.value.min() == pytest.approx(-1.0, abs=1e-4)
    assert np.all(np.diff(s.ts_ns) > 0)
    raw = ready.range(GAUGE, T0, T0 + DAY, max_points=500, resolution="raw")
    assert raw.reduced and len(raw.ts_ns) <= 500 and raw.value.max() == 50.0
    short = ready.range(GAUGE, T0, T0 + 10 * MIN, max_points=1000)
    assert short.resolution == "raw" and len(short.ts_ns) == 600 and not short.reduced
    week = ready.range(GAUGE, T0, T0 + 60 * DAY, max_points=1000)
    assert week.resolution == "1h" and week.value.max() == 50.0


# --- retention, completeness, rejections, edge status ------------------------------------------

def test_retention_per_resolution(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store(retention_s={"raw": 2 * 86400, "1m": 5 * 86400, "1h": None})
    store.register_points([info(GAUGE)])
    for d in range(7):
        store.write(seconds(GAUGE, T0 + d * DAY, 120, float(d)))
    store.refresh_rollups()
    dropped = store.apply_retention(T0 + 7 * DAY)
    assert dropped == {"raw": 5 * 120, "1m": 2 * 2, "1h": 0, "rejections": 0}
    assert len(store.range(GAUGE, T0, T0 + 8 * DAY, resolution="raw").ts_ns) == 2 * 120
    assert len(store.rollup([GAUGE], T0, T0 + 8 * DAY, "1m")) == 5 * 2
    assert len(store.rollup([GAUGE], T0, T0 + 8 * DAY, "1h")) == 7
    assert store.apply_retention(T0 + 7 * DAY) == {"raw": 0, "1m": 0, "1h": 0, "rejections": 0}


def test_completeness_names_lost_and_not_collected_gaps(ready: TimeSeriesStore) -> None:
    # GAUGE (1 s, deadband 0): seq 0..99 then a jump to 105 (5 lost), then 31 s apart with no jump (30 not collected).
    ts = np.r_[np.arange(100), np.arange(105, 150), np.arange(180, 200)] * S + T0
    seq = np.r_[np.arange(100), np.arange(105, 150), np.arange(150, 170)]
    ready.write(Batch.of(np.full(len(ts), GAUGE), ts, 1.0, Quality.GOOD, seq))
    # SPARSE (deadband): long silences are normal, only seq jumps count.
    ready.write(Batch.of([SPARSE] * 3, T0 + np.array([0, 500, 900]) * S, 1.0, Quality.GOOD, [0, 1, 3]))
    c = ready.completeness([GAUGE, SPARSE, COUNTER], T0, T0 + 200 * S)
    g = c[GAUGE]
    assert g.received == 165 and g.expected == 165 + 5 + 30 == 200
    assert [(x.kind, x.missing, x.start_ns, x.end_ns) for x in g.gaps] == [
        ("lost", 5, T0 + 99 * S, T0 + 105 * S), ("not_collected", 30, T0 + 149 * S, T0 + 180 * S)]
    sp = ready.completeness([SPARSE], T0, T0 + 1000 * S)[SPARSE]
    assert (sp.received, sp.expected) == (3, 4) and [x.kind for x in sp.gaps] == ["lost"]
    empty = c[COUNTER]
    assert empty.received == 0 and empty.expected == 200 and empty.gaps[0].kind == "not_collected"
    assert 0 < g.ratio < 1


def test_completeness_does_not_call_the_silence_of_report_by_exception_points_a_gap(
        store: TimeSeriesStore) -> None:
    """An OPC UA monitored item whose value stands still sends nothing: not a gap. Past its keep-alive it is."""
    mon, ka = 201, 202
    store.register_points([
        PointInfo(mon, "m1/mc/mon", "m1", "mc", "mon", "kW", "gauge", 1.0, report="on_change"),
        PointInfo(ka, "m1/mc/ka", "m1", "mc", "ka", "kW", "gauge", 1.0, report="on_change", keepalive_s=60.0)])
    assert {p.key: (p.report, p.keepalive_s) for p in store.points("m1")} == {
        mon: ("on_change", None), ka: ("on_change", 60.0)}
    # mon: silent 20 min, then a seq jump of 2 (1 sample lost); ka: keep-alive every 60 s, then 10 min of silence.
    store.write(Batch.of([mon] * 3, T0 + np.array([0, 1200, 1300]) * S, 1.0, Quality.GOOD, [0, 1, 3]))
    ka_ts = np.r_[np.arange(0, 600, 60), np.arange(1200, 1800, 60)]
    store.write(Batch.of(np.full(len(ka_ts), ka), T0 + ka_ts * S, 1.0, Quality.GOOD, np.arange(len(ka_ts))))
    c = store.completeness([mon, ka], T0, T0 + 1800 * S)
    assert [(g.kind, g.missing) for g in c[mon].gaps] == [("lost", 1)]
    assert [(g.kind, g.missing) for g in c[ka].gaps] == [("not_collected", 10)]    # 660 s: 10 keep-alives missed
    assert store.completeness([mon], T0 + 2000 * S, T0 + 9000 * S)[mon].gaps == []   # a silent window: no gap


def test_rejections_counted_per_edge_and_reason(ready: TimeSeriesStore) -> None:
    for i, (edge, reason) in enumerate([("e1", "malformed"), ("e1", "malformed"), ("e1", "unknown_point"),
                                        ("e2", "future_timestamp")]):
        ready.record_rejection(Rejection(edge, reason, f"detail {i}", T0 + i))
    assert ready.rejections() == {"e1": {"malformed": 2, "unknown_point": 1}, "e2": {"future_timestamp": 1}}
    assert ready.rejections("e2") == {"e2": {"future_timestamp": 1}}
    recent = ready.recent_rejections("e1", limit=2)
    assert [r.detail for r in recent] == ["detail 2", "detail 1"]


def test_edge_status_keeps_the_latest_message(ready: TimeSeriesStore) -> None:
    ready.record_edge_status("e1", "m1", {"buffer_depth": 5, "version": "0.1"}, T0)
    ready.record_edge_status("e1", "m1", {"buffer_depth": 0, "version": "0.1"}, T0 + S)
    ready.record_edge_status("e2", "m2", {"lag_s": 3.5}, T0)
    st = ready.edge_status()
    assert st["e1"].status == {"buffer_depth": 0, "version": "0.1"} and st["e1"].received_ns == T0 + S
    assert set(ready.edge_status("m2")) == {"e2"}


# --- incremental rollups: partial aggregates merged across batches and refreshes ----------------

def _expected(ts: np.ndarray, v: np.ndarray, width: int, rollover: float) -> dict[str, list[float]]:
    """Rollups of one point computed from all its rows at once (the oracle)."""
    from spinline.cloud.storage.counters import step

    order = np.argsort(ts, kind="stable")
    ts, v = ts[order], v[order]
    steps = np.r_[0.0, step(v[:-1], v[1:], np.full(len(v) - 1, rollover))]
    b = ts - ts % width
    out: dict[str, list[float]] = {k: [] for k in ("bucket", "count", "min", "max", "mean", "last", "delta")}
    for u in np.unique(b):
        m = b == u
        for k, x in (("bucket", u), ("count", m.sum()), ("min", v[m].min()), ("max", v[m].max()),
                     ("mean", v[m].mean()), ("last", v[m][-1]), ("delta", steps[m].sum())):
            out[k].append(float(x))
    return out


def _check(store: TimeSeriesStore, point: int, ts: np.ndarray, v: np.ndarray, rollover: float,
           counter: bool = True) -> None:
    for res, width in (("1m", MIN), ("1h", HOUR)):
        r = store.rollup([point], T0, T0 + DAY, res)  # type: ignore[arg-type]
        want = _expected(ts, v, width, rollover)
        got = {"bucket": r.bucket_ns.tolist(), "count": r.count.tolist(), "min": r.min.tolist(),
               "max": r.max.tolist(), "mean": r.mean.tolist(), "last": r.last.tolist(), "delta": r.delta.tolist()}
        if not counter:
            assert np.isnan(r.delta).all()
            del want["delta"]
        for k in want:
            assert got[k] == pytest.approx(want[k]), (res, k)


def test_one_minute_split_over_batches_written_out_of_order(ready: TimeSeriesStore) -> None:
    # A wrapping counter (+7 a second, wraps at 1000) and a gauge over 3 minutes, cut into 6 batches
    # whose rows interleave in time, written newest first, with refreshes in between.
    n = 180
    ts = T0 + np.arange(n, dtype=np.int64) * S
    ctr = (500.0 + 7.0 * np.arange(n)) % 1000.0
    gauge = np.sin(np.arange(n) / 7.0) * 10
    chunks = [np.arange(i, n, 6) for i in range(6)][::-1]
    for i, idx in enumerate(chunks):
        ready.write(Batch.of(np.r_[np.full(len(idx), WRAP), np.full(len(idx), GAUGE)], np.r_[ts[idx], ts[idx]],
                             np.r_[ctr[idx], gauge[idx]], Quality.GOOD))
        if i % 2:
            ready.refresh_rollups()
    ready.refresh_rollups()
    _check(ready, WRAP, ts, ctr, 1000.0)
    _check(ready, GAUGE, ts, gauge, np.nan, counter=False)
    assert ready.rollup([WRAP], T0, T0 + HOUR, "1h").delta.tolist() == pytest.approx([7.0 * (n - 1)])


def test_counter_rollover_across_batches_in_one_minute(ready: TimeSeriesStore) -> None:
    # The register wraps between two batches of the same minute; each batch refreshed on its own.
    v = np.r_[980.0, 990.0, 995.0, 3.0, 8.0, 20.0]
    ts = T0 + np.arange(6, dtype=np.int64) * 5 * S
    for part in (slice(0, 3), slice(3, 6)):
        ready.write(Batch.of(np.full(3, WRAP), ts[part], v[part], Quality.GOOD))
        ready.refresh_rollups()
    m = ready.rollup([WRAP], T0, T0 + HOUR, "1m")
    assert m.count.tolist() == [6] and m.delta.tolist() == pytest.approx([40.0]) and m.last.tolist() == [20.0]
    assert ready.rollup([WRAP], T0, T0 + HOUR, "1h").delta.tolist() == pytest.approx([40.0])
    # A plain counter reset (no roll-over) across batches: counted as the value since the restart.
    ready.write(seconds(COUNTER, T0, 3, [100.0, 110.0, 120.0]))
    ready.refresh_rollups()
    ready.write(seconds(COUNTER, T0 + 3 * S, 2, [4.0, 9.0]))
    ready.refresh_rollups()
    assert ready.rollup([COUNTER], T0, T0 + HOUR, "1m").delta.tolist() == pytest.approx([20.0 + 4.0 + 5.0])
    # Two batches of one minute whose rows interleave, both merged by the same refresh.
    t2 = T0 + 10 * MIN + np.arange(20, dtype=np.int64) * S
    ready.write(Batch.of(np.full(10, COUNTER), t2[1::2], 200.0 + 3 * np.arange(1, 20, 2), Quality.GOOD))
    ready.write(Batch.of(np.full(10, COUNTER), t2[0::2], 200.0 + 3 * np.arange(0, 20, 2), Quality.GOOD))
    ready.refresh_rollups()
    assert ready.rollup([COUNTER], T0 + 10 * MIN, T0 + HOUR, "1m").delta.tolist() == pytest.approx([57.0 + 191.0])


def test_late_counter_rows_before_and_inside_a_refreshed_minute(ready: TimeSeriesStore) -> None:
    ts = T0 + np.arange(0, 120, 2, dtype=np.int64) * S           # every 2 s over 2 minutes
    v = 10.0 * np.arange(len(ts))
    late_before = ts < T0 + 20 * S                                # the start of minute 0 arrives last
    inside = (ts > T0 + 70 * S) & (np.arange(len(ts)) % 3 == 0)   # holes inside minute 1, filled later
    first = ~late_before & ~inside
    ready.write(Batch.of(np.full(first.sum(), COUNTER), ts[first], v[first], Quality.GOOD))
    ready.refresh_rollups()
    ready.write(Batch.of(np.full(inside.sum(), COUNTER), ts[inside], v[inside], Quality.GOOD))
    ready.write(Batch.of(np.full(late_before.sum(), COUNTER), ts[late_before], v[late_before], Quality.GOOD))
    ready.refresh_rollups()
    _check(ready, COUNTER, ts, v, np.nan)
    # A late gauge row after the refresh: first, last, min and mean move with it.
    ready.write(Batch.of([GAUGE, GAUGE], [T0 + 10 * S, T0 + 50 * S], [1.0, 3.0], Quality.GOOD))
    ready.refresh_rollups()
    ready.write(Batch.of([GAUGE, GAUGE], [T0 + 5 * S, T0 + 59 * S], [-4.0, 8.0], Quality.GOOD))
    ready.refresh_rollups()
    _check(ready, GAUGE, np.array([10, 50, 5, 59]) * S + T0, np.array([1.0, 3.0, -4.0, 8.0]), np.nan, counter=False)


def test_sparse_minutes_far_apart_refresh_in_one_go(ready: TimeSeriesStore) -> None:
    # Isolated minutes: every 5 min for 2 h, plus one backlog row 20 h later (another span).
    ts = np.r_[T0 + np.arange(0, 2 * HOUR, 5 * MIN, dtype=np.int64), T0 + 20 * HOUR + 7 * S]
    v = np.arange(len(ts), dtype=np.float64)
    ready.write(Batch.of(np.full(len(ts), GAUGE), ts, v, Quality.GOOD))
    ready.refresh_rollups()
    _check(ready, GAUGE, ts, v, np.nan, counter=False)
    assert len(ready.rollup([GAUGE], T0, T0 + DAY, "1m")) == len(ts)


# --- late and replayed batches, key and rejection retention, bounded raw reads ------------------

def test_late_batch_rebuilds_only_its_own_points_rollups(make_store) -> None:  # type: ignore[no-untyped-def]
    # Regression: an old batch (a replay whose key was purged, or a very late one) made the embedded
    # refresh delete the rollups of EVERY point of its minutes (other mills too) and rebuild them
    # from raw rows that retention had already removed.
    store = make_store(retention_s={"raw": 2 * 86400, "1m": None, "1h": None})
    store.register_points([info(GAUGE), info(999, mill="m2")])
    store.write_many([(seconds(GAUGE, T0, 60, 1.0), "ea:1"), (seconds(999, T0, 60, 5.0), "eb:1")])
    store.refresh_rollups()
    store.apply_retention(T0 + 3 * DAY)
    assert len(store.range(999, T0, T0 + HOUR, resolution="raw").ts_ns) == 0     # raw rows gone
    store.write(seconds(GAUGE, T0, 60, 2.0), idempotency_key="ea:2")           # the late batch
    store.refresh_rollups()
    for res in ("1m", "1h"):
        other = store.rollup([999], T0, T0 + HOUR, res)
        assert other.count.tolist() == [60] and other.mean.tolist() == [5.0], res
        assert len(store.rollup([GAUGE], T0, T0 + HOUR, res)) == 1


def test_idempotency_keys_outlive_raw_retention_by_the_margin(make_store) -> None:  # type: ignore[no-untyped-def]
    from spinline.cloud.storage.shared import KEY_MARGIN_S

    store = make_store(retention_s={"raw": 86400})
    assert store.raw_retention_ns == DAY and make_store().raw_retention_ns == 90 * DAY
    assert make_store(retention_s={"raw": None}).raw_retention_ns is None
    import time

    now = time.time_ns()
    b = seconds(GAUGE, now - now % DAY, 10, 1.0)
    assert not store.write(b, idempotency_key="e:1").duplicate
    store.apply_retention(now + DAY + int(KEY_MARGIN_S * S) - HOUR)         # raw gone, key kept
    assert store.write(b, idempotency_key="e:1").duplicate
    store.apply_retention(now + DAY + int(KEY_MARGIN_S * S) + HOUR)         # past the margin: purged
    assert not store.write(b, idempotency_key="e:1").duplicate


def test_retention_prunes_rejections(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store(retention_s={"rejections": 10 * 86400})
    for i, t in enumerate((T0, T0 + 5 * DAY, T0 + 20 * DAY)):
        store.record_rejection(Rejection("e1", "malformed", f"d{i}", t))
    assert store.apply_retention(T0 + 25 * DAY)["rejections"] == 2
    assert [r.detail for r in store.recent_rejections()] == ["d2"]
    assert store.rejections() == {"e1": {"malformed": 1}}
    default = make_store()                                   # 90 days by default
    default.record_rejection(Rejection("e2", "malformed", "old", T0))
    assert default.apply_retention(T0 + 89 * DAY)["rejections"] == 0
    assert default.apply_retention(T0 + 91 * DAY)["rejections"] == 1
    with pytest.raises(ValueError, match="retention"):
        make_store(retention_s={"rejection": 1.0})


@pytest.mark.parametrize(("n", "step"), [(20_000, S), (2_000, S // 10)])      # 1 Hz long span; 10 Hz short span
def test_raw_range_with_max_points_is_reduced_by_the_database(ready: TimeSeriesStore, n: int, step: int,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from spinline.cloud.storage import downsample

    rng = np.random.default_rng(7)
    ts = T0 + np.arange(n, dtype=np.int64) * step
    v = rng.normal(0.0, 1.0, n)
    v[n // 3] = 50.0                                           # one spike must survive
    ready.write(Batch.of(np.full(n, GAUGE), ts, v, Quality.GOOD))
    end = T0 + n * step
    want_ts, want_v = downsample.minmax(ts, v, 100, T0, end)

    def never(*_: object, **__: object) -> None:
        raise AssertionError("raw rows were reduced in Python: every row was loaded")

    monkeypatch.setattr(downsample, "minmax", never)
    s = ready.range(GAUGE, T0, end, max_points=100, resolution="raw")
    assert s.resolution == "raw" and s.reduced and len(s.ts_ns) <= 100 and s.value.max() == 50.0
    assert np.array_equal(s.ts_ns, want_ts) and np.array_equal(s.value, want_v)
    few = ready.range(GAUGE, T0, T0 + 50 * step, max_points=100, resolution="raw")
    assert not few.reduced and np.array_equal(few.ts_ns, ts[:50])
    with pytest.raises(ValueError, match="max_points"):
        ready.range(GAUGE, T0, end, max_points=1, resolution="raw")
