"""Rows the cloud refused for its own state, held for a later re-send; dead letters sent again.

Part of the durable buffer (``EdgeBuffer`` mixes this in; same SQLite file, same discipline: one
transaction per move, fsync'd, counted):

* ``settle`` answers an ack that names refused rows. The rows an ack's ``retry`` selects (refused for
  the cloud's state: ``wire.CLOUD_STATE_REASONS``) go to the ``held`` table with a backoff; the rest of
  the batch is done (the cloud stored it, or refused it for its own data) or, for a ``rejected`` batch,
  goes to the dead letters alone. So one row the cloud cannot take yet never costs the good rows
  flushed with it, and nothing good is dead-lettered with the bad.
* ``release_held`` moves held rows whose time has come back into ``batches`` under new seqs (their
  per-point seqs kept, so the cloud's gap accounting closes when they land); the attempt count rides in
  the batch meta (``"retry"``). After ``RetryPolicy.max_attempts`` they are dead-lettered with their
  cause (``spinline edge redrive`` sends them again once the cause is fixed).
* ``redrive`` moves dead letters (all, or those of some causes) back into ``batches`` under new seqs.
  It may run from another process while the agent runs (``spinline edge redrive``): the agent's
  buffer notices the foreign commit (``PRAGMA data_version``) and recounts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from spinline.core.batch import Batch
from spinline.core.errors import StorageError

log = logging.getLogger(__name__)

RETRY_SCHEMA = """
CREATE TABLE IF NOT EXISTS held (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at_ns INTEGER NOT NULL, next_ns INTEGER NOT NULL,
    attempts INTEGER NOT NULL, reason TEXT NOT NULL, created_ns INTEGER NOT NULL, priority INTEGER NOT NULL,
    n INTEGER NOT NULL, meta TEXT NOT NULL,
    point BLOB NOT NULL, ts BLOB NOT NULL, value BLOB NOT NULL, quality BLOB NOT NULL, pseq BLOB NOT NULL
);
"""
#: Batch meta key holding how many times its rows were refused for the cloud's state and re-sent.
META_ATTEMPTS = "retry"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When held rows go again: ``base_s`` x 2^(attempt-1), at most ``cap_s``; dead-lettered after
    ``max_attempts`` (defaults: 30 s doubling to 30 min, about 8 h of retries over 20 attempts)."""

    base_s: float = 30.0
    cap_s: float = 1800.0
    max_attempts: int = 20

    def delay_s(self, attempt: int) -> float:
        return float(min(self.cap_s, self.base_s * 2.0 ** max(0, attempt - 1)))


@dataclass(frozen=True, slots=True)
class Settled:
    """What ``settle`` did with one batch (rows)."""

    held: int = 0
    dead: int = 0
    done: int = 0
    #: The held rows went to the dead letters instead: ``max_attempts`` reached.
    gave_up: bool = False
    #: Of ``dead``, the rows not selected for holding (a rejected batch's own refusals).
    dead_rest: int = 0


def _blobs(b: Batch) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    assert b.seq is not None  # stored batches carry their per-point seqs
    return b.point.tobytes(), b.ts_ns.tobytes(), b.value.tobytes(), b.quality.tobytes(), b.seq.tobytes()


def _batch(p: bytes, t: bytes, v: bytes, q: bytes, s: bytes) -> Batch:
    return Batch(np.frombuffer(p, np.int64), np.frombuffer(t, np.int64), np.frombuffer(v, np.float64),
                 np.frombuffer(q, np.uint8), np.frombuffer(s, np.int64))


class RetryRows:
    """The ``held`` table and the moves between it, ``batches`` and ``dead_letters`` (see the module docstring)."""

    _rows: int
    _bytes: int
    _batches: int
    _counters: dict[str, int]

    if TYPE_CHECKING:
        @property
        def db(self) -> sqlite3.Connection: ...

        def _bump(self, name: str, by: int) -> None: ...

    def _tally_added(self, added: Sequence[tuple[int, int]]) -> None:
        """The in-memory totals after batches (rows, bytes) went back into ``batches``."""
        self._batches += len(added)
        self._rows += sum(n for n, _ in added)
        self._bytes += sum(nb for _, nb in added)

    def _txn_fail(self, what: str, exc: sqlite3.Error) -> StorageError:
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("ROLLBACK")
        return StorageError(f"buffer {what} failed: {exc}")

    def _insert_batch(self, created_ns: int, priority: int, meta: Mapping[str, Any], b: Batch) -> int:
        cur = self.db.execute(
            "INSERT INTO batches (created_ns, priority, n, nbytes, min_ts, max_ts, meta, point, ts, value, quality,"
            " pseq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (created_ns, priority, len(b), b.nbytes, int(b.ts_ns.min()), int(b.ts_ns.max()),
             json.dumps(dict(meta), separators=(",", ":")), *_blobs(b)))
        return int(cur.lastrowid or 0)

    def _insert_dead(self, seq: int, reason: str, meta: str, b: Batch) -> None:
        self.db.execute("INSERT OR REPLACE INTO dead_letters VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (seq, time.time_ns(), reason, len(b), meta, *_blobs(b)))
        self._bump("dead_letters", 1)
        self._counters["dead_letters"] = self._counters.get("dead_letters", 0) + 1

    def settle(self, seq: int, held: Callable[[Batch], npt.NDArray[np.bool_]] | None, reason: str, *,
               dead_reason: str | None, policy: RetryPolicy) -> Settled:
        """Retire batch ``seq`` after an ack naming refused rows, in one transaction.

        ``held``: picks the rows to hold for a re-send (None: none); ``reason``: their cause(s).
        ``dead_reason``: the other rows go to the dead letters with it (a ``rejected`` batch), else they
        are done (the cloud stored them, or refused them for their own data). Unknown seq: nothing done.
        """
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            r = db.execute("SELECT created_ns, priority, n, nbytes, meta, point, ts, value, quality, pseq "
                           "FROM batches WHERE seq = ?", (seq,)).fetchone()
            if r is None:
                db.execute("COMMIT")
                return Settled()
            created, prio, n, nbytes, meta_s = int(r[0]), int(r[1]), int(r[2]), int(r[3]), str(r[4])
            b = _batch(*r[5:])
            mask = np.zeros(n, dtype=bool) if held is None else np.asarray(held(b), dtype=bool)
            if len(mask) != n:
                raise ValueError(f"held mask has {len(mask)} rows, batch {seq} has {n}")
            k = int(mask.sum())
            gave_up = False
            if k:
                meta = json.loads(meta_s)
                attempts = int(meta.get(META_ATTEMPTS, 0)) + 1
                part = b.take(mask)
                if attempts > policy.max_attempts:
                    gave_up = True
                    self._insert_dead(seq, reason, meta_s, part)
                else:
                    now = time.time_ns()
                    db.execute("INSERT INTO held (at_ns, next_ns, attempts, reason, created_ns, priority, n, meta, "
                               "point, ts, value, quality, pseq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                               (now, now + int(policy.delay_s(attempts) * 1e9), attempts, reason, created, prio, k,
                                json.dumps({**meta, META_ATTEMPTS: attempts}, separators=(",", ":")),
                                *_blobs(part)))
                    self._bump("held_rows_total", k)
            rest = n - k
            if rest and dead_reason is not None:
                # Dead letters are keyed by seq: the held part (if given up) already took this one.
                self._insert_dead(seq if not gave_up else -seq, dead_reason, meta_s, b.take(~mask))
            db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._txn_fail("settle", exc) from exc
        self._rows -= n
        self._bytes -= nbytes
        self._batches -= 1
        if k and not gave_up:
            self._counters["held_rows_total"] = self._counters.get("held_rows_total", 0) + k
        dead = (k if gave_up else 0) + (rest if dead_reason is not None else 0)
        return Settled(held=0 if gave_up else k, dead=dead, done=rest if dead_reason is None else 0, gave_up=gave_up,
                       dead_rest=rest if dead_reason is not None else 0)

    def release_held(self, now_ns: int | None = None) -> list[int]:
        """Move held rows whose backoff has passed back into ``batches`` (new seqs); returns the seqs."""
        now = time.time_ns() if now_ns is None else now_ns
        db = self.db
        if db.execute("SELECT 1 FROM held WHERE next_ns <= ? LIMIT 1", (now,)).fetchone() is None:
            return []
        new: list[tuple[int, int, int]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute("SELECT id, created_ns, priority, meta, point, ts, value, quality, pseq FROM held "
                              "WHERE next_ns <= ? ORDER BY id LIMIT 1000", (now,)).fetchall()
            for hid, created, prio, meta, *cols in rows:
                b = _batch(*cols)
                new.append((self._insert_batch(int(created), int(prio), json.loads(meta), b), len(b), b.nbytes))
                db.execute("DELETE FROM held WHERE id = ?", (hid,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._txn_fail("release of held rows", exc) from exc
        self._tally_added([(n, nb) for _seq, n, nb in new])
        return [x[0] for x in new]

    def held_summary(self) -> dict[str, Any]:
        """Held rows now: ``rows``, ``batches``, rows per cause, and when the next ones go."""
        by = {str(r): int(n) for r, n in self.db.execute("SELECT reason, sum(n) FROM held GROUP BY reason")}
        nb, nxt = self.db.execute("SELECT count(*), min(next_ns) FROM held").fetchone()
        return {"rows": sum(by.values()), "batches": int(nb), "by_reason": by,
                "next_ns": None if nxt is None else int(nxt)}

    def dead_letter_summary(self) -> dict[str, dict[str, int]]:
        """Dead letters kept now, per cause: ``{"batches", "rows"}``."""
        return {str(r): {"batches": int(b), "rows": int(n)} for r, b, n in
                self.db.execute("SELECT reason, count(*), sum(n) FROM dead_letters GROUP BY reason ORDER BY reason")}

    def redrive(self, reasons: Collection[str] | None = None, *, dry_run: bool = False) -> dict[str, dict[str, int]]:
        """Send dead letters again: move those of ``reasons`` (None: all) back into ``batches`` under new
        seqs, in one transaction. Returns what was (or, with ``dry_run``, would be) moved, per cause."""
        summary = self.dead_letter_summary()
        picked = {r: v for r, v in summary.items() if reasons is None or r in reasons}
        if dry_run or not picked:
            return picked
        db = self.db
        moved: list[tuple[int, int]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute("SELECT seq, reason, meta, point, ts, value, quality, pseq FROM dead_letters "
                              "ORDER BY seq").fetchall()
            for seq, reason, meta, *cols in rows:
                if reasons is not None and reason not in reasons:
                    continue
                b = _batch(*cols)
                m = {k: v for k, v in json.loads(meta).items() if k != META_ATTEMPTS}
                self._insert_batch(time.time_ns(), 1, m | {"redriven": str(reason)}, b)
                db.execute("DELETE FROM dead_letters WHERE seq = ?", (seq,))
                moved.append((len(b), b.nbytes))
            self._bump("redriven_batches", len(moved))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._txn_fail("redrive", exc) from exc
        self._tally_added(moved)
        self._counters["redriven_batches"] = self._counters.get("redriven_batches", 0) + len(moved)
        log.warning("re-sending %d dead-lettered batch(es): %s", len(moved),
                    ", ".join(f"{r} {v['batches']}" for r, v in picked.items()))
        return picked
