"""Scoring beside the connectors: vibration features in, ``anomaly_score`` / ``health_index`` rows out.

The MQTT connector featurises a snapshot and hands its features (``ChannelFeatures``) to
``ScoringStage.submit`` — a queue append, so a slow model never holds up the connector's message
loop. The stage's own task scores them per asset (``EdgeScoring``) and hands the two points, at the
snapshot's timestamp, to the collector like any connector's rows. At each flush ``commit`` persists
changed model slots, commits the alarm/model events to the buffer and then the alarm states, and
returns the model version behind each asset's scores for the batches' meta.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np

from spinline.connectors.mqtt.vibration import ChannelFeatures
from spinline.core import wire
from spinline.core.batch import Batch, Quality
from spinline.core.site import point_key

from .buffer_io import AsyncBuffer
from .scoring import EdgeScoring

log = logging.getLogger(__name__)
#: The model outputs, in the order of ``core.site.VIB_FEATURES``.
OUTPUTS = ("anomaly_score", "health_index")


class FeatureScorer(Protocol):
    """Scores one snapshot of one channel: ``EdgeScoring``, or a wrapper of it."""

    def score(self, machine: str, channel: str, ts_ns: int, shaft_hz: float,
              features: Mapping[str, float]) -> Mapping[str, float]: ...


class ScoringStage:
    def __init__(self, scoring: EdgeScoring, mill: str, emit: Callable[[Batch], None],
                 scorer: FeatureScorer | None = None) -> None:
        self.scoring = scoring
        #: What scores a snapshot: the scoring itself, or a wrapper around it (``updates.ObservedScorer``
        #: counts each snapshot as evidence for the model version that scored it).
        self.scorer: FeatureScorer = scorer if scorer is not None else scoring
        self.mill = mill
        self.emit = emit
        self._queue: deque[ChannelFeatures] = deque()
        self._wake = asyncio.Event()
        self._pending_events: list[wire.EdgeEvent] = []
        #: Called with every ``alarm_raised`` event (the agent asks for its raw snapshot, with its diagnosis).
        self.on_alarm: Callable[[wire.EdgeEvent], None] | None = None
        #: Called with an asset whose last open alarm cleared (its alarm episode is over).
        self.on_episode_over: Callable[[str], None] | None = None

    # --- in (the connectors' sink) -----------------------------------------------------------------

    def submit(self, features: ChannelFeatures) -> None:
        self._queue.append(features)
        self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    # --- scoring -----------------------------------------------------------------------------------

    def score(self, f: ChannelFeatures) -> Batch:
        """The model outputs of one snapshot as rows (empty: machine stopped, no model, or a failure)."""
        out = self.scorer.score(f.machine, f.channel, f.ts_ns, f.shaft_hz, f.features)
        names = [n for n in OUTPUTS if n in out]
        if not names:
            return Batch.empty()
        keys = np.asarray([point_key(f"{self.mill}/{f.machine}/vib_{f.channel}_{n}") for n in names], dtype=np.int64)
        v = np.asarray([out[n] for n in names], dtype=np.float64)
        q = np.where(np.isfinite(v), np.uint8(Quality.GOOD), np.uint8(Quality.BAD)).astype(np.uint8)
        return Batch(keys, np.full(len(keys), f.ts_ns, dtype=np.int64), v, q)

    def drain(self) -> int:
        """Score everything queued now (sync); returns snapshots scored. Used on shutdown."""
        n = 0
        while self._queue:
            self.emit(self.score(self._queue.popleft()))
            n += 1
        return n

    async def run(self) -> None:
        """Score queued snapshots as they come, yielding to the loop between them."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                self.emit(self.score(self._queue.popleft()))
                await asyncio.sleep(0)

    # --- out (at each flush) -----------------------------------------------------------------------

    async def commit(self, buffer: AsyncBuffer, on_events: Callable[[], None]) -> dict[str, str]:
        """Persist changed model slots, commit the scoring events (kept for the next try on failure), then
        persist the alarm states: a crash in between re-raises an alarm after the restart, never loses one.
        Returns the model version behind each asset's scores since the last commit."""
        sc = self.scoring
        # What to write is taken here, on the loop where the models change; only the writing is threaded.
        if records := sc.take_records():
            try:
                await buffer.call(sc.write_records, records)
            except BaseException:
                sc.restore_dirty(records=records)
                raise
        new = sc.take_events()
        for e in new:
            if e.kind == "alarm_raised" and self.on_alarm is not None:
                self.on_alarm(e)
            elif e.kind == "alarm_cleared" and self.on_episode_over is not None and not sc.open_alarms(e.asset):
                self.on_episode_over(e.asset)
        self._pending_events += new
        if self._pending_events:
            await buffer.append_events(self._pending_events)
            self._pending_events = []
            on_events()
        if alarms := sc.take_alarm_states():
            try:
                await buffer.call(sc.write_alarm_states, alarms)
            except BaseException:
                sc.restore_dirty(alarms=alarms)
                raise
        return sc.take_versions()
