"""Alarm rules and the alarm lifecycle, as pure state machines.

Lifecycle (explicit table ``ALARM_TRANSITIONS``; anything else raises ``InvalidTransition``)::

    ACTIVE --acknowledge--> ACKNOWLEDGED --clear--> CLEARED
       \\-------------------- clear ------------------/

Every step is appended to ``Alarm.history`` with who, when and a comment, so the record answers
"who knew, and when" without a separate audit log.

Rules (``ThresholdRule``, ``RateRule``, ``AnomalyRule``, ``IsoZoneRule``) are evaluated by the
``AlarmEngine`` per asset:

* **Hysteresis**: a rule raises when its condition holds for ``on_delay`` consecutive samples and
  clears only after the value has moved back past the limit by ``hysteresis`` (for
  ``off_delay`` samples), so a value hovering at the limit does not chatter.
* **Repeat suppression**: while an alarm of (asset, rule) is open (active or acknowledged), the
  condition holding again only increments its ``count``; after it clears, the same alarm cannot
  be raised again for ``rearm_s`` seconds.

**State across restarts** (``AlarmEngine.export_state`` / ``restore_state``): one asset's per-rule
state as JSON-safe data, versioned (``ALARM_STATE_VERSION``)::

    {"version": 2, "asset": "rf01/main_motor",
     "rules": {"<rule>": {"on": int, "off": int, "cleared_at": iso | null,
                          "history": [[iso, value], ...],
                          "alarm": null | {"id", "severity", "message", "raised_at", "value" (null: NaN),
                                           "state", "count"}}}}

Only the open alarm travels (not its evidence or steps: the alarm store is the record of those).
Version 1 is the edge's file before this contract (``cleared_at`` and the open alarm, no counters):
it is read with ``on`` at the rule's delay for an open alarm, as the edge did. The cloud pipeline's
older, unversioned per-rule counters are converted by ``state_from_counters``. Any other version is
refused with ``AlarmStateError`` naming it.

Size: the alarm lifecycle, the rules, the engine and its versioned state format are one contract;
splitting them would put the state format away from the state it describes.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from spinline.core.errors import SpinlineError
from spinline.core.texts import render


class InvalidTransition(SpinlineError):
    """A lifecycle step that the transition table does not allow from the current state."""

    def __init__(self, kind: str, ident: str, state: str, action: str) -> None:
        self.kind, self.ident, self.state, self.action = kind, ident, state, action
        super().__init__(f"{kind} {ident}: cannot {action} when {state}")


class AlarmStateError(SpinlineError, ValueError):
    """Saved alarm-engine state that cannot be restored (unknown version, wrong asset, bad field)."""


class AlarmState(StrEnum):
    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


#: action -> {from state: to state}
ALARM_TRANSITIONS: dict[str, dict[AlarmState, AlarmState]] = {
    "acknowledge": {AlarmState.ACTIVE: AlarmState.ACKNOWLEDGED},
    "clear": {AlarmState.ACTIVE: AlarmState.CLEARED, AlarmState.ACKNOWLEDGED: AlarmState.CLEARED},
}


@dataclass(frozen=True, slots=True)
class Step:
    state: str
    at: datetime
    by: str
    comment: str = ""


def new_id(prefix: str, at: datetime) -> str:
    """A fresh record id: the time for reading, then a random uuid4, so ids never collide across
    mills, processes or restarts (callers that need determinism set ``id`` themselves)."""
    return f"{prefix}-{at:%Y%m%d%H%M%S}-{uuid.uuid4().hex}"


@dataclass(slots=True)
class Alarm:
    asset: str
    rule: str
    severity: Severity
    message: str
    raised_at: datetime
    value: float
    id: str = ""
    state: AlarmState = AlarmState.ACTIVE
    count: int = 1
    evidence: dict[str, Any] = field(default_factory=dict)
    history: list[Step] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.id:
            self.id = new_id("AL", self.raised_at)
        if not self.history:
            self.history.append(Step(self.state.value, self.raised_at, "system", self.message))

    @property
    def is_open(self) -> bool:
        return self.state != AlarmState.CLEARED

    def _step(self, action: str, by: str, at: datetime, comment: str) -> None:
        to = ALARM_TRANSITIONS[action].get(self.state)
        if to is None:
            raise InvalidTransition("alarm", self.id, self.state.value, action)
        self.state = to
        self.history.append(Step(to.value, at, by, comment))

    def acknowledge(self, by: str, at: datetime, comment: str = "") -> None:
        self._step("acknowledge", by, at, comment)

    def clear(self, by: str, at: datetime, comment: str = "") -> None:
        self._step("clear", by, at, comment)


# --- rules ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """``feature`` above ``high`` (or below ``low``); clears ``hysteresis`` inside the limit."""

    name: str
    feature: str
    high: float | None = None
    low: float | None = None
    hysteresis: float = 0.0
    on_delay: int = 1
    off_delay: int = 1
    severity: Severity = Severity.WARNING

    def condition(self, values: Mapping[str, float], history: list[tuple[datetime, float]],
                  active: bool) -> bool | None:
        v = values.get(self.feature)
        if v is None or not math.isfinite(v):
            return None
        margin = self.hysteresis if active else 0.0
        hi = self.high is not None and v >= self.high - margin
        lo = self.low is not None and v <= self.low + margin
        return hi or lo


@dataclass(frozen=True, slots=True)
class RateRule:
    """``feature`` changing faster than ``max_per_h`` (absolute, per hour) over ``window_s``."""

    name: str
    feature: str
    max_per_h: float
    window_s: float = 3600.0
    hysteresis: float = 0.0
    on_delay: int = 1
    off_delay: int = 1
    severity: Severity = Severity.WARNING

    def condition(self, values: Mapping[str, float], history: list[tuple[datetime, float]],
                  active: bool) -> bool | None:
        if len(history) < 2:
            return None
        t_now, v_now = history[-1]
        old = [(t, v) for t, v in history if (t_now - t).total_seconds() <= self.window_s]
        t0, v0 = old[0]
        dt_h = (t_now - t0).total_seconds() / 3600.0
        if dt_h <= 0:
            return None
        rate = abs(v_now - v0) / dt_h
        margin = self.hysteresis if active else 0.0
        return rate >= self.max_per_h - margin


@dataclass(frozen=True, slots=True)
class AnomalyRule:
    """Calibrated anomaly score above ``threshold`` (1.0 = the false-alarm rate the model was set to)."""

    name: str = "anomaly"
    feature: str = "anomaly_score"
    threshold: float = 1.0
    hysteresis: float = 0.3
    on_delay: int = 3
    off_delay: int = 3
    severity: Severity = Severity.WARNING

    def condition(self, values: Mapping[str, float], history: list[tuple[datetime, float]],
                  active: bool) -> bool | None:
        v = values.get(self.feature)
        if v is None or not math.isfinite(v):
            return None
        return v >= self.threshold - (self.hysteresis if active else 0.0)


@dataclass(frozen=True, slots=True)
class IsoZoneRule:
    """ISO 20816 zone rose to ``min_zone`` or worse (2 = C, 3 = D).

    It is the **change** that raises the alarm: if the values carry ``iso_zone_baseline`` (the zone
    the asset ran in when its baseline was learned), the zone must also be above it, so a machine
    commissioned in zone C (legitimately, for its class) is not in alarm for its whole life.
    """

    name: str = "iso_zone"
    feature: str = "iso_zone"
    min_zone: int = 2
    hysteresis: float = 0.0
    on_delay: int = 2
    off_delay: int = 3
    severity: Severity = Severity.CRITICAL

    def condition(self, values: Mapping[str, float], history: list[tuple[datetime, float]],
                  active: bool) -> bool | None:
        v = values.get(self.feature)
        if v is None or not math.isfinite(v):
            return None
        base = values.get(f"{self.feature}_baseline", -math.inf)
        return v >= self.min_zone and v > base


Rule = ThresholdRule | RateRule | AnomalyRule | IsoZoneRule


@dataclass(slots=True)
class _RuleState:
    on: int = 0
    off: int = 0
    alarm: Alarm | None = None
    cleared_at: datetime | None = None
    history: list[tuple[datetime, float]] = field(default_factory=list)


class AlarmEngine:
    """Evaluates rules per asset and manages raising, repeat suppression and auto-clearing."""

    def __init__(self, rules: list[Rule], *, rearm_s: float = 3600.0, auto_clear: bool = True) -> None:
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rule names must be unique, got {names}")
        self.rules = list(rules)
        self.rearm_s = rearm_s
        self.auto_clear = auto_clear
        self._st: dict[tuple[str, str], _RuleState] = {}
        self.alarms: list[Alarm] = []

    def open_alarms(self, asset: str | None = None) -> list[Alarm]:
        return [a for a in self.alarms if a.is_open and (asset is None or a.asset == asset)]

    def evaluate(self, asset: str, at: datetime, values: Mapping[str, float],
                 evidence: Mapping[str, Any] | None = None) -> list[Alarm]:
        """Feed one sample of an asset; returns the alarms **newly raised** by it."""
        raised: list[Alarm] = []
        for rule in self.rules:
            st = self._st.setdefault((asset, rule.name), _RuleState())
            v = values.get(rule.feature)
            if v is not None and math.isfinite(v):
                st.history.append((at, float(v)))
                keep = getattr(rule, "window_s", 0.0)
                st.history = [(t, x) for t, x in st.history if (at - t).total_seconds() <= keep] or st.history[-1:]
            if st.alarm is not None and not st.alarm.is_open:  # cleared by hand
                st.cleared_at = st.alarm.history[-1].at
                st.alarm = None
            cond = rule.condition(values, st.history, st.alarm is not None)
            if cond is None:
                continue
            if cond:
                st.on, st.off = st.on + 1, 0
                if st.alarm is not None:
                    st.alarm.count += 1  # repeat: suppressed
                elif st.on >= rule.on_delay and (st.cleared_at is None
                                                 or at - st.cleared_at >= timedelta(seconds=self.rearm_s)):
                    val = float(values.get(rule.feature, math.nan))
                    a = Alarm(asset=asset, rule=rule.name, severity=rule.severity,
                              message=render("alarm.rule_value", {"rule": rule.name, "feature": rule.feature,
                                                                   "value": f"{val:.3g}", "asset": asset}),
                              raised_at=at,
                              value=val, evidence=dict(evidence or {}))
                    st.alarm = a
                    self.alarms.append(a)
                    raised.append(a)
            else:
                st.on, st.off = 0, st.off + 1
                if st.alarm is not None and self.auto_clear and st.off >= rule.off_delay:
                    st.alarm.clear("system", at, "condition returned to normal")
                    st.alarm, st.cleared_at = None, at
        return raised


    # --- state across restarts (see the module docstring for the format) -------------------------

    def export_state(self, asset: str) -> dict[str, Any]:
        """``asset``'s per-rule state as versioned, JSON-safe data (``restore_state`` reads it back)."""
        rules: dict[str, Any] = {}
        for rule in self.rules:
            st = self._st.get((asset, rule.name))
            if st is None:
                continue
            a = st.alarm if st.alarm is not None and st.alarm.is_open else None
            rules[rule.name] = {
                "on": st.on, "off": st.off,
                "cleared_at": None if st.cleared_at is None else st.cleared_at.isoformat(),
                "history": [[t.isoformat(), v] for t, v in st.history],
                "alarm": None if a is None else _alarm_dict(a)}
        return {"version": ALARM_STATE_VERSION, "asset": asset, "rules": rules}

    def restore_state(self, state: Mapping[str, Any], *, open_alarms: Iterable[Alarm] | None = None,
                      cleared_at: Mapping[str, datetime] | None = None) -> None:
        """Put an asset's saved state (``export_state``) back; rules this engine no longer runs are skipped.

        A caller that keeps alarms in a store of record passes ``open_alarms`` (then the saved
        state's alarms are ignored) and ``cleared_at`` per rule (then the saved clear times are).
        Raises ``AlarmStateError`` (a ``ValueError``) before changing anything if ``state`` is unusable.
        """
        restored = _parse_state(state, {r.name: r for r in self.rules})
        asset = restored.asset
        alarms: dict[str, list[Alarm]] = {}
        for a in (restored.alarms.values() if open_alarms is None else open_alarms):
            if a.asset == asset and a.is_open:
                alarms.setdefault(a.rule, []).append(a)
        for rule in self.rules:
            st = self._st.setdefault((asset, rule.name), _RuleState())
            saved = restored.rules.get(rule.name)
            if saved is not None:
                st.on, st.off, st.history = saved.on, saved.off, list(saved.history)
                st.cleared_at = saved.cleared_at
            if cleared_at is not None:
                st.cleared_at = cleared_at.get(rule.name)
            mine = alarms.get(rule.name, [])
            for a in mine:  # one per rule, unless a store of record holds more: the last one is live
                st.alarm = a
                self.alarms.append(a)
            if mine and saved is not None and saved.legacy:
                    st.on, st.off = rule.on_delay, 0  # v1 kept no counters: the condition held when raised


#: The version ``AlarmEngine.export_state`` writes; ``restore_state`` also reads 1 (see the docstring).
ALARM_STATE_VERSION = 2


def state_from_counters(asset: str, rules: Mapping[str, Any]) -> dict[str, Any]:
    """The cloud pipeline's unversioned per-rule counters (``{rule: {on, off, history}}``, before
    ``ALARM_STATE_VERSION`` 2) as a current state with no alarm and no clear time."""
    return {"version": ALARM_STATE_VERSION, "asset": asset,
            "rules": {name: {"on": int(v.get("on", 0)), "off": int(v.get("off", 0)), "cleared_at": None,
                             "history": list(v.get("history", [])), "alarm": None}
                      for name, v in rules.items()}}


def _alarm_dict(a: Alarm) -> dict[str, Any]:
    return {"id": a.id, "severity": a.severity.value, "message": a.message, "raised_at": a.raised_at.isoformat(),
            "value": a.value if math.isfinite(a.value) else None, "state": a.state.value, "count": a.count}


@dataclass(frozen=True, slots=True)
class _SavedRule:
    on: int
    off: int
    cleared_at: datetime | None
    history: tuple[tuple[datetime, float], ...]
    legacy: bool


@dataclass(frozen=True, slots=True)
class _Saved:
    asset: str
    rules: dict[str, _SavedRule]
    alarms: dict[str, Alarm]


def _parse_state(state: Mapping[str, Any], known: Mapping[str, Rule]) -> _Saved:
    if not isinstance(state, Mapping):
        raise AlarmStateError(f"alarm state must be an object, got {type(state).__name__}")
    version = state.get("version")
    if version not in (1, ALARM_STATE_VERSION):
        raise AlarmStateError(f"alarm state version {version!r} is not known (this engine reads 1 and "
                              f"{ALARM_STATE_VERSION})")
    asset = state.get("asset")
    if not isinstance(asset, str) or not asset:
        raise AlarmStateError(f"alarm state has no asset (got {asset!r})")
    legacy = version == 1
    rules: dict[str, _SavedRule] = {}
    alarms: dict[str, Alarm] = {}
    try:
        for name, v in dict(state["rules"]).items():
            if name not in known:
                continue  # a rule this engine no longer runs
            cleared = v.get("cleared_at")
            rules[name] = _SavedRule(
                on=int(v.get("on", 0)), off=int(v.get("off", 0)),
                cleared_at=None if cleared is None else datetime.fromisoformat(cleared),
                history=tuple((datetime.fromisoformat(t), float(x)) for t, x in v.get("history", [])),
                legacy=legacy)
            a = v.get("alarm")
            if a is not None:
                value = a["value"]
                alarms[name] = Alarm(
                    asset=asset, rule=name, severity=Severity(a["severity"]), message=str(a["message"]),
                    raised_at=datetime.fromisoformat(a["raised_at"]),
                    value=math.nan if value is None else float(value), id=str(a["id"]),
                    state=AlarmState(a["state"]), count=int(a["count"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AlarmStateError(f"alarm state of {asset!r} (version {version}) is malformed: {exc!r}") from exc
    return _Saved(asset, rules, alarms)


def default_rules() -> list[Rule]:
    """The vibration rule set the edge and the simulator check use."""
    return [AnomalyRule(), IsoZoneRule(),
            ThresholdRule("health_low", "health_index", low=30.0, hysteresis=10.0, on_delay=2,
                          severity=Severity.CRITICAL),
            # Only evaluated where the monitor knows the nominal speed (constant-speed drives).
            ThresholdRule("speed_low", "speed_deviation_pct", low=-2.0, hysteresis=0.5, on_delay=3, off_delay=3)]
