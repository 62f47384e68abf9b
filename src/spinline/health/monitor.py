"""One asset's health pipeline: baseline -> anomaly score -> health index -> diagnosis -> alarms.

``AssetMonitor`` is what the edge (and the simulator check) runs per vibration channel. It learns
its baseline from the first ``baseline_n`` snapshots (assumed healthy, e.g. after commissioning or
a repair), then freezes it: a model that kept learning would slowly absorb a developing fault
and call it normal. ``rebaseline()`` starts a new baseline after maintenance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from spinline.health.alarms import Alarm, AlarmEngine, Rule, default_rules
from spinline.health.anomaly import BaselineDetector, vibration_detector
from spinline.health.diagnosis import Diagnosis, diagnose
from spinline.health.health_index import HealthIndex, health_index
from spinline.health.rul import RulEstimate, estimate_rul


@dataclass(frozen=True, slots=True)
class AssetStatus:
    asset: str
    at: datetime
    learning: bool
    anomaly_score: float
    health: HealthIndex
    diagnosis: Diagnosis | None
    raised: tuple[Alarm, ...] = field(default_factory=tuple)


class AssetMonitor:
    """Per-asset streaming health pipeline (see module docstring)."""

    def __init__(self, asset: str, *, machine_class: str = "I", far: float = 0.001, baseline_n: int = 24,
                 speed_key: str | None = "shaft_hz", defect_hz: Mapping[str, float] | None = None,
                 rules: list[Rule] | None = None, engine: AlarmEngine | None = None, seed: int = 0,
                 nominal_speed: float | None = None) -> None:
        self.asset = asset
        self.machine_class = machine_class
        self.far = far
        self.baseline_n = baseline_n
        self.speed_key = speed_key
        self.defect_hz = dict(defect_hz or {})
        self.seed = seed
        self.nominal_speed = nominal_speed
        self.engine = engine or AlarmEngine(rules if rules is not None else default_rules())
        self.detector: BaselineDetector = vibration_detector(far=far, speed_key=speed_key, seed=seed,
                                                             min_samples=min(24, baseline_n))
        self._baseline_rows: list[dict[str, float]] = []
        self.baseline: dict[str, float] | None = None
        self.history: list[tuple[datetime, float]] = []

    @property
    def learning(self) -> bool:
        return self.baseline is None

    def rebaseline(self) -> None:
        self.detector = self.detector.clone()
        self._baseline_rows = []
        self.baseline = None

    def update(self, at: datetime, x: Mapping[str, float]) -> AssetStatus | None:
        """Feed one snapshot's features (``featurize(..., extended=True)`` for one channel, plus the speed).

        Returns None when the machine is not running (speed 0): a stopped machine's vibration is
        sensor noise, and neither a baseline sample nor evidence of anything.
        """
        if self.speed_key is not None:
            spd = x.get(self.speed_key)
            if spd is not None and not (math.isfinite(spd) and spd > 0):
                return None
            if spd is not None and self.nominal_speed:
                x = {**x, "speed_deviation_pct": (spd - self.nominal_speed) / self.nominal_speed * 100.0}
        vel = float(x.get("velocity_rms", math.nan))
        if self.baseline is None:
            self.detector.learn_one(x)
            self._baseline_rows.append({k: float(v) for k, v in x.items()})
            if len(self._baseline_rows) >= self.baseline_n:
                keys = {k for r in self._baseline_rows for k in r}
                self.baseline = {k: float(np.nanmedian([r.get(k, math.nan) for r in self._baseline_rows]))
                                 for k in keys}
            hi = health_index(velocity_rms=vel, machine_class=self.machine_class)
            return AssetStatus(self.asset, at, True, 0.0, hi, None)
        score = self.detector.score_one(x)
        hi = health_index(anomaly_score=score, velocity_rms=vel, machine_class=self.machine_class)
        self.history.append((at, hi.value))
        diag: Diagnosis | None = None
        evidence: dict[str, object] = {"health": hi.explain()}
        if score >= 1.0 or x.get("iso_zone", 0) >= 2:
            shaft = x.get(self.speed_key) if self.speed_key else None
            diag = diagnose(x, self.baseline, defect_hz=self.defect_hz, shaft_hz=shaft)
            evidence.update(fault=diag.fault, confidence=diag.confidence, explain=diag.explain())
            top = sorted(self.detector.explain_one(x).items(), key=lambda kv: -abs(kv[1]))[:3]
            evidence["moved"] = {k: round(v, 1) for k, v in top}
        values = {"anomaly_score": score, "iso_zone": float(x.get("iso_zone", math.nan)), "health_index": hi.value,
                  "iso_zone_baseline": float(self.baseline.get("iso_zone", -math.inf)),
                  **{k: float(v) for k, v in x.items() if k not in ("anomaly_score", "health_index")}}
        raised = self.engine.evaluate(self.asset, at, values, evidence)
        return AssetStatus(self.asset, at, False, score, hi, diag, tuple(raised))

    def rul(self, *, failure_hi: float = 20.0, confidence: float = 0.9) -> RulEstimate:
        """Remaining useful life from the health-index history since the baseline."""
        t = [a.timestamp() for a, _ in self.history]
        return estimate_rul(t, [h for _, h in self.history], failure_hi=failure_hi, confidence=confidence)
