"""Durable store-and-forward buffer: SQLite in WAL mode, one row per batch, columns as BLOBs.

Guarantees
    * ``append`` returns only after the batch is committed with ``synchronous=FULL`` (the WAL is
      fsync'd at every commit), so a batch acknowledged to whoever handed it over survives
      ``kill -9`` and power loss of the gateway.
    * The batch sequence number (the uplink's idempotency key, with the edge id) comes from an
      AUTOINCREMENT key: assigned at commit, never reused, even after acks delete rows.
    * The per-point sample sequence numbers (``Batch.seq``) are assigned in the same transaction
      from the ``point_seq`` table, so they are never reused or skipped across a crash: a seq
      jump seen by the cloud is a real loss (a dropped batch), never a restart artefact.

Full policy (``budget_bytes``, counting the stored column bytes)
    When a commit takes the buffer over its budget, whole batches are dropped, **lowest priority
    first, oldest first within a priority**, until it fits again. Every drop is recorded in the
    ``drops`` table and the ``dropped_rows`` / ``dropped_batches`` counters (exported as the
    ``_edge/buffer_dropped`` point), the per-point seqs of dropped rows become visible gaps in
    the cloud, and ``full`` turns true (alarm) until the buffer is back under the low-water mark
    (90 % of the budget). Nothing is ever dropped silently.

Events (``spinline.core.wire.EdgeEvent``: alarms, diagnoses, model changes) live in the same
file, table ``events``, with the same discipline: ``append_events`` commits (fsync'd) and assigns
each event its id (AUTOINCREMENT, never reused: the idempotency key ``(edge, id)``); they leave
only through ``ack_events`` or ``reject_events`` (kept in ``dead_events``). Past ``max_events``
the oldest are dropped, counted in ``dropped_events`` and logged: never silently.

Incarnation
    A buffer file gets a random ``incarnation`` id (16 hex digits, table ``info``) when it is
    created; the forwarder sends it with every batch (``wire.Envelope.incarnation``, header
    ``"inc"``), so the cloud's idempotency key is ``edge:inc:seq``. Wiping the data dir restarts the
    batch seq at 1 under a new incarnation: the cloud stores the new batches instead of acking them
    ``duplicate``. A file created before incarnations existed keeps ``""`` (key ``edge:seq``, as
    before), so batches it already sent are not stored twice.

Rows leave the buffer only through ``ack`` (the cloud stored them or already had them),
``dead_letter`` (the cloud refused them; they are kept in ``dead_letters`` for inspection and
``spinline edge redrive``), or ``settle`` (``buffer_retry``: rows the cloud refused for its own state
are held and re-sent with backoff; the rest is done or dead-lettered alone).

Another process may change the file (``spinline edge redrive`` while the agent runs): ``stats``
notices a foreign commit (``PRAGMA data_version``) and recounts the cached totals.

The class is synchronous and not thread-safe; the agent runs it on one worker thread.

Size: one SQLite schema and every statement on it, so the durability rules (one transaction per
batch, fsync before ack, budgets, dead letters, events) are checked in one place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spinline.core.batch import Batch
from spinline.core.errors import PayloadError, StorageError
from spinline.core.site import Priority
from spinline.core.wire import EdgeEvent

from .buffer_retry import RETRY_SCHEMA, RetryRows

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ns INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    n INTEGER NOT NULL,
    nbytes INTEGER NOT NULL,
    min_ts INTEGER, max_ts INTEGER,
    meta TEXT NOT NULL,
    point BLOB NOT NULL, ts BLOB NOT NULL, value BLOB NOT NULL, quality BLOB NOT NULL, pseq BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_drop ON batches(priority, seq);
CREATE TABLE IF NOT EXISTS point_seq (point INTEGER PRIMARY KEY, next INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drops (
    seq INTEGER PRIMARY KEY, dropped_ns INTEGER NOT NULL, priority INTEGER NOT NULL, n INTEGER NOT NULL,
    min_ts INTEGER, max_ts INTEGER, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY, at_ns INTEGER NOT NULL, reason TEXT NOT NULL, n INTEGER NOT NULL, meta TEXT NOT NULL,
    point BLOB NOT NULL, ts BLOB NOT NULL, value BLOB NOT NULL, quality BLOB NOT NULL, pseq BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created_ns INTEGER NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_events (
    id INTEGER PRIMARY KEY, at_ns INTEGER NOT NULL, reason TEXT NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at_ns INTEGER NOT NULL, reason TEXT NOT NULL, n INTEGER NOT NULL,
    point BLOB NOT NULL, ts BLOB NOT NULL, value BLOB NOT NULL, quality BLOB NOT NULL
);
"""
_COLS = "seq, created_ns, priority, n, meta, point, ts, value, quality, pseq"


@dataclass(frozen=True, slots=True)
class StoredBatch:
    seq: int
    created_ns: int
    priority: int
    batch: Batch
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BufferStats:
    batches: int
    rows: int
    bytes: int
    budget_bytes: int
    full: bool
    dropped_rows: int
    dropped_batches: int
    dead_letters: int
    quarantined_rows: int
    last_seq: int
    oldest_created_ns: int | None
    events: int = 0
    dropped_events: int = 0
    dead_events: int = 0
    #: Dead letters kept now, per cause ({"batches", "rows"}); ``dead_letters`` counts every one ever.
    dead_letters_by_reason: dict[str, dict[str, int]] | None = None
    #: Rows refused for the cloud's state, held for a re-send (``buffer_retry``): rows, batches, per cause.
    held: dict[str, Any] | None = None
    redriven_batches: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def per_point_rank(points: np.ndarray[Any, np.dtype[np.int64]]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any],
                                                                           np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """For each row, its rank among the rows of the same point (in row order).

    Returns (unique points, inverse index, rank per row, count per unique point). Pure.
    """
    uniq, inverse, counts = np.unique(points, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.zeros(len(uniq), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    rank = np.empty(len(points), dtype=np.int64)
    rank[order] = np.arange(len(points), dtype=np.int64) - np.repeat(starts, counts)
    return uniq, inverse, rank, counts


class EdgeBuffer(RetryRows):
    """The durable buffer. ``open()`` (or ``with``) does the I/O; the constructor does none."""

    def __init__(self, path: str | Path, *, budget_bytes: int = 1 << 30, low_water: float = 0.9,
                 max_events: int = 100_000, busy_timeout_s: float = 5.0) -> None:
        if budget_bytes <= 0 or max_events <= 0:
            raise ValueError("budget_bytes and max_events must be positive")
        self.busy_timeout_s = busy_timeout_s
        self.max_events = max_events
        self.path = Path(path)
        self.budget_bytes = budget_bytes
        self.low_water = low_water
        self._db: sqlite3.Connection | None = None
        self._next_seq: dict[int, int] = {}
        self._rows = 0
        self._bytes = 0
        self._batches = 0
        self._full = False
        self._counters: dict[str, int] = {}
        self._events = 0
        self._data_version = 0
        #: Random id of this buffer file (see the module docstring); "" for a file from before incarnations.
        self.incarnation = ""

    # --- lifecycle --------------------------------------------------------------------------------

    def open(self) -> EdgeBuffer:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            fresh = db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'batches'").fetchone()[0] == 0
            db.executescript(_SCHEMA + RETRY_SCHEMA)
            row = db.execute("SELECT value FROM info WHERE name = 'incarnation'").fetchone()
            if row is None:
                inc = secrets.token_hex(8) if fresh else ""
                db.execute("INSERT OR IGNORE INTO info (name, value) VALUES ('incarnation', ?)", (inc,))
                row = db.execute("SELECT value FROM info WHERE name = 'incarnation'").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open buffer {self.path}: {exc}") from exc
        self._db = db
        self.incarnation = str(row[0])
        self._next_seq = dict(db.execute("SELECT point, next FROM point_seq").fetchall())
        self._recount()
        self._full = self._bytes > self.budget_bytes * self.low_water and self._counters.get("dropped_batches", 0) > 0
        return self

    def _recount(self) -> None:
        """Read the cached totals from the file (at open, and after another process committed)."""
        db = self.db
        b, r, nb = db.execute("SELECT count(*), coalesce(sum(n), 0), coalesce(sum(nbytes), 0) FROM batches").fetchone()
        self._batches, self._rows, self._bytes = int(b), int(r), int(nb)
        self._counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
        self._events = int(db.execute("SELECT count(*) FROM events").fetchone()[0])
        self._data_version = int(db.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> EdgeBuffer:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError("buffer is not open")
        return self._db

    # --- writing ----------------------------------------------------------------------------------

    def append(self, batch: Batch, *, priority: Priority = Priority.NORMAL,
               meta: dict[str, Any] | None = None, created_ns: int | None = None) -> StoredBatch:
        """Commit ``batch`` durably; assigns the batch seq and per-point seqs. Returns what was stored."""
        if not len(batch):
            raise ValueError("refusing to store an empty batch")
        uniq, inverse, rank, counts = per_point_rank(batch.point)
        nxt = self._next_seq
        base = np.fromiter((nxt.get(int(p), 0) for p in uniq), dtype=np.int64, count=len(uniq))
        pseq = base[inverse] + rank
        new_next = base + counts
        stored = Batch(batch.point, batch.ts_ns, batch.value, batch.quality, pseq)
        created = created_ns if created_ns is not None else time.time_ns()
        m = dict(meta or {})
        nbytes = stored.nbytes
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            cur = db.execute(
                "INSERT INTO batches (created_ns, priority, n, nbytes, min_ts, max_ts, meta, point, ts, value, quality,"
                " pseq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (created, priority.rank, len(stored), nbytes, int(stored.ts_ns.min()),
                 int(stored.ts_ns.max()), json.dumps(m, separators=(",", ":")), stored.point.tobytes(),
                 stored.ts_ns.tobytes(), stored.value.tobytes(), stored.quality.tobytes(), pseq.tobytes()))
            db.executemany("INSERT INTO point_seq (point, next) VALUES (?, ?) ON CONFLICT(point) DO UPDATE "
                           "SET next = excluded.next", zip(uniq.tolist(), new_next.tolist(), strict=True))
            seq = int(cur.lastrowid or 0)
            dropped = self._enforce_budget(extra=nbytes)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StorageError(f"buffer commit failed: {exc}") from exc
        for p, n in zip(uniq.tolist(), new_next.tolist(), strict=True):
            nxt[p] = n
        self._batches += 1
        self._rows += len(stored)
        self._bytes += nbytes
        self._apply_drops(dropped)
        return StoredBatch(seq, created, priority.rank, stored, m)

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("ROLLBACK")

    def _enforce_budget(self, extra: int) -> list[tuple[int, int, int, int]]:
        """Inside a transaction: drop batches until the buffer fits (lowest priority, oldest first)."""
        over = self._bytes + extra - self.budget_bytes
        if over <= 0:
            return []
        target = self._bytes + extra - int(self.budget_bytes * self.low_water)
        victims: list[tuple[int, int, int, int]] = []
        freed = 0
        now = time.time_ns()
        candidates = self.db.execute("SELECT seq, priority, n, nbytes, min_ts, max_ts FROM batches "
                                     "ORDER BY priority, seq LIMIT 100000").fetchall()
        for seq, prio, n, nbytes, min_ts, max_ts in candidates:
            victims.append((seq, prio, n, nbytes))
            self.db.execute("INSERT OR REPLACE INTO drops VALUES (?,?,?,?,?,?,?)",
                            (seq, now, prio, n, min_ts, max_ts, "buffer_full"))
            freed += nbytes
            if freed >= target:
                break
        self.db.executemany("DELETE FROM batches WHERE seq = ?", [(v[0],) for v in victims])
        rows = sum(v[2] for v in victims)
        self._bump("dropped_rows", rows)
        self._bump("dropped_batches", len(victims))
        return victims

    def _bump(self, name: str, by: int) -> None:
        self.db.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                        "SET value = value + excluded.value", (name, by))

    def _apply_drops(self, victims: list[tuple[int, int, int, int]]) -> None:
        if victims:
            rows = sum(v[2] for v in victims)
            self._batches -= len(victims)
            self._rows -= rows
            self._bytes -= sum(v[3] for v in victims)
            self._counters["dropped_rows"] = self._counters.get("dropped_rows", 0) + rows
            self._counters["dropped_batches"] = self._counters.get("dropped_batches", 0) + len(victims)
            if not self._full:
                log.error("edge buffer full (budget %d bytes): dropping lowest-priority oldest batches "
                          "(this time %d batch(es), %d rows; seqs %s..%s)", self.budget_bytes, len(victims), rows,
                          victims[0][0], victims[-1][0])
            self._full = True
        elif self._full and self._bytes <= self.budget_bytes * self.low_water:
            log.warning("edge buffer back under its budget (%d of %d bytes); %d rows dropped in total",
                        self._bytes, self.budget_bytes, self._counters.get("dropped_rows", 0))
            self._full = False

    def quarantine(self, batch: Batch, reason: str) -> None:
        """Keep rows out of the uplink (e.g. an implausible device clock), durably and counted."""
        if not len(batch):
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT INTO quarantine (at_ns, reason, n, point, ts, value, quality) "
                            "VALUES (?,?,?,?,?,?,?)", (time.time_ns(), reason, len(batch), batch.point.tobytes(),
                                                       batch.ts_ns.tobytes(), batch.value.tobytes(),
                                                       batch.quality.tobytes()))
            self._bump("quarantined_rows", len(batch))
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StorageError(f"buffer quarantine failed: {exc}") from exc
        self._counters["quarantined_rows"] = self._counters.get("quarantined_rows", 0) + len(batch)

    # --- reading and acknowledging ----------------------------------------------------------------

    @staticmethod
    def _row(r: tuple[Any, ...]) -> StoredBatch:
        seq, created, prio, _n, meta, p, t, v, q, s = r
        b = Batch(np.frombuffer(p, np.int64), np.frombuffer(t, np.int64), np.frombuffer(v, np.float64),
                  np.frombuffer(q, np.uint8), np.frombuffer(s, np.int64))
        return StoredBatch(int(seq), int(created), int(prio), b, json.loads(meta))

    def get(self, seq: int) -> StoredBatch | None:
        r = self.db.execute(f"SELECT {_COLS} FROM batches WHERE seq = ?", (seq,)).fetchone()  # noqa: S608
        return None if r is None else self._row(r)

    def seqs(self, *, order: Literal["asc", "desc"] = "asc", min_seq: int | None = None,
             max_seq: int | None = None, limit: int = 1000) -> list[int]:
        """Pending batch seqs in a range (inclusive), in ``order``."""
        lo = -1 if min_seq is None else min_seq
        hi = (1 << 62) if max_seq is None else max_seq
        direction = "ASC" if order == "asc" else "DESC"
        rows = self.db.execute(f"SELECT seq FROM batches WHERE seq BETWEEN ? AND ? ORDER BY seq {direction} "  # noqa: S608
                               "LIMIT ?", (lo, hi, limit)).fetchall()
        return [int(r[0]) for r in rows]

    def read(self, *, order: Literal["asc", "desc"] = "asc", limit: int = 100) -> list[StoredBatch]:
        direction = "ASC" if order == "asc" else "DESC"
        rows = self.db.execute(f"SELECT {_COLS} FROM batches ORDER BY seq {direction} LIMIT ?",  # noqa: S608
                               (limit,)).fetchall()
        return [self._row(r) for r in rows]

    def ack(self, seqs: Iterable[int]) -> int:
        """Remove batches the cloud confirmed; unknown seqs (already acked or dropped) are ignored."""
        keys = [(int(s),) for s in seqs]
        if not keys:
            return 0
        try:
            self.db.execute("BEGIN IMMEDIATE")
            n_rows = 0
            n_bytes = 0
            n_batches = 0
            for (s,) in keys:
                r = self.db.execute("DELETE FROM batches WHERE seq = ? RETURNING n, nbytes", (s,)).fetchone()
                if r is not None:
                    n_rows += int(r[0])
                    n_bytes += int(r[1])
                    n_batches += 1
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StorageError(f"buffer ack failed: {exc}") from exc
        self._rows -= n_rows
        self._bytes -= n_bytes
        self._batches -= n_batches
        self._apply_drops([])
        return n_batches

    def split(self, seq: int, max_rows: int) -> list[int]:
        """Replace a pending batch of more than ``max_rows`` rows by parts of at most ``max_rows`` (new
        seqs, same created time, priority, meta and per-point seqs) in one transaction; returns the new
        seqs ([] when the batch is gone or small enough). For a batch committed before the split at
        commit existed, or under a larger cap: the cloud refuses a payload above its limits, and a
        batch the cloud never stored may take new keys."""
        if max_rows <= 0:
            raise ValueError(f"max_rows must be > 0, got {max_rows}")
        sb = self.get(seq)
        if sb is None or len(sb.batch) <= max_rows:
            return []
        b = sb.batch
        new: list[int] = []
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            meta = json.dumps(sb.meta, separators=(",", ":"))
            for start in range(0, len(b), max_rows):
                part = b.take(slice(start, start + max_rows))
                assert part.seq is not None  # stored batches carry their per-point seqs
                cur = db.execute(
                    "INSERT INTO batches (created_ns, priority, n, nbytes, min_ts, max_ts, meta, point, ts, value,"
                    " quality, pseq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (sb.created_ns, sb.priority, len(part), part.nbytes, int(part.ts_ns.min()),
                     int(part.ts_ns.max()), meta, part.point.tobytes(), part.ts_ns.tobytes(),
                     part.value.tobytes(), part.quality.tobytes(), part.seq.tobytes()))
                new.append(int(cur.lastrowid or 0))
            db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StorageError(f"buffer split failed: {exc}") from exc
        self._batches += len(new) - 1
        log.warning("batch %d of %d rows is above the %d-row payload limit: split into batches %d..%d",
                    seq, len(b), max_rows, new[0], new[-1])
        return new

    def dead_letter(self, seq: int, reason: str) -> bool:
        """Move a refused batch to ``dead_letters`` (kept, counted, visible in status)."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            r = self.db.execute("SELECT n, nbytes, meta, point, ts, value, quality, pseq FROM batches WHERE seq = ?",
                                (seq,)).fetchone()
            if r is None:
                self.db.execute("COMMIT")
                return False
            self.db.execute("INSERT OR REPLACE INTO dead_letters VALUES (?,?,?,?,?,?,?,?,?,?)",
                            (seq, time.time_ns(), reason, r[0], r[2], r[3], r[4], r[5], r[6], r[7]))
            self.db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
            self._bump("dead_letters", 1)
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StorageError(f"buffer dead-letter failed: {exc}") from exc
        self._rows -= int(r[0])
        self._bytes -= int(r[1])
        self._batches -= 1
        self._counters["dead_letters"] = self._counters.get("dead_letters", 0) + 1
        log.info("cloud refused batch %d (%s); kept in dead_letters", seq, reason)
        return True

    # --- events -----------------------------------------------------------------------------------

    def append_events(self, events: Iterable[EdgeEvent]) -> list[EdgeEvent]:
        """Commit events durably (one transaction); returns them with their assigned ids."""
        evs = list(events)
        if not evs:
            return []
        now = time.time_ns()
        out: list[EdgeEvent] = []
        dropped = 0
        try:
            self.db.execute("BEGIN IMMEDIATE")
            for e in evs:
                cur = self.db.execute("INSERT INTO events (created_ns, body) VALUES (?, '')", (now,))
                stamped = replace(e, id=int(cur.lastrowid or 0))
                self.db.execute("UPDATE events SET body = ? WHERE id = ?",
                                (json.dumps(stamped.to_dict(), separators=(",", ":")), stamped.id))
                out.append(stamped)
            over = self._events + len(evs) - self.max_events
            if over > 0:
                dropped = self.db.execute("DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id "
                                          "LIMIT ?)", (over,)).rowcount
                self._bump("dropped_events", dropped)
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StorageError(f"buffer event commit failed: {exc}") from exc
        self._events += len(evs) - dropped
        if dropped:
            self._counters["dropped_events"] = self._counters.get("dropped_events", 0) + dropped
            log.error("edge event buffer full (%d events): dropped the %d oldest", self.max_events, dropped)
        return out

    def pending_events(self, *, min_id: int = 0, limit: int = 100) -> list[EdgeEvent]:
        """Events not yet acknowledged, oldest first, ids >= ``min_id``."""
        rows = self.db.execute("SELECT id, body FROM events WHERE id >= ? ORDER BY id LIMIT ?",
                               (min_id, limit)).fetchall()
        out = []
        for i, body in rows:
            try:
                out.append(replace(EdgeEvent.from_dict(json.loads(body)), id=int(i)))
            except (ValueError, PayloadError) as exc:  # cannot happen for rows we wrote; keep them visible
                log.error("unreadable event %d in the edge buffer: %s", i, exc)
        return out

    def ack_events(self, ids: Iterable[int]) -> int:
        """Remove events the cloud stored (or already had); unknown ids are ignored."""
        keys = [(int(i),) for i in ids]
        if not keys:
            return 0
        try:
            self.db.execute("BEGIN IMMEDIATE")
            n = 0
            for k in keys:
                n += self.db.execute("DELETE FROM events WHERE id = ?", k).rowcount
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StorageError(f"buffer event ack failed: {exc}") from exc
        self._events -= n
        return n

    def reject_events(self, rejected: Iterable[tuple[int, str]]) -> int:
        """Move events the cloud refused for good to ``dead_events`` (kept, counted)."""
        items = list(rejected)
        if not items:
            return 0
        now = time.time_ns()
        n = 0
        try:
            self.db.execute("BEGIN IMMEDIATE")
            for i, reason in items:
                r = self.db.execute("DELETE FROM events WHERE id = ? RETURNING body", (int(i),)).fetchone()
                if r is not None:
                    self.db.execute("INSERT OR REPLACE INTO dead_events VALUES (?,?,?,?)", (int(i), now, reason, r[0]))
                    n += 1
            if n:
                self._bump("dead_events", n)
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StorageError(f"buffer event reject failed: {exc}") from exc
        self._events -= n
        if n:
            self._counters["dead_events"] = self._counters.get("dead_events", 0) + n
            log.error("cloud refused %d event(s) (e.g. %s); kept in dead_events", n, items[0])
        return n

    # --- status -----------------------------------------------------------------------------------

    def last_seq(self) -> int:
        r = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'batches'").fetchone()
        return int(r[0]) if r else 0

    def next_point_seq(self, point: int) -> int:
        return self._next_seq.get(point, 0)

    def drops(self) -> list[dict[str, Any]]:
        cols = ("seq", "dropped_ns", "priority", "n", "min_ts", "max_ts", "reason")
        sql = f"SELECT {', '.join(cols)} FROM drops ORDER BY dropped_ns, priority, seq"  # noqa: S608
        return [dict(zip(cols, r, strict=True)) for r in self.db.execute(sql)]

    def stats(self) -> BufferStats:
        if int(self.db.execute("PRAGMA data_version").fetchone()[0]) != self._data_version:
            self._recount()   # another process committed (``spinline edge redrive``)
        oldest = self.db.execute("SELECT min(created_ns) FROM batches").fetchone()[0]
        c = self._counters
        return BufferStats(batches=self._batches, rows=self._rows, bytes=self._bytes, budget_bytes=self.budget_bytes,
                           full=self._full, dropped_rows=c.get("dropped_rows", 0),
                           dropped_batches=c.get("dropped_batches", 0), dead_letters=c.get("dead_letters", 0),
                           quarantined_rows=c.get("quarantined_rows", 0), last_seq=self.last_seq(),
                           oldest_created_ns=None if oldest is None else int(oldest), events=self._events,
                           dropped_events=c.get("dropped_events", 0), dead_events=c.get("dead_events", 0),
                           dead_letters_by_reason=self.dead_letter_summary(), held=self.held_summary(),
                           redriven_batches=c.get("redriven_batches", 0))
