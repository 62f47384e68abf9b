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
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from spinline.core.errors import SpinlineError


class InvalidTransition(SpinlineError):
    """A lifecycle step that the transition table does not allow from the current state."""

    def __init__(self, kind: str, ident: str, state: str, action: str) -> None:
        self.kind, self.ident, self.state, self.action = kind, ident, state, action
        super().__init__(f"{kind} {ident}: cannot {action} when {state}")


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
                              message=f"{rule.name}: {rule.feature} = {val:.3g} on {asset}", raised_at=at,
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


def default_rules() -> list[Rule]:
    """The vibration rule set the edge and the simulator check use."""
    return [AnomalyRule(), IsoZoneRule(),
            ThresholdRule("health_low", "health_index", low=30.0, hysteresis=10.0, on_delay=2,
                          severity=Severity.CRITICAL),
            # Only evaluated where the monitor knows the nominal speed (constant-speed drives).
            ThresholdRule("speed_low", "speed_deviation_pct", low=-2.0, hysteresis=0.5, on_delay=3, off_delay=3)]
