"""The embedded store's rollup refresh: DuckDB selects and stores, numpy folds sparse data.

Why not one SQL statement per resolution (what it was): on sparse data (a point every 5 min, every
row alone in its minute) DuckDB's hash aggregate builds one group per row with ``arg_min``/``arg_max``
states, and the hour statement ran a window (``lag``) over every minute row; both cost more per row
than the ingest (bench/ingest.py, loaded machine: 0.20 M rows/s against 0.35 M ingest). Here the
minutes of sparse data are folded by numpy from rows DuckDB reads sorted by (point, ts)
(``shared.minute_partials`` skips the sort of sorted input and the reduction of one-row minutes);
minutes holding many rows stay with DuckDB's aggregate (``SQL_MIN_ROWS_PER_MINUTE``), which is faster
there than moving every row to Python. Hours are folded by numpy (``partials.fold_partials``) from the
new minutes plus the stored, clean minutes of the same hours, so the minutes just written are not
read back; the stored minutes of those hours also tell which stored rows the new minutes replace.

The dirty pairs are read by a SELECT and cleared by a DELETE in the same transaction (one snapshot:
a pair committed by another connection meanwhile is neither read nor deleted; DuckDB's DELETE ...
RETURNING was 10x slower for the same rows).
"""

from __future__ import annotations

import contextlib
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from spinline.cloud.storage import partials, shared
from spinline.cloud.storage.base import RESOLUTION_NS
from spinline.cloud.storage.counters import STEP_SQL
from spinline.core.batch import I64, Batch

MINUTE_NS = RESOLUTION_NS["1m"]
HOUR_NS = RESOLUTION_NS["1h"]
#: Dirty buckets closer than this are read by one statement (see ``shared.spans``): scanning the
#: ``ts`` column of up to an hour of rows that are then filtered out costs less than a statement.
MERGE_GAP_1M = 3600 * 10**9
MERGE_GAP_1H = 7 * 86400 * 10**9

_ROWS = """SELECT s.point, s.ts, s.value FROM samples s
SEMI JOIN dirty_minutes d ON d.point = s.point AND d.bucket = s.ts - s.ts % 60000000000
WHERE s.ts >= ? AND s.ts < ? AND s.quality < 128 AND NOT isnan(s.value) ORDER BY s.point, s.ts"""

_STEP = STEP_SQL.format(prev="prev", cur="value", rollover="rollover")

#: Dense minutes aggregated by DuckDB (many rows per minute: its parallel hash aggregate over few
#: groups beats moving every row to numpy); increases are summed between consecutive rows of a
#: counter's minute, gauges skip the window.
_MINUTES_SQL = f"""
WITH rows AS (
  SELECT s.point, s.ts - s.ts % 60000000000 AS bucket, s.ts, s.value, coalesce(p.kind = 'counter', false) AS ctr,
         p.rollover
  FROM samples s SEMI JOIN dirty_minutes d ON d.point = s.point AND d.bucket = s.ts - s.ts % 60000000000
  LEFT JOIN points p ON p.key = s.point
  WHERE s.ts >= $lo AND s.ts < $hi AND s.quality < 128 AND NOT isnan(s.value)
)
SELECT * FROM (
  SELECT point, bucket, min(value) AS min, max(value) AS max, sum(value) AS sum, count(*) AS count,
         arg_min(value, ts) AS first, arg_max(value, ts) AS last, 0.0 AS inc
  FROM rows WHERE NOT ctr GROUP BY point, bucket
  UNION ALL
  SELECT point, bucket, min(value), max(value), sum(value), count(*), arg_min(value, ts), arg_max(value, ts),
         sum({_STEP})
  FROM (SELECT *, lag(value) OVER (PARTITION BY point, bucket ORDER BY ts) AS prev FROM rows WHERE ctr)
  GROUP BY point, bucket
) ORDER BY point, bucket
"""  # noqa: S608 (constant SQL built from constants)

#: Rows per dirty minute (counted over the spans, so an upper bound) from which DuckDB aggregates the
#: minutes instead of numpy: at one row a minute (sparse points) its hash aggregate builds a group
#: per row and numpy is ~2x faster; at tens of rows a minute DuckDB is ~1.5x faster.
SQL_MIN_ROWS_PER_MINUTE = 8

#: The stored minutes of the dirty hours (those that are dirty themselves are dropped in numpy: an
#: anti-join would hash every dirty pair, and on sparse data the dirty hours hold no other minute).
_HOUR_MINUTES = """SELECT r.point, r.bucket, r.min, r.max, r.sum, r.count, r.first, r.last, r.inc FROM rollup_1m r
SEMI JOIN dirty_hours h ON h.point = r.point AND h.bucket = r.bucket - r.bucket % 3600000000000
WHERE r.bucket >= ? AND r.bucket < ? ORDER BY r.point, r.bucket"""


def _col(res: dict[str, Any], name: str, dtype: Any, fill: Any) -> Any:
    a = res[name]
    if isinstance(a, np.ma.MaskedArray):
        a = a.filled(fill)
    return np.ascontiguousarray(a, dtype=dtype)


def _table(p: shared.Partials) -> pa.Table:
    """Rollup rows (the embedded tables keep no first_ts/last_ts)."""
    return pa.table({"point": p.point, "bucket": p.bucket, "min": p.min, "max": p.max, "sum": p.sum,
                     "count": p.count, "first": p.first, "last": p.last, "inc": p.inc})


def _member(point: I64, bucket: I64, set_point: I64, set_bucket: I64) -> npt.NDArray[np.bool_]:
    """Per (point, bucket) row, whether the pair is in the set (both 1-minute buckets)."""
    if not len(point) or not len(set_point):
        return np.zeros(len(point), dtype=bool)
    pts = np.unique(set_point)
    lo = int(min(bucket.min(), set_bucket.min()))
    width = (int(max(bucket.max(), set_bucket.max())) - lo) // MINUTE_NS + 1
    if len(pts) * width >= 2**62:                # no combined key fits: pairs as Python tuples
        have = set(zip(set_point.tolist(), set_bucket.tolist(), strict=True))
        return np.array([k in have for k in zip(point.tolist(), bucket.tolist(), strict=True)], dtype=bool)
    rank = np.clip(np.searchsorted(pts, point), 0, len(pts) - 1)
    known = pts[rank] == point
    key = rank * width + (bucket - lo) // MINUTE_NS
    set_key = np.searchsorted(pts, set_point) * width + (set_bucket - lo) // MINUTE_NS
    return known & np.isin(key, set_key)


def _replace(cur: duckdb.DuckDBPyConnection, table: str, keys: str | None, rows: shared.Partials,
             bucket_spans: list[tuple[int, int]]) -> None:
    """Delete the rows of ``table`` whose (point, bucket) is in the registered ``keys`` (None: no
    stored row to replace); insert ``rows``."""
    for lo, hi in bucket_spans if keys is not None else []:
        cur.execute(f"DELETE FROM {table} r USING {keys} d WHERE r.bucket >= ? AND r.bucket < ? "  # noqa: S608
                    "AND r.point = d.point AND r.bucket = d.bucket", [lo, hi])
    if len(rows):
        cur.register("new_rollups", _table(rows))
        try:
            cur.execute(f"INSERT INTO {table} SELECT * FROM new_rollups")  # noqa: S608 (table is ours)
        finally:
            cur.unregister("new_rollups")


def refresh(cur: duckdb.DuckDBPyConnection, point: I64, bucket: I64) -> None:
    """Recompute the 1-minute rollups of the dirty (``point``, ``bucket``) pairs from ``samples`` and
    the 1-hour rollups of their hours, inside the caller's transaction (pairs may repeat)."""
    kinds = cur.execute("SELECT key, rollover FROM points WHERE kind = 'counter' ORDER BY key").fetchnumpy()
    ctr_keys, ctr_roll = _col(kinds, "key", np.int64, 0), _col(kinds, "rollover", np.float64, np.nan)
    cur.register("dirty_minutes", pa.table({"point": point, "bucket": bucket}))
    try:
        hours = cur.execute("SELECT DISTINCT point, bucket - bucket % 3600000000000 AS bucket "
                            "FROM dirty_minutes").fetchnumpy()
        hour_bucket = _col(hours, "bucket", np.int64, 0)
        cur.register("dirty_hours", pa.table({"point": _col(hours, "point", np.int64, 0), "bucket": hour_bucket}))
        minute_spans = shared.spans(bucket, MINUTE_NS, MERGE_GAP_1M)
        hour_spans = shared.spans(hour_bucket, HOUR_NS, MERGE_GAP_1H)
        minutes = _minutes(cur, minute_spans, ctr_keys, ctr_roll)
        # Every dirty minute lies in a dirty hour, so the stored minutes of the dirty hours are also
        # every stored row the new minutes replace: DELETE those (often none: new data), not a join
        # of the table against every dirty pair.
        stored = [cur.execute(_HOUR_MINUTES, [lo, hi]).fetchnumpy() for lo, hi in hour_spans]
        split = [_split(r, point, bucket) for r in stored]
        stale_p = np.concatenate([s[1] for s in split])
        stale_b = np.concatenate([s[2] for s in split])
        stale = None
        if len(stale_p):
            cur.register("stale_minutes", pa.table({"point": stale_p, "bucket": stale_b}))
            stale = "stale_minutes"
        _replace(cur, "rollup_1m", stale, minutes, shared.spans(stale_b, MINUTE_NS, MERGE_GAP_1M))
        folded = _fold_hours(minutes, [s[0] for s in split], ctr_keys, ctr_roll)
        _replace(cur, "rollup_1h", "dirty_hours", folded, hour_spans)
    finally:
        cur.unregister("dirty_minutes")
        for name in ("dirty_hours", "stale_minutes"):
            with contextlib.suppress(duckdb.Error):
                cur.unregister(name)


def _minutes(cur: duckdb.DuckDBPyConnection, minute_spans: list[tuple[int, int]], ctr_keys: I64,
             ctr_roll: Any) -> shared.Partials:
    """The 1-minute rollups of the dirty pairs, from ``samples``: by DuckDB where minutes hold many
    rows (``SQL_MIN_ROWS_PER_MINUTE``, judged from all rows in the spans), else by numpy."""
    in_spans = 0
    for lo, hi in minute_spans:
        row = cur.execute("SELECT count(*) FROM samples WHERE ts >= ? AND ts < ?", [lo, hi]).fetchone()
        in_spans += int(row[0]) if row else 0
    pairs = cur.execute("SELECT count(*) FROM (SELECT DISTINCT point, bucket FROM dirty_minutes)").fetchone()
    if in_spans >= SQL_MIN_ROWS_PER_MINUTE * (int(pairs[0]) if pairs else 0):
        got = [cur.execute(_MINUTES_SQL, {"lo": lo, "hi": hi}).fetchnumpy() for lo, hi in minute_spans]
        f, i = np.float64, np.int64
        cols = {k: np.concatenate([_col(r, k, dt, fill) for r in got])
                for k, dt, fill in (("point", i, 0), ("bucket", i, 0), ("min", f, np.nan), ("max", f, np.nan),
                                    ("sum", f, np.nan), ("count", i, 0), ("first", f, np.nan), ("last", f, np.nan),
                                    ("inc", f, 0.0))}
        return shared.Partials(first_ts=cols["bucket"], last_ts=cols["bucket"], **cols)
    got = [cur.execute(_ROWS, [lo, hi]).fetchnumpy() for lo, hi in minute_spans]
    rows = Batch.of(np.concatenate([_col(r, "point", np.int64, 0) for r in got]),
                    np.concatenate([_col(r, "ts", np.int64, 0) for r in got]),
                    np.concatenate([_col(r, "value", np.float64, np.nan) for r in got]))
    return shared.minute_partials(rows, ctr_keys, ctr_roll)


def _split(stored: dict[str, Any], point: I64, bucket: I64) -> tuple[dict[str, Any], I64, I64]:
    """Stored minutes into the clean ones (kept as they are in their hour) and the (point, bucket)
    of the dirty ones (replaced by the new minutes)."""
    sp, sb = _col(stored, "point", np.int64, 0), _col(stored, "bucket", np.int64, 0)
    if not len(sb):
        return stored, sp, sb
    dirty = _member(sp, sb, point, bucket)
    keep = ~dirty
    clean = {k: np.asarray(v)[keep] if not isinstance(v, np.ma.MaskedArray) else v[keep] for k, v in stored.items()}
    return clean, sp[dirty], sb[dirty]


def _fold_hours(minutes: shared.Partials, clean: list[dict[str, Any]], ctr_keys: I64, ctr_roll: Any) -> shared.Partials:
    """The hours of the new minutes. Hours that also hold stored clean minutes are folded from both;
    the others from the new minutes alone, which arrive sorted (the fold then sorts nothing: merging
    the few clean minutes into all of them would sort every minute)."""
    stamped = shared.Partials(**{k: getattr(minutes, k) for k in shared.Partials.__slots__
                                 if k not in ("first_ts", "last_ts")}, first_ts=minutes.bucket, last_ts=minutes.bucket)
    kept = [r for r in clean if len(r["bucket"])]
    if not kept:
        return partials.fold_partials(stamped, HOUR_NS, ctr_keys, ctr_roll).parts
    cp = np.concatenate([_col(r, "point", np.int64, 0) for r in kept])
    cb = np.concatenate([_col(r, "bucket", np.int64, 0) for r in kept])
    shared_hour = _member(minutes.point, minutes.bucket - minutes.bucket % HOUR_NS, cp, cb - cb % HOUR_NS)
    alone = shared.Partials(**{k: getattr(stamped, k)[~shared_hour] for k in shared.Partials.__slots__})
    mixed = _with_clean(shared.Partials(**{k: getattr(stamped, k)[shared_hour] for k in shared.Partials.__slots__}),
                        kept)
    a = partials.fold_partials(alone, HOUR_NS, ctr_keys, ctr_roll).parts
    m = partials.fold_partials(mixed, HOUR_NS, ctr_keys, ctr_roll).parts
    return shared.Partials(**{k: np.concatenate([getattr(a, k), getattr(m, k)]) for k in shared.Partials.__slots__})


def _with_clean(minutes: shared.Partials, clean: list[dict[str, Any]]) -> shared.Partials:
    """The new minutes plus the stored clean ones, as partials stamped at their bucket start (a
    minute's place in its hour is its bucket: the fold chains them in bucket order)."""
    f, i = np.float64, np.int64
    cols: dict[str, list[Any]] = {k: [getattr(minutes, k)] for k in shared.Partials.__slots__}
    cols["first_ts"], cols["last_ts"] = [minutes.bucket], [minutes.bucket]
    for r in clean:
        if not len(r["bucket"]):
            continue
        b = _col(r, "bucket", i, 0)
        for k, dt, fill in (("point", i, 0), ("min", f, np.nan), ("max", f, np.nan), ("sum", f, np.nan),
                            ("count", i, 0), ("first", f, np.nan), ("last", f, np.nan), ("inc", f, 0.0)):
            cols[k].append(_col(r, k, dt, fill))
        cols["bucket"].append(b)
        cols["first_ts"].append(b)
        cols["last_ts"].append(b)
    if len(cols["bucket"]) == 1:
        return shared.Partials(**{k: v[0] for k, v in cols.items()})
    return shared.Partials(**{k: np.concatenate(v) for k, v in cols.items()})
