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
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spinline.core.errors import StorageError
from spinline.core.site import Machine, MachineType
from spinline.core.wire import EdgeEvent, EventSeverity
from spinline.health.alarms import Alarm, AlarmEngine, AlarmState, Severity, default_rules
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
ALARMS_VERSION = 1


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

    # --- alarm state ------------------------------------------------------------------------------

    def _alarm_state(self) -> dict[str, Any]:
        rules: dict[str, Any] = {}
        for rule in self.engine.rules:
            st = self.engine._st.get((self.asset, rule.name))  # noqa: SLF001 - see load_alarms
            if st is None:
                continue
            a = st.alarm if st.alarm is not None and st.alarm.is_open else None
            rules[rule.name] = {
                "cleared_at": None if st.cleared_at is None else st.cleared_at.isoformat(),
                "alarm": None if a is None else {"id": a.id, "severity": a.severity.value, "message": a.message,
                                                 "raised_at": a.raised_at.isoformat(), "value": a.value,
                                                 "state": a.state.value, "count": a.count}}
        return {"version": ALARMS_VERSION, "asset": self.asset, "rules": rules}

    def _note_alarm_change(self) -> None:
        sig = tuple((r, (v["alarm"] or {}).get("id"), (v["alarm"] or {}).get("state"), v["cleared_at"])
                    for r, v in sorted(self._alarm_state()["rules"].items()))
        if sig != self._alarm_sig:
            self._alarm_sig = sig
            self.alarms_dirty = True

    def persist_alarms(self) -> None:
        """Write the alarm state if it changed (I/O; atomic, fsync'd)."""
        if not self.alarms_dirty:
            return
        atomic_write(self.alarms_path, json.dumps(self._alarm_state(), separators=(",", ":"),
                                                  allow_nan=True).encode())
        self.alarms_dirty = False

    def load_alarms(self) -> None:
        """Put the persisted open alarms back into the engine (I/O).

        ``AlarmEngine`` has no public restore yet, so this sets its per-(asset, rule) state
        directly: the open alarm, an ``on`` count at the rule's delay (the condition held when it
        was raised) and the last clear time (the re-arm delay goes on across the restart).
        """
        try:
            raw = self.alarms_path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot read alarm state {self.alarms_path}: {exc}") from exc
        rules = {r.name: r for r in self.engine.rules}
        try:
            d = json.loads(raw)
            if d.get("version") != ALARMS_VERSION or d.get("asset") != self.asset:
                raise ValueError(f"alarm state of {d.get('asset')!r}, version {d.get('version')!r}")
            restored = []
            for name, v in d["rules"].items():
                rule = rules.get(name)
                if rule is None:
                    continue   # a rule this edge no longer runs
                cleared = v.get("cleared_at")
                a = v.get("alarm")
                alarm = None if a is None else Alarm(
                    asset=self.asset, rule=name, severity=Severity(a["severity"]), message=str(a["message"]),
                    raised_at=datetime.fromisoformat(a["raised_at"]), value=float(a["value"]), id=str(a["id"]),
                    state=AlarmState(a["state"]), count=int(a["count"]))
                restored.append((name, rule.on_delay, alarm, None if cleared is None else datetime.fromisoformat(
                    cleared)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            bad = self.alarms_path.with_name(self.alarms_path.name + f".bad-{time.time_ns()}")
            with contextlib.suppress(OSError):
                os.replace(self.alarms_path, bad)
            log.error("alarm state %s is unusable (%s): moved to %s, the asset starts with no open alarm",
                      self.alarms_path, exc, bad.name)
            return
        from spinline.health.alarms import _RuleState

        for name, on_delay, alarm, cleared in restored:
            st = self.engine._st.setdefault((self.asset, name), _RuleState())  # noqa: SLF001
            st.cleared_at = cleared
            if alarm is not None and alarm.is_open:
                st.alarm, st.on, st.off = alarm, on_delay, 0
                self.engine.alarms.append(alarm)
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

    def snapshot(self) -> dict[str, Any]:
        """Per-asset model state and latest health for the status message."""
        return {a.asset: {"kind": a.kind, "version": a.version, "state": a.state,
                          "learned": len(a.rows) if a.state == "commissioning" else None,
                          "commissioning_n": self.config.commissioning_n,
                          "health_index": None if a.last_health is None else round(a.last_health, 1),
                          "anomaly_score": (None if a.last_score is None or not math.isfinite(a.last_score)
                                            else round(a.last_score, 3)),
                          "scored_ns": a.last_ts_ns,
                          "open_alarms": [x.rule for x in a.engine.open_alarms(a.asset)]}
                for a in self.assets.values()}
