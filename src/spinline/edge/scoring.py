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

The alarm engine's state per asset (open alarms with their id, raise time and count, and when each
rule last cleared, for the re-arm delay) is persisted next to the slot (``<slot>.alarms``, same
atomic write) whenever an alarm opens, is acknowledged or clears, and restored by ``load``: after a
restart a fault still present raises nothing new, and its clearing sends ``alarm_cleared`` with the
``alarm_key`` of the alarm raised before the restart. The agent writes it *after* the events are
committed, so a crash in between re-raises an alarm (at least once) rather than losing one.

Known limits: a ``RateRule``'s value history is not persisted (none of the default rules is one);
a stopped machine (shaft speed 0) gives no score at all.

Size: one asset's model lifecycle (commissioning, freezing, replacement, alarm state, events, what
is persisted when) reads as one story; the task that runs it beside the connectors is
``scoring_stage.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spinline.core.errors import StorageError
from spinline.core.site import Machine, MachineType
from spinline.core.wire import EdgeEvent, EventSeverity
from spinline.health.alarms import Alarm, AlarmEngine, AlarmStateError, default_rules
from spinline.health.anomaly import MODEL_KINDS, BaselineDetector
from spinline.health.features import bearing_frequencies
from spinline.health.monitor import AssetMonitor, AssetStatus

from .models import (
    MODELS_DIR,
    ModelRecord,
    ModelRejected,
    ModelSlot,
    ModelVerifier,
    ScoringConfig,
    atomic_write,
    content_version,
)

log = logging.getLogger(__name__)
__all__ = ["AssetScorer", "EdgeScoring", "ScoringConfig", "asset_tag", "validate_record"]

#: Model kind of the edge's own models: the AssetMonitor pipeline around a BaselineDetector.
KIND_PREFIX = "asset_monitor/"
COMMISSIONING = "commissioning"
ALARMS_SUFFIX = ".alarms"


def asset_tag(mill: str, machine: str, channel: str) -> str:
    return f"{mill}/{machine}/{channel}"


def validate_record(rec: ModelRecord) -> None:
    """The slot's validation hook: can the scorer run these params? Raises ValueError/KeyError/TypeError."""
    if not rec.kind.startswith(KIND_PREFIX) or rec.kind[len(KIND_PREFIX):] not in MODEL_KINDS:
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
        self.alarms_path = self.slot.path.with_name(self.slot.path.name.removesuffix(".json") + ALARMS_SUFFIX)
        self.alarms_dirty = False
        self._alarm_sig: tuple[Any, ...] = ()
        #: Last outputs (for the status): health index 0-100 and anomaly score; None before the first.
        self.last_health: float | None = None
        self.last_score: float | None = None
        self.last_ts_ns: int | None = None
        #: The cloud model's answer to this asset's uncertain snapshot (``edge.cloud_answers``), while the alarm
        #: episode it answers is open: the episode's later alarm events carry it as their diagnosis.
        self.cloud_diagnosis: CloudDiagnosis | None = None

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
        """Restore the slot and the alarm state from disk (I/O): a frozen model scores at once."""
        self.load_alarms()
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

    def take_record(self) -> ModelRecord | None:
        """The slot's record to write, if it changed (pure; on the event loop, where scoring runs).

        Taken here and written by ``write_record`` on the buffer's thread, so the record written is
        the one the models hold: a freeze between the two can no longer be overwritten by a stale
        commissioning record. A failed write puts ``dirty`` back (``restore_dirty``)."""
        if not self.dirty:
            return None
        rec = self.slot.record
        if rec is None or rec.state == "commissioning":
            rec = ModelRecord(asset=self.asset, kind=self.kind, version=COMMISSIONING,
                              params={"rows": list(self.rows)}, state="commissioning", source="local")
        self.dirty = False
        return rec

    def write_record(self, rec: ModelRecord) -> None:
        """Write a record from ``take_record`` (I/O; fsync'd, atomic)."""
        self.slot.write(rec)

    def persist(self) -> None:
        """Write the slot if it changed (take and write at once: for callers without a loop)."""
        rec = self.take_record()
        if rec is not None:
            try:
                self.write_record(rec)
            except BaseException:
                self.dirty = True
                raise

    # --- alarm state ------------------------------------------------------------------------------

    def _alarm_state(self) -> dict[str, Any]:
        return self.engine.export_state(self.asset)

    def _note_alarm_change(self) -> None:
        sig = tuple((r, (v["alarm"] or {}).get("id"), (v["alarm"] or {}).get("state"), v["cleared_at"])
                    for r, v in sorted(self._alarm_state()["rules"].items()))
        if sig != self._alarm_sig:
            self._alarm_sig = sig
            self.alarms_dirty = True

    def take_alarm_state(self) -> bytes | None:
        """The alarm state to write, if it changed (on the loop: the engine is not read from another thread)."""
        if not self.alarms_dirty:
            return None
        self.alarms_dirty = False
        return json.dumps(self._alarm_state(), separators=(",", ":"), allow_nan=True).encode()

    def write_alarm_state(self, data: bytes) -> None:
        """Write a state from ``take_alarm_state`` (I/O; atomic, fsync'd)."""
        atomic_write(self.alarms_path, data)

    def persist_alarms(self) -> None:
        """Write the alarm state if it changed (take and write at once: for callers without a loop)."""
        data = self.take_alarm_state()
        if data is not None:
            try:
                self.write_alarm_state(data)
            except BaseException:
                self.alarms_dirty = True
                raise

    def load_alarms(self) -> None:
        """Put the persisted alarm state (``AlarmEngine.export_state``) back into the engine (I/O).

        The open alarms, the rules' counters and the last clear times (the re-arm delay goes on
        across the restart); a file of the older version 1 is migrated by ``restore_state``.
        """
        try:
            raw = self.alarms_path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot read alarm state {self.alarms_path}: {exc}") from exc
        try:
            d = json.loads(raw)
            if not isinstance(d, dict) or d.get("asset") != self.asset:
                raise AlarmStateError(f"alarm state of {d.get('asset') if isinstance(d, dict) else d!r}")
            self.engine.restore_state(d)
        except ValueError as exc:  # AlarmStateError and JSON errors are ValueErrors
            bad = self.alarms_path.with_name(self.alarms_path.name + f".bad-{time.time_ns()}")
            with contextlib.suppress(OSError):
                os.replace(self.alarms_path, bad)
            log.error("alarm state %s is unusable (%s): moved to %s, the asset starts with no open alarm",
                      self.alarms_path, exc, bad.name)
            return
        self._note_alarm_change()
        self.alarms_dirty = False
        if self.engine.open_alarms(self.asset):
            log.info("%s: %d open alarm(s) restored (%s)", self.asset, len(self.engine.open_alarms(self.asset)),
                     ", ".join(a.rule for a in self.engine.open_alarms(self.asset)))

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
        self.last_health, self.last_ts_ns = st.health.value, ts_ns
        if st.learning:
            self.rows.append(x)
            self.dirty = True
            if self.monitor.baseline is not None:
                self._freeze(ts_ns)
            return {"anomaly_score": math.nan, "health_index": st.health.value}
        self.last_score = st.anomaly_score
        self._events_of(st, ts_ns, was_open)
        self._note_alarm_change()
        if len(self.monitor.history) > self.config.history_max:
            del self.monitor.history[:len(self.monitor.history) - self.config.history_max]
        if len(self.engine.alarms) > 100:
            self.engine.alarms = [a for a in self.engine.alarms if a.is_open]
        return {"anomaly_score": st.anomaly_score, "health_index": st.health.value}

    def _events_of(self, st: AssetStatus, ts_ns: int, was_open: Mapping[int, Alarm]) -> None:
        version = self.version
        cloud = self.cloud_diagnosis
        for a in st.raised:
            diag = st.diagnosis
            evidence = diag.explain() if diag is not None else a.message
            fault, conf = (diag.fault, diag.confidence) if diag is not None else (None, None)
            if cloud is not None:   # the cloud's answer for this episode outranks the edge's uncertain one
                fault, conf, evidence = cloud.fault, cloud.confidence, f"{cloud.explain()}\n{evidence}"
            self.events.append(EdgeEvent(
                asset=self.asset, ts_ns=ts_ns, kind="alarm_raised", severity=_severity(a), model_version=version,
                rule=a.rule, value=a.value, fault=fault, confidence=conf,
                evidence=f"{evidence}\n{st.health.explain()}", alarm_key=_alarm_key(self.asset, a)))
        now_open = {id(a) for a in self.engine.open_alarms(self.asset)}
        for k, a in was_open.items():
            if k not in now_open:
                self.events.append(EdgeEvent(
                    asset=self.asset, ts_ns=ts_ns, kind="alarm_cleared", severity=_severity(a), model_version=version,
                    rule=a.rule, value=st.anomaly_score if a.rule == "anomaly" else None,
                    fault=cloud.fault if cloud is not None else None,
                    confidence=cloud.confidence if cloud is not None else None,
                    evidence=f"{a.rule} back to normal after {a.count} sample(s); {st.health.explain()}"
                             + (f"; {cloud.explain()}" if cloud is not None else ""),
                    alarm_key=_alarm_key(self.asset, a)))
        if not now_open:
            self.cloud_diagnosis = None   # the episode is over: its answer goes with it


@dataclass(frozen=True, slots=True)
class CloudDiagnosis:
    """The cloud model's diagnosis of one of this asset's uncertain snapshots (``edge.cloud_answers``)."""

    fault: str
    confidence: float
    snapshot: int

    def explain(self) -> str:
        return f"cloud diagnosis of snapshot {self.snapshot}: {self.fault} (confidence {self.confidence:.2f})"


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

    def open_alarms(self, asset: str) -> list[str]:
        """The rules with an open alarm on ``asset`` (``{mill}/{machine}/{channel}``); [] for an unknown asset."""
        a = self._by_tag().get(asset)
        return [x.rule for x in a.engine.open_alarms(a.asset)] if a is not None else []

    def set_cloud_diagnosis(self, asset: str, diagnosis: CloudDiagnosis, ts_ns: int | None = None,
                            max_age_s: float = 900.0) -> bool:
        """The cloud's answer for ``asset``: kept for its open alarm episode's later events. False (not kept)
        when the asset is not this edge's, has no open alarm, or the answered snapshot (taken at ``ts_ns``)
        is older than the episode by more than ``max_age_s`` (the evidence keeper's "latest waveform"): a late
        answer about an earlier episode."""
        a = self._by_tag().get(asset)
        if a is None or not (open_ := a.engine.open_alarms(a.asset)):
            return False
        start_ns = min(x.raised_at.timestamp() for x in open_) * 1e9
        if ts_ns is not None and ts_ns < start_ns - max_age_s * 1e9:
            return False
        a.cloud_diagnosis = diagnosis
        return True

    def _by_tag(self) -> dict[str, AssetScorer]:
        return {a.asset: a for a in self.assets.values()}

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

    def alarms_dirty(self) -> bool:
        return any(a.alarms_dirty for a in self.assets.values())

    def persist(self, *, alarms: bool = True) -> None:
        """Write changed slots, and (``alarms``) changed alarm states (I/O; call off the event loop)."""
        for a in self.assets.values():
            a.persist()
        if alarms:
            self.persist_alarms()

    def persist_alarms(self) -> None:
        """Write changed alarm states (I/O; the agent calls it after committing the events)."""
        for a in self.assets.values():
            a.persist_alarms()

    # Taken on the event loop (where scoring mutates the models), written on the buffer's thread.

    def take_records(self) -> list[tuple[AssetScorer, ModelRecord]]:
        return [(a, r) for a in self.assets.values() if (r := a.take_record()) is not None]

    def take_alarm_states(self) -> list[tuple[AssetScorer, bytes]]:
        return [(a, d) for a in self.assets.values() if (d := a.take_alarm_state()) is not None]

    @staticmethod
    def write_records(todo: list[tuple[AssetScorer, ModelRecord]]) -> None:
        for a, r in todo:
            a.write_record(r)

    @staticmethod
    def write_alarm_states(todo: list[tuple[AssetScorer, bytes]]) -> None:
        for a, d in todo:
            a.write_alarm_state(d)

    @staticmethod
    def restore_dirty(records: Sequence[tuple[AssetScorer, ModelRecord]] = (),
                      alarms: Sequence[tuple[AssetScorer, bytes]] = ()) -> None:
        """After a failed write: those assets are written again at the next commit."""
        for a, _ in records:
            a.dirty = True
        for a, _ in alarms:
            a.alarms_dirty = True

    def snapshot(self) -> dict[str, Any]:
        """Per-asset model state and latest health for the status message."""
        return {a.asset: {"kind": a.kind, "version": a.version, "state": a.state,
                          "learned": len(a.rows) if a.state == "commissioning" else None,
                          "commissioning_n": self.config.commissioning_n,
                          "health_index": None if a.last_health is None else round(a.last_health, 1),
                          "anomaly_score": (None if a.last_score is None or not math.isfinite(a.last_score)
                                            else round(a.last_score, 3)),
                          "scored_ns": a.last_ts_ns,
                          "open_alarms": [x.rule for x in a.engine.open_alarms(a.asset)],
                          **({"cloud_diagnosis": {"fault": a.cloud_diagnosis.fault,
                                                  "confidence": a.cloud_diagnosis.confidence,
                                                  "snapshot": a.cloud_diagnosis.snapshot}}
                             if a.cloud_diagnosis is not None else {})}
                for a in self.assets.values()}
