"""The collector: every connector's rows -> checked, filtered, queued by priority -> the durable buffer.

``Collector.ingest`` (sync, called from the event loop by every connector and by the status
reporter) checks device clocks (``ClockGuard``), refuses rows the cloud would refuse for their own
data (``filter.refused_rows``: a NaN or inf of good quality, a fractional state, a negative counter;
counted per cause in ``refused_rows`` and per device as bad input, never buffered, so one bad value
never costs the good rows flushed with it), applies deadband / heartbeat / range flags
(``ReportFilter``) and queues rows per ``Priority``. ``flush`` commits them to the buffer, one
transaction per priority class, highest first, split into batches of at most ``max_batch_rows``
rows (``wire.max_batch_rows``: the cloud's row and byte limits), so the backlog a commit-failure
episode leaves in memory never becomes one batch the cloud must refuse.

On a ``StorageError`` (disk full, I/O error, busy database) the rows not committed yet, the
quarantined rows and the batch meta go back in memory for the next try (before anything collected
meanwhile) and the error is raised. Memory is capped at ``max_pending_rows``: past it the oldest
rows of the lowest priority are dropped, counted (``memory_dropped_rows``, part of the
``_edge/buffer_dropped`` point) and logged once per failure episode.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np

from spinline.connectors.base import Commits, LinkHealth
from spinline.core import wire
from spinline.core.batch import Batch
from spinline.core.errors import StorageError
from spinline.core.site import PointRef, Priority

from .buffer_io import AsyncBuffer
from .clock import ClockGuard
from .filter import PointTable, ReportFilter, refused_rows

log = logging.getLogger(__name__)


class Collector:
    """Owns the pending queues, the quarantine, the memory cap and the flush (see the module docstring)."""

    def __init__(self, points: Sequence[PointRef], derived: Sequence[PointRef], *, clock: ClockGuard,
                 heartbeat_s: float, max_pending_rows: int, max_batch_rows: int | None = None) -> None:
        self.table = PointTable([*points, *derived], heartbeat_s=heartbeat_s)
        self.filter = ReportFilter(self.table)
        self.clock = clock
        self.max_pending_rows = max_pending_rows
        self.max_batch_rows = max_batch_rows if max_batch_rows is not None else wire.max_batch_rows()
        if self.max_batch_rows <= 0:
            raise ValueError(f"max_batch_rows must be > 0, got {self.max_batch_rows}")
        #: Rows waiting for the next flush, per priority, oldest first.
        self.pending: dict[Priority, list[Batch]] = defaultdict(list)
        #: Counters that travel in the next committed batches' meta (``clock_corrected_rows``).
        self.pending_meta: dict[str, int] = defaultdict(int)
        #: Rows whose device clock is implausible under the ``quarantine`` policy.
        self.quarantine: list[Batch] = []
        self._pending_models: dict[str, Any] = {}
        #: Where a machine's bad input is counted (set by the agent once its connectors exist).
        self.health_of: Mapping[str, LinkHealth] = {}
        self._machine_of_key = {p.key: p.machine.id for p in points}
        self._ref_of_key = {p.key: p for p in points}
        self.points_collected = 0
        self.points_stored = 0
        self.batches_committed = 0
        self.memory_dropped_rows = 0
        #: Which flush holds a push link's rows, so MQTT messages are acknowledged only once committed.
        self.commits = Commits()
        #: Called when rows were queued (the agent's flusher: commit soon when it is idle).
        self.on_rows: Callable[[], object] | None = None
        #: Vibration features and scores (``site.derived_points``: ``vib_<channel>_<feature>``): their rows do
        #: not call ``on_rows`` but wait for the next regular flush (``flush_s``). They describe a snapshot
        #: the sensor took seconds ago and come in bursts (50 channels), and were they to spend the early
        #: flushes (``agent.EARLY_FLUSHES_PER_S``) a large mill's device rows would wait for ``flush_s``
        #: instead (measured: send latency p95 0.23 s, not 0.05 s, with snapshots arriving, ``bench/edge.py``).
        #: Link health and the edge's own points still wake it (once a second, with the status).
        self._deferred_keys = frozenset(p.key for p in derived if p.point.name.startswith("vib_"))
        #: Rows refused at the edge for their own data, per cause (``filter.refused_rows``).
        self.refused_rows: dict[str, int] = {}
        self._memory_drop_logged = False
        self._commit_failing = False
        self._dropped_at_failure = 0

    @property
    def pending_rows(self) -> int:
        return sum(len(b) for bs in self.pending.values() for b in bs)

    # --- in ----------------------------------------------------------------------------------------

    def ingest(self, batch: Batch) -> None:
        """Every connector's batches come through here (sync: called from the loop)."""
        if not len(batch):
            return
        self.points_collected += len(batch)
        now = time.time_ns()
        skew = np.abs(batch.ts_ns - now) > int(self.clock.max_skew_s * 1e9)
        if skew.any():
            batch = self._clock_fix(batch, now)
        elif self.clock.any_jumped():
            self._clock_recover(batch, now)
        refused = refused_rows(self.table, batch)
        if refused:
            batch = self._refuse(batch, refused)
            if not len(batch):
                return
        out = self.filter.apply(batch)
        if self.filter.out_of_range is not None:
            self._count_out_of_range(self.filter.out_of_range)
        if not len(out):
            return
        pr = self.filter.priority_of(out)
        if bool((pr == pr[0]).all()):
            self.pending[Priority.of_rank(int(pr[0]))].append(out)
        else:
            for rank in np.unique(pr):
                self.pending[Priority.of_rank(int(rank))].append(out.take(pr == rank))
        if self.on_rows is not None and self._urgent(out):
            self.on_rows()

    def _urgent(self, b: Batch) -> bool:
        """False when every row is a vibration feature or score (a device batch answers at its first key)."""
        d = self._deferred_keys
        return int(b.point[0]) not in d or any(k not in d for k in b.point.tolist())

    def _refuse(self, batch: Batch, refused: dict[str, np.ndarray[Any, np.dtype[np.bool_]]]) -> Batch:
        """Drop refused rows; count them per cause and per device (logged once per cause and device)."""
        drop = np.zeros(len(batch), dtype=bool)
        for cause, rows in refused.items():
            rows = rows & ~drop
            drop |= rows
            self.refused_rows[cause] = self.refused_rows.get(cause, 0) + int(rows.sum())
            by_machine: dict[str, list[int]] = defaultdict(list)
            for i in np.flatnonzero(rows).tolist():
                by_machine[self._machine_of_key.get(int(batch.point[i]), "?")].append(i)
            for m, idx in by_machine.items():
                ref = self._ref_of_key.get(int(batch.point[idx[0]]))
                what = ref.tag if ref is not None else str(int(batch.point[idx[0]]))
                kind = f" ({ref.point.kind.value} point)" if ref is not None else ""
                detail = (f"{what} = {float(batch.value[idx[0]])!r}{kind} refused at the edge ({cause}): never "
                          "buffered or sent")
                if m in self.health_of:
                    self.health_of[m].rejected(cause, detail, logger=log, n=len(idx))
                else:
                    log.debug("%s", detail)
        return batch.take(~drop)

    def _count_out_of_range(self, rows: Batch) -> None:
        """Values outside their point's plausible range: flagged UNCERTAIN by the filter, counted per device."""
        by_machine: dict[str, list[int]] = defaultdict(list)
        for i, k in enumerate(rows.point.tolist()):
            m = self._machine_of_key.get(k)
            if m is not None and m in self.health_of:
                by_machine[m].append(i)
        for m, idx in by_machine.items():
            ref = self._ref_of_key[int(rows.point[idx[0]])]
            self.health_of[m].rejected(
                "out_of_range", f"{ref.tag} = {float(rows.value[idx[0]]):g} {ref.point.unit} is outside its plausible "
                                f"range [{ref.point.min}, {ref.point.max}]; flagged uncertain", logger=log, n=len(idx))

    def _clock_fix(self, batch: Batch, now: int) -> Batch:
        machines = np.asarray([self._machine_of_key.get(int(k), "?") for k in batch.point])
        parts = []
        for m in np.unique(machines):
            sel = machines == m
            v = self.clock.check(str(m), batch.take(sel), now)
            parts.append(v.good)
            if len(v.quarantined):
                self.quarantine.append(v.quarantined)
            if v.corrected:
                self.pending_meta["clock_corrected_rows"] += v.corrected
        return Batch.concat(parts)

    def _clock_recover(self, batch: Batch, now: int) -> None:
        machines = {self._machine_of_key.get(int(k), "?") for k in np.unique(batch.point)}
        for m in machines:
            if self.clock.is_jumped(m):
                rows = np.asarray([self._machine_of_key.get(int(k)) == m for k in batch.point])
                self.clock.check(m, batch.take(rows), now)  # plausible rows: logs the recovery once

    # --- out ---------------------------------------------------------------------------------------

    async def flush(self, buffer: AsyncBuffer,
                    before: Callable[[], Awaitable[Mapping[str, Any]]] | None = None) -> int:
        """Commit what was collected; returns rows committed (see the module docstring for failures).

        ``before`` runs first inside the same failure handling (the scoring stage's commit) and returns
        the model version behind each asset's scores, carried in the batches' meta.
        """
        gen = self.commits.seal()
        pending, self.pending = self.pending, defaultdict(list)
        meta: dict[str, Any] = dict(self.pending_meta)
        self.pending_meta.clear()
        if self._pending_models:
            meta["models"] = self._pending_models
            self._pending_models = {}
        quarantine, self.quarantine = self.quarantine, []
        rows = 0
        try:
            if before is not None and (versions := await before()):
                meta["models"] = {**meta.get("models", {}), **versions}
            for prio in sorted(pending, key=lambda p: p.rank, reverse=True):
                b = Batch.concat(pending[prio])
                m = {"ts_source": "edge+device", **meta}
                cap = self.max_batch_rows
                for start in range(0, len(b), cap):
                    await buffer.append(b.take(slice(start, start + cap)), prio, m)
                    rows += min(cap, len(b) - start)
                    self.batches_committed += 1
                    # What a failure on the next part keeps in memory: only the rows not committed yet.
                    pending[prio] = [b.take(slice(start + cap, None))]
                del pending[prio]
            if quarantine:
                await buffer.quarantine(Batch.concat(quarantine), "clock_skew")
                quarantine = []
        except StorageError:
            self._keep_uncommitted(pending, quarantine, meta if not rows else {})
            raise
        finally:
            if rows:
                self.points_stored += rows
        self.commits.committed(gen)
        if self._commit_failing:
            log.warning("edge buffer commits work again (%d row(s) dropped from memory meanwhile)",
                        self.memory_dropped_rows - self._dropped_at_failure)
            self._commit_failing = False
        return rows

    def _keep_uncommitted(self, pending: dict[Priority, list[Batch]], quarantine: list[Batch],
                          meta: dict[str, Any]) -> None:
        """Put what a failed flush did not commit back in front of what was collected meanwhile, within the cap."""
        for prio, batches in pending.items():
            self.pending[prio] = batches + self.pending[prio]
        self.quarantine = quarantine + self.quarantine
        for k, v in meta.items():
            if k == "models":
                self._pending_models = {**v, **self._pending_models}
            elif isinstance(v, int):
                self.pending_meta[k] += v
        if not self._commit_failing:
            self._commit_failing = True
            self._dropped_at_failure = self.memory_dropped_rows
        self._enforce_memory_cap()

    def _enforce_memory_cap(self) -> None:
        over = self.pending_rows - self.max_pending_rows
        dropped = 0
        for prio in sorted(self.pending, key=lambda p: p.rank):  # lowest priority first, oldest first within it
            batches = self.pending[prio]
            while over > 0 and batches:
                b = batches[0]
                if len(b) <= over:
                    batches.pop(0)
                    n = len(b)
                else:
                    batches[0] = b.take(slice(over, None))
                    n = over
                over -= n
                dropped += n
        q_over = sum(len(b) for b in self.quarantine) - self.max_pending_rows
        while q_over > 0 and self.quarantine:
            q_over -= len(self.quarantine[0])
            dropped += len(self.quarantine.pop(0))
        if dropped:
            self.memory_dropped_rows += dropped
            if not self._memory_drop_logged:
                self._memory_drop_logged = True
                log.error("edge buffer cannot commit and %d rows wait in memory (cap %d): dropping the oldest "
                          "lowest-priority rows (%d now; counted in buffer_dropped; logged once)",
                          self.max_pending_rows + dropped, self.max_pending_rows, dropped)
