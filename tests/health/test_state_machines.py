"""Alarm and work-order state machines: every allowed and every refused transition."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from spinline.health.alarms import (
    ALARM_TRANSITIONS,
    Alarm,
    AlarmEngine,
    AlarmState,
    AnomalyRule,
    InvalidTransition,
    IsoZoneRule,
    RateRule,
    Severity,
    ThresholdRule,
)
from spinline.health.workorders import WO_TRANSITIONS, Priority, WorkOrder, WOState, overdue

T0 = datetime(2026, 3, 2, 8, 0)


def make_alarm(state: AlarmState) -> Alarm:
    a = Alarm(asset="m1/de", rule="r", severity=Severity.WARNING, message="m", raised_at=T0, value=1.0)
    if state == AlarmState.ACKNOWLEDGED:
        a.acknowledge("ann", T0)
    elif state == AlarmState.CLEARED:
        a.clear("ann", T0)
    return a


ALARM_CASES = [(s, act) for s in AlarmState for act in ALARM_TRANSITIONS]


@pytest.mark.parametrize(("state", "action"), ALARM_CASES)
def test_alarm_transition_table(state: AlarmState, action: str) -> None:
    a = make_alarm(state)
    n = len(a.history)
    target = ALARM_TRANSITIONS[action].get(state)
    if target is None:
        with pytest.raises(InvalidTransition, match=f"cannot {action} when {state.value}"):
            getattr(a, action)("bob", T0 + timedelta(minutes=5), "c")
        assert a.state == state and len(a.history) == n
    else:
        getattr(a, action)("bob", T0 + timedelta(minutes=5), "looked at it")
        assert a.state == target
        step = a.history[-1]
        assert (step.state, step.by, step.at, step.comment) == (target.value, "bob", T0 + timedelta(minutes=5),
                                                                "looked at it")


def make_wo(state: WOState) -> WorkOrder:
    w = WorkOrder(asset="m1/de", title="t", created_at=T0, created_by="ann", priority=Priority.HIGH)
    path = {
        WOState.OPEN: [], WOState.ASSIGNED: ["assign"], WOState.IN_PROGRESS: ["assign", "start"],
        WOState.RESOLVED: ["assign", "start", "resolve"], WOState.VERIFIED: ["assign", "start", "resolve", "verify"],
        WOState.CLOSED: ["assign", "start", "resolve", "verify", "close"],
    }[state]
    for act in path:
        do(w, act)
    assert w.state == state
    return w


def do(w: WorkOrder, action: str, hi: float = 95.0) -> None:
    at = T0 + timedelta(hours=len(w.history))
    if action == "assign":
        w.assign("fitter-7", by="ann", at=at)
    elif action == "verify":
        w.verify(hi, by="ann", at=at)
    elif action == "cancel":
        w.cancel(by="ann", at=at, comment="duplicate")
    else:
        getattr(w, action)(by="ann", at=at, comment=action)


@pytest.mark.parametrize(("state", "action"), [(s, a) for s in WOState for a in WO_TRANSITIONS])
def test_work_order_transition_table(state: WOState, action: str) -> None:
    w = make_wo(state)
    n = len(w.history)
    target = WO_TRANSITIONS[action].get(state)
    if target is None:
        with pytest.raises(InvalidTransition):
            do(w, action)
        assert w.state == state and len(w.history) == n
    else:
        do(w, action)
        assert w.state == target and len(w.history) == n + 1
        assert w.history[-1].by == "ann" and w.history[-1].state == target.value


def test_verify_refused_until_health_recovers() -> None:
    w = make_wo(WOState.RESOLVED)
    with pytest.raises(InvalidTransition, match="health 55"):
        w.verify(55.0, by="ann", at=T0)
    assert w.state == WOState.RESOLVED
    w.verify(88.0, by="ann", at=T0)
    assert w.state == WOState.VERIFIED and w.hi_at_verify == 88.0


def test_due_dates_and_overdue_list() -> None:
    a = WorkOrder(asset="a", title="t", created_at=T0, created_by="x", priority=Priority.URGENT)
    b = WorkOrder(asset="b", title="t", created_at=T0, created_by="x", priority=Priority.LOW)
    c = WorkOrder(asset="c", title="t", created_at=T0 - timedelta(days=5), created_by="x", priority=Priority.HIGH)
    assert a.due_at == T0 + timedelta(hours=24)
    now = T0 + timedelta(days=2)
    assert [w.asset for w in overdue([a, b, c], now)] == ["c", "a"]
    for act in ("assign", "start", "resolve"):
        do(a, act)
    assert [w.asset for w in overdue([a, b, c], now)] == ["c"]  # resolved is no longer overdue


def test_work_order_from_alarm_carries_priority_and_fault() -> None:
    al = Alarm(asset="card1/cyl", rule="anomaly", severity=Severity.CRITICAL, message="m", raised_at=T0,
               value=3.0, evidence={"fault": "bearing_outer", "explain": "BPFO line 12x"})
    w = WorkOrder.from_alarm(al, at=T0, hi=40.0)
    assert (w.priority, w.fault, w.alarm_id, w.hi_at_open) == (Priority.URGENT, "bearing_outer", al.id, 40.0)
    assert "BPFO" in w.description


def feed(engine: AlarmEngine, values: list[float], key: str = "x", start: datetime = T0,
         step_s: float = 60.0) -> list[int]:
    raised = []
    for i, v in enumerate(values):
        raised.append(len(engine.evaluate("a1", start + timedelta(seconds=i * step_s), {key: v})))
    return raised


def test_threshold_hysteresis_and_repeat_suppression() -> None:
    e = AlarmEngine([ThresholdRule("hot", "x", high=10.0, hysteresis=2.0, on_delay=2, off_delay=2)], rearm_s=0)
    raised = feed(e, [9, 11, 11, 12, 9, 9.5, 11, 7, 7, 11, 11])
    # on at the 2nd high sample; 9, 9.5 are inside the hysteresis (>= 8): still active, 11 repeats;
    # 7, 7 clear it (off_delay 2); two more highs raise a new one.
    assert raised == [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    first, second = e.alarms
    assert first.state == AlarmState.CLEARED and first.count == 5
    assert first.history[-1].by == "system"
    assert second.is_open and len(e.open_alarms("a1")) == 1


def test_low_threshold_and_rearm_window() -> None:
    e = AlarmEngine([ThresholdRule("low", "x", low=5.0)], rearm_s=3600)
    raised = feed(e, [6, 4, 6, 4, 4], step_s=60)
    assert raised == [0, 1, 0, 0, 0]  # cleared at t=2, re-raise suppressed within the hour
    raised = feed(e, [4], start=T0 + timedelta(hours=2))
    assert raised == [1]


def test_rate_of_change_rule() -> None:
    e = AlarmEngine([RateRule("fast", "t", max_per_h=5.0, window_s=3600)])
    raised = feed(e, [40, 40.5, 41, 45, 50], key="t", step_s=600)  # 10 min steps
    assert raised == [0, 0, 0, 1, 0]


def test_anomaly_and_iso_zone_rules() -> None:
    e = AlarmEngine([AnomalyRule(), IsoZoneRule()])
    for i, (s, z) in enumerate([(0.5, 1), (1.2, 1), (1.3, 2), (1.4, 2), (0.8, 2), (0.2, 1), (0.2, 1), (0.2, 1)]):
        e.evaluate("a1", T0 + timedelta(minutes=i), {"anomaly_score": s, "iso_zone": z})
    kinds = [(a.rule, a.state) for a in e.alarms]
    assert kinds == [("anomaly", AlarmState.CLEARED), ("iso_zone", AlarmState.CLEARED)]
    assert e.alarms[1].severity == Severity.CRITICAL


def test_acknowledged_alarm_still_suppresses_and_manual_clear_rearms() -> None:
    e = AlarmEngine([ThresholdRule("hot", "x", high=10.0)], rearm_s=0, auto_clear=False)
    feed(e, [11])
    e.alarms[0].acknowledge("ann", T0)
    assert feed(e, [12, 13], start=T0 + timedelta(minutes=1)) == [0, 0]
    e.alarms[0].clear("ann", T0 + timedelta(minutes=5), "fixed")
    assert feed(e, [12], start=T0 + timedelta(minutes=10)) == [1]


def test_duplicate_rule_names_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        AlarmEngine([AnomalyRule(), AnomalyRule()])
