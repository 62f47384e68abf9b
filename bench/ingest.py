"""Ingest and query bench, both backends: MQTT publish -> Mosquitto -> ingest worker -> store.

For each backend (embedded DuckDB, PostgreSQL):
- points/s stored end to end: a publisher process (the edges) sends signed, zlib-compressed batches
  of 20,000 rows with QoS 1 through the machine's Mosquitto; one ingest worker (shared subscription)
  decodes, authenticates, validates and stores them; the clock stops when the last row is committed;
- the same payloads' raw Mosquitto rate (publisher process -> broker -> a subscriber that only
  counts), measured in the same run: the ratio is our overhead;
- query latency p50/p95: a 30-day, 1 s point reduced to 1,000 chart points (rollups), and the mill
  overview's latest values of every point (5,000);
- the rollup refresh rate (raw rows per second rolled up into 1 min and 1 h) of the 30-day chart
  load, and of two workloads written the way ingest workers write them and then refreshed once:
  ``dense`` (5,000 points every 1 s, 20,000-row batches coalesced 8 to a transaction) and ``sparse``
  (500 points every 5 min: every dirty minute bucket is isolated); ``refresh_keeps_up`` says whether
  both refresh rates reach the backend's measured end-to-end ingest rate.

Usage: .venv/bin/python bench/ingest.py [--rows-embedded 6000000] [--rows-postgres 3000000]
       [--refresh-rows 1000000] [--refresh-only]
Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from spinline.cloud.ingest.mqtt_worker import IngestWorker  # noqa: E402
from spinline.cloud.ingest.service import IngestService  # noqa: E402
from spinline.cloud.storage.base import PointInfo, TimeSeriesStore  # noqa: E402
from spinline.core.batch import Batch  # noqa: E402
from spinline.core.wire import TOPIC_BATCH, Envelope, encode  # noqa: E402

S = 10**9
MILL = "bench"
N_POINTS = 5000
EDGES = 4
TS_PER_BATCH = 16                                   # 1,250 points x 16 s = 20,000 rows per batch
PG_ADMIN = os.environ.get("SPINLINE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
HOST, PORT = os.environ.get("SPINLINE_BENCH_MQTT_HOST", "127.0.0.1"), int(os.environ.get("SPINLINE_BENCH_MQTT_PORT",
                                                                                             "1883"))


def secret(edge: str) -> bytes:
    return (edge * 8).encode()[:32]


def infos() -> list[PointInfo]:
    return [PointInfo(key=k, tag=f"{MILL}/m{k // 50}/p{k}", mill=MILL, machine=f"m{k // 50}", name=f"p{k}",
                      unit="kW", kind="counter" if k % 10 == 0 else "gauge", interval_s=1.0)
            for k in range(1, N_POINTS + 1)]


def payloads(n_rows: int, t0: int) -> list[tuple[str, bytes, int]]:
    """(edge, payload, rows): each edge owns a slice of the points and sends 1 s samples of them."""
    rng = np.random.default_rng(7)
    keys = np.arange(1, N_POINTS + 1, dtype=np.int64)
    per_edge = np.array_split(keys, EDGES)
    out: list[tuple[str, bytes, int]] = []
    total, i = 0, 0
    level = rng.normal(50, 10, N_POINTS)
    while total < n_rows:
        for e, pts in enumerate(per_edge):
            edge = f"e{e}"
            ts = t0 + (i * TS_PER_BATCH + np.repeat(np.arange(TS_PER_BATCH, dtype=np.int64), len(pts))) * S
            base = np.tile(level[pts - 1], TS_PER_BATCH)
            counter = np.tile(pts % 10 == 0, TS_PER_BATCH)
            val = np.where(counter, (ts // S - t0 // S) * 0.5, np.round(base + rng.normal(0, 0.5, len(base)), 2))
            seq = i * TS_PER_BATCH + np.repeat(np.arange(TS_PER_BATCH), len(pts))
            b = Batch.of(np.tile(pts, TS_PER_BATCH), ts, val, 0, seq)
            env = Envelope(edge=edge, mill=MILL, seq=i + 1, batch=b, created_ns=time.time_ns())
            out.append((edge, encode(env, key=secret(edge)), len(b)))
            total += len(b)
        i += 1
    return out


def _publisher(n_rows: int, t0: int, ns: str, ready: Any, go: Any, done: Any) -> None:
    """The edges, in their own process: build payloads, then publish them all (QoS 1) on ``go``."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    data = payloads(n_rows, t0)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}",
                    protocol=MQTTProtocolVersion.MQTTv5)
    c.max_inflight_messages_set(64)
    c.max_queued_messages_set(0)
    c.connect(HOST, PORT)
    c.loop_start()
    ready.set()
    go.wait()
    infos_ = [c.publish(ns + TOPIC_BATCH.format(mill=MILL, edge=edge), p, qos=1) for edge, p, _ in data]
    for m in infos_:
        m.wait_for_publish(120)
    done.set()
    c.disconnect()
    c.loop_stop()


def _run_publisher(n_rows: int, t0: int, ns: str, until: Any, timeout: float = 120.0) -> float:
    """Start the publisher process, release it, and time until ``until()`` is true."""
    ctx = mp.get_context("spawn")
    ready, go, done = ctx.Event(), ctx.Event(), ctx.Event()
    p = ctx.Process(target=_publisher, args=(n_rows, t0, ns, ready, go, done), daemon=True)
    p.start()
    if not ready.wait(120):
        raise RuntimeError("publisher did not start")
    start = time.perf_counter()
    go.set()
    deadline = start + timeout
    while not until():
        if time.perf_counter() > deadline:
            p.kill()
            raise RuntimeError("timed out waiting for the rows to arrive")
        time.sleep(0.002)
    elapsed = time.perf_counter() - start
    p.join(30)
    return elapsed


def raw_mosquitto(n_rows: int, t0: int) -> float:
    """Points/s through Mosquitto alone: same payloads, a subscriber that only counts rows."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    ns = f"bench-{uuid.uuid4().hex[:8]}/"
    got = {"rows": 0}
    rows_per = TS_PER_BATCH * (N_POINTS // EDGES)
    expected = len(payloads_shape(n_rows)) * rows_per
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{uuid.uuid4().hex[:8]}",
                      protocol=MQTTProtocolVersion.MQTTv5)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        got["rows"] += rows_per

    sub.on_message = on_message
    sub.connect(HOST, PORT)
    sub.loop_start()
    sub.subscribe(f"$share/raw/{ns}spinline/up/+/+/batch", qos=1)
    subscribed.wait(5)
    try:
        elapsed = _run_publisher(n_rows, t0, ns, lambda: got["rows"] >= expected)
    finally:
        sub.disconnect()
        sub.loop_stop()
    return got["rows"] / elapsed


def payloads_shape(n_rows: int) -> list[int]:
    rows_per = TS_PER_BATCH * (N_POINTS // EDGES)
    n = -(-n_rows // (rows_per * EDGES)) * EDGES
    return [rows_per] * n


def service_for(store: TimeSeriesStore) -> IngestService:
    keys = frozenset(range(1, N_POINTS + 1))
    return IngestService(store, lambda e: secret(e) if e.startswith("e") else None,
                         lambda e: MILL if e.startswith("e") else None, lambda m: keys)


def end_to_end(store: TimeSeriesStore, n_rows: int, t0: int, workers: int) -> tuple[float, int]:
    ns = f"bench-{uuid.uuid4().hex[:8]}/"
    expected = sum(payloads_shape(n_rows))
    ws = [IngestWorker(service_for(store), HOST, PORT, group="bench", namespace=ns, max_coalesce=8)
          for _ in range(workers)]
    for w in ws:
        w.start()
    try:
        elapsed = _run_publisher(n_rows, t0, ns, lambda: sum(w.stats.stored_points for w in ws) >= expected)
    finally:
        for w in ws:
            w.stop()
    stored = sum(w.stats.stored_points for w in ws)
    return stored / elapsed, stored


def query_latency(store: TimeSeriesStore, now_s: int) -> dict[str, float]:
    """Load a 30-day, 1 s point, roll it up, then time the chart and overview queries."""
    point = 1
    start = (now_s - 30 * 86400) * S
    day = 86400
    t = time.perf_counter()
    for d in range(30):
        ts = start + (d * day + np.arange(day, dtype=np.int64)) * S
        store.write(Batch.of(np.full(day, point), ts, np.sin(ts / 3.6e12) * 10 + 50, 0))
    load = time.perf_counter() - t
    t = time.perf_counter()
    store.refresh_rollups()
    refresh = time.perf_counter() - t
    end = start + 30 * day * S
    chart = []
    for _ in range(40):
        q = time.perf_counter()
        s = store.range(point, start, end, max_points=1000)
        chart.append(time.perf_counter() - q)
        assert len(s.ts_ns) <= 1000 and s.resolution == "1m", (len(s.ts_ns), s.resolution)
    keys = list(range(1, N_POINTS + 1))
    overview = []
    for _ in range(40):
        q = time.perf_counter()
        lt = store.latest(keys)
        overview.append(time.perf_counter() - q)
    assert len(lt) == N_POINTS, len(lt)
    ms = 1e3
    return {"chart_30d_p50_ms": round(float(np.percentile(chart, 50)) * ms, 2),
            "chart_30d_p95_ms": round(float(np.percentile(chart, 95)) * ms, 2),
            "overview_latest_p50_ms": round(float(np.percentile(overview, 50)) * ms, 2),
            "overview_latest_p95_ms": round(float(np.percentile(overview, 95)) * ms, 2),
            "load_30d_rows_per_s": round(30 * day / load),
            "rollup_refresh_rows_per_s": round(30 * day / refresh)}


SPARSE_POINTS = 500
SPARSE_STEP_S = 300


def refresh_batches(kind: str, n_rows: int, t0: int) -> list[list[tuple[Batch, str | None]]]:
    """Transactions of (batch, key) as an ingest worker writes them: time-ordered per point.

    dense: every point every 1 s, a batch = one edge's 1,250 points x 16 s, 8 batches a transaction;
    sparse: 500 points every 5 min (each row alone in its minute), 20,000-row batches.
    """
    rng = np.random.default_rng(11)
    if kind == "dense":
        keys, step, per_batch_ts = np.arange(1, N_POINTS + 1, dtype=np.int64), 1, TS_PER_BATCH
        slices = np.array_split(keys, EDGES)
    else:
        keys, step = np.arange(1, SPARSE_POINTS + 1, dtype=np.int64), SPARSE_STEP_S
        per_batch_ts, slices = 20_000 // SPARSE_POINTS, [keys]
    batches: list[tuple[Batch, str | None]] = []
    total, i = 0, 0
    while total < n_rows:
        for e, pts in enumerate(slices):
            tick = i * per_batch_ts + np.repeat(np.arange(per_batch_ts, dtype=np.int64), len(pts))
            ts = t0 + tick * step * S
            p = np.tile(pts, per_batch_ts)
            counter = p % 10 == 0
            val = np.where(counter, tick * 0.5 * step, np.round(50 + rng.normal(0, 5, len(p)), 2))
            batches.append((Batch.of(p, ts, val, 0, tick), f"r{kind}{e}:{i}"))
            total += len(p)
        i += 1
    return [batches[j:j + 8] for j in range(0, len(batches), 8)]


def refresh_rate(store: TimeSeriesStore, kind: str, n_rows: int, t0: int) -> dict[str, Any]:
    """Write ``n_rows`` of the workload, then time one refresh of all of it (raw rows per second)."""
    txs = refresh_batches(kind, n_rows, t0)
    rows = sum(len(b) for tx in txs for b, _ in tx)
    t = time.perf_counter()
    for tx in txs:
        store.write_many(tx)
    write = time.perf_counter() - t
    t = time.perf_counter()
    store.refresh_rollups()
    refresh = time.perf_counter() - t
    return {f"refresh_{kind}_rows": rows, f"refresh_{kind}_rows_per_s": round(rows / refresh),
            f"refresh_{kind}_s": round(refresh, 3), f"write_{kind}_rows_per_s": round(rows / write)}


def refresh_figures(store: TimeSeriesStore, n_rows: int, now_s: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Dense 10 days back, sparse 20 days back (1 M sparse rows span about 7 days): no overlap with
    # each other, the end-to-end rows (3 days back) or the 30-day chart point (key 1, 30 days back:
    # the chart load rewrites only key 1, whose rollups are recomputed in the chart's refresh).
    out.update(refresh_rate(store, "dense", n_rows, (now_s - 10 * 86400) * S))
    out.update(refresh_rate(store, "sparse", n_rows, (now_s - 20 * 86400) * S))
    return out


def bench_backend(name: str, store: TimeSeriesStore, n_rows: int, workers: int, raw: float,
                  refresh_rows: int, refresh_only: bool = False) -> dict[str, Any]:
    store.migrate()
    store.register_points(infos())
    now_s = time.time_ns() // S
    out: dict[str, Any] = {}
    if not refresh_only:
        t0 = (now_s - 3 * 86400) * S                   # recent enough for validation, before the chart data
        rate, stored = end_to_end(store, n_rows, t0, workers)
        out.update({"points_per_s": round(rate), "rows": stored, "workers": workers,
                    "ratio_to_raw_mosquitto": round(rate / raw, 3)})
        out.update(query_latency(store, now_s))
    out.update(refresh_figures(store, refresh_rows, now_s))
    if not refresh_only:
        out["refresh_keeps_up"] = bool(min(out["refresh_dense_rows_per_s"], out["refresh_sparse_rows_per_s"])
                                       >= out["points_per_s"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows-embedded", type=int, default=6_000_000)
    ap.add_argument("--rows-postgres", type=int, default=3_000_000)
    ap.add_argument("--pg-workers", type=int, default=1)
    ap.add_argument("--refresh-rows", type=int, default=1_000_000, help="rows of each refresh workload")
    ap.add_argument("--refresh-only", action="store_true", help="only the refresh workloads (no MQTT)")
    ap.add_argument("--backend", choices=("both", "embedded", "postgres"), default="both")
    args = ap.parse_args()
    t0 = (time.time_ns() // S - 3 * 86400) * S
    raw = 0.0 if args.refresh_only else raw_mosquitto(args.rows_embedded, t0)
    result: dict[str, Any] = {"bench": "ingest", "cores": os.cpu_count(),
                              "batch_rows": TS_PER_BATCH * N_POINTS // EDGES, "raw_mosquitto_points_per_s": round(raw)}

    from spinline.cloud.storage.embedded import EmbeddedStore

    if args.backend in ("both", "embedded"):
        with tempfile.TemporaryDirectory() as d:
            emb = EmbeddedStore(os.path.join(d, "bench.duckdb"))
            try:
                result["embedded"] = bench_backend("embedded", emb, args.rows_embedded, 1, raw, args.refresh_rows,
                                                   args.refresh_only)
            finally:
                emb.close()
    if args.backend == "embedded":
        print(json.dumps(result))
        return

    import psycopg

    from spinline.cloud.storage.postgres import PostgresStore

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(f'CREATE SCHEMA "{schema}"')
    try:
        pg = PostgresStore(f"{PG_ADMIN}?options=-csearch_path%3D{schema}")
        try:
            result["postgres"] = bench_backend("postgres", pg, args.rows_postgres, args.pg_workers, raw,
                                               args.refresh_rows, args.refresh_only)
        finally:
            pg.close()
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as c:
            c.execute(f'DROP SCHEMA "{schema}" CASCADE')
    result["targets"] = {"embedded_points_per_s": 1_000_000, "postgres_points_per_s": 300_000, "chart_p95_ms": 100,
                         "embedded_refresh_rows_per_s": 1_000_000, "postgres_refresh": "refresh_keeps_up"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
