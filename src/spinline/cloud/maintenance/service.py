"""The maintenance use cases of one mill's records: what the routes (and the console) call.

No HTTP here: a record of another mill is ``RecordNotFound`` (the routes answer 404, as for an
unknown one, so ids of other mills are not confirmed); a refused lifecycle step is
``InvalidTransition`` and an id another mill already holds is ``RecordConflict`` (409); missing
input a step needs is ``MissingInput`` (422). The state machines themselves are
``spinline.health.alarms`` / ``spinline.health.workorders``; persistence is ``HealthStore``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from spinline.cloud.storage.base import TimeSeriesStore
from spinline.core.errors import SpinlineError
from spinline.health.alarms import Alarm, AlarmState, Severity
from spinline.health.reports import MonthlyReport, PlanItem, monthly_report, weekly_plan
from spinline.health.workorders import Priority, Resolution, WorkOrder, WOState, overdue

from .pipeline import measured_health
from .store import HealthStore

AlarmAction = Literal["acknowledge", "clear"]
OrderAction = Literal["assign", "start", "resolve", "reopen", "verify", "close", "cancel"]


class RecordNotFound(SpinlineError):
    """No such record in this mill (unknown, or another mill's)."""

    def __init__(self, kind: str, ident: str) -> None:
        self.kind, self.ident = kind, ident
        super().__init__(f"{kind} {ident!r}")


class MissingInput(SpinlineError, ValueError):
    """A step needs input the request did not carry (an assignee, a health index ...)."""


class Maintenance:
    """Alarms, work orders, the weekly plan and the monthly report of a mill's assets."""

    def __init__(self, health: HealthStore, store: TimeSeriesStore | None = None) -> None:
        self.health = health
        #: Where ``verify`` reads the asset's measured health index (None: only the one given).
        self.store = store

    # --- alarms ------------------------------------------------------------------------------------

    def alarm(self, mill: str, alarm_id: str) -> Alarm:
        got = self.health.get_alarm(alarm_id)
        if got is None or got[0] != mill:
            raise RecordNotFound("alarm", alarm_id)
        return got[1]

    def alarms(self, mill: str, *, state: AlarmState | None = None, asset: str | None = None) -> list[Alarm]:
        """Alarms of the mill, oldest first."""
        return self.health.list_alarms(mill, state=state.value if state else None, asset=asset)

    def record_alarm(self, mill: str, *, asset: str, rule: str, severity: Severity, message: str,
                     raised_at: datetime, value: float, evidence: dict[str, Any]) -> Alarm:
        """Record an alarm raised at the edge (or by hand)."""
        a = Alarm(asset=asset, rule=rule, severity=severity, message=message, raised_at=raised_at, value=value,
                  evidence=evidence)
        self.health.save_alarm(mill, a)
        return a

    def step_alarm(self, mill: str, alarm_id: str, action: AlarmAction, *, by: str, at: datetime,
                   comment: str = "") -> Alarm:
        a = self.alarm(mill, alarm_id)
        getattr(a, action)(by, at, comment)
        self.health.save_alarm(mill, a)
        return a

    # --- work orders -------------------------------------------------------------------------------

    def order(self, mill: str, order_id: str) -> WorkOrder:
        got = self.health.get_work_order(order_id)
        if got is None or got[0] != mill:
            raise RecordNotFound("work order", order_id)
        return got[1]

    def orders(self, mill: str, *, states: Sequence[WOState] | None = None, asset: str | None = None
               ) -> list[WorkOrder]:
        return self.health.list_work_orders(mill, states=[s.value for s in states] if states else None, asset=asset)

    def overdue(self, mill: str, now: datetime) -> list[WorkOrder]:
        """Work orders past their due date and not yet resolved, most overdue first."""
        return overdue(self.health.list_work_orders(mill), now)

    def create_order(self, mill: str, *, by: str, at: datetime, alarm_id: str | None = None,
                     asset: str | None = None, title: str | None = None, priority: Priority | None = None,
                     fault: str | None = None, due_at: datetime | None = None, description: str = "",
                     health_index: float | None = None) -> WorkOrder:
        """A work order by hand, or from an alarm (``alarm_id``: asset, priority and fault follow it)."""
        if alarm_id is not None:
            a = self.alarm(mill, alarm_id)
            w = WorkOrder.from_alarm(a, at=at, by=by, fault=fault, hi=health_index, due_at=due_at)
            if priority is not None:
                w.priority = priority
        else:
            if not asset or not title:
                raise MissingInput("asset and title are needed without alarm_id")
            w = WorkOrder(asset=asset, title=title, created_at=at, created_by=by,
                          priority=priority or Priority.NORMAL, fault=fault or "unknown", due_at=due_at,
                          description=description, hi_at_open=health_index)
        self.health.save_work_order(mill, w)
        return w

    def step_order(self, mill: str, order_id: str, action: OrderAction, *, by: str, at: datetime,
                   comment: str = "", assignee: str | None = None, health_index: float | None = None,
                   resolution: Resolution | None = None) -> WorkOrder:
        """One lifecycle step. ``verify`` checks the asset's latest measured health index where the
        store has one (``health_index`` only where it has none): the machine verifies a repair.
        ``resolution`` (what was found) goes with ``resolve``, ``verify`` or ``close`` only."""
        w = self.order(mill, order_id)
        if resolution is not None and action not in ("resolve", "verify", "close"):
            raise MissingInput(f"a resolution goes with resolve, verify or close, not {action}")
        if action == "assign":
            if not assignee:
                raise MissingInput("assign needs an assignee")
            w.assign(assignee, by=by, at=at, comment=comment)
        elif action == "verify":
            measured = measured_health(self.store, mill, w.asset) if self.store is not None else None
            hi = measured if measured is not None else health_index
            if hi is None:
                raise MissingInput("verify needs the current health_index")
            w.verify(hi, by=by, at=at, comment=comment, resolution=resolution)
        elif action == "cancel":
            w.cancel(by=by, at=at, comment=comment or "cancelled")
        elif action in ("resolve", "close"):
            getattr(w, action)(by=by, at=at, comment=comment, resolution=resolution)
        else:
            getattr(w, action)(by=by, at=at, comment=comment)
        self.health.save_work_order(mill, w)
        return w

    # --- plan and report ---------------------------------------------------------------------------

    def weekly_plan(self, mill: str, week_start: datetime, now: datetime) -> list[PlanItem]:
        """The week's plan: overdue orders first, then those due in the week."""
        return weekly_plan(self.health.list_work_orders(mill), week_start, now=now)

    def monthly_report(self, mill: str, start: datetime) -> MonthlyReport:
        """Faults found, time to fix and downtime avoided in the month starting at ``start``."""
        return monthly_report(self.health.list_work_orders(mill), start)
