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
  the bucket; ``rollup_dirty`` lists the (point, 1-minute bucket) pairs written since the last
  refresh, filled in the write's own transaction, so ``refresh_rollups`` recomputes exactly the
  buckets that changed (late data included), of the points written and no other, and a crash
  between write and refresh loses nothing;
- ``ingest_keys``, ``rejections``, ``edge_status``, ``points``.

Every ``duckdb.Error`` leaving a public method is raised as ``StorageError`` (as the PostgreSQL
store does for psycopg), so callers handle one exception type whatever the backend.

One process owns the file (DuckDB's rule). Writes are serialised by a lock; reads use one cursor
per thread and run concurrently with them.

Size: one backend's whole ``TimeSeriesStore`` (writes, rollups, queries, retention, edge state);
what both backends share is in ``shared.py``, and one parametrised suite tests both.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import duckdb
import numpy as np
import pyarrow as pa

from spinline.cloud.storage import embedded_rollups, shared
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
from spinline.cloud.storage.gaps import completeness_by_point
from spinline.core.batch import Batch
from spinline.core.errors import StorageError

SCHEMA_VERSION = 5

_ROLLUP_COLS = ("point BIGINT, bucket BIGINT, min DOUBLE, max DOUBLE, sum DOUBLE, count BIGINT, "
                "first DOUBLE, last DOUBLE, inc DOUBLE")

_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)",
    """CREATE TABLE IF NOT EXISTS points (key BIGINT PRIMARY KEY, tag VARCHAR, mill VARCHAR,
        machine VARCHAR, name VARCHAR, unit VARCHAR, kind VARCHAR, interval_s DOUBLE, line VARCHAR,
        workshop VARCHAR, machine_type VARCHAR, deadband DOUBLE, rollover DOUBLE, iso_class VARCHAR)""",
    # Version 2: the machine's ISO 20816 class (databases created by version 1 gain the column).
    "ALTER TABLE points ADD COLUMN IF NOT EXISTS iso_class VARCHAR",
    # Version 5: how the point reports (interval | on_change) and its keep-alive (completeness).
    "ALTER TABLE points ADD COLUMN IF NOT EXISTS report VARCHAR",
    "ALTER TABLE points ADD COLUMN IF NOT EXISTS keepalive_s DOUBLE",
    "CREATE TABLE IF NOT EXISTS samples (point BIGINT, ts BIGINT, value DOUBLE, quality UTINYINT, seq BIGINT)",
    """CREATE TABLE IF NOT EXISTS latest (point BIGINT PRIMARY KEY, ts BIGINT, value DOUBLE,
        quality UTINYINT, seq BIGINT)""",
    "CREATE TABLE IF NOT EXISTS ingest_keys (key VARCHAR PRIMARY KEY, stored BIGINT, ts_ns BIGINT)",
    # Version 4: the digest of the content stored under each key, and the ingest's note (row refusals).
    "ALTER TABLE ingest_keys ADD COLUMN IF NOT EXISTS digest VARCHAR",
    "ALTER TABLE ingest_keys ADD COLUMN IF NOT EXISTS note VARCHAR",
    "CREATE TABLE IF NOT EXISTS rollup_dirty (bucket BIGINT, point BIGINT)",
    # Version 3: dirty buckets name their point (rows of version 2 have NULL: every point written there).
    "ALTER TABLE rollup_dirty ADD COLUMN IF NOT EXISTS point BIGINT",
    f"CREATE TABLE IF NOT EXISTS rollup_1m ({_ROLLUP_COLS})",
    f"CREATE TABLE IF NOT EXISTS rollup_1h ({_ROLLUP_COLS})",
    "CREATE TABLE IF NOT EXISTS rejections (edge VARCHAR, reason VARCHAR, detail VARCHAR, ts_ns BIGINT)",
    """CREATE TABLE IF NOT EXISTS edge_status (edge VARCHAR PRIMARY KEY, mill VARCHAR, status VARCHAR,
        received_ns BIGINT)""",
)


#: Chart reduction of raw rows done by DuckDB (the rows never reach Python): per chart bucket of width
#: ``$w`` from ``$lo``, the row of the minimum (NaN sorts last; ties: the earliest) and the row of the
#: maximum (NaN only where the bucket has nothing else; ties: the earliest), as ``downsample.minmax``.
_REDUCE_RAW = """
SELECT mn.t AS t1, mn.v AS v1, -mx.t AS t2, mx.v AS v2 FROM (
  SELECT (ts - $lo) // $w AS b, min(struct_pack(v := value, t := ts)) AS mn,
         max(struct_pack(ok := NOT isnan(value), v := value, t := -ts)) AS mx
  FROM samples WHERE point = $p AND ts >= $lo AND ts < $hi GROUP BY b
) ORDER BY b
"""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _wrapped(what: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Raise a ``duckdb.Error`` escaping the decorated method as ``StorageError`` (``what`` failed)."""
    def deco(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def inner(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return fn(*args, **kwargs)
            except duckdb.Error as exc:
                raise StorageError(f"{what} failed: {exc}") from exc
        return inner
    return deco


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
                with contextlib.suppress(duckdb.Error):        # a dead connection has nothing to roll back
                    cur.rollback()
                raise
            cur.commit()

    @property
    def raw_retention_ns(self) -> int | None:
        """How long raw rows are kept, in ns (None: forever); ingest refuses older rows (``too_old``)."""
        raw = self.retention_s["raw"]
        return None if raw is None else int(raw * 1e9)

    def close(self) -> None:
        with self._open_lock:
            if self._con is not None:
                self._con.close()
                self._con = None
            self._local = threading.local()

    # --- schema and metadata --------------------------------------------------------------------

    @_wrapped("migration")
    def migrate(self) -> None:
        with self._tx() as cur:
            for stmt in _DDL:
                cur.execute(stmt)
            row = cur.execute("SELECT max(version) FROM schema_version").fetchone()
            if row is None or row[0] is None:
                cur.execute("INSERT INTO schema_version VALUES (?)", [SCHEMA_VERSION])
            elif row[0] > SCHEMA_VERSION:
                raise StorageError(f"database schema {row[0]} is newer than this code ({SCHEMA_VERSION})")
            elif row[0] < SCHEMA_VERSION:
                cur.execute("INSERT INTO schema_version VALUES (?)", [SCHEMA_VERSION])

    @_wrapped("point registration")
    def register_points(self, points: Sequence[PointInfo]) -> None:
        if not points:
            return
        latest = {p.key: p for p in points}.values()          # one row per key (the last given)
        names = ("key", "tag", "mill", "machine", "name", "unit", "kind", "interval_s", "line", "workshop",
                 "machine_type", "deadband", "rollover", "iso_class", "report", "keepalive_s")
        types = {"iso_class": pa.string(), "keepalive_s": pa.float64(), "rollover": pa.float64()}
        table = pa.table({n: pa.array([getattr(p, n) for p in latest], type=types.get(n)) for n in names})
        with self._tx() as cur:
            cur.register("incoming_points", table)
            try:
                cur.execute(f"INSERT OR REPLACE INTO points ({', '.join(names)}) "  # noqa: S608
                            f"SELECT {', '.join(names)} FROM incoming_points")
            finally:
                cur.unregister("incoming_points")

    @_wrapped("point lookup")
    def points(self, mill: str | None = None, *, tag: str | None = None) -> list[PointInfo]:
        sql = ("SELECT key, tag, mill, machine, name, unit, kind, interval_s, line, workshop, machine_type, "
               "deadband, rollover, iso_class, report, keepalive_s FROM points")
        where, args = shared.points_filter(mill, tag, "?")
        rows = self._cur().execute(sql + where + " ORDER BY tag", args).fetchall()
        return [PointInfo(key=r[0], tag=r[1], mill=r[2], machine=r[3], name=r[4], unit=r[5], kind=r[6],
                          interval_s=r[7], line=r[8], workshop=r[9], machine_type=r[10], deadband=r[11],
                          rollover=r[12], iso_class=r[13], report=r[14] or "interval", keepalive_s=r[15])
                for r in rows]

    # --- writes ---------------------------------------------------------------------------------

    def write(self, batch: Batch, *, idempotency_key: str | None = None, digest: str | None = None,
              note: str | None = None) -> WriteResult:
        return self.write_many([(batch, idempotency_key)], digests=[digest], notes=[note])[0]

    @_wrapped("write")
    def write_many(self, items: Sequence[tuple[Batch, str | None]], *,
                   digests: Sequence[str | None] | None = None,
                   notes: Sequence[str | None] | None = None) -> list[WriteResult]:
        if not items:
            return []
        now = _now_ns()
        dig = shared.item_digests(items, digests)
        nts = shared.item_notes(items, notes)
        for attempt in range(3):
            try:
                with self._tx() as cur:
                    claims = _claim_keys(cur, items, dig, nts, now)
                    todo = [b for (b, _), c in zip(items, claims, strict=True) if c.fresh and len(b)]
                    if todo:
                        self._insert(cur, Batch.concat(todo))
                break
            except (duckdb.ConstraintException, duckdb.TransactionException):
                # Another writer committed one of these keys first (another store object on the same
                # file): run again, and those keys are now seen (duplicate or conflict).
                if attempt == 2:
                    raise
        return [WriteResult(len(b) if c.fresh else 0, not c.fresh and not c.conflict, c.conflict, c.note)
                for (b, _), c in zip(items, claims, strict=True)]

    def _insert(self, cur: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        incoming = _arrow_batch(batch)
        last = _arrow_batch(shared.last_per_point(batch))
        dpoint, dbucket = shared.minute_pairs(batch.point, batch.ts_ns)
        dirty = pa.table({"bucket": pa.array(dbucket), "point": pa.array(dpoint)})
        cur.register("incoming", incoming)
        cur.register("incoming_last", last)
        cur.register("incoming_dirty", dirty)
        try:
            cur.execute("INSERT INTO samples SELECT point, ts, value, quality, seq FROM incoming")
            cur.execute("""INSERT INTO latest SELECT point, ts, value, quality, seq FROM incoming_last
                           ON CONFLICT (point) DO UPDATE SET ts = excluded.ts, value = excluded.value,
                           quality = excluded.quality, seq = excluded.seq WHERE excluded.ts >= latest.ts""")
            cur.execute("INSERT INTO rollup_dirty (bucket, point) SELECT bucket, point FROM incoming_dirty")
        finally:
            cur.unregister("incoming")
            cur.unregister("incoming_last")
            cur.unregister("incoming_dirty")

    # --- reads ----------------------------------------------------------------------------------

    @_wrapped("latest read")
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

    @_wrapped("range read")
    def range(self, point: int, start_ns: int, end_ns: int, *, max_points: int | None = None,
              resolution: Resolution | Literal["auto"] = "auto") -> Series:
        res = shared.pick_resolution(end_ns - start_ns, max_points) if resolution == "auto" else resolution
        if res not in RESOLUTION_NS:
            raise ValueError(f"resolution must be raw, 1m, 1h or auto, not {resolution!r}")
        cur = self._cur()
        if res == "raw":
            if max_points is not None and max_points < 2:
                raise ValueError(f"max_points must be at least 2, got {max_points}")
            # At most max_points + 1 rows come back; more means the database reduces them.
            limit = None if max_points is None else int(max_points) + 1        # LIMIT NULL: every row
            r = cur.execute("SELECT ts, value FROM samples WHERE point = ? AND ts >= ? AND ts < ? ORDER BY ts "
                            "LIMIT ?", [point, start_ns, end_ns, limit]).fetchnumpy()
            ts, val = _col(r, "ts", np.int64, 0), _col(r, "value", np.float64, np.nan)
            if max_points is not None and len(ts) > max_points:
                ts, val = self._reduce_raw(cur, point, start_ns, end_ns, max_points)
                return Series(point=point, ts_ns=ts, value=val, resolution="raw", reduced=True)
        else:
            lo = start_ns - start_ns % RESOLUTION_NS[res]
            sql = f"SELECT bucket, min, max FROM rollup_{res} WHERE point = ? AND bucket >= ? AND bucket < ? "  # noqa: S608
            r = cur.execute(sql + "ORDER BY bucket", [point, lo, end_ns]).fetchnumpy()
            ts, val = shared.envelope(_col(r, "bucket", np.int64, 0), _col(r, "min", np.float64, np.nan),
                                      _col(r, "max", np.float64, np.nan), res)
        ts, val, reduced = shared.reduce(ts, val, max_points, start_ns, end_ns)
        return Series(point=point, ts_ns=ts, value=val, resolution=res, reduced=reduced)

    @staticmethod
    def _reduce_raw(cur: duckdb.DuckDBPyConnection, point: int, start_ns: int, end_ns: int,
                    max_points: int) -> tuple[Any, Any]:
        """``downsample.minmax`` of the raw rows, computed by DuckDB: max_points rows at most in memory."""
        width = max(1, -(-(end_ns - start_ns) // (max_points // 2)))
        r = cur.execute(_REDUCE_RAW, {"p": point, "lo": start_ns, "hi": end_ns, "w": width}).fetchnumpy()
        t1, t2 = _col(r, "t1", np.int64, 0), _col(r, "t2", np.int64, 0)
        v1, v2 = _col(r, "v1", np.float64, np.nan), _col(r, "v2", np.float64, np.nan)
        swap = t2 < t1
        ts = np.empty(2 * len(t1), dtype=np.int64)
        val = np.empty(2 * len(t1), dtype=np.float64)
        ts[0::2], ts[1::2] = np.where(swap, t2, t1), np.where(swap, t1, t2)
        val[0::2], val[1::2] = np.where(swap, v2, v1), np.where(swap, v1, v2)
        keep = np.ones(len(ts), dtype=bool)
        keep[1::2] = t1 != t2                       # one row is both the minimum and the maximum
        return ts[keep], val[keep]

    @_wrapped("rollup read")
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

    @_wrapped("completeness read")
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

    @_wrapped("rollup refresh")
    def refresh_rollups(self) -> None:
        """Recompute the dirty (point, minute) pairs and their (point, hour) pairs (``embedded_rollups``).

        Only the pairs written since the last refresh are deleted and rebuilt: a late or replayed
        batch of one point never touches another point's rollups (whose raw rows retention may have
        removed). The dirty pairs are read and cleared in the refresh's own transaction, so a write
        committed meanwhile (another connection to the file) stays dirty for the next refresh.
        """
        with self._tx() as cur:
            rows = cur.execute("SELECT point, bucket FROM rollup_dirty").fetchnumpy()
            bucket = _col(rows, "bucket", np.int64, 0)
            if not len(bucket):
                return
            cur.execute("DELETE FROM rollup_dirty")
            legacy = np.ma.getmaskarray(rows["point"])    # written before version 3: every point of the minute
            point = _col(rows, "point", np.int64, 0)
            if legacy.any():
                extra_p, extra_b = self._legacy_pairs(cur, np.unique(bucket[legacy]))
                point = np.r_[point[~legacy], extra_p]
                bucket = np.r_[bucket[~legacy], extra_b]
            if len(bucket):
                embedded_rollups.refresh(cur, point, bucket)

    @staticmethod
    def _legacy_pairs(cur: duckdb.DuckDBPyConnection, minutes: Any) -> tuple[Any, Any]:
        """The (point, minute) pairs with raw rows in ``minutes`` (dirty rows from before version 3)."""
        cur.register("legacy_minutes", pa.table({"bucket": pa.array(minutes)}))
        try:
            r = cur.execute("""SELECT DISTINCT point, ts - ts % 60000000000 AS bucket FROM samples
                               WHERE ts >= ? AND ts < ? AND ts - ts % 60000000000 IN
                               (SELECT bucket FROM legacy_minutes)""",
                            [int(minutes[0]), int(minutes[-1]) + RESOLUTION_NS["1m"]]).fetchnumpy()
        finally:
            cur.unregister("legacy_minutes")
        return _col(r, "point", np.int64, 0), _col(r, "bucket", np.int64, 0)

    @_wrapped("retention")
    def apply_retention(self, now_ns: int) -> dict[str, int]:
        """Drop what is past its retention: raw rows (whole minutes), rollups, rejections, old keys.

        Pending rollups are refreshed first, so no dirty minute is left to recompute from raw rows
        this removes. Idempotency keys are kept ``shared.key_retention_s`` (see there for why that
        bound is enough).
        """
        self.refresh_rollups()
        out: dict[str, int] = {}
        with self._tx() as cur:
            for res, table, col in (("raw", "samples", "ts"), ("1m", "rollup_1m", "bucket"),
                                    ("1h", "rollup_1h", "bucket"), ("rejections", "rejections", "ts_ns")):
                cutoff = shared.cutoff_ns(now_ns, self.retention_s[res])
                if cutoff is None:
                    out[res] = 0
                    continue
                if res == "raw":
                    cutoff -= cutoff % RESOLUTION_NS["1m"]      # never half a minute: its rollup stays exact
                row = cur.execute(f"DELETE FROM {table} WHERE {col} < ?", [cutoff]).fetchone()  # noqa: S608
                out[res] = int(row[0]) if row else 0
            keys = shared.cutoff_ns(now_ns, shared.key_retention_s(self.retention_s))
            if keys is not None:
                cur.execute("DELETE FROM ingest_keys WHERE ts_ns < ?", [keys])
        return out

    # --- rejections and edge status -------------------------------------------------------------

    @_wrapped("recording a rejection")
    def record_rejection(self, rejection: Rejection) -> None:
        with self._tx() as cur:
            cur.execute("INSERT INTO rejections VALUES (?, ?, ?, ?)",
                        [rejection.edge, rejection.reason, rejection.detail, rejection.ts_ns])

    @_wrapped("rejection read")
    def rejections(self, edge: str | None = None) -> dict[str, dict[str, int]]:
        sql = "SELECT edge, reason, count(*) FROM rejections"
        cur = self._cur()
        rows = (cur.execute(sql + " WHERE edge = ? GROUP BY ALL", [edge]) if edge is not None
                else cur.execute(sql + " GROUP BY ALL")).fetchall()
        out: dict[str, dict[str, int]] = {}
        for e, reason, n in rows:
            out.setdefault(e, {})[reason] = int(n)
        return out

    @_wrapped("rejection read")
    def recent_rejections(self, edge: str | None = None, limit: int = 100) -> list[Rejection]:
        sql = "SELECT edge, reason, detail, ts_ns FROM rejections"
        cur = self._cur()
        rows = (cur.execute(sql + " WHERE edge = ? ORDER BY ts_ns DESC LIMIT ?", [edge, limit]) if edge is not None
                else cur.execute(sql + " ORDER BY ts_ns DESC LIMIT ?", [limit])).fetchall()
        return [Rejection(edge=r[0], reason=r[1], detail=r[2], ts_ns=r[3]) for r in rows]

    @_wrapped("recording an edge status")
    def record_edge_status(self, edge: str, mill: str, status: dict[str, Any], received_ns: int) -> None:
        with self._tx() as cur:
            cur.execute("INSERT OR REPLACE INTO edge_status VALUES (?, ?, ?, ?)",
                        [edge, mill, json.dumps(status, default=str), received_ns])

    @_wrapped("edge status read")
    def edge_status(self, mill: str | None = None) -> dict[str, EdgeStatus]:
        sql = "SELECT edge, mill, status, received_ns FROM edge_status"
        cur = self._cur()
        rows = (cur.execute(sql + " WHERE mill = ?", [mill]) if mill is not None else cur.execute(sql)).fetchall()
        return {r[0]: EdgeStatus(edge=r[0], mill=r[1], status=json.loads(r[2]), received_ns=r[3]) for r in rows}


def _claim_keys(cur: duckdb.DuckDBPyConnection, items: Sequence[tuple[Batch, str | None]],
                digests: Sequence[str | None], notes: Sequence[str | None], now: int) -> list[shared.KeyClaim]:
    """Insert the keys of ``items`` with their digests; per item, whether its rows must be stored."""
    first: dict[str, int] = {}
    for i, (_, k) in enumerate(items):
        if k is not None and k not in first:
            first[k] = i
    fresh: set[str] = set()
    seen: dict[str, tuple[str | None, str | None]] = {}
    if first:
        uniq = list(first)
        cur.register("incoming_keys", pa.table({
            "key": pa.array(uniq, pa.string()),
            "stored": pa.array([len(items[first[k]][0]) for k in uniq], pa.int64()),
            "digest": pa.array([digests[first[k]] for k in uniq], pa.string()),
            "note": pa.array([notes[first[k]] for k in uniq], pa.string())}))
        try:
            rows = cur.execute("INSERT INTO ingest_keys (key, stored, ts_ns, digest, note) "
                               "SELECT key, stored, ?, digest, note FROM incoming_keys "
                               "ON CONFLICT DO NOTHING RETURNING key", [now]).fetchall()
            fresh = {r[0] for r in rows}
            if len(fresh) < len(uniq):
                old = cur.execute("SELECT k.key, k.digest, k.note FROM ingest_keys k SEMI JOIN incoming_keys i "
                                  "ON i.key = k.key").fetchall()
                seen = {r[0]: (r[1], r[2]) for r in old if r[0] not in fresh}
        finally:
            cur.unregister("incoming_keys")
    return shared.resolve_claims(items, digests, notes, fresh, seen)


def _now_ns() -> int:
    return time.time_ns()
