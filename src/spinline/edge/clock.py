"""Device clock checks: a device timestamp far from the edge's clock is a clock jump.

Devices that stamp their own data (OPC UA SourceTimestamp, MQTT JSON ``ts``) can have clocks
that jump (a PLC reset to 2000-01-01, a lost RTC battery, a wrong time zone). The edge's clock is
NTP-disciplined, so a device timestamp more than ``max_skew_s`` away from the time the edge
received the value is implausible. Such rows are never stored silently:

* policy ``correct`` (default): the timestamp is replaced by the edge receipt time, the quality
  is lowered to UNCERTAIN, and the batch meta records how many rows were corrected and the skew;
* policy ``quarantine``: the rows are kept out of the uplink in the buffer's quarantine table.

Each device's entry into the jumped state is one ``clock_skew_events`` event, logged once; the
return to plausible timestamps is logged once too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from spinline.core.batch import Batch, Quality

log = logging.getLogger(__name__)

ClockPolicy = Literal["correct", "quarantine"]


@dataclass(frozen=True, slots=True)
class ClockVerdict:
    good: Batch                 # rows to store (corrected ones included under ``correct``)
    quarantined: Batch          # rows to keep out (``quarantine`` policy)
    corrected: int              # rows whose timestamp was replaced
    max_skew_s: float           # largest |device - edge| seen in this batch, seconds
    new_event: bool             # this device just entered the jumped state


@dataclass(slots=True)
class ClockGuard:
    """Per-device clock plausibility (pure apart from the log-once messages)."""

    max_skew_s: float = 120.0
    policy: ClockPolicy = "correct"
    events: int = 0
    _jumped: dict[str, bool] = field(default_factory=dict)

    def is_jumped(self, device: str) -> bool:
        """Whether ``device``'s clock was last seen implausible (its next plausible rows log the recovery)."""
        return self._jumped.get(device, False)

    def any_jumped(self) -> bool:
        """Whether any device's clock is in the jumped state (cheap: checked on every batch)."""
        return any(self._jumped.values())

    def check(self, device: str, batch: Batch, received_ns: int) -> ClockVerdict:
        if not len(batch):
            return ClockVerdict(batch, batch, 0, 0.0, False)
        skew = (batch.ts_ns - np.int64(received_ns)).astype(np.float64) / 1e9
        bad = np.abs(skew) > self.max_skew_s
        worst = float(np.max(np.abs(skew)))
        was = self._jumped.get(device, False)
        n_bad = int(bad.sum())
        new_event = False
        if n_bad and not was:
            self.events += 1
            new_event = True
            self._jumped[device] = True
            log.warning("device %s clock is off by %.0f s (beyond %.0f s): %s", device, float(skew[bad][0]),
                        self.max_skew_s, "timestamps corrected to edge receipt time" if self.policy == "correct"
                        else "rows quarantined")
        elif not n_bad and was:
            self._jumped[device] = False
            log.info("device %s clock is plausible again", device)
        if not n_bad:
            return ClockVerdict(batch, batch.take(slice(0, 0)), 0, worst, False)
        if self.policy == "quarantine":
            return ClockVerdict(batch.take(~bad), batch.take(bad), 0, worst, new_event)
        ts = batch.ts_ns.copy()
        ts[bad] = received_ns
        q = batch.quality.copy()
        q[bad] = np.maximum(q[bad], np.uint8(Quality.UNCERTAIN))
        fixed = Batch(batch.point, ts, batch.value, q, batch.seq)
        return ClockVerdict(fixed, batch.take(slice(0, 0)), n_bad, worst, new_event)
