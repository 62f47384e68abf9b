"""Maintenance reports: the weekly plan and the monthly report.

Weekly plan: every work order not yet resolved whose due date falls before the end of the week
(overdue ones first), plus assets whose remaining-useful-life band reaches into the week without
a work order yet, so the planner sees what will need doing before it becomes an alarm.

Monthly report: faults found (work orders created in the month, by fault type), time to fix
(created -> resolved; median and mean hours), overdue count (due in the month, not resolved by
the due date), and **downtime avoided**: for every
order verified in the month, the unplanned downtime a failure of that kind typically costs
(``UNPLANNED_DOWNTIME_H``) minus the planned repair time actually spent (in progress -> resolved).
The typical-downtime table is an assumption the mill should replace with its own history; the
report prints it beside the figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from spinline.core.texts import Text, render
from spinline.health.rul import RulEstimate
from spinline.health.workorders import WorkOrder, WOState

#: Hours a machine typically stands when this fault runs to failure unplanned (assumed; replace with
#: the mill's own records). Bearing failures wait for parts; shaft faults are usually fixed on site.
UNPLANNED_DOWNTIME_H: dict[str, float] = {
    "bearing_outer": 24.0, "bearing_inner": 24.0, "bearing_ball": 24.0, "imbalance": 8.0,
    "misalignment": 8.0, "looseness": 6.0, "belt_slip": 4.0, "unknown": 12.0,
}


@dataclass(frozen=True, slots=True)
class PlanItem:
    asset: str
    title: str
    due_at: datetime
    priority: str
    state: str
    work_order: str | None
    overdue: bool
    reason: str


@dataclass(frozen=True, slots=True)
class MonthlyReport:
    month: str
    faults_found: dict[str, int]
    orders_created: int
    orders_resolved: int
    orders_verified: int
    overdue: int
    time_to_fix_h_median: float
    time_to_fix_h_mean: float
    downtime_avoided_h: float
    assumptions: dict[str, float] = field(default_factory=dict)

    def texts(self) -> list[Text]:
        """The report's lines as message keys and parameters (the console shows them in the reader's language)."""
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults_found.items()))
        count = str(self.orders_created)
        return [Text("report.maint.title", {"month": self.month}),
                Text("report.maint.faults", {"count": count, "faults": faults}) if faults
                else Text("report.maint.faults_none", {"count": count}),
                Text("report.maint.orders", {"resolved": str(self.orders_resolved),
                                             "verified": str(self.orders_verified), "overdue": str(self.overdue)}),
                Text("report.maint.time_to_fix", {"median": f"{self.time_to_fix_h_median:.1f}",
                                                  "mean": f"{self.time_to_fix_h_mean:.1f}"}),
                Text("report.maint.downtime", {"hours": f"{self.downtime_avoided_h:.1f}", "assumptions": ", ".join(
                    f"{k} {v:g} h" for k, v in self.assumptions.items())})]

    def lines(self) -> list[str]:
        return [t.en for t in self.texts()]


_PRIO = {"urgent": 0, "high": 1, "normal": 2, "low": 3}


def weekly_plan(orders: Iterable[WorkOrder], week_start: datetime, *,
                rul: Mapping[str, RulEstimate] | None = None, now: datetime | None = None) -> list[PlanItem]:
    """Plan of the week starting ``week_start``; an item is overdue when due before ``now`` (default: the start)."""
    end = week_start + timedelta(days=7)
    ref = now or week_start
    items: list[PlanItem] = []
    with_order: set[str] = set()
    for w in orders:
        if w.state in (WOState.RESOLVED, WOState.VERIFIED, WOState.CLOSED):
            continue
        with_order.add(w.asset)
        due = w.due_at or end
        if due < end:
            late = due < ref
            items.append(PlanItem(w.asset, w.title, due, w.priority.value, w.state.value, w.id, late,
                                  render("plan.reason.overdue" if late else "plan.reason.due_this_week", {})))
    for asset, est in (rul or {}).items():
        if asset in with_order or math.isinf(est.lower_s):
            continue
        # The RUL is counted from the week start; the early end of the band is what must be planned for.
        due = week_start + timedelta(seconds=est.lower_s)
        if due < end:
            title = render("plan.title.inspect_predicted", {"asset": asset})
            items.append(PlanItem(asset, title, due, "normal", "predicted", None, False, est.explanation))
    return sorted(items, key=lambda i: (not i.overdue, i.due_at, _PRIO.get(i.priority, 9)))


def monthly_report(orders: Iterable[WorkOrder], month_start: datetime, *,
                   downtime_h: Mapping[str, float] | None = None) -> MonthlyReport:
    nxt = (month_start.replace(day=28) + timedelta(days=4)).replace(day=1)
    table = dict(UNPLANNED_DOWNTIME_H, **(downtime_h or {}))
    ws = list(orders)
    created = [w for w in ws if month_start <= w.created_at < nxt]
    faults: dict[str, int] = {}
    for w in created:
        faults[w.fault] = faults.get(w.fault, 0) + 1
    fix_h: list[float] = []
    resolved = verified = 0
    avoided = 0.0
    used: dict[str, float] = {}
    for w in ws:
        t_res = w.time_of(WOState.RESOLVED)
        if t_res is not None and month_start <= t_res < nxt:
            resolved += 1
            fix_h.append((t_res - w.created_at).total_seconds() / 3600.0)
        t_ver = w.time_of(WOState.VERIFIED)
        if t_ver is not None and month_start <= t_ver < nxt:
            verified += 1
            t_start = w.time_of(WOState.IN_PROGRESS)
            repair_h = (t_res - t_start).total_seconds() / 3600.0 if t_res and t_start else 0.0
            d = table.get(w.fault, table["unknown"])
            used[w.fault] = d
            avoided += max(d - repair_h, 0.0)
    # Overdue: due in the month and not resolved by the due date.
    late = 0
    for w in ws:
        if w.due_at is not None and month_start <= w.due_at < nxt:
            t_res = w.time_of(WOState.RESOLVED)
            late += t_res is None or t_res > w.due_at
    return MonthlyReport(month=f"{month_start:%Y-%m}", faults_found=faults, orders_created=len(created),
                         orders_resolved=resolved, orders_verified=verified, overdue=late,
                         time_to_fix_h_median=float(np.median(fix_h)) if fix_h else math.nan,
                         time_to_fix_h_mean=float(np.mean(fix_h)) if fix_h else math.nan,
                         downtime_avoided_h=round(avoided, 2), assumptions=used)
