"""The embedded store: one DuckDB file, no server (the default).

DuckDB is a columnar, in-process analytical database: an append of a numpy/Arrow batch is a memory
copy into column segments, and scans read only the columns and row groups (zone maps on ``ts``) a
query needs. Metadata (points, idempotency keys, edge status, rejections) lives in the same file,
so one transaction covers rows and their idempotency key.

Layout (see ``_DDL``):

- ``samples``: raw rows, append-only, no index (an index would cost more on ingest than it saves:
  queries filter on ``ts`` through zone maps, and charts over long spans read rollups);
- ``latest``: one row per point, upserted with each write (the mill overview);
- ``rollup_1m`` / ``rollup_1h``: min, max, sum, count, first, last and the counter increase within
  the bucket; ``rollup_dirty`` lists the 1-minute buckets written since the last refresh, filled in
  the write's own transaction, so ``refresh_rollups`` recomputes exactly the buckets that changed
  (late data included) and a crash between write and refresh loses nothing;
- ``ingest_keys``, ``rejections``, ``edge_status``, ``points``.

One process owns the file (DuckDB's rule). Writes are serialised by a lock; reads use one cursor
per thread and run concurrently with them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pyarrow as pa

from spinline.cloud.storage import shared
from spinline.cloud.storage.base import (
    RESOLUTION_NS,
    Completeness,
    EdgeStatus,
    PointInfo,
    Rejection,
    Resolution,
    Rollup,
    Series,
    WriteResult,
)
from spinline.cloud.storage.counters import STEP_SQL
from spinline.cloud.storage.gaps import completeness_by_point
from spinline.core.batch import Batch
from spinline.core.errors import StorageError

SCHEMA_VERSION = 1

_ROLLUP_COLS = ("point BIGINT, bucket BIGINT, min DOUBLE, max DOUBLE, sum DOUBLE, count BIGINT, "
                "first DOUBLE, last DOUBLE, inc DOUBLE")

_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)",
    """CREATE TABLE IF NOT EXISTS points (key BIGINT PRIMARY KEY, tag VARCHAR, mill VARCHAR,
        machine VARCHAR, name VARCHAR, unit VARCHAR, kind VARCHAR, interval_s DOUBLE, line VARCHAR,
        workshop VARCHAR, machine_type VARCHAR, deadband DOUBLE, rollover DOUBLE)""",
    "CREATE TABLE IF NOT EXISTS samples (point BIGINT, ts BIGINT, value DOUBLE, quality UTINYINT, seq BIGINT)",
    """CREATE TABLE IF NOT EXISTS latest (point BIGINT PRIMARY KEY, ts BIGINT, value DOUBLE,
        quality UTINYINT, seq BIGINT)""",
    "CREATE TABLE IF NOT EXISTS ingest_keys (key VARCHAR PRIMARY KEY, stored BIGINT, ts_ns BIGINT)",
    "CREATE TABLE IF NOT EXISTS rollup_dirty (bucket BIGINT)",
    f"CREATE TABLE IF NOT EXISTS rollup_1m ({_ROLLUP_COLS})",
    f"CREATE TABLE IF NOT EXISTS rollup_1h ({_ROLLUP_COLS})",
    "CREATE TABLE IF NOT EXISTS rejections (edge VARCHAR, reason VARCHAR, detail VARCHAR, ts_ns BIGINT)",
    """CREATE TABLE IF NOT EXISTS edge_status (edge VARCHAR PRIMARY KEY, mill VARCHAR, status VARCHAR,
        received_ns BIGINT)""",
)

_STEP = STEP_SQL.format(prev="prev", cur="value", rollover="rollover")
_STEP_H = STEP_SQL.format(prev="prev_last", cur="first", rollover="rollover")

#: Dirty buckets closer than this are refreshed by one statement (see ``shared.spans``): scanning the
#: ``ts`` column of up to an hour of rows that are then filtered out costs less than a statement.
_MERGE_GAP_1M = 3600 * 10**9
_MERGE_GAP_1H = 7 * 86400 * 10**9

#: 1-minute buckets from raw rows of the dirty minutes in [lo, hi): increases are summed between
#: consecutive rows of the same bucket. Gauges (no increase) skip the window: on sparse data every
#: row is its own bucket, and a window partitioned per bucket costs more than the aggregate.
_REFRESH_1M = f"""
INSERT INTO rollup_1m
WITH rows AS (
  SELECT s.point, s.ts - s.ts % 60000000000 AS bucket, s.ts, s.value, coalesce(p.kind = 'counter', false) AS ctr,
         p.rollover
  FROM samples s LEFT JOIN points p ON p.key = s.point
  WHERE s.ts >= $lo AND s.ts < $hi AND s.quality < 128 AND NOT isnan(s.value)
    AND s.ts - s.ts % 60000000000 IN (SELECT bucket FROM dirty_minutes)
)
SELECT point, bucket, min(value), max(value), sum(value), count(*), arg_min(value, ts), arg_max(value, ts), 0.0
FROM rows WHERE NOT ctr GROUP BY point, bucket
UNION ALL
SELECT point, bucket, min(value), max(value), sum(value), count(*), arg_min(value, ts), arg_max(value, ts),
       sum({_STEP})
FROM (
  SELECT *, lag(value) OVER (PARTITION BY point, bucket ORDER BY ts) AS prev FROM rows WHERE ctr
)
GROUP BY point, bucket
"""  # noqa: S608 (constant SQL built from constants)

#: 1-hour buckets from 1-minute ones: within-hour increase = minutes' own + steps between minutes.
_REFRESH_1H = f"""
INSERT INTO rollup_1h
SELECT point, hour, min(min), max(max), sum(sum), sum(count), arg_min(first, bucket), arg_max(last, bucket),
       sum(inc + CASE WHEN kind = 'counter' THEN {_STEP_H} ELSE 0 END)
FROM (
  SELECT r.*, r.bucket - r.bucket % 3600000000000 AS hour, p.kind, p.rollover,
         lag(r.last) OVER (PARTITION BY r.point, r.bucket - r.bucket % 3600000000000 ORDER BY r.bucket) AS prev_last
  FROM rollup_1m r LEFT JOIN points p ON p.key = r.point
  WHERE r.bucket >= $lo AND r.bucket < $hi AND r.bucket - r.bucket % 3600000000000 IN (SELECT bucket FROM dirty_hours)
)
GROUP BY point, hour
"""  # noqa: S608 (constant SQL built from constants)


def _arrow_batch(batch: Batch) -> pa.Table:
    seq = pa.array(batch.seq) if batch.seq is not None else pa.nulls(len(batch), pa.int64())
    return pa.table({"point": pa.array(batch.point), "ts": pa.array(batch.ts_ns),
                     "value": pa.array(batch.value), "quality": pa.array(batch.quality), "seq": seq})


def _col(res: dict[str, Any], name: str, dtype: Any, fill: Any) -> Any:
    """A fetchnumpy column as a plain array (NULLs filled)."""
    a = res[name]
    if isinstance(a, np.ma.MaskedArray):
        a = a.filled(fill)
    return np.ascontiguousarray(a, dtype=dtype)


class EmbeddedStore:
    """``TimeSeriesStore`` on a DuckDB file. ``path`` is a file, or a folder to hold ``spinline.duckdb``."""

    def __init__(self, path: str | Path = "spinline.duckdb", *,
                 retention_s: Mapping[str, float | None] | None = None) -> None:
        self.path = Path(path)
        self.retention_s = shared.retention(retention_s)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._open_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._local = threading.local()

    # --- connections ----------------------------------------------------------------------------

    def _root(self) -> duckdb.DuckDBPyConnection:
        with self._open_lock:
            if self._con is None:
                file = self.path / "spinline.duckdb" if self.path.is_dir() else self.path
                try:
                    self._con = duckdb.connect(str(file))
                except duckdb.Error as exc:
                    raise StorageError(f"cannot open DuckDB file {file}: {exc}") from exc
            return self._con

    def _cur(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (DuckDB connections are not shared between threads)."""
        con = self._root()
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cur", None)
        if cur is None or getattr(self._local, "root", None) is not con:
            with self._open_lock:
                cur = con.cursor()
            self._local.cur, self._local.root = cur, con
        return cur

    @contextmanager
    def _tx(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write transaction (serialised with every other write of this store)."""
        with self._write_lock:
            cur = self._cur()
            cur.begin()
            try:
                yield cur
            except BaseException:
                cur.rollback()
                raise
            cur.commit()

    def close(self) -> None:
        with self._open_lock:
            if self._con is not None:
                self._con.close()
                self._con = None
            self._local = threading.local()

    # --- schema and metadata --------------------------------------------------------------------

    def migrate(self) -> None:
        with self._tx() as cur:
            for stmt in _DDL:
                cur.execute(stmt)
            row = cur.execute("SELECT max(version) FROM schema_version").fetchone()
            if row is None or row[0] is None:
                cur.execute("INSERT INTO schema_version VALUES (?)", [SCHEMA_VERSION])
            elif row[0] > SCHEMA_VERSION:
                raise StorageError(f"database schema {row[0]} is newer than this code ({SCHEMA_VERSION})")

    def register_points(self, points: Sequence[PointInfo]) -> None:
        if not points:
            return
        latest = {p.key: p for p in points}.values()          # one row per key (the last given)
        names = ("key", "tag", "mill", "machine", "name", "unit", "kind", "interval_s", "line", "workshop",
                 "machine_type", "deadband", "rollover")
        table = pa.table({n: [getattr(p, n) for p in latest] for n in names})
        with self._tx() as cur:
            cur.register("incoming_points", table)
            try:
                cur.execute(f"INSERT OR REPLACE INTO points SELECT {', '.join(names)} FROM incoming_points")  # noqa: S608
            finally:
                cur.unregister("incoming_points")

    def points(self, mill: str | None = None) -> list[PointInfo]:
        sql = ("SELECT key, tag, mill, machine, name, unit, kind, interval_s, line, workshop, machine_type, "
               "deadband, rollover FROM points")
        rows = (self._cur().execute(sql + " WHERE mill = ? ORDER BY tag", [mill]) if mill is not None
                else self._cur().execute(sql + " ORDER BY tag")).fetchall()
        return [PointInfo(key=r[0], tag=r[1], mill=r[2], machine=r[3], name=r[4], unit=r[5], kind=r[6],
                          interval_s=r[7], line=r[8], workshop=r[9], machine_type=r[10], deadband=r[11],
                          rollover=r[12]) for r in rows]

    # --- writes ---------------------------------------------------------------------------------

    def write(self, batch: Batch, *, idempotency_key: str | None = None) -> WriteResult:
        return self.write_many([(batch, idempotency_key)])[0]

    def write_many(self, items: Sequence[tuple[Batch, str | None]]) -> list[WriteResult]:
        if not items:
            return []
        now = _now_ns()
        try:
            with self._tx() as cur:
                fresh = _claim_keys(cur, items, now)
                todo = [b for (b, _), new in zip(items, fresh, strict=True) if new and len(b)]
                if todo:
                    self._insert(cur, Batch.concat(todo))
        except (duckdb.ConstraintException, duckdb.TransactionException):
            # Another writer committed one of these keys first (another store object on the same file).
            if len(items) == 1:
                return [WriteResult(0, True)]
            return [self.write(b, idempotency_key=k) for b, k in items]
        return [WriteResult(len(b) if new else 0, not new) for (b, _), new in zip(items, fresh, strict=True)]

    def _insert(self, cur: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        incoming = _arrow_batch(batch)
        last = _arrow_batch(shared.last_per_point(batch))
        dirty = pa.table({"bucket": pa.array(shared.minute_buckets(batch.ts_ns))})
        cur.register("incoming", incoming)
        cur.register("incoming_last", last)
        cur.register("incoming_dirty", dirty)
        try:
            cur.execute("INSERT INTO samples SELECT point, ts, value, quality, seq FROM incoming")
            cur.execute("""INSERT INTO latest SELECT point, ts, value, quality, seq FROM incoming_last
                           ON CONFLICT (point) DO UPDATE SET ts = excluded.ts, value = excluded.value,
                           quality = excluded.quality, seq = excluded.seq WHERE excluded.ts >= latest.ts""")
            cur.execute("INSERT INTO rollup_dirty SELECT bucket FROM incoming_dirty")
        finally:
            cur.unregister("incoming")
            cur.unregister("incoming_last")
            cur.unregister("incoming_dirty")

    # --- reads ----------------------------------------------------------------------------------

    def latest(self, points: Sequence[int]) -> Batch:
        keys = pa.table({"k": pa.array(np.asarray(points, dtype=np.int64))})
        cur = self._cur()
        cur.register("want", keys)
        try:
            res = cur.execute("""SELECT point, ts, value, quality, coalesce(seq, -1) AS seq FROM latest
                                 WHERE point IN (SELECT k FROM want) ORDER BY point""").fetchnumpy()
        finally:
            cur.unregister("want")
        return Batch.of(res["point"], res["ts"], res["value"], res["quality"], res["seq"])

    def range(self, point: int, start_ns: int, end_ns: int, *, max_points: int | None = None,
              resolution: Resolution | Literal["auto"] = "auto") -> Series:
        res = shared.pick_resolution(end_ns - start_ns, max_points) if resolution == "auto" else resolution
        if res not in RESOLUTION_NS:
            raise ValueError(f"resolution must be raw, 1m, 1h or auto, not {resolution!r}")
        cur = self._cur()
        if res == "raw":
            r = cur.execute("SELECT ts, value FROM samples WHERE point = ? AND ts >= ? AND ts < ? ORDER BY ts",
                            [point, start_ns, end_ns]).fetchnumpy()
            ts, val = _col(r, "ts", np.int64, 0), _col(r, "value", np.float64, np.nan)
        else:
            lo = start_ns - start_ns % RESOLUTION_NS[res]
            sql = f"SELECT bucket, min, max FROM rollup_{res} WHERE point = ? AND bucket >= ? AND bucket < ? "  # noqa: S608
            r = cur.execute(sql + "ORDER BY bucket", [point, lo, end_ns]).fetchnumpy()
            ts, val = shared.envelope(_col(r, "bucket", np.int64, 0), _col(r, "min", np.float64, np.nan),
                                      _col(r, "max", np.float64, np.nan), res)
        ts, val, reduced = shared.reduce(ts, val, max_points, start_ns, end_ns)
        return Series(point=point, ts_ns=ts, value=val, resolution=res, reduced=reduced)

    def rollup(self, points: Sequence[int], start_ns: int, end_ns: int,
               resolution: Literal["1m", "1h"]) -> Rollup:
        if resolution not in ("1m", "1h"):
            raise ValueError(f"rollup resolution must be 1m or 1h, not {resolution!r}")
        cur = self._cur()
        cur.register("want", pa.table({"k": pa.array(np.asarray(points, dtype=np.int64))}))
        try:
            r = cur.execute(f"""
                SELECT q.*, coalesce(p.kind = 'counter', false) AS is_counter, p.rollover FROM (
                  SELECT point, bucket, min, max, sum, count, first, last, inc,
                         lag(last) OVER (PARTITION BY point ORDER BY bucket) AS prev_last
                  FROM rollup_{resolution}
                  WHERE point IN (SELECT k FROM want) AND bucket >= ? AND bucket < ?) q
                LEFT JOIN points p ON p.key = q.point
                WHERE q.bucket >= ? ORDER BY q.point, q.bucket""",  # noqa: S608 (resolution checked)
                            [start_ns - shared.LOOKBACK_NS[resolution], end_ns, start_ns]).fetchnumpy()
        finally:
            cur.unregister("want")
        f = np.float64
        return shared.assemble_rollup(
            _col(r, "point", np.int64, 0), _col(r, "bucket", np.int64, 0), _col(r, "min", f, np.nan),
            _col(r, "max", f, np.nan), _col(r, "sum", f, np.nan), _col(r, "count", np.int64, 0),
            _col(r, "first", f, np.nan), _col(r, "last", f, np.nan), _col(r, "inc", f, 0.0),
            _col(r, "prev_last", f, np.nan), _col(r, "is_counter", bool, False), _col(r, "rollover", f, np.nan))

    def completeness(self, points: Sequence[int], start_ns: int, end_ns: int) -> dict[int, Completeness]:
        cur = self._cur()
        info = {p.key: p for p in self.points()}
        cur.register("want", pa.table({"k": pa.array(np.asarray(points, dtype=np.int64))}))
        try:
            r = cur.execute("""SELECT point, ts, coalesce(seq, -1) AS seq FROM samples
                               WHERE point IN (SELECT k FROM want) AND ts >= ? AND ts < ?
                               ORDER BY point, ts""", [start_ns, end_ns]).fetchnumpy()
        finally:
            cur.unregister("want")
        return completeness_by_point(points, info, _col(r, "point", np.int64, 0), _col(r, "ts", np.int64, 0),
                             _col(r, "seq", np.int64, -1), start_ns, end_ns)

    # --- rollups and retention ------------------------------------------------------------------

    def refresh_rollups(self) -> None:
        """Recompute the dirty minutes and their hours, set-based.

        The dirty buckets are joined as a table, one statement per span of nearby dirty buckets
        (``shared.spans``), so the cost follows the rows in dirty buckets and not their number.
        """
        with self._tx() as cur:
            rows = cur.execute("DELETE FROM rollup_dirty RETURNING bucket").fetchnumpy()
            minutes = np.unique(_col(rows, "bucket", np.int64, 0))
            if not len(minutes):
                return
            hours = np.unique(minutes - minutes % RESOLUTION_NS["1h"])
            cur.register("dirty_minutes", pa.table({"bucket": pa.array(minutes)}))
            cur.register("dirty_hours", pa.table({"bucket": pa.array(hours)}))
            try:
                for lo, hi in shared.spans(minutes, RESOLUTION_NS["1m"], _MERGE_GAP_1M):
                    cur.execute("DELETE FROM rollup_1m WHERE bucket >= ? AND bucket < ? "
                                "AND bucket IN (SELECT bucket FROM dirty_minutes)", [lo, hi])
                    cur.execute(_REFRESH_1M, {"lo": lo, "hi": hi})
                for lo, hi in shared.spans(hours, RESOLUTION_NS["1h"], _MERGE_GAP_1H):
                    cur.execute("DELETE FROM rollup_1h WHERE bucket >= ? AND bucket < ? "
                                "AND bucket IN (SELECT bucket FROM dirty_hours)", [lo, hi])
                    cur.execute(_REFRESH_1H, {"lo": lo, "hi": hi})
            finally:
                cur.unregister("dirty_minutes")
                cur.unregister("dirty_hours")

    def apply_retention(self, now_ns: int) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._tx() as cur:
            for res, table, col in (("raw", "samples", "ts"), ("1m", "rollup_1m", "bucket"),
                                    ("1h", "rollup_1h", "bucket")):
                keep = self.retention_s[res]
                if keep is None:
                    out[res] = 0
                    continue
                cutoff = now_ns - int(keep * 1e9)
                row = cur.execute(f"DELETE FROM {table} WHERE {col} < ?", [cutoff]).fetchone()  # noqa: S608
                out[res] = int(row[0]) if row else 0
                if res == "raw":
                    # Keys older than the raw data they guarded: a re-send that old would find no rows anyway.
                    cur.execute("DELETE FROM ingest_keys WHERE ts_ns < ?", [cutoff])
        return out

    # --- rejections and edge status -------------------------------------------------------------

    def record_rejection(self, rejection: Rejection) -> None:
        with self._tx() as cur:
            cur.execute("INSERT INTO rejections VALUES (?, ?, ?, ?)",
                        [rejection.edge, rejection.reason, rejection.detail, rejection.ts_ns])

    def rejections(self, edge: str | None = None) -> dict[str, dict[str, int]]:
        sql = "SELECT edge, reason, count(*) FROM rejections"
        cur = self._cur()
        rows = (cur.execute(sql + " WHERE edge = ? GROUP BY ALL", [edge]) if edge is not None
                else cur.execute(sql + " GROUP BY ALL")).fetchall()
        out: dict[str, dict[str, int]] = {}
        for e, reason, n in rows:
            out.setdefault(e, {})[reason] = int(n)
        return out

    def recent_rejections(self, edge: str | None = None, limit: int = 100) -> list[Rejection]:
        sql = "SELECT edge, reason, detail, ts_ns FROM rejections"
        cur = self._cur()
        rows = (cur.execute(sql + " WHERE edge = ? ORDER BY ts_ns DESC LIMIT ?", [edge, limit]) if edge is not None
                else cur.execute(sql + " ORDER BY ts_ns DESC LIMIT ?", [limit])).fetchall()
        return [Rejection(edge=r[0], reason=r[1], detail=r[2], ts_ns=r[3]) for r in rows]

    def record_edge_status(self, edge: str, mill: str, status: dict[str, Any], received_ns: int) -> None:
        with self._tx() as cur:
            cur.execute("INSERT OR REPLACE INTO edge_status VALUES (?, ?, ?, ?)",
                        [edge, mill, json.dumps(status, default=str), received_ns])

    def edge_status(self, mill: str | None = None) -> dict[str, EdgeStatus]:
        sql = "SELECT edge, mill, status, received_ns FROM edge_status"
        cur = self._cur()
        rows = (cur.execute(sql + " WHERE mill = ?", [mill]) if mill is not None else cur.execute(sql)).fetchall()
        return {r[0]: EdgeStatus(edge=r[0], mill=r[1], status=json.loads(r[2]), received_ns=r[3]) for r in rows}


def _claim_keys(cur: duckdb.DuckDBPyConnection, items: Sequence[tuple[Batch, str | None]], now: int) -> list[bool]:
    """Insert the keys of ``items``; True for each item whose rows must be stored."""
    keys = [k for _, k in items if k is not None]
    fresh_keys: set[str] = set()
    if keys:
        uniq = list(dict.fromkeys(keys))
        stored = {}
        for b, k in items:
            if k is not None and k not in stored:
                stored[k] = len(b)
        cur.register("incoming_keys", pa.table({"key": pa.array(uniq, pa.string()),
                                                "stored": pa.array([stored[k] for k in uniq], pa.int64())}))
        try:
            rows = cur.execute("INSERT INTO ingest_keys SELECT key, stored, ? FROM incoming_keys "
                               "ON CONFLICT DO NOTHING RETURNING key", [now]).fetchall()
        finally:
            cur.unregister("incoming_keys")
        fresh_keys = {r[0] for r in rows}
    out: list[bool] = []
    for _, k in items:
        if k is None:
            out.append(True)
        elif k in fresh_keys:
            out.append(True)
            fresh_keys.discard(k)      # a second item with the same key is a duplicate
        else:
            out.append(False)
    return out


def _now_ns() -> int:
    return time.time_ns()
