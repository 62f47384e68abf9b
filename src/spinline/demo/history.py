"""A demo mill's past, written through the real path before the demo goes live.

``HistoryWriter`` steps the mill's own ``MillSim`` (the one the live simulator then keeps running,
so counters, fault progress and random streams carry on without a seam) from the start of the
history to now, and hands every block to the cloud the way the mill's edge would:

* readings: every device point of the site; power, energy, production and spindle speed (``FAST_POINTS``) at
  ``step_s`` (1 min), every other point every ``slow_step_s`` (15 min, on the quarter hour, so
  the other counters' hourly increases are exact too): a live edge polls faster, and the history
  is honest about being coarser (completeness counts the samples it lacks);
* vibration: a waveform snapshot of each channel every ``vib_every_s`` (8 h; every 2 h on a channel
  with a fault scheduled, so its health trend is seen falling; a live edge takes one every few
  minutes, and featurising 1 s at 25.6 kHz is the history's dearest step), featurised by the edge's own
  ``VibrationMap`` and scored by the edge's ``ScoringStage`` over ``EdgeScoring`` in the edge's data dir: the asset
  models commission on the healthy start of the history, and the live edge loads them;
* edge encoding: ``core.wire.encode`` signed with the edge's secret, one payload per
  ``payload_s`` of history, incarnation ``history`` (idempotency key ``edge:history:seq``, never
  one of the live buffer's), delivered to the cloud's ``IngestService`` (``ingest``) as the HTTP
  route does, and the edge's alarm events through ``EdgeEvents`` (``events``);
* the edge's own points every ``slow_step_s``: ``points_collected`` (the readings it sent so far)
  and ``uplink_state`` (connected), as the agent reports itself;
* an **offline episode**: the edge was down over ``offline`` (no reading, no snapshot, no edge
  point), a hole that the cloud's completeness reports as ``not_collected`` on the device points
  and on the edge's own, and that the counters bridge.

Rows go in time order, so the health pipeline's per-asset watermark sees them in order too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spinline.core.batch import Batch
from spinline.core.site import EDGE_MACHINE_ID, Site, point_key
from spinline.core.wire import MAX_EVENTS, Envelope, encode, encode_events
from spinline.sim.mill import MillSim

log = logging.getLogger(__name__)

#: The incarnation of the history's batches: their idempotency keys never meet the live buffer's.
HISTORY_INCARNATION = "history"
#: Points written at the full history resolution: power, energy and production (with the spindle
#: speed, whose hourly mean the efficiency's theoretical kg rests on: sampled every 15 min it
#: misses the cop-build speed profile and running efficiency drifts above 100 %).
FAST_POINTS = frozenset({"power", "energy", "output", "spindle_speed"})
HOUR_NS = 3600 * 10**9


#: The history's step (one minute): also the restarted demo's catch-up step (``replay``, the runner).
STEP_S = 60.0


@dataclass(frozen=True, slots=True)
class HistoryPlan:
    """What to write: [start, end) at these resolutions, with an optional edge outage."""

    start_ns: int
    end_ns: int
    step_s: float = STEP_S
    slow_step_s: float = 900.0
    vib_every_s: float = 8 * 3600.0
    vib_fault_every_s: float = 2 * 3600.0
    payload_s: float = 6 * 3600.0
    #: [start, end) during which the edge was down: nothing collected.
    offline: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.end_ns <= self.start_ns:
            raise ValueError("the history must end after it starts")
        if self.step_s <= 0 or self.slow_step_s < self.step_s:
            raise ValueError("step_s must be positive and slow_step_s at least step_s")


@dataclass
class HistoryReport:
    """What one mill's history put into the cloud."""

    mill: str
    rows: int = 0
    payloads: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    snapshots: int = 0
    raw_snapshots: int = 0
    events: int = 0
    offline: tuple[int, int] | None = None
    wall_s: float = 0.0


def offline_episode(start_ns: int, end_ns: int, hours: float = 3.0) -> tuple[int, int] | None:
    """A whole-hour outage about 60 % of the way through the history (None for a history under 12 h)."""
    if end_ns - start_ns < 12 * HOUR_NS:
        return None
    a = start_ns + (end_ns - start_ns) * 3 // 5
    a -= a % HOUR_NS
    return a, a + int(hours * HOUR_NS)


class HistoryWriter:
    """One mill's edge, back-filling: ``run(until_ns)`` may be called again to catch up with the clock.

    ``ingest(payloads)`` returns results with ``status`` and ``reason`` (``IngestService.handle_many``);
    ``events(payload)`` takes a signed edge-events payload (``EdgeEvents.handle``); ``snapshots(message)``
    a signed raw-snapshot upload (``EvidenceStore.handle``): at the end of each ``run`` the newest waveform
    of every vibration channel is sent as the edge's daily sample (``alarm`` on a channel with a fault
    of the schedule), so the machine view shows its spectra on the first page load.
    """

    def __init__(self, sim: MillSim, plan: HistoryPlan, *, edge_id: str, secret: bytes, edge_dir: Path,
                 ingest: Callable[[Sequence[bytes]], Sequence[Any]], events: Callable[[bytes], object] | None = None,
                 progress: Callable[[str], None] | None = None,
                 snapshots: Callable[[bytes], object] | None = None) -> None:
        if sim.now_ns != plan.start_ns:
            raise ValueError("the simulator must stand at the start of the history")
        self.sim, self.plan, self.edge_id, self.secret = sim, plan, edge_id, secret
        self.ingest, self.events, self.progress, self.snapshots = ingest, events, progress, snapshots
        self.mill = sim.mill.id
        self.report = HistoryReport(self.mill, offline=plan.offline)
        pts = sim.points
        self._fast = np.array([p.point.name in FAST_POINTS for p in pts])
        self._edge_keys = np.array([point_key(f"{self.mill}/{EDGE_MACHINE_ID}/{n}")
                                    for n in ("points_collected", "uplink_state")], dtype=np.int64)
        self._collected = 0
        self._seq = 0
        self._pending: list[Batch] = []
        self._pending_from = plan.start_ns
        self._vib = _Vibration(sim.site, sim, edge_dir, plan)
        #: the ``until`` of every ``run``: a restarted demo replays them (``replay``) to resume the counters
        self.untils: list[int] = []

    # --- the loop -------------------------------------------------------------------------------

    def run(self, until_ns: int | None = None) -> HistoryReport:
        """Step and send everything up to ``until_ns`` (default: the plan's end)."""
        t0 = time.perf_counter()
        until = self.plan.end_ns if until_ns is None else until_ns
        self.untils.append(until)
        step_ns = int(self.plan.step_s * 1e9)
        chunk = max(1, int(min(self._vib.cadence_s, self.plan.payload_s) // self.plan.step_s))
        next_note = self.sim.now_ns + 86400 * 10**9 * 5
        while until - self.sim.now_ns >= step_ns:
            steps = min(chunk, (until - self.sim.now_ns) // step_ns)
            self._block(int(steps), self.plan.step_s)
            if self.progress is not None and self.sim.now_ns >= next_note:
                next_note += 86400 * 10**9 * 5
                days = (self.sim.now_ns - self.plan.start_ns) / 86400e9
                self.progress(f"{self.mill}: {days:.0f} days of history, {self.report.rows:,} rows")
        rest = (until - self.sim.now_ns) / 1e9
        if rest >= 0.5:                  # up to ``until`` exactly: the live simulator goes on from there
            self._block(1, rest)
        self._flush()
        self._send_events()
        self._send_snapshots()
        self._vib.persist()
        self.report.wall_s += time.perf_counter() - t0
        return self.report

    def _block(self, steps: int, dt_s: float) -> None:
        ts, values, quality = self.sim.advance(steps, dt_s)
        ts_i = ts.astype(np.int64)
        slow_ns = int(self.plan.slow_step_s * 1e9)
        slow_row = (ts_i - self.plan.start_ns) % slow_ns < int(dt_s * 1e9)
        keep = self._fast[None, :] | slow_row[:, None]
        off = self.plan.offline
        up = np.ones(len(ts_i), dtype=bool) if off is None else ~((ts_i >= off[0]) & (ts_i < off[1]))
        keep &= up[:, None]
        r, c = np.nonzero(keep)
        batches = [Batch.of(self.sim.keys[c], ts_i[r], values[r, c], quality[r, c])] if len(r) else []
        self._collected += len(r)
        own = np.flatnonzero(slow_row & up)
        if len(own):
            per_row = np.cumsum(keep.sum(axis=1))           # readings sent up to each step
            vals = np.column_stack([self._collected - per_row[-1] + per_row[own], np.zeros(len(own))])
            batches.append(Batch.of(np.tile(self._edge_keys, len(own)), np.repeat(ts_i[own], 2), vals.ravel()))
        if up[-1]:
            batches += self._vib.due(int(ts_i[-1]))
        self.report.snapshots = self._vib.snapshots
        self._pending += batches
        if ts_i[-1] - self._pending_from >= int(self.plan.payload_s * 1e9):
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        b = Batch.concat(self._pending)
        self._pending = []
        self._pending_from = self.sim.now_ns
        if not len(b):
            return
        self._seq += 1
        env = Envelope(edge=self.edge_id, mill=self.mill, seq=self._seq, batch=b, created_ns=time.time_ns(),
                       kind="backlog", incarnation=HISTORY_INCARNATION)
        payload = encode(env, key=self.secret)
        self.report.rows += len(b)
        self.report.payloads += 1
        for res in self.ingest([payload]):
            if res.status == "stored":
                self.report.stored += res.stored
            elif res.status == "duplicate":
                self.report.duplicates += 1
            else:
                self.report.rejected[str(res.reason)] = self.report.rejected.get(str(res.reason), 0) + 1
                log.warning("history batch of %s refused: %s %s", self.mill, res.reason, res.detail)
        self._send_events()

    def _send_snapshots(self) -> None:
        """The newest raw waveform of each channel, signed as the edge uploads it (once per snapshot)."""
        if self.snapshots is None:
            return
        from spinline.core import wire
        from spinline.edge.evidence import RawSnapshot, encode_snapshot

        for i, ((machine, channel), (ts_ns, fs, samples, faulted)) in enumerate(sorted(self._vib.last.items())):
            if self._vib.sent.get((machine, channel)) == ts_ns:
                continue
            raw = RawSnapshot(f"{self.mill}/{machine}/{channel}", ts_ns, fs, samples)
            body = encode_snapshot(raw, "alarm" if faulted else "sample", self.edge_id)
            # Ids from the snapshot's time (ms) and the channel: unique per edge (channels are read at the
            # same instant), far above the live edge's own counter.
            ident = ts_ns // 10**6 * 1000 + i
            answer = self.snapshots(wire.encode_snapshot_upload(self.edge_id, self.mill, ident, body, key=self.secret))
            self._vib.sent[(machine, channel)] = ts_ns
            refused = getattr(answer[1], "rejected", ()) if isinstance(answer, tuple) else ()
            for _, why in refused:
                key = f"snapshot {why}"
                self.report.rejected[key] = self.report.rejected.get(key, 0) + 1
                log.warning("history snapshot of %s/%s/%s refused: %s", self.mill, machine, channel, why)
            if not refused:
                self.report.raw_snapshots += 1

    def _send_events(self) -> None:
        evs = self._vib.take_events()
        if not evs or self.events is None:
            return
        for i in range(0, len(evs), MAX_EVENTS):
            self.events(encode_events(self.edge_id, self.mill, evs[i:i + MAX_EVENTS], key=self.secret))
        self.report.events += len(evs)


def replay(sim: MillSim, start_ns: int, untils: Sequence[int], step_s: float = STEP_S) -> None:
    """Step ``sim`` (standing at ``start_ns``) exactly as ``HistoryWriter.run`` stepped it to each of ``untils``.

    The simulator is deterministic for a given sequence of step lengths (however they are blocked),
    so a restarted demo's simulator reaches the end of the history with the very counters the cloud
    stored. A simulator fast-forwarded in coarse steps instead drifts by a few per cent over weeks:
    at the restart it read hours of output ahead of the cloud, booked into one minute.
    """
    if sim.now_ns != start_ns:
        raise ValueError("the simulator must stand at the start of the history")
    step_ns = int(step_s * 1e9)
    day = int(86400 // step_s)
    for until in untils:
        while until - sim.now_ns >= step_ns:
            sim.advance(int(min(day, (until - sim.now_ns) // step_ns)), step_s)
        rest = (until - sim.now_ns) / 1e9
        if rest >= 0.5:
            sim.advance(1, rest)


class _Vibration:
    """The edge's vibration path for the history: snapshot -> ``VibrationMap`` features -> ``EdgeScoring``."""

    def __init__(self, site: Site, sim: MillSim, edge_dir: Path, plan: HistoryPlan) -> None:
        from spinline.connectors.mqtt.vibration import VIB_TOPIC, VibrationMap

        self.sim = sim
        machines = [m for m in sim.machines.values() if m.vibration is not None]
        self.snapshots = 0
        #: the newest waveform per (machine, channel): ts_ns, fs_hz, samples, whether a fault is scheduled on it
        self.last: dict[tuple[str, str], tuple[int, float, np.ndarray, bool]] = {}
        self.sent: dict[tuple[str, str], int] = {}
        self._faulted: set[tuple[str, str]] = set()
        self.cadence_s = plan.vib_every_s
        self.assets: list[tuple[str, str, str, int]] = []   # machine, channel, topic, every_ns
        self.next_ns: list[int] = []
        self.scoring: Any = None
        if not machines:
            return
        from spinline.edge.scoring import EdgeScoring
        from spinline.edge.scoring_stage import ScoringStage
        from spinline.health.features import featurize

        iso = {m.id: (site.templates[m.template].iso_class if m.template in site.templates else None) or "I"
               for m in machines}
        self.scoring = EdgeScoring(sim.mill.id, machines, iso, edge_dir)
        self.scoring.load()
        self._scored: list[Batch] = []
        self.stage = ScoringStage(self.scoring, sim.mill.id, self._scored.append)
        self.map = VibrationMap(sim.mill.id, machines, iso, featurizer=featurize, sink=self.stage.submit)
        faulted = {(f.machine, f.channel) for f in sim.faults.faults}
        for m in machines:
            assert m.vibration is not None
            for i, ch in enumerate(m.vibration.channels):
                hit = (m.id, ch.name) in faulted or (i == 0 and (m.id, None) in faulted)
                every = plan.vib_fault_every_s if hit else plan.vib_every_s
                if hit:
                    self._faulted.add((m.id, ch.name))
                self.cadence_s = min(self.cadence_s, every)
                self.assets.append((m.id, ch.name, VIB_TOPIC.format(mill=sim.mill.id, machine=m.id, channel=ch.name),
                                    int(every * 1e9)))
                self.next_ns.append(plan.start_ns + int(every * 1e9))

    def due(self, now_ns: int) -> list[Batch]:
        """Feature rows of every channel whose snapshot is due at ``now_ns`` (the simulator's time)."""
        from spinline.connectors.mqtt.vibration import Snapshot

        out: list[Batch] = []
        for i, (machine, channel, topic, every) in enumerate(self.assets):
            if now_ns < self.next_ns[i]:
                continue
            self.next_ns[i] += every * max(1, math.ceil((now_ns - self.next_ns[i] + 1) / every))
            samples, fs, rpm = self.sim.vibration_snapshot(machine, channel)
            snap = Snapshot(now_ns, fs, rpm, samples.astype(np.float64))
            self.last[(machine, channel)] = (now_ns, float(fs), snap.samples, (machine, channel) in self._faulted)
            out.append(self.map.features_of(topic, snap))
            self.snapshots += 1
        self.stage.drain()            # the edge's scoring stage: anomaly score and health index, same timestamps
        out += self._scored
        self._scored.clear()
        return out

    def take_events(self) -> list[Any]:
        return self.scoring.take_events() if self.scoring is not None else []

    def persist(self) -> None:
        """The asset models and alarm states, where the live edge loads them."""
        if self.scoring is not None:
            self.scoring.persist()
