"""The PostgreSQL store: daily partitions, binary COPY ingest, Alembic migrations.

- ``samples`` is partitioned by day of ``ts`` (``samples_YYYYMMDD``, created on demand before the
  write transaction; retention drops whole partitions); its only index is BRIN on ``ts``, so COPY
  runs near its unindexed speed. Per-point reads over long spans go to ``rollup_1m``/``rollup_1h``
  (b-tree on (point, bucket)) and the overview to ``latest``.
- Rows go in by ``COPY ... FROM STDIN (FORMAT BINARY)`` from a buffer built by numpy (one
  structured array, no Python loop per row).
- The idempotency key, the rows, the latest values and the rollup partials are written in one
  transaction. Two writers with the same key: the second waits on the key's unique index until the
  first commits, then stores nothing.
- Sharding by mill (many servers) is in docs/scaling.md: the same schema per shard, mills mapped to
  shards; nothing here assumes one server holds every mill.

Connections: one per thread (psycopg connections are not for concurrent use), opened on first use.

Size: one backend's whole ``TimeSeriesStore`` (writes, rollups, queries, retention, edge state);
what both backends share is in ``shared.py``, and one parametrised suite tests both.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import select
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import psycopg

from spinline.cloud.storage import partials, shared
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

DAY_NS = 86400 * 10**9
#: pg_advisory_xact_lock key serialising rollup refreshes ("rollups!").
REFRESH_LOCK = 0x726F6C6C75707321

MINUTE_NS = RESOLUTION_NS["1m"]
HOUR_NS = RESOLUTION_NS["1h"]
#: Dirty minutes closer than this are recomputed from ``samples`` by one statement (``shared.spans``).
_MERGE_GAP_NS = 3600 * 10**9
#: work_mem of the refresh transaction (SET LOCAL): a 1 M-partial sort in memory.
REFRESH_WORK_MEM = "256MB"
#: The two partial tables, by slot (``rollup_partial_slot.active``: where writers append).
PARTIAL_TABLES = ("rollup_partial", "rollup_partial_1")

_STEP = STEP_SQL.format(prev="prev", cur="value", rollover="rollover")
_STEP_H = STEP_SQL.format(prev="prev_last", cur="first", rollover="rollover")
_ROLLUP_COLS = "point, bucket, min, max, sum, count, first, last, inc, first_ts, last_ts"
_PARTIAL_COLS = "point, bucket, min, max, sum, count, first_ts, first, last_ts, last, inc"


#: Recompute the (point, minute) pairs of ``_redo1m`` from raw rows.
_RECOMPUTE_1M = f"""
INSERT INTO rollup_1m ({_ROLLUP_COLS})
SELECT point, bucket, min(value), max(value), sum(value), count(*),
       (array_agg(value ORDER BY ts))[1], (array_agg(value ORDER BY ts DESC))[1],
       sum(CASE WHEN kind = 'counter' THEN {_STEP} ELSE 0 END), min(ts), max(ts)
FROM (
  SELECT s.point, s.ts - s.ts %% 60000000000 AS bucket, s.ts, s.value, p.kind, p.rollover,
         lag(s.value) OVER (PARTITION BY s.point, s.ts - s.ts %% 60000000000 ORDER BY s.ts) AS prev
  FROM samples s LEFT JOIN points p ON p.key = s.point
  WHERE s.ts >= %(lo)s AND s.ts < %(hi)s AND s.quality < 128 AND s.value <> 'NaN'::float8
    AND (s.point, s.ts - s.ts %% 60000000000) IN (SELECT point, bucket FROM _redo1m)
) q
GROUP BY point, bucket
"""  # noqa: S608 (constant SQL built from constants)

#: Recompute the (point, hour) pairs of ``_redo1h`` from the 1-minute rollups.
_RECOMPUTE_1H = f"""
INSERT INTO rollup_1h ({_ROLLUP_COLS})
SELECT point, hour, min(min), max(max), sum(sum), sum(count),
       (array_agg(first ORDER BY bucket))[1], (array_agg(last ORDER BY bucket DESC))[1],
       sum(inc + CASE WHEN kind = 'counter' THEN {_STEP_H} ELSE 0 END),
       CASE WHEN count(first_ts) = count(*) THEN min(first_ts) END,
       CASE WHEN count(last_ts) = count(*) THEN max(last_ts) END
FROM (
  SELECT r.*, x.bucket AS hour, p.kind, p.rollover,
         lag(r.last) OVER (PARTITION BY r.point, x.bucket ORDER BY r.bucket) AS prev_last
  FROM _redo1h x JOIN rollup_1m r ON r.point = x.point AND r.bucket >= x.bucket AND r.bucket < x.bucket + {HOUR_NS}
  LEFT JOIN points p ON p.key = r.point
) q
GROUP BY point, hour
"""  # noqa: S608 (constant SQL built from constants)

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
_ROW_WITH_SEQ = np.dtype([("nf", ">i2"), ("l0", ">i4"), ("point", ">i8"), ("l1", ">i4"), ("ts", ">i8"),
                          ("l2", ">i4"), ("value", ">f8"), ("l3", ">i4"), ("quality", ">i2"), ("l4", ">i4"),
                          ("seq", ">i8")])
_PARTIAL_ROW = np.dtype([("nf", ">i2"), ("l0", ">i4"), ("point", ">i8"), ("l1", ">i4"), ("bucket", ">i8"),
                         ("l2", ">i4"), ("min", ">f8"), ("l3", ">i4"), ("max", ">f8"), ("l4", ">i4"), ("sum", ">f8"),
                         ("l5", ">i4"), ("count", ">i8"), ("l6", ">i4"), ("first_ts", ">i8"), ("l7", ">i4"),
                         ("first", ">f8"), ("l8", ">i4"), ("last_ts", ">i8"), ("l9", ">i4"), ("last", ">f8"),
                         ("l10", ">i4"), ("inc", ">f8")])
_KEY_ROW = np.dtype([("nf", ">i2"), ("l0", ">i4"), ("point", ">i8"), ("l1", ">i4"), ("bucket", ">i8")])
_PARTIAL_FIELDS = ("point", "bucket", "min", "max", "sum", "count", "first_ts", "first", "last_ts", "last", "inc")
_ROW_NO_SEQ = np.dtype([("nf", ">i2"), ("l0", ">i4"), ("point", ">i8"), ("l1", ">i4"), ("ts", ">i8"),
                        ("l2", ">i4"), ("value", ">f8"), ("l3", ">i4"), ("quality", ">i2"), ("l4", ">i4")])


def copy_buffer(batch: Batch) -> bytes:
    """``batch`` as a PostgreSQL binary COPY stream for (point, ts, value, quality, seq)."""
    n = len(batch)
    rows = np.empty(n, dtype=_ROW_WITH_SEQ if batch.seq is not None else _ROW_NO_SEQ)
    rows["nf"] = 5
    rows["l0"], rows["l1"], rows["l2"], rows["l3"], rows["l4"] = 8, 8, 8, 2, 8
    rows["point"], rows["ts"], rows["value"] = batch.point, batch.ts_ns, batch.value
    rows["quality"] = batch.quality
    if batch.seq is not None:
        rows["seq"] = batch.seq
    else:
        rows["l4"] = -1                      # NULL
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


def partial_copy_buffer(parts: shared.Partials) -> bytes:
    """Partial aggregates as a binary COPY stream for ``rollup_partial``."""
    rows = np.empty(len(parts), dtype=_PARTIAL_ROW)
    rows["nf"] = len(_PARTIAL_FIELDS)
    for i, name in enumerate(_PARTIAL_FIELDS):
        rows[f"l{i}"] = 8
        rows[name] = getattr(parts, name)
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


def _parse_partials(data: bytes) -> shared.Partials:
    """A binary COPY stream of partial-shaped rows (``_PARTIAL_FIELDS``, none NULL) as columns."""
    header = len(_COPY_HEADER)
    body = data[header:-2] if len(data) >= header + 2 else b""
    rows = np.frombuffer(body, dtype=_PARTIAL_ROW)
    if len(rows) and (rows["nf"] != len(_PARTIAL_FIELDS)).any():
        raise StorageError("unexpected COPY row layout while reading rollup partials")
    cols: dict[str, Any] = {f: np.ascontiguousarray(rows[f]).astype(
        np.int64 if f in ("point", "bucket", "count", "first_ts", "last_ts") else np.float64) for f in _PARTIAL_FIELDS}
    return shared.Partials(**cols)


def _copy_out(cur: psycopg.Cursor[Any], sql: str) -> shared.Partials:
    """Partial-shaped rows of a binary ``COPY ... TO STDOUT``."""
    raw = bytearray()
    with cur.copy(sql) as cp:
        for chunk in cp:
            raw += chunk
    return _parse_partials(bytes(raw))


def _keys_copy_buffer(point: Any, bucket: Any) -> bytes:
    rows = np.empty(len(point), dtype=_KEY_ROW)
    rows["nf"], rows["l0"], rows["l1"] = 2, 8, 8
    rows["point"], rows["bucket"] = point, bucket
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


def partition_name(day: int) -> str:
    return "samples_" + (dt.date(1970, 1, 1) + dt.timedelta(days=day)).strftime("%Y%m%d")


def _day_of(name: str) -> int | None:
    try:
        return (dt.datetime.strptime(name.removeprefix("samples_"), "%Y%m%d").date() - dt.date(1970, 1, 1)).days
    except ValueError:
        return None


def _went_away(conn: psycopg.Connection[Any]) -> bool:
    """Pre-ping without a round trip: an idle autocommit connection has nothing to read unless the
    server closed it or sent its farewell, so a readable socket means the next statement would fail."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class PostgresStore:
    """``TimeSeriesStore`` on PostgreSQL (psycopg 3). ``url``: a libpq URL (``postgresql://...``)."""

    def __init__(self, url: str, *, retention_s: Mapping[str, float | None] | None = None) -> None:
        self.url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.retention_s = shared.retention(retention_s)
        self._local = threading.local()
        self._all: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._days: set[int] = set()
        #: (every registered key, counter keys, their roll-over) sorted, for the partials of a write.
        self._kinds: tuple[Any, Any, Any] | None = None

    @property
    def raw_retention_ns(self) -> int | None:
        """How long raw rows are kept, in ns (None: forever); ingest refuses older rows (``too_old``).

        Partitions go by whole days, so rows may outlive this by up to a day; never by less.
        """
        raw = self.retention_s["raw"]
        return None if raw is None else int(raw * 1e9)

    # --- connections ----------------------------------------------------------------------------

    def _conn(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed and _went_away(conn):
            conn.close()                    # the server closed it (restart, failover): connect afresh
        if conn is None or conn.closed:
            try:
                conn = psycopg.connect(self.url, autocommit=True)
            except psycopg.Error as exc:
                raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Any]]:
        conn = self._conn()
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    def close(self) -> None:
        with self._lock:
            for c in self._all:
                c.close()
            self._all.clear()
        self._local = threading.local()

    # --- schema and metadata --------------------------------------------------------------------

    def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        engine = create_engine(self.url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=NullPool)
        try:
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        finally:
            engine.dispose()

    def register_points(self, points: Sequence[PointInfo]) -> None:
        if not points:
            return
        rows = [(p.key, p.tag, p.mill, p.machine, p.name, p.unit, p.kind, p.interval_s, p.line, p.workshop,
                 p.machine_type, p.deadband, p.rollover, p.iso_class, p.report, p.keepalive_s)
                for p in sorted(points, key=lambda p: p.key)]
        with self._tx() as cur:
            cur.executemany("""INSERT INTO points (key, tag, mill, machine, name, unit, kind, interval_s, line,
                workshop, machine_type, deadband, rollover, iso_class, report, keepalive_s)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (key) DO UPDATE SET tag = excluded.tag, mill = excluded.mill,
                machine = excluded.machine, name = excluded.name, unit = excluded.unit, kind = excluded.kind,
                interval_s = excluded.interval_s, line = excluded.line, workshop = excluded.workshop,
                machine_type = excluded.machine_type, deadband = excluded.deadband,
                rollover = excluded.rollover, iso_class = excluded.iso_class, report = excluded.report,
                keepalive_s = excluded.keepalive_s""", rows)
        self._kinds = None

    def points(self, mill: str | None = None, *, tag: str | None = None) -> list[PointInfo]:
        sql = ("SELECT key, tag, mill, machine, name, unit, kind, interval_s, line, workshop, machine_type, "
               "deadband, rollover, iso_class, report, keepalive_s FROM points")
        where, args = shared.points_filter(mill, tag, "%s")
        with self._conn().cursor() as cur:
            rows = cur.execute(sql + where + " ORDER BY tag", args).fetchall()  # type: ignore[arg-type]
        return [PointInfo(key=r[0], tag=r[1], mill=r[2], machine=r[3], name=r[4], unit=r[5], kind=r[6],
                          interval_s=r[7], line=r[8], workshop=r[9], machine_type=r[10], deadband=r[11],
                          rollover=r[12], iso_class=r[13], report=r[14] or "interval", keepalive_s=r[15])
                for r in rows]

    # --- writes ---------------------------------------------------------------------------------

    def _ensure_partitions(self, ts_ns: Any) -> None:
        days = set(np.unique(np.floor_divide(ts_ns, DAY_NS)).tolist()) - self._days
        if not days:
            return
        conn = self._conn()
        for day in sorted(days):
            name = partition_name(day)
            # Another writer may create it between IF NOT EXISTS and the create: that is fine too.
            with contextlib.suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
                conn.execute(f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF samples '
                             f"FOR VALUES FROM ({day * DAY_NS}) TO ({(day + 1) * DAY_NS})")
        with self._lock:
            self._days |= days

    def write(self, batch: Batch, *, idempotency_key: str | None = None, digest: str | None = None,
              note: str | None = None) -> WriteResult:
        return self.write_many([(batch, idempotency_key)], digests=[digest], notes=[note])[0]

    def write_many(self, items: Sequence[tuple[Batch, str | None]], *,
                   digests: Sequence[str | None] | None = None,
                   notes: Sequence[str | None] | None = None) -> list[WriteResult]:
        if not items:
            return []
        dig = shared.item_digests(items, digests)
        nts = shared.item_notes(items, notes)
        for attempt in range(2):
            for b, _ in items:
                if len(b):
                    self._ensure_partitions(b.ts_ns)
            try:
                return self._write_many(items, dig, nts)
            except psycopg.errors.CheckViolation as exc:
                # "no partition of relation samples found for row": another process's retention
                # dropped a day this process still had in its cache. Forget the cache, create, retry.
                if attempt or "partition" not in str(exc):
                    raise StorageError(f"write failed: {exc}") from exc
                with self._lock:
                    self._days.clear()
            except psycopg.Error as exc:
                raise StorageError(f"write failed: {exc}") from exc
        raise AssertionError("unreachable")

    def _write_many(self, items: Sequence[tuple[Batch, str | None]], digests: Sequence[str | None],
                    notes: Sequence[str | None]) -> list[WriteResult]:
        now = time.time_ns()
        first: dict[str, int] = {}
        for i, (_, k) in enumerate(items):
            if k is not None and k not in first:
                first[k] = i
        with self._tx() as cur:
            fresh: set[str] = set()
            seen: dict[str, tuple[str | None, str | None]] = {}
            if first:
                ordered = sorted(first)          # one lock order for every writer: no deadlock
                cur.execute("""INSERT INTO ingest_keys (key, stored, ts_ns, digest, note)
                               SELECT k, s, %s, d, n FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[])
                                 AS t(k, s, d, n)
                               ON CONFLICT DO NOTHING RETURNING key""",
                            [now, ordered, [len(items[first[k]][0]) for k in ordered],
                             [digests[first[k]] for k in ordered], [notes[first[k]] for k in ordered]])
                fresh = {r[0] for r in cur.fetchall()}
                if len(fresh) < len(ordered):
                    # Seen before (the INSERT waited for any writer holding them): what was kept with them.
                    cur.execute("SELECT key, digest, note FROM ingest_keys WHERE key = ANY(%s::text[])",
                                [[k for k in ordered if k not in fresh]])
                    seen = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
            claims = shared.resolve_claims(items, digests, notes, fresh, seen)
            todo = [b for (b, _), c in zip(items, claims, strict=True) if c.fresh and len(b)]
            if todo:
                self._insert(cur, Batch.concat(todo))
        return [WriteResult(len(b) if c.fresh else 0, not c.fresh and not c.conflict, c.conflict, c.note)
                for (b, _), c in zip(items, claims, strict=True)]

    def _insert(self, cur: psycopg.Cursor[Any], batch: Batch) -> None:
        with cur.copy("COPY samples (point, ts, value, quality, seq) FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(copy_buffer(batch))
        last = shared.last_per_point(batch)
        seq = last.seq.tolist() if last.seq is not None else [None] * len(last)
        cur.execute("""INSERT INTO latest (point, ts, value, quality, seq)
                       SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::float8[], %s::smallint[], %s::bigint[])
                       ON CONFLICT (point) DO UPDATE SET ts = excluded.ts, value = excluded.value,
                       quality = excluded.quality, seq = excluded.seq WHERE excluded.ts >= latest.ts""",
                    [last.point.tolist(), last.ts_ns.tolist(), last.value.tolist(), last.quality.tolist(), seq])
        known, ctr_keys, ctr_rollover = self._point_kinds(cur, batch.point)
        parts = shared.minute_partials(batch, ctr_keys, ctr_rollover)
        if len(parts):
            table = self._partial_table(cur)
            with cur.copy(f"COPY {table} ({_PARTIAL_COLS}) FROM STDIN (FORMAT BINARY)") as cp:  # noqa: S608
                cp.write(partial_copy_buffer(parts))

    @staticmethod
    def _partial_table(cur: psycopg.Cursor[Any]) -> str:
        """The partial table writers append to now: the slot a refresh is not draining (it flips the
        slot before it locks the other table; a writer that read the slot just before a flip waits
        on that lock, or appends after the refresh committed: see ``refresh_rollups``)."""
        row = cur.execute("SELECT active FROM rollup_partial_slot").fetchone()
        return PARTIAL_TABLES[int(row[0]) if row else 0]

    def _point_kinds(self, cur: psycopg.Cursor[Any], keys: Any) -> tuple[Any, Any, Any]:
        """Counter keys and roll-overs, cached; re-read when a batch names a key not seen yet.

        A point whose kind changes after rows were written keeps the increases computed at write
        time for those rows (the refresh re-reads kinds for the steps between partials).
        """
        kinds = self._kinds
        if kinds is not None and np.isin(keys, kinds[0]).all():
            return kinds
        rows = cur.execute("SELECT key, kind = 'counter', rollover FROM points ORDER BY key").fetchall()
        known = np.array([r[0] for r in rows], dtype=np.int64)
        ctr = np.array([bool(r[1]) for r in rows], dtype=bool)
        roll = np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=np.float64)
        kinds = (known, known[ctr], roll[ctr])
        self._kinds = kinds
        return kinds

    # --- reads ----------------------------------------------------------------------------------

    def latest(self, points: Sequence[int]) -> Batch:
        with self._conn().cursor() as cur:
            rows = cur.execute("""SELECT point, ts, value, quality, coalesce(seq, -1) FROM latest
                                  WHERE point = ANY(%s::bigint[]) ORDER BY point""",
                               [[int(p) for p in points]]).fetchall()
        if not rows:
            return Batch.empty(with_seq=True)
        p, t, v, q, s = zip(*rows, strict=True)
        return Batch.of(p, t, [np.nan if x is None else x for x in v], q, s)

    def range(self, point: int, start_ns: int, end_ns: int, *, max_points: int | None = None,
              resolution: Resolution | Literal["auto"] = "auto") -> Series:
        res = shared.pick_resolution(end_ns - start_ns, max_points) if resolution == "auto" else resolution
        if res not in RESOLUTION_NS:
            raise ValueError(f"resolution must be raw, 1m, 1h or auto, not {resolution!r}")
        if max_points is not None and max_points < 2:
            raise ValueError(f"max_points must be at least 2, got {max_points}")
        step = RESOLUTION_NS[res] or 10**9              # raw: assume at most one row a second
        if max_points is not None and (end_ns - start_ns) // step * 2 > max_points:
            ts, val, n = self._reduced(point, start_ns, end_ns, max_points, res)
            return Series(point=point, ts_ns=ts, value=val, resolution=res, reduced=n > len(ts))
        with self._conn().cursor(binary=True) as cur:
            if res == "raw":
                # At most max_points + 1 rows cross the wire; more (a point faster than 1 Hz) means the
                # server reduces them after all.
                limit = None if max_points is None else int(max_points) + 1    # LIMIT NULL: every row
                rows = cur.execute("SELECT ts, value FROM samples WHERE point = %s AND ts >= %s AND ts < %s "
                                   "ORDER BY ts LIMIT %s", [point, start_ns, end_ns, limit]).fetchall()
                if max_points is not None and len(rows) > max_points:
                    ts, val, _ = self._reduced(point, start_ns, end_ns, max_points, res)
                    return Series(point=point, ts_ns=ts, value=val, resolution=res, reduced=True)
                ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                val = np.fromiter((np.nan if r[1] is None else r[1] for r in rows), dtype=np.float64,
                                  count=len(rows))
            else:
                lo = start_ns - start_ns % RESOLUTION_NS[res]
                sql = f"SELECT bucket, min, max FROM rollup_{res} WHERE point = %s AND bucket >= %s "  # noqa: S608
                rows = cur.execute(sql + "AND bucket < %s ORDER BY bucket", [point, lo, end_ns]).fetchall()
                arr = np.array(rows, dtype=np.float64).reshape(-1, 3)
                ts, val = shared.envelope(np.array([r[0] for r in rows], dtype=np.int64), arr[:, 1], arr[:, 2], res)
        ts, val, reduced = shared.reduce(ts, val, max_points, start_ns, end_ns)
        return Series(point=point, ts_ns=ts, value=val, resolution=res, reduced=reduced)

    def _reduced(self, point: int, start_ns: int, end_ns: int, max_points: int, res: str) -> tuple[Any, Any, int]:
        """Min/max reduction done by the server: only ``max_points`` rows cross the wire.

        Same result as ``shared.envelope`` + ``downsample.minmax`` on the client: per chart bucket, the
        row with the minimum and the row with the maximum (rollups: min at the bucket start, max at
        its middle).
        """
        width = max(1, -(-(end_ns - start_ns) // (max_points // 2)))
        if res == "raw":
            sql = """SELECT count(*), (array_agg(ts ORDER BY value, ts))[1], min(value),
                            (array_agg(ts ORDER BY value DESC, ts))[1], max(value)
                     FROM samples WHERE point = %(p)s AND ts >= %(lo)s AND ts < %(hi)s AND value <> 'NaN'::float8
                     GROUP BY (ts - %(lo)s) / %(w)s ORDER BY (ts - %(lo)s) / %(w)s"""
            half, per_row = 0, 1
        else:
            sql = f"""SELECT count(*), (array_agg(bucket ORDER BY min, bucket))[1], min(min),
                             (array_agg(bucket ORDER BY max DESC, bucket))[1], max(max)
                      FROM rollup_{res} WHERE point = %(p)s AND bucket >= %(lo)s AND bucket < %(hi)s
                      GROUP BY (bucket - %(lo)s) / %(w)s ORDER BY (bucket - %(lo)s) / %(w)s"""  # noqa: S608
            half, per_row = RESOLUTION_NS[res] // 2, 2
        with self._conn().cursor(binary=True) as cur:
            rows = cur.execute(sql, {"p": point, "lo": start_ns, "hi": end_ns, "w": width}).fetchall()
        pts: list[tuple[int, float]] = []
        for _, tmin, vmin, tmax, vmax in rows:
            a, b = (int(tmin), float(vmin)), (int(tmax) + half, float(vmax))
            if a == b or (half == 0 and tmin == tmax):
                pts.append(a)
            else:
                pts.extend(sorted((a, b)))
        ts = np.array([p[0] for p in pts], dtype=np.int64)
        val = np.array([p[1] for p in pts], dtype=np.float64)
        return ts, val, sum(int(r[0]) for r in rows) * per_row

    def rollup(self, points: Sequence[int], start_ns: int, end_ns: int,
               resolution: Literal["1m", "1h"]) -> Rollup:
        if resolution not in ("1m", "1h"):
            raise ValueError(f"rollup resolution must be 1m or 1h, not {resolution!r}")
        with self._conn().cursor(binary=True) as cur:
            rows = cur.execute(f"""
                SELECT q.point, q.bucket, q.min, q.max, q.sum, q.count, q.first, q.last, q.inc, q.prev_last,
                       coalesce(p.kind = 'counter', false), p.rollover FROM (
                  SELECT point, bucket, min, max, sum, count, first, last, inc,
                         lag(last) OVER (PARTITION BY point ORDER BY bucket) AS prev_last
                  FROM rollup_{resolution}
                  WHERE point = ANY(%s::bigint[]) AND bucket >= %s AND bucket < %s) q
                LEFT JOIN points p ON p.key = q.point
                WHERE q.bucket >= %s ORDER BY q.point, q.bucket""",  # noqa: S608 (resolution checked)
                               [[int(p) for p in points], start_ns - shared.LOOKBACK_NS[resolution], end_ns,
                                start_ns]).fetchall()
        n = len(rows)
        ints = np.array([(r[0], r[1], r[5]) for r in rows], dtype=np.int64).reshape(n, 3)
        fl = np.array([tuple(np.nan if x is None else x for x in (r[2], r[3], r[4], r[6], r[7], r[8], r[9], r[11]))
                       for r in rows], dtype=np.float64).reshape(n, 8)
        is_counter = np.array([bool(r[10]) for r in rows], dtype=bool)
        return shared.assemble_rollup(ints[:, 0].copy(), ints[:, 1].copy(), fl[:, 0].copy(), fl[:, 1].copy(),
                                      fl[:, 2].copy(), ints[:, 2].copy(), fl[:, 3].copy(), fl[:, 4].copy(),
                                      np.nan_to_num(fl[:, 5]), fl[:, 6].copy(), is_counter, fl[:, 7].copy())

    def completeness(self, points: Sequence[int], start_ns: int, end_ns: int) -> dict[int, Completeness]:
        info = {p.key: p for p in self.points()}
        with self._conn().cursor(binary=True) as cur:
            rows = cur.execute("""SELECT point, ts, coalesce(seq, -1) FROM samples
                                  WHERE point = ANY(%s::bigint[]) AND ts >= %s AND ts < %s
                                  ORDER BY point, ts""", [[int(p) for p in points], start_ns, end_ns]).fetchall()
        arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
        return completeness_by_point(points, info, arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy(),
                                     start_ns, end_ns)

    # --- rollups and retention ------------------------------------------------------------------

    def refresh_rollups(self) -> None:
        """Fold the partials written since the last refresh into the 1 min and 1 h rollups.

        Set-based and incremental: the partials (one row per point and minute per write) are merged
        into the stored buckets; ``samples`` is read only for a counter's buckets whose new rows
        overlap in time rows already rolled up (late, out-of-order data), and for the minutes listed
        in ``rollup_dirty``. One refresh at a time (a session advisory lock).

        Writers append partials to the active slot of two tables (``PARTIAL_TABLES``). A refresh
        flips the slot (committed at once), then, in one REPEATABLE READ transaction, locks the
        other, drained table ACCESS EXCLUSIVE *before* its snapshot: a writer that appended there
        (it read the slot before the flip) has committed and is in the snapshot, and one about to
        append waits until the refresh commits (its rows then wait for the next refresh). So the
        snapshot holds every row the drained table will hold until the TRUNCATE that ends the
        refresh, and nothing is truncated unread. Rows a writer appended to the active table and
        committed before the snapshot are deleted row by row in the same snapshot (usually none;
        a refresh that failed leaves its slot's rows there). Every partial in the snapshot is
        merged, every later one is left for the next refresh, and the raw rows a bucket may be
        recomputed from are the same snapshot: each write is merged exactly once.
        """
        conn = self._conn()
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", [REFRESH_LOCK])
            try:
                row = conn.execute("UPDATE rollup_partial_slot SET active = 1 - active RETURNING active").fetchone()
                active = int(row[0]) if row else 0
                drained, live = PARTIAL_TABLES[1 - active], PARTIAL_TABLES[active]
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    cur.execute(f"LOCK TABLE {drained} IN ACCESS EXCLUSIVE MODE")  # before the snapshot
                    self._refresh(cur, drained, live)
                    cur.execute(f"TRUNCATE {drained}")
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", [REFRESH_LOCK])
        except psycopg.Error as exc:
            raise StorageError(f"rollup refresh failed: {exc}") from exc

    def _refresh(self, cur: psycopg.Cursor[Any], drained: str, live: str) -> None:
        # Scoped to this transaction: sorts and hashes of a large refresh stay in memory, and no JIT
        # compilation (tens of ms) on statements that are not CPU-bound expressions.
        cur.execute(f"SET LOCAL work_mem = '{REFRESH_WORK_MEM}'")
        cur.execute("SET LOCAL jit = off")
        dirty = [r[0] for r in cur.execute(
            "WITH d AS (DELETE FROM rollup_dirty RETURNING bucket) SELECT DISTINCT bucket FROM d").fetchall()]
        # The time range of the new partials (same snapshot as the refresh statement): the stored
        # rollups are joined only there.
        redo = self._merge_partials(cur, drained, live)
        redo1m = [(p, b) for r, p, b in redo if r == 1]
        redo1h = [(p, b) for r, p, b in redo if r == 2]
        if dirty:
            # Minutes listed in rollup_dirty (a downgrade from partials): every point with raw rows
            # there, and only those (a point whose raw rows retention removed keeps its rollups).
            d = np.array(sorted(dirty), dtype=np.int64)
            redo1m += cur.execute("""SELECT DISTINCT point, ts - ts %% 60000000000 FROM samples
                                     WHERE ts >= %s AND ts < %s AND ts - ts %% 60000000000 = ANY(%s::bigint[])""",
                                  [int(d[0]), int(d[-1]) + MINUTE_NS, dirty]).fetchall()
        if not (redo1m or redo1h):
            return
        cur.execute("CREATE TEMP TABLE _redo1m ON COMMIT DROP AS "
                    "SELECT DISTINCT * FROM unnest(%s::bigint[], %s::bigint[]) AS t(point, bucket)",
                    [[p for p, _ in redo1m], [b for _, b in redo1m]])
        # 1 minute: recompute from raw where the merge is not exact.
        minutes = np.array(sorted({b for _, b in redo1m}), dtype=np.int64)
        if len(minutes):
            cur.execute("DELETE FROM rollup_1m r USING _redo1m x WHERE r.point = x.point AND r.bucket = x.bucket")
            for mlo, mhi in shared.spans(minutes, MINUTE_NS, _MERGE_GAP_NS):
                cur.execute(_RECOMPUTE_1M, {"lo": mlo, "hi": mhi})
        # 1 hour: recompute from the 1 min rollups what the merge cannot do.
        cur.execute(f"""CREATE TEMP TABLE _redo1h ON COMMIT DROP AS
            SELECT * FROM unnest(%s::bigint[], %s::bigint[]) AS t(point, bucket)
            UNION SELECT point, bucket - bucket %% {HOUR_NS} FROM _redo1m""",  # noqa: S608 (constants)
                    [[p for p, _ in redo1h], [b for _, b in redo1h]])
        if cur.execute("SELECT EXISTS (SELECT 1 FROM _redo1h)").fetchone() == (True,):
            cur.execute("DELETE FROM rollup_1h r USING _redo1h x WHERE r.point = x.point AND r.bucket = x.bucket")
            cur.execute(_RECOMPUTE_1H)

    def _merge_partials(self, cur: psycopg.Cursor[Any], drained: str, live: str) -> list[tuple[int, int, int]]:
        """Fold every partial of the snapshot into ``rollup_1m`` and ``rollup_1h``, merged in numpy;
        returns the (resolution, point, bucket) whose merge is not exact (recomputed by the caller).

        The drained table is read by one COPY (it is truncated after, not deleted from), the live
        table's committed rows by a COPY of their DELETE (usually none). The partials are
        folded per (point, minute) and per (point, hour) (``partials.fold_partials``), merged with
        the stored rows of those buckets, read by one COPY each (``partials.merge_stored``), and
        written back by a DELETE of the merged keys and one COPY. Per row that is a few numpy passes
        instead of the executor nodes of a window and aggregate plan.
        """
        parts = _copy_out(cur, f"COPY {drained} ({_PARTIAL_COLS}) TO STDOUT (FORMAT BINARY)")
        late = _copy_out(cur, f"COPY (DELETE FROM {live} RETURNING {_PARTIAL_COLS}) "  # noqa: S608 (constants)
                         "TO STDOUT (FORMAT BINARY)")
        if len(late):
            parts = shared.Partials(*(np.concatenate([getattr(parts, f), getattr(late, f)])
                                      for f in shared.Partials.__slots__))
        if not len(parts):
            return []
        kinds = cur.execute("SELECT key, rollover FROM points WHERE kind = 'counter' ORDER BY key").fetchall()
        ctr_keys = np.array([r[0] for r in kinds], dtype=np.int64)
        ctr_roll = np.array([np.nan if r[1] is None else r[1] for r in kinds], dtype=np.float64)
        minutes = partials.fold_partials(parts, MINUTE_NS, ctr_keys, ctr_roll)
        hours = partials.fold_partials(minutes.parts, HOUR_NS, ctr_keys, ctr_roll, ordered_in=minutes.ordered)
        redo = [(1, int(p), int(b)) for p, b in self._merge_into(cur, "rollup_1m", minutes, MINUTE_NS)]
        redo += [(2, int(p), int(b)) for p, b in self._merge_into(cur, "rollup_1h", hours, HOUR_NS)]
        return redo

    @staticmethod
    def _merge_into(cur: psycopg.Cursor[Any], table: str, new: partials.Folded,
                    width_ns: int) -> list[tuple[Any, Any]]:
        """Merge ``new`` into ``table`` (exact rows written, stored ones replaced); the redo keys."""
        a = new.parts
        lo, hi = int(a.bucket.min()), int(a.bucket.max()) + width_ns
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS _mkeys_{table} (point bigint, bucket bigint) "
                    "ON COMMIT DROP")
        cur.execute(f"TRUNCATE _mkeys_{table}")
        with cur.copy(f"COPY _mkeys_{table} (point, bucket) FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(_keys_copy_buffer(a.point, a.bucket))
        raw = bytearray()
        with cur.copy(f"""COPY (SELECT e.point, e.bucket, e.min, e.max, e.sum, e.count::bigint,
                                coalesce(e.first_ts, {partials.NO_TS}), coalesce(e.first, 'NaN'::float8),
                                coalesce(e.last_ts, {partials.NO_TS}), coalesce(e.last, 'NaN'::float8),
                                coalesce(e.inc, 0::float8)
                          FROM {table} e JOIN _mkeys_{table} k ON k.point = e.point AND k.bucket = e.bucket
                          WHERE e.bucket >= {lo} AND e.bucket < {hi}) TO STDOUT (FORMAT BINARY)""") as cp:  # noqa: S608
            for chunk in cp:
                raw += chunk
        stored = _parse_partials(bytes(raw))
        merged, redo, had = partials.merge_stored(new, stored)
        replace = had & ~redo
        if replace.any():
            cur.execute(f"TRUNCATE _mkeys_{table}")
            with cur.copy(f"COPY _mkeys_{table} (point, bucket) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(_keys_copy_buffer(a.point[replace], a.bucket[replace]))
            cur.execute(f"DELETE FROM {table} t USING _mkeys_{table} k WHERE t.point = k.point "  # noqa: S608
                        f"AND t.bucket = k.bucket AND t.bucket >= {lo} AND t.bucket < {hi}")
        keep = ~redo
        if keep.any():
            with cur.copy(f"COPY {table} ({_PARTIAL_COLS}) FROM STDIN (FORMAT BINARY)") as cp:
                kept: dict[str, Any] = {f: getattr(merged, f)[keep] for f in _PARTIAL_FIELDS}
                cp.write(partial_copy_buffer(shared.Partials(**kept)))
        return list(zip(a.point[redo].tolist(), a.bucket[redo].tolist(), strict=True))

    def _partitions(self, cur: psycopg.Cursor[Any]) -> dict[int, str]:
        rows = cur.execute("""SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                              WHERE i.inhparent = 'samples'::regclass""").fetchall()
        out: dict[int, str] = {}
        for (name,) in rows:
            day = _day_of(name)
            if day is not None:
                out[day] = name
        return out

    def apply_retention(self, now_ns: int) -> dict[str, int]:
        """Drop what is past its retention: raw partitions, rollups, rejections, old idempotency keys.

        Pending partials are merged first, so no bucket is left to recompute from a partition this
        drops. Keys are kept ``shared.key_retention_s`` (see there for why that bound is enough).
        """
        self.refresh_rollups()
        out: dict[str, int] = {}
        try:
            with self._tx() as cur:
                for res, table, col in (("raw", "samples", "ts"), ("1m", "rollup_1m", "bucket"),
                                        ("1h", "rollup_1h", "bucket"), ("rejections", "rejections", "ts_ns")):
                    cutoff = shared.cutoff_ns(now_ns, self.retention_s[res])
                    if cutoff is None:
                        out[res] = 0
                        continue
                    if res == "raw":
                        out[res] = self._drop_partitions(cur, cutoff)
                        continue            # never DELETE raw rows: a day goes with its partition
                    cur.execute(f"DELETE FROM {table} WHERE {col} < %s", [cutoff])  # noqa: S608
                    out[res] = cur.rowcount
                keys = shared.cutoff_ns(now_ns, shared.key_retention_s(self.retention_s))
                if keys is not None:
                    cur.execute("DELETE FROM ingest_keys WHERE ts_ns < %s", [keys])
        except psycopg.Error as exc:
            raise StorageError(f"retention failed: {exc}") from exc
        return out

    def _drop_partitions(self, cur: psycopg.Cursor[Any], cutoff: int) -> int:
        """Drop the daily partitions wholly below ``cutoff``; the rows they held."""
        dropped = 0
        for day, name in sorted(self._partitions(cur).items()):
            if (day + 1) * DAY_NS <= cutoff:
                row = cur.execute(f'SELECT count(*) FROM "{name}"').fetchone()  # noqa: S608
                dropped += int(row[0]) if row else 0
                cur.execute(f'DROP TABLE "{name}"')
                with self._lock:
                    self._days.discard(day)
        return dropped

    # --- rejections and edge status -------------------------------------------------------------

    def record_rejection(self, rejection: Rejection) -> None:
        self._conn().execute("INSERT INTO rejections (edge, reason, detail, ts_ns) VALUES (%s, %s, %s, %s)",
                             [rejection.edge, rejection.reason, rejection.detail, rejection.ts_ns])

    def rejections(self, edge: str | None = None) -> dict[str, dict[str, int]]:
        sql = "SELECT edge, reason, count(*) FROM rejections"
        with self._conn().cursor() as cur:
            rows = (cur.execute(sql + " WHERE edge = %s GROUP BY edge, reason", [edge]) if edge is not None
                    else cur.execute(sql + " GROUP BY edge, reason")).fetchall()
        out: dict[str, dict[str, int]] = {}
        for e, reason, n in rows:
            out.setdefault(e, {})[reason] = int(n)
        return out

    def recent_rejections(self, edge: str | None = None, limit: int = 100) -> list[Rejection]:
        sql = "SELECT edge, reason, detail, ts_ns FROM rejections"
        with self._conn().cursor() as cur:
            rows = (cur.execute(sql + " WHERE edge = %s ORDER BY ts_ns DESC, id DESC LIMIT %s", [edge, limit])
                    if edge is not None
                    else cur.execute(sql + " ORDER BY ts_ns DESC, id DESC LIMIT %s", [limit])).fetchall()
        return [Rejection(edge=r[0], reason=r[1], detail=r[2], ts_ns=r[3]) for r in rows]

    def record_edge_status(self, edge: str, mill: str, status: dict[str, Any], received_ns: int) -> None:
        self._conn().execute("""INSERT INTO edge_status VALUES (%s, %s, %s::jsonb, %s) ON CONFLICT (edge)
                                DO UPDATE SET mill = excluded.mill, status = excluded.status,
                                received_ns = excluded.received_ns""",
                             [edge, mill, json.dumps(status, default=str), received_ns])

    def edge_status(self, mill: str | None = None) -> dict[str, EdgeStatus]:
        sql = "SELECT edge, mill, status, received_ns FROM edge_status"
        with self._conn().cursor() as cur:
            rows = (cur.execute(sql + " WHERE mill = %s", [mill]) if mill is not None
                    else cur.execute(sql)).fetchall()
        return {r[0]: EdgeStatus(edge=r[0], mill=r[1], status=dict(r[2]), received_ns=r[3]) for r in rows}
