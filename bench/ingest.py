"""Ingest bench at the edge's real batch shape, both backends, beside the storage ceilings.

The edge sends one signed payload per 0.25 s flush with one row per point due: about 150 rows for
the example mill and 1,250 for a 5,000-point mill at 1 s. For each backend (embedded DuckDB,
PostgreSQL) and each shape (``--shapes``, rows per payload):

- ``e2e_rows_per_s``: a publisher process (the edges) sends the payloads with QoS 1 through
  Mosquitto; ONE ingest worker (shared subscription) decodes, authenticates through the real
  credential path (``EdgeCredentials``: metadata database + AES-GCM, cached), screens and stores
  them; the clock stops when the last row is committed;
- ``inproc_rows_per_s``: the same payloads through ``IngestService.handle_many`` in this process, in
  groups as the worker coalesces them (no MQTT): what the ingest itself costs;
- the ceilings, measured in the same run on the same rows: ``ceiling_copy_rows_per_s`` (PostgreSQL:
  binary COPY of the rows into a bare unlogged-free plain table, no index) and
  ``ceiling_insert_rows_per_s`` (DuckDB: an Arrow insert into a bare table), and the raw Mosquitto
  rate of the same payloads (publisher -> broker -> a subscriber that only counts);
- the store starts with a day's worth of idempotency keys (``--preload-keys``, default one key per
  edge flush for 24 h) and, on PostgreSQL, autovacuum on (checked and reported);
- query latency p50/p95 and rollup refresh rates on dense and sparse data (``refresh_keeps_up``:
  both at least the measured end-to-end ingest rate).

``--profile`` writes a cProfile of the in-process path of each backend's last shape to stderr (top
20 by own time), to show what bounds it when a target is missed; with ``--only refresh`` it profiles
the refresh of each workload instead.

``--only refresh`` measures the refresh workloads alone (a fresh store, points registered; no broker,
no ingest, no ceilings): minutes instead of the full run, to iterate on the refresh. Its JSON has no
ingest figures, so ``refresh_keeps_up`` is null there; the full run (the default) is the reference.

Usage: .venv/bin/python bench/ingest.py [--shapes 150,1250] [--rows 600000] [--backend both]
       [--preload-keys N] [--refresh-rows 1000000] [--profile] [--only all|refresh]
Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import io
import json
import multiprocessing as mp
import os
import pstats
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
from spinline.cloud.storage.shared import batch_digest  # noqa: E402
from spinline.core.batch import Batch  # noqa: E402
from spinline.core.wire import TOPIC_BATCH, Envelope, encode  # noqa: E402

S = 10**9
MILL = "bench"
N_POINTS = 5000
EDGES = 4
FLUSH_S = 0.25
TS_PER_BATCH = 16                                   # refresh workloads: 1,250 points x 16 s per batch
PG_ADMIN = os.environ.get("SPINLINE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
HOST = os.environ.get("SPINLINE_BENCH_MQTT_HOST", "127.0.0.1")
#: The broker's port: SPINLINE_BENCH_MQTT_PORT, else a private Mosquitto started by ``main`` (see
#: ``private_broker``); set before any worker or publisher is created.
PORT = int(os.environ.get("SPINLINE_BENCH_MQTT_PORT", "0"))
#: Mosquitto's default queue per subscriber (1,000 QoS 1 messages) drops the rest of a burst of small
#: payloads (a backlog drain sends thousands); an ingest broker needs a deeper queue. The private
#: broker sets it; the ratio to raw Mosquitto is measured through the same broker.
BROKER_CONF = "max_queued_messages 200000\nmax_inflight_messages 1000\nallow_anonymous true\n"
#: Payloads a worker coalesces into one transaction (``IngestWorker.max_coalesce``), used in-process too.
COALESCE = 512


def infos() -> list[PointInfo]:
    return [PointInfo(key=k, tag=f"{MILL}/m{k // 50}/p{k}", mill=MILL, machine=f"m{k // 50}", name=f"p{k}",
                      unit="kW", kind="counter" if k % 10 == 0 else "gauge", interval_s=1.0)
            for k in range(1, N_POINTS + 1)]


class Fleet:
    """The real credential path: edges registered in the metadata database with sealed secrets."""

    def __init__(self, store: TimeSeriesStore, db: str, folder: str) -> None:
        from pydantic import SecretStr

        from spinline.cloud.app import build_cloud
        from spinline.cloud.meta.store import MetaStore
        from spinline.cloud.settings import Settings
        from spinline.core.site import Line, Machine, MachineType, Mill, Workshop

        key = SecretStr(base64.urlsafe_b64encode(os.urandom(32)).decode())
        self.settings = Settings(db=db if db.startswith("postgresql") else f"embedded:{folder}", secret_key=key,
                                 argon2_time_cost=1, argon2_memory_kib=64, argon2_parallelism=1)
        self.meta = MetaStore(self.settings.meta_url())
        self.meta.migrate()
        self.meta.upsert_mill(Mill(id=MILL, workshops=[Workshop(id="w", lines=[Line(id="l", machines=[
            Machine(id="m1", type=MachineType.CARD)])])]), zone="z", now_ns=0)
        self.cloud = build_cloud(self.settings, store, self.meta)
        self.secrets = {f"e{e}": self.cloud.edges.create(edge_id=f"e{e}", mill=MILL)[1].encode()
                        for e in range(EDGES)}

    def service(self) -> IngestService:
        svc: IngestService = self.cloud.ingest
        return svc

    def close(self) -> None:
        self.meta.close()


def flush_payloads(secrets: dict[str, bytes], rows: int, n_rows: int, t0: int,
                   seq0: int = 1) -> list[tuple[str, bytes, int]]:
    """(edge, payload, rows) as the agent sends them: one flush = ``rows`` distinct points, one row
    each, stamped within the 0.25 s flush; edges take turns; seq counts up per edge."""
    rng = np.random.default_rng(7)
    edges = sorted(secrets)
    keys = np.arange(1, N_POINTS + 1, dtype=np.int64)
    level = rng.normal(50, 10, N_POINTS)
    out: list[tuple[str, bytes, int]] = []
    total, flush = 0, 0
    per_edge_points = N_POINTS // len(edges)
    while total < n_rows:
        for e, edge in enumerate(edges):
            k = flush % max(1, per_edge_points // rows)
            pts = keys[e * per_edge_points + k * rows: e * per_edge_points + (k + 1) * rows]
            ts = t0 + int(flush * FLUSH_S * S) + rng.integers(0, int(FLUSH_S * S), len(pts))
            counter = pts % 10 == 0
            noise = rng.normal(0, 0.5, len(pts))
            val = np.where(counter, np.floor((ts - t0) / S) * 0.5, np.round(level[pts - 1] + noise, 2))
            b = Batch.of(pts, ts, val, 0, np.full(len(pts), flush))
            env = Envelope(edge=edge, mill=MILL, seq=seq0 + flush, batch=b, created_ns=time.time_ns(),
                           incarnation="bench")
            out.append((edge, encode(env, key=secrets[edge]), len(b)))
            total += len(b)
        flush += 1
    return out


def _publisher(data: list[tuple[str, bytes, int]], ns: str, ready: Any, go: Any, done: Any) -> None:
    """The edges, in their own process: publish every payload (QoS 1) on ``go``."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}",
                    protocol=MQTTProtocolVersion.MQTTv5)
    c.max_inflight_messages_set(256)
    c.max_queued_messages_set(0)
    c.connect(HOST, PORT)
    c.loop_start()
    ready.set()
    go.wait()
    infos_ = [c.publish(ns + TOPIC_BATCH.format(mill=MILL, edge=edge), p, qos=1) for edge, p, _ in data]
    for m in infos_:
        m.wait_for_publish(300)
    done.set()
    c.disconnect()
    c.loop_stop()


def _run_publisher(data: list[tuple[str, bytes, int]], ns: str, until: Any, timeout: float = 300.0) -> float:
    """Start the publisher process, release it, and time until ``until()`` is true."""
    ctx = mp.get_context("spawn")
    ready, go, done = ctx.Event(), ctx.Event(), ctx.Event()
    p = ctx.Process(target=_publisher, args=(data, ns, ready, go, done), daemon=True)
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


def raw_mosquitto(data: list[tuple[str, bytes, int]]) -> float:
    """Rows/s through Mosquitto alone: the same payloads, a subscriber that only counts rows."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    ns = f"bench-{uuid.uuid4().hex[:8]}/"
    rows_per = data[0][2]
    expected = sum(r for _, _, r in data)
    got = {"rows": 0}
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
        elapsed = _run_publisher(data, ns, lambda: got["rows"] >= expected)
    finally:
        sub.disconnect()
        sub.loop_stop()
    return got["rows"] / elapsed


def end_to_end(svc: IngestService, data: list[tuple[str, bytes, int]]) -> float:
    """Rows/s stored by one ingest worker fed through Mosquitto."""
    ns = f"bench-{uuid.uuid4().hex[:8]}/"
    expected = sum(r for _, _, r in data)
    w = IngestWorker(svc, HOST, PORT, group="bench", namespace=ns)
    w.start()
    try:
        elapsed = _run_publisher(data, ns, lambda: w.stats.stored_points >= expected)
    finally:
        w.stop()
    return w.stats.stored_points / elapsed


def in_process(svc: IngestService, data: list[tuple[str, bytes, int]], profile: bool = False) -> tuple[float, str]:
    """Rows/s of ``handle_many`` on groups of ``COALESCE`` payloads (no broker); the profile text."""
    payloads = [p for _, p, _ in data]
    rows = sum(r for _, _, r in data)
    prof = cProfile.Profile() if profile else None
    t = time.perf_counter()
    if prof is not None:
        prof.enable()
    stored = 0
    for j in range(0, len(payloads), COALESCE):
        stored += sum(r.stored for r in svc.handle_many(payloads[j:j + COALESCE]))
    if prof is not None:
        prof.disable()
    elapsed = time.perf_counter() - t
    assert stored == rows, (stored, rows)
    text = ""
    if prof is not None:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(20)
        text = buf.getvalue()
    return rows / elapsed, text


def _rows_of(data: list[tuple[str, bytes, int]]) -> list[Batch]:
    from spinline.core.wire import decode

    return [decode(p).batch for _, p, _ in data]


def ceiling_duckdb(batches: list[Batch]) -> float:
    """Rows/s of a bare Arrow insert into a DuckDB table (no keys, latest, dirty buckets), same rows,
    grouped as the ingest commits them."""
    import duckdb
    import pyarrow as pa

    with tempfile.TemporaryDirectory() as d:
        con = duckdb.connect(os.path.join(d, "ceiling.duckdb"))
        con.execute("CREATE TABLE samples (point BIGINT, ts BIGINT, value DOUBLE, quality UTINYINT, seq BIGINT)")
        t = time.perf_counter()
        for j in range(0, len(batches), COALESCE):
            b = Batch.concat(batches[j:j + COALESCE])
            tbl = pa.table({"point": b.point, "ts": b.ts_ns, "value": b.value, "quality": b.quality,  # noqa: F841
                            "seq": b.seq})
            con.execute("BEGIN")
            con.execute("INSERT INTO samples SELECT * FROM tbl")
            con.execute("COMMIT")
        elapsed = time.perf_counter() - t
        con.close()
    return sum(len(b) for b in batches) / elapsed


def ceiling_copy(url: str, batches: list[Batch]) -> float:
    """Rows/s of a bare binary COPY into a plain PostgreSQL table, same rows, same grouping."""
    import psycopg

    from spinline.cloud.storage.postgres import copy_buffer

    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE ceiling_samples (point bigint, ts bigint, value float8, quality smallint, seq bigint)")
        t = time.perf_counter()
        for j in range(0, len(batches), COALESCE):
            b = Batch.concat(batches[j:j + COALESCE])
            with c.transaction(), c.cursor() as cur, \
                    cur.copy("COPY ceiling_samples (point, ts, value, quality, seq) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(copy_buffer(b))
        elapsed = time.perf_counter() - t
        c.execute("DROP TABLE ceiling_samples")
    return sum(len(b) for b in batches) / elapsed


def preload_keys(store: TimeSeriesStore, n: int) -> float:
    """``n`` idempotency keys of past flushes (with digests), as a day of ingest leaves them, written
    through ``write_many`` (empty batches: keys only); seconds taken."""
    t = time.perf_counter()
    empty = Batch.empty(with_seq=True)
    digest = batch_digest(empty)
    chunk = 100_000
    for j in range(0, n, chunk):
        keys = [f"e{i % EDGES}:old:{i}" for i in range(j, min(n, j + chunk))]
        store.write_many([(empty, k) for k in keys], digests=[digest] * len(keys))
    return time.perf_counter() - t


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


def refresh_rate(store: TimeSeriesStore, kind: str, n_rows: int, t0: int, profile: bool = False) -> dict[str, Any]:
    """Write ``n_rows`` of the workload, then time one refresh of all of it (raw rows per second)."""
    txs = refresh_batches(kind, n_rows, t0)
    rows = sum(len(b) for tx in txs for b, _ in tx)
    t = time.perf_counter()
    for tx in txs:
        store.write_many(tx)
    write = time.perf_counter() - t
    prof = cProfile.Profile() if profile else None
    t = time.perf_counter()
    if prof is not None:
        prof.enable()
    store.refresh_rollups()
    if prof is not None:
        prof.disable()
    refresh = time.perf_counter() - t
    if prof is not None:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(20)
        print(f"--- cProfile, {kind} refresh, {type(store).__name__} ---\n{buf.getvalue()}", file=sys.stderr)
    return {f"refresh_{kind}_rows": rows, f"refresh_{kind}_rows_per_s": round(rows / refresh),
            f"refresh_{kind}_s": round(refresh, 3), f"write_{kind}_rows_per_s": round(rows / write)}


def refresh_figures(store: TimeSeriesStore, n_rows: int, now_s: int, profile: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Dense 10 days back, sparse 20 days back (1 M sparse rows span about 7 days): no overlap with
    # each other, the end-to-end rows (3 days back) or the 30-day chart point (key 1, 30 days back:
    # the chart load rewrites only key 1, whose rollups are recomputed in the chart's refresh).
    out.update(refresh_rate(store, "dense", n_rows, (now_s - 10 * 86400) * S, profile))
    out.update(refresh_rate(store, "sparse", n_rows, (now_s - 20 * 86400) * S, profile))
    return out


def bench_backend(store: TimeSeriesStore, db: str, shapes: list[int], n_rows: int, raw: dict[int, float],
                  args: argparse.Namespace) -> dict[str, Any]:
    store.migrate()
    store.register_points(infos())
    now_s = time.time_ns() // S
    out: dict[str, Any] = {}
    if args.only == "refresh":
        out.update(refresh_figures(store, args.refresh_rows, now_s, args.profile))
        out["refresh_keeps_up"] = None              # no ingest measured in this run
        return out
    with tempfile.TemporaryDirectory() as folder:
        fleet = Fleet(store, db, folder)
        try:
            svc = fleet.service()
            out["preload_keys"] = args.preload_keys
            out["preload_keys_s"] = round(preload_keys(store, args.preload_keys), 1)
            t0 = (now_s - 3600) * S
            seq0 = 1
            biggest: list[tuple[str, bytes, int]] = []
            for rows in shapes:
                shape: dict[str, Any] = {"rows_per_payload": rows}
                if not args.no_mqtt:
                    data = flush_payloads(fleet.secrets, rows, n_rows, t0, seq0)
                    seq0 += len(data)
                    rate = end_to_end(svc, data)
                    shape.update({"e2e_rows_per_s": round(rate), "e2e_payloads_per_s": round(rate / rows)})
                    if rows in raw:
                        shape["ratio_to_raw_mosquitto"] = round(rate / raw[rows], 3)
                data = flush_payloads(fleet.secrets, rows, n_rows, t0, seq0)
                seq0 += len(data)
                rate, prof = in_process(svc, data, profile=args.profile and rows == shapes[-1])
                shape.update({"inproc_rows_per_s": round(rate), "inproc_payloads_per_s": round(rate / rows)})
                if prof:
                    print(f"--- cProfile, in-process ingest, {type(store).__name__}, {rows} rows/payload ---\n{prof}",
                          file=sys.stderr)
                out[f"shape_{rows}"] = shape
                biggest = data
            creds = fleet.cloud.edges
            out["credential_lookups_cached"] = {"hits": creds.hits, "misses": creds.misses}
            batches = _rows_of(biggest)
            if db.startswith("postgresql"):
                out["ceiling_copy_rows_per_s"] = round(ceiling_copy(db, batches))
                import psycopg

                with psycopg.connect(db) as c:
                    row = c.execute("SHOW autovacuum").fetchone()
                    opts = c.execute("SELECT reloptions FROM pg_class WHERE relname = 'samples'").fetchone()
                out["autovacuum"] = row[0] if row else None
                out["samples_reloptions"] = opts[0] if opts else None
            else:
                out["ceiling_insert_rows_per_s"] = round(ceiling_duckdb(batches))
            out.update(query_latency(store, now_s))
            out.update(refresh_figures(store, args.refresh_rows, now_s))
            e2e = [out[f"shape_{r}"].get("e2e_rows_per_s") or out[f"shape_{r}"]["inproc_rows_per_s"] for r in shapes]
            out["refresh_keeps_up"] = bool(min(out["refresh_dense_rows_per_s"], out["refresh_sparse_rows_per_s"])
                                           >= max(e2e))
        finally:
            fleet.close()
    return out


def private_broker(folder: str) -> Any:
    """A Mosquitto of our own on a free port with a queue deep enough for a burst (``BROKER_CONF``)."""
    import socket
    import subprocess

    global PORT
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        PORT = int(sock.getsockname()[1])
    os.environ["SPINLINE_BENCH_MQTT_PORT"] = str(PORT)       # the publisher process reads it at import
    conf = os.path.join(folder, "mosquitto.conf")
    with open(conf, "w", encoding="ascii") as f:
        f.write(f"listener {PORT} 127.0.0.1\n{BROKER_CONF}")
    proc = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, PORT), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


PG_BIN = os.environ.get("SPINLINE_BENCH_PG_BIN", "/usr/lib/postgresql/15/bin")


def private_postgres(folder: str) -> tuple[str, Any]:
    """A PostgreSQL of our own (``initdb`` in ``folder``, a free port, autovacuum ON as in any real
    deployment; the machine's shared test server runs with it off); (url, stop)."""
    import shutil
    import socket
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(folder, "postgres")
    data = os.path.join(folder, "data")
    subprocess.run([*as_pg, f"{PG_BIN}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    opts = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c autovacuum=on -c shared_buffers=512MB"
    subprocess.run([*as_pg, f"{PG_BIN}/pg_ctl", "-D", data, "-o", opts, "-l", os.path.join(folder, "log"), "-w",
                    "start"], check=True, stdout=subprocess.DEVNULL)

    def stop() -> None:
        subprocess.run([*as_pg, f"{PG_BIN}/pg_ctl", "-D", data, "-m", "fast", "stop"], check=False,
                       stdout=subprocess.DEVNULL)
        shutil.rmtree(folder, ignore_errors=True)

    return f"postgresql://postgres@127.0.0.1:{port}/postgres", stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="150,1250", help="rows per payload, comma-separated")
    ap.add_argument("--rows", type=int, default=600_000, help="rows per shape and path")
    ap.add_argument("--preload-keys", type=int, default=int(EDGES * 86400 / FLUSH_S),
                    help="idempotency keys in the store before the run (default: a day of flushes)")
    ap.add_argument("--refresh-rows", type=int, default=1_000_000, help="rows of each refresh workload")
    ap.add_argument("--backend", choices=("both", "embedded", "postgres"), default="both")
    ap.add_argument("--no-mqtt", action="store_true", help="in-process figures only (no broker)")
    ap.add_argument("--profile", action="store_true", help="cProfile the in-process path (stderr)")
    ap.add_argument("--only", choices=("all", "refresh"), default="all",
                    help="refresh: the refresh workloads alone (no broker, no ingest figures)")
    ap.add_argument("--pg", choices=("private", "shared"), default="private",
                    help="private: our own PostgreSQL with autovacuum on (default); shared: SPINLINE_BENCH_PG")
    args = ap.parse_args()
    shapes = [int(x) for x in args.shapes.split(",")]
    broker_dir = tempfile.mkdtemp()
    if args.only == "refresh":
        args.no_mqtt = True
    broker = private_broker(broker_dir) if not args.no_mqtt and not PORT else None
    try:
        run(args, shapes)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(10)


def run(args: argparse.Namespace, shapes: list[int]) -> None:
    raw: dict[int, float] = {}
    if not args.no_mqtt:
        secrets = {f"e{e}": os.urandom(32) for e in range(EDGES)}
        t0 = (time.time_ns() // S - 3600) * S
        raw = {r: raw_mosquitto(flush_payloads(secrets, r, args.rows, t0)) for r in shapes}
    result: dict[str, Any] = {"bench": "ingest", "only": args.only, "cores": os.cpu_count(),
                              "load_avg_1m": round(os.getloadavg()[0], 1),
                              "shapes": shapes, "rows_per_shape": args.rows, "coalesce": COALESCE,
                              "raw_mosquitto_rows_per_s": {str(r): round(v) for r, v in raw.items()}}

    from spinline.cloud.storage.embedded import EmbeddedStore

    if args.backend in ("both", "embedded"):
        with tempfile.TemporaryDirectory() as d:
            emb = EmbeddedStore(os.path.join(d, "bench.duckdb"))
            try:
                result["embedded"] = bench_backend(emb, "embedded", shapes, args.rows, raw, args)
            finally:
                emb.close()
    if args.backend in ("both", "postgres"):
        import psycopg

        from spinline.cloud.storage.postgres import PostgresStore

        admin, stop_pg = (private_postgres(tempfile.mkdtemp()) if args.pg == "private" else (PG_ADMIN, None))
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        try:
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f'CREATE SCHEMA "{schema}"')
                settings = {k: c.execute(f"SHOW {k}").fetchone()[0]  # type: ignore[index]
                            for k in ("autovacuum", "shared_buffers", "synchronous_commit", "fsync", "server_version")}
            url = f"{admin}?options=-csearch_path%3D{schema}"
            try:
                pg = PostgresStore(url)
                try:
                    result["postgres"] = bench_backend(pg, url, shapes, args.rows, raw, args)
                    result["postgres"]["server"] = {"kind": args.pg, **settings}
                finally:
                    pg.close()
            finally:
                with psycopg.connect(admin, autocommit=True) as c:
                    c.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            if stop_pg is not None:
                stop_pg()
    result["load_avg_1m_end"] = round(os.getloadavg()[0], 1)
    result["targets"] = {"embedded_e2e_rows_per_s": 2_000_000, "postgres_e2e_rows_per_s": 500_000,
                         "refresh": "refresh_keeps_up on both backends"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
