"""Maintenance work orders as a pure state machine.

Lifecycle (table ``WO_TRANSITIONS``; anything else raises ``InvalidTransition``)::

    OPEN --assign--> ASSIGNED --start--> IN_PROGRESS --resolve--> RESOLVED --verify--> VERIFIED --close--> CLOSED
      |                 |  ^--assign (reassign)          ^--reopen--/
      +--cancel-------->+--cancel--> CLOSED

``verify`` is refused unless the asset's health index has recovered (>= ``recovered_hi``): a
repair is only verified by the machine, not by the fitter's word. Every step records who, when
and a comment. Due dates follow the priority (``DUE_BY_PRIORITY``) unless given.

**Resolution.** ``resolve``, ``verify`` and ``close`` may carry a resolution code (``Resolution``): what
the technician found. ``no_fault_found`` says the alarm behind the order was false: the canary judge
counts these per model version (a model whose alarms are closed as no fault found is rolled back), and
training does not take such an order as a fault label. Setting or changing the code is a history step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from spinline.core.texts import render
from spinline.health.alarms import Alarm, InvalidTransition, Severity, Step, new_id


class WOState(StrEnum):
    OPEN = "open"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    VERIFIED = "verified"
    CLOSED = "closed"


class Priority(StrEnum):
    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


WO_TRANSITIONS: dict[str, dict[WOState, WOState]] = {
    "assign": {WOState.OPEN: WOState.ASSIGNED, WOState.ASSIGNED: WOState.ASSIGNED},
    "start": {WOState.ASSIGNED: WOState.IN_PROGRESS},
    "resolve": {WOState.IN_PROGRESS: WOState.RESOLVED},
    "reopen": {WOState.RESOLVED: WOState.IN_PROGRESS},
    "verify": {WOState.RESOLVED: WOState.VERIFIED},
    "close": {WOState.VERIFIED: WOState.CLOSED},
    "cancel": {WOState.OPEN: WOState.CLOSED, WOState.ASSIGNED: WOState.CLOSED},
}

DUE_BY_PRIORITY: dict[Priority, timedelta] = {
    Priority.URGENT: timedelta(hours=24), Priority.HIGH: timedelta(days=3),
    Priority.NORMAL: timedelta(days=7), Priority.LOW: timedelta(days=30),
}
class Resolution(StrEnum):
    REPAIRED = "repaired"
    NO_FAULT_FOUND = "no_fault_found"


_PRIORITY_OF = {Severity.CRITICAL: Priority.URGENT, Severity.WARNING: Priority.HIGH, Severity.INFO: Priority.NORMAL}


class VerifyRefused(InvalidTransition):
    """``verify`` before the health index recovered; keeps the figures so the refusal can say them in any language."""

    def __init__(self, ident: str, health: float, needed: float) -> None:
        self.health, self.needed = f"{health:.0f}", f"{needed:.0f}"
        super().__init__("work order", ident, f"{WOState.RESOLVED.value} with health {self.health} < {self.needed}",
                         "verify")


@dataclass(slots=True)
class WorkOrder:
    asset: str
    title: str
    created_at: datetime
    created_by: str
    priority: Priority = Priority.NORMAL
    fault: str = "unknown"
    due_at: datetime | None = None
    alarm_id: str | None = None
    description: str = ""
    id: str = ""
    state: WOState = WOState.OPEN
    assignee: str | None = None
    hi_at_open: float | None = None
    hi_at_verify: float | None = None
    resolution: Resolution | None = None
    history: list[Step] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.id:
            self.id = new_id("WO", self.created_at)
        if self.due_at is None:
            self.due_at = self.created_at + DUE_BY_PRIORITY[self.priority]
        if not self.history:
            self.history.append(Step(self.state.value, self.created_at, self.created_by, self.description))

    @classmethod
    def from_alarm(cls, alarm: Alarm, *, at: datetime, by: str = "system", fault: str | None = None,
                   hi: float | None = None, due_at: datetime | None = None) -> WorkOrder:
        """A work order for an alarm: priority from the alarm severity, fault from its diagnosis evidence."""
        f = fault or str(alarm.evidence.get("fault", "unknown"))
        title = render("wo.title.fault_on_asset", {"fault": f, "asset": alarm.asset})
        return cls(asset=alarm.asset, title=title, created_at=at, created_by=by,
                   priority=_PRIORITY_OF[alarm.severity], fault=f, due_at=due_at, alarm_id=alarm.id,
                   description=alarm.message + (f"\n{alarm.evidence['explain']}" if "explain" in alarm.evidence
                                                else ""), hi_at_open=hi)

    def _step(self, action: str, by: str, at: datetime, comment: str) -> None:
        to = WO_TRANSITIONS[action].get(self.state)
        if to is None:
            raise InvalidTransition("work order", self.id, self.state.value, action)
        self.state = to
        self.history.append(Step(to.value, at, by, comment))

    def assign(self, assignee: str, *, by: str, at: datetime, comment: str = "") -> None:
        self._step("assign", by, at, comment or render("wo.comment.assigned", {"assignee": assignee}))
        self.assignee = assignee

    def start(self, *, by: str, at: datetime, comment: str = "") -> None:
        self._step("start", by, at, comment)

    def resolve(self, *, by: str, at: datetime, comment: str = "", resolution: Resolution | None = None) -> None:
        self._step("resolve", by, at, comment)
        self._resolution(resolution, by, at)

    def reopen(self, *, by: str, at: datetime, comment: str = "") -> None:
        self._step("reopen", by, at, comment)

    def verify(self, health_index: float, *, by: str, at: datetime, comment: str = "",
               recovered_hi: float = 80.0, resolution: Resolution | None = None) -> None:
        """Verified only when the health index is back at or above ``recovered_hi``."""
        if self.state == WOState.RESOLVED and health_index < recovered_hi:
            raise VerifyRefused(self.id, health_index, recovered_hi)
        self._step("verify", by, at, comment or render("wo.comment.verified", {"health": f"{health_index:.0f}"}))
        self.hi_at_verify = health_index
        self._resolution(resolution, by, at)

    def close(self, *, by: str, at: datetime, comment: str = "", resolution: Resolution | None = None) -> None:
        self._step("close", by, at, comment)
        self._resolution(resolution, by, at)

    def _resolution(self, resolution: Resolution | None, by: str, at: datetime) -> None:
        """Record what was found (a history step when it is set or changes)."""
        if resolution is None or resolution == self.resolution:
            return
        before = f" (was {self.resolution.value})" if self.resolution is not None else ""
        self.resolution = Resolution(resolution)
        self.history.append(Step(self.state.value, at, by, f"resolution: {self.resolution.value}{before}"))

    @property
    def no_fault_found(self) -> bool:
        return self.resolution == Resolution.NO_FAULT_FOUND

    def cancel(self, *, by: str, at: datetime, comment: str) -> None:
        self._step("cancel", by, at, comment)

    def update_fault(self, fault: str, *, by: str, at: datetime, comment: str = "") -> None:
        """Refine the diagnosis while the order is not done (no state change; recorded as a step)."""
        if self.is_done():
            raise InvalidTransition("work order", self.id, self.state.value, "update the fault")
        if fault != self.fault:
            self.history.append(Step(self.state.value, at, by, comment or render(
                "wo.comment.diagnosis", {"fault_from": self.fault, "fault": fault})))
            self.fault = fault
            self.title = render("wo.title.fault_on_asset", {"fault": fault, "asset": self.asset})

    def is_done(self) -> bool:
        return self.state in (WOState.VERIFIED, WOState.CLOSED)

    def is_overdue(self, now: datetime) -> bool:
        return not self.is_done() and self.state != WOState.RESOLVED and self.due_at is not None \
            and now > self.due_at

    def time_of(self, state: WOState) -> datetime | None:
        for s in self.history:
            if s.state == state.value:
                return s.at
        return None


def overdue(orders: Iterable[WorkOrder], now: datetime) -> list[WorkOrder]:
    """Work orders past their due date and not yet resolved, most overdue first."""
    late = [w for w in orders if w.is_overdue(now)]
    return sorted(late, key=lambda w: w.due_at or now)
