"""Edge-side per-asset scoring: vibration features -> anomaly score, health index, alarm events.

One ``AssetScorer`` per vibration channel (the asset, tagged ``{mill}/{machine}/{channel}``) runs
``spinline.health.monitor.AssetMonitor`` on the features the vibration connector computes from each
snapshot, and hands back two more feature values for the same timestamp:

* ``anomaly_score`` — calibrated against the asset's own healthy baseline (1 = alarm level); NaN
  (quality BAD) while the asset is still commissioning, because there is no baseline to compare with;
* ``health_index`` — 0-100 (velocity severity alone while commissioning).

Alarm transitions and model changes become typed ``spinline.core.wire.EdgeEvent`` records
(``alarm_raised`` with the diagnosed fault type and its evidence, ``alarm_cleared``,
``model_commissioned``, ``model_replaced``), each stamped with the version of the model that
produced it. The agent commits them to the durable buffer's ``events`` table on its next flush and
the forwarder sends them upstream like batches: nothing is lost offline.

The model of each asset lives in a ``spinline.edge.models.ModelSlot`` (``models/`` in the data dir):

* **commissioning** (``ScoringConfig.commissioning_n`` running snapshots, assumed healthy): every
  learned row is saved with the slot, so a restart (even ``kill -9``) continues the count;
* **frozen**: the fitted detector and the baseline medians, version ``local-<params hash>``. A
  restarted edge loads it and scores at once, without re-learning;
* **replaced** by the model registry (later wave) through ``ModelSlot.replace``; the scorer
  notices the slot's new generation on the asset's next snapshot and swaps the model, keeping the
  asset's alarm state.

``score`` runs in the event loop and does no I/O; ``load`` and ``persist`` (slot files, fsync'd)
are called by the agent off the loop.

Known limits: open alarms are not persisted (after a restart a fault still present is raised again,
as a new alarm); a stopped machine (shaft speed 0) gives no score at all.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spinline.core.site import Machine, MachineType
from spinline.core.wire import EdgeEvent, EventSeverity
from spinline.health.alarms import Alarm, AlarmEngine, default_rules
from spinline.health.anomaly import DETECTORS, BaselineDetector
from spinline.health.features import bearing_frequencies
from spinline.health.monitor import AssetMonitor, AssetStatus

from .models import MODELS_DIR, ModelRecord, ModelRejected, ModelSlot, ModelVerifier, content_version

log = logging.getLogger(__name__)

#: Model kind of the edge's own models: the AssetMonitor pipeline around a BaselineDetector.
KIND_PREFIX = "asset_monitor/"
COMMISSIONING = "commissioning"


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    #: Running snapshots learned (assumed healthy) before an asset's baseline freezes.
    commissioning_n: int = 24
    #: False-alarm rate of the anomaly score on healthy data.
    far: float = 0.001
    #: Health-index history kept per asset (for the RUL trend); older points are dropped.
    history_max: int = 5000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.commissioning_n < 8:
            raise ValueError("commissioning_n must be at least 8 snapshots (half of them calibrate the threshold)")


def asset_tag(mill: str, machine: str, channel: str) -> str:
    return f"{mill}/{machine}/{channel}"


def validate_record(rec: ModelRecord) -> None:
    """The slot's validation hook: can the scorer run these params? Raises ValueError/KeyError/TypeError."""
    if not rec.kind.startswith(KIND_PREFIX) or rec.kind[len(KIND_PREFIX):] not in DETECTORS:
        raise ValueError(f"unknown model kind {rec.kind!r}")
    if rec.state == "commissioning":
        rows = rec.params["rows"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise TypeError("commissioning rows must be a list of objects")
        return
    det = BaselineDetector.from_dict(rec.params["detector"])
    if det.kind != rec.kind[len(KIND_PREFIX):]:
        raise ValueError(f"detector kind {det.kind!r} does not match model kind {rec.kind!r}")
    if not math.isfinite(det.threshold):
        raise ValueError("the detector is not fitted")
    base = rec.params["baseline"]
    if not isinstance(base, dict) or not base:
        raise ValueError("a frozen model needs its baseline medians")


class AssetScorer:
    """The scoring state of one asset (see module docstring)."""

    def __init__(self, mill: str, machine: Machine, channel: str, iso_class: str, data_dir: Path,
                 config: ScoringConfig, verifier: ModelVerifier | None = None) -> None:
        self.asset = asset_tag(mill, machine.id, channel)
        self.config = config
        ch = next(c for c in machine.vibration.channels if c.name == channel) if machine.vibration else None
        if ch is None:
            raise ValueError(f"{machine.id} has no vibration channel {channel!r}")
        bearing = next((b for b in machine.bearings if b.name == ch.bearing), None)
        self.defect_hz = ({k: float(v) for k, v in bearing_frequencies(bearing, ch.shaft_rpm / 60.0).items()}
                          if bearing else {})
        # Ring frames change speed by design (spinning plan, cop build): no nominal-speed rule there.
        self.nominal_hz = None if machine.type == MachineType.RING_FRAME else ch.shaft_rpm / 60.0
        self.iso_class = iso_class
        self.engine = AlarmEngine(default_rules())
        self.slot = ModelSlot(self.asset, data_dir / MODELS_DIR, verifier=verifier, validate=validate_record)
        self.monitor = self._new_monitor()
        self.rows: list[dict[str, float]] = []
        self.dirty = False
        self._generation = 0
        self.events: list[EdgeEvent] = []

    # --- model lifecycle -------------------------------------------------------------------------

    def _new_monitor(self) -> AssetMonitor:
        return AssetMonitor(self.asset, machine_class=self.iso_class, far=self.config.far,
                            baseline_n=self.config.commissioning_n, defect_hz=self.defect_hz,
                            nominal_speed=self.nominal_hz, engine=self.engine, seed=self.config.seed)

    @property
    def kind(self) -> str:
        return KIND_PREFIX + self.monitor.detector.kind

    @property
    def version(self) -> str:
        rec = self.slot.record
        return rec.version if rec is not None and rec.state == "frozen" else COMMISSIONING

    @property
    def state(self) -> str:
        rec = self.slot.record
        return rec.state if rec is not None else "commissioning"

    def load(self) -> None:
        """Restore the slot from disk (I/O): a frozen model scores at once, a commissioning one goes on."""
        rec = self.slot.load()
        self._generation = self.slot.generation
        if rec is None:
            return
        if rec.state == "frozen":
            self._install(rec)
            log.info("%s: loaded model %s %s (%s)", self.asset, rec.kind, rec.version, rec.source)
            return
        self.rows = [{k: float(v) for k, v in r.items()} for r in rec.params["rows"]]
        at = datetime.now(UTC)
        for r in self.rows:
            self.monitor.update(at, r)
        log.info("%s: commissioning resumed at %d/%d snapshots", self.asset, len(self.rows),
                 self.config.commissioning_n)
        if self.monitor.baseline is not None:   # commissioning_n lowered since: freeze now
            self._freeze(int(at.timestamp() * 1e9))

    def _install(self, rec: ModelRecord) -> None:
        mon = self._new_monitor()
        mon.detector = BaselineDetector.from_dict(rec.params["detector"])
        mon.baseline = {k: float(v) for k, v in rec.params["baseline"].items()}
        self.monitor = mon
        self.rows = []

    def _freeze(self, ts_ns: int) -> None:
        assert self.monitor.baseline is not None
        params: dict[str, Any] = {"detector": self.monitor.detector.to_dict(),
                                  "baseline": {k: v for k, v in self.monitor.baseline.items() if math.isfinite(v)},
                                  "commissioning_n": len(self.rows), "iso_class": self.iso_class}
        rec = ModelRecord(asset=self.asset, kind=self.kind, version=content_version("local", params), params=params,
                          state="frozen", source="local")
        self.slot.record = rec
        self.rows = []
        self.dirty = True
        self.events.append(EdgeEvent(asset=self.asset, ts_ns=ts_ns, kind="model_commissioned", severity="info",
                                     model_version=rec.version,
                                     evidence=f"baseline frozen after {params['commissioning_n']} running snapshots"))
        log.info("%s: commissioning done, model %s frozen", self.asset, rec.version)

    def _check_replaced(self, ts_ns: int) -> None:
        if self.slot.generation == self._generation:
            return
        self._generation = self.slot.generation
        rec = self.slot.record
        if rec is None or rec.state != "frozen":
            return
        self._install(rec)
        self.events.append(EdgeEvent(asset=self.asset, ts_ns=ts_ns, kind="model_replaced", severity="info",
                                     model_version=rec.version,
                                     evidence=f"{rec.kind} {rec.version} from the {rec.source}"))

    def persist(self) -> None:
        """Write the slot if it changed (I/O; fsync'd, atomic)."""
        if not self.dirty:
            return
        rec = self.slot.record
        if rec is None or rec.state == "commissioning":
            rec = ModelRecord(asset=self.asset, kind=self.kind, version=COMMISSIONING,
                              params={"rows": list(self.rows)}, state="commissioning", source="local")
        self.slot.save(rec)
        self.dirty = False

    # --- scoring ---------------------------------------------------------------------------------

    def score(self, ts_ns: int, features: Mapping[str, float]) -> dict[str, float]:
        """``anomaly_score`` and ``health_index`` for one snapshot; {} when the machine is stopped."""
        self._check_replaced(ts_ns)
        at = datetime.fromtimestamp(ts_ns / 1e9, UTC)
        x = {k: float(v) for k, v in features.items()}
        was_open = {id(a): a for a in self.engine.open_alarms(self.asset)}
        st = self.monitor.update(at, x)
        if st is None:
            return {}
        if st.learning:
            self.rows.append(x)
            self.dirty = True
            if self.monitor.baseline is not None:
                self._freeze(ts_ns)
            return {"anomaly_score": math.nan, "health_index": st.health.value}
        self._events_of(st, ts_ns, was_open)
        if len(self.monitor.history) > self.config.history_max:
            del self.monitor.history[:len(self.monitor.history) - self.config.history_max]
        if len(self.engine.alarms) > 100:
            self.engine.alarms = [a for a in self.engine.alarms if a.is_open]
        return {"anomaly_score": st.anomaly_score, "health_index": st.health.value}

    def _events_of(self, st: AssetStatus, ts_ns: int, was_open: Mapping[int, Alarm]) -> None:
        version = self.version
        for a in st.raised:
            diag = st.diagnosis
            evidence = diag.explain() if diag is not None else a.message
            self.events.append(EdgeEvent(
                asset=self.asset, ts_ns=ts_ns, kind="alarm_raised", severity=_severity(a), model_version=version,
                rule=a.rule, value=a.value, fault=diag.fault if diag is not None else None,
                confidence=diag.confidence if diag is not None else None,
                evidence=f"{evidence}\n{st.health.explain()}", alarm_key=_alarm_key(self.asset, a)))
        now_open = {id(a) for a in self.engine.open_alarms(self.asset)}
        for k, a in was_open.items():
            if k not in now_open:
                self.events.append(EdgeEvent(
                    asset=self.asset, ts_ns=ts_ns, kind="alarm_cleared", severity=_severity(a), model_version=version,
                    rule=a.rule, value=st.anomaly_score if a.rule == "anomaly" else None,
                    evidence=f"{a.rule} back to normal after {a.count} sample(s); {st.health.explain()}",
                    alarm_key=_alarm_key(self.asset, a)))


def _severity(a: Alarm) -> EventSeverity:
    v = a.severity.value
    return v if v in ("info", "warning", "critical") else "warning"  # type: ignore[return-value]


def _alarm_key(asset: str, a: Alarm) -> str:
    return f"{asset}:{a.rule}:{int(a.raised_at.timestamp() * 1e9)}"


class EdgeScoring:
    """All assets of one edge; the vibration connector's ``FeatureScorer``."""

    def __init__(self, mill: str, machines: Sequence[Machine], iso_class: Mapping[str, str], data_dir: str | Path,
                 config: ScoringConfig | None = None, verifier: ModelVerifier | None = None) -> None:
        self.mill = mill
        self.config = config or ScoringConfig()
        self.assets: dict[tuple[str, str], AssetScorer] = {}
        for m in machines:
            if m.vibration is None:
                continue
            for ch in m.vibration.channels:
                self.assets[(m.id, ch.name)] = AssetScorer(mill, m, ch.name, iso_class.get(m.id, "I"), Path(data_dir),
                                                           self.config, verifier)
        self._versions: dict[str, str] = {}
        self.errors = 0

    def load(self) -> None:
        """Restore every slot (I/O; call off the event loop)."""
        for a in self.assets.values():
            a.load()

    def score(self, machine: str, channel: str, ts_ns: int, shaft_hz: float,
              features: Mapping[str, float]) -> Mapping[str, float]:
        a = self.assets.get((machine, channel))
        if a is None:
            return {}
        try:
            out = a.score(ts_ns, {**features, "shaft_hz": shaft_hz})
        except (ValueError, FloatingPointError, ArithmeticError) as exc:
            # A numerical failure of one asset's model must not stop the features of all the others.
            self.errors += 1
            log.warning("%s: scoring failed (%r); features go up without a score", a.asset, exc)
            return {}
        if out:
            self._versions[a.asset] = a.version
        return out

    def slot(self, machine: str, channel: str) -> ModelSlot:
        """The registry's handle on an asset's model (``slot(...).replace(version, params, signature)``)."""
        return self.assets[(machine, channel)].slot

    def replace(self, machine: str, channel: str, version: str, params: dict[str, Any],
                signature: str | None = None, *, kind: str | None = None) -> ModelRecord:
        """Install a registry model (I/O). Raises ``ModelRejected`` / ``StorageError``."""
        a = self.assets.get((machine, channel))
        if a is None:
            raise ModelRejected(f"no vibration channel {machine}/{channel} on this edge")
        return a.slot.replace(version, params, signature, kind=kind or a.kind)

    def take_events(self) -> list[EdgeEvent]:
        out: list[EdgeEvent] = []
        for a in self.assets.values():
            if a.events:
                out += a.events
                a.events = []
        return out

    def take_versions(self) -> dict[str, str]:
        """Model version per asset scored since the last call (travels in the batches' meta)."""
        out, self._versions = self._versions, {}
        return out

    def dirty(self) -> bool:
        return any(a.dirty for a in self.assets.values())

    def persist(self) -> None:
        """Write changed slots (I/O; call off the event loop)."""
        for a in self.assets.values():
            a.persist()

    def snapshot(self) -> dict[str, Any]:
        """Per-asset model state for the status message."""
        return {a.asset: {"kind": a.kind, "version": a.version, "state": a.state,
                          "learned": len(a.rows) if a.state == "commissioning" else None,
                          "open_alarms": [x.rule for x in a.engine.open_alarms(a.asset)]}
                for a in self.assets.values()}
