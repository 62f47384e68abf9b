"""Maintenance of a mill: alarms, work orders, the weekly plan and the monthly report.

Thin routes over ``spinline.cloud.maintenance.service.Maintenance`` (the use cases; persistence in
the metadata database through ``HealthStore``, tables created on first use). Reading needs
``read`` on the mill; changing
an alarm or a work order needs ``manage_maintenance`` (a maintenance engineer or a manager);
recording an alarm raised at the edge needs ``write_events``. A record of another mill answers 404,
like an unknown one. A refused lifecycle step answers 409 with the reason, as does saving a record
whose id another mill's record already has (it is never overwritten).

Size: the public shapes of alarms, work orders, plan and report (with their message keys) sit beside
the routes that build them; split only with the shapes moving to their own module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field, field_validator

from spinline.cloud.api.deps import (
    CurrentUser,
    MetaDep,
    ReadableMill,
    StoreDep,
    WritableMill,
    mill_with,
)
from spinline.cloud.api.errors import keyed_error
from spinline.cloud.api.routes.health import TextPublic, text_public
from spinline.cloud.api.timefmt import InDatetime, UtcDatetime
from spinline.cloud.auth.roles import Permission
from spinline.cloud.maintenance.service import Maintenance, MissingInput, RecordNotFound
from spinline.cloud.maintenance.store import HealthStore, RecordConflict
from spinline.cloud.meta.store import MillRecord
from spinline.cloud.storage.base import TimeSeriesStore
from spinline.core import texts
from spinline.health.alarms import Alarm, AlarmState, InvalidTransition, Severity
from spinline.health.reports import PlanItem
from spinline.health.workorders import Priority, Resolution, VerifyRefused, WorkOrder, WOState

router = APIRouter(prefix="/mills/{mill}/maintenance", tags=["maintenance"])

#: Largest evidence of one alarm (JSON), enough for a diagnosis with its spectrum peaks.
MAX_EVIDENCE_BYTES = 16 * 1024
#: Filters a person types.
AssetFilter = Annotated[str | None, Query(max_length=255)]
#: Most records one list answers (the newest are kept when there are more).
Limit = Annotated[int, Query(ge=1, le=5000, description="at most this many records (the newest)")]

MaintainableMill = Annotated[MillRecord, Depends(mill_with(Permission.MANAGE_MAINTENANCE))]


def get_health_store(request: Request, meta: MetaDep) -> HealthStore:
    """One HealthStore per app, over the metadata database (tables created once)."""
    hs: HealthStore | None = getattr(request.app.state, "health_store", None)
    if hs is None or hs.engine is not meta.engine:
        hs = HealthStore(meta.engine)
        hs.create_schema()
        request.app.state.health_store = hs
    return hs


HealthStoreDep = Annotated[HealthStore, Depends(get_health_store)]


# --- schemas ---------------------------------------------------------------------------------------

class TextLinePublic(BaseModel):
    """One line of server-written text; ``parts`` (its "; "-joined pieces as message keys) empty: show ``text``.

    ``prefix``: the line's list marker as written (``"  - "`` before a diagnosis' evidence), kept out of the
    parts so the console puts it before the translated text.
    """

    text: str
    parts: list[TextPublic]
    prefix: str = ""


class StepPublic(BaseModel):
    state: str
    at: UtcDatetime
    by: str
    comment: str
    comment_lines: list[TextLinePublic] = Field(
        default_factory=list, description="`comment` by line, with message keys where the system wrote it; "
                                          "a comment a person typed comes back as typed (no parts)")


class AlarmCreate(BaseModel):
    asset: str = Field(min_length=1, max_length=255, description="machine/channel, e.g. ca01/cylinder")
    rule: str = Field(min_length=1, max_length=64)
    severity: Severity = Severity.WARNING
    message: str = Field(min_length=1, max_length=2000)
    value: float | None = None
    raised_at: InDatetime | None = None
    evidence: dict[str, Any] = Field(default_factory=dict, description=f"at most {MAX_EVIDENCE_BYTES} bytes as JSON")

    @field_validator("evidence")
    @classmethod
    def _evidence_small(cls, v: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(v, default=str))
        if size > MAX_EVIDENCE_BYTES:
            raise ValueError(f"evidence is {size} bytes as JSON; at most {MAX_EVIDENCE_BYTES}")
        return v


class AlarmPublic(BaseModel):
    id: str
    mill: str
    asset: str
    rule: str
    severity: str
    state: str
    message: str
    message_key: str | None = Field(default=None, description="console message key of `message`; null: show it as is")
    message_params: dict[str, str] | None = None
    value: float | None
    count: int
    raised_at: UtcDatetime
    evidence: dict[str, Any]
    history: list[StepPublic]


class Comment(BaseModel):
    comment: str = Field(default="", max_length=2000)


class WorkOrderCreate(BaseModel):
    asset: str | None = Field(default=None, max_length=255)
    title: str | None = Field(default=None, max_length=255)
    alarm_id: str | None = Field(default=None, max_length=128,
                                 description="create from this alarm (asset, priority, fault follow)")
    priority: Priority | None = None
    fault: str | None = Field(default=None, max_length=64)
    due_at: InDatetime | None = None
    description: str = Field(default="", max_length=4000)
    health_index: float | None = Field(default=None, ge=0, le=100)


class WorkOrderStep(BaseModel):
    comment: str = Field(default="", max_length=2000)
    assignee: str | None = Field(default=None, max_length=128, description="for assign")
    health_index: float | None = Field(default=None, ge=0, le=100, description="for verify")
    resolution: Literal["repaired", "no_fault_found"] | None = Field(
        default=None, description="for resolve, verify or close: what was found (no_fault_found: a false alarm; "
                                  "counted against the model version that raised it)")


class WorkOrderPublic(BaseModel):
    id: str
    mill: str
    asset: str
    title: str
    title_key: str | None = Field(default=None, description="console message key of `title`; null: show it as is")
    title_params: dict[str, str] | None = None
    fault: str
    priority: str
    state: str
    created_at: UtcDatetime
    created_by: str
    due_at: UtcDatetime | None
    overdue: bool
    assignee: str | None
    alarm_id: str | None
    description: str
    description_lines: list[TextLinePublic] = Field(default_factory=list,
                                                    description="`description` by line, with message keys")
    hi_at_open: float | None
    hi_at_verify: float | None
    resolution: str | None = Field(default=None, description="repaired | no_fault_found (null: not given)")
    history: list[StepPublic]


class PlanItemPublic(BaseModel):
    asset: str
    title: str
    title_key: str | None = Field(default=None, description="console message key of `title`; null: show it as is")
    title_params: dict[str, str] | None = None
    due_at: UtcDatetime
    priority: str
    state: str
    work_order: str | None
    overdue: bool
    reason: str
    reason_key: str | None = Field(default=None, description="console message key of `reason`; null: show it as is")
    reason_params: dict[str, str] | None = None


class MonthlyReportPublic(BaseModel):
    month: str
    faults_found: dict[str, int]
    orders_created: int
    orders_resolved: int
    orders_verified: int
    overdue: int
    time_to_fix_h_median: float | None
    time_to_fix_h_mean: float | None
    downtime_avoided_h: float
    assumptions: dict[str, float]
    text: list[str]
    text_parts: list[TextPublic] = Field(default_factory=list, description="`text` as message keys, line by line")


# --- helpers ---------------------------------------------------------------------------------------

def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _naive_utc(d: datetime | None) -> datetime | None:
    if d is None:
        return None
    return d.astimezone(UTC).replace(tzinfo=None) if d.tzinfo is not None else d


#: Templates alarm messages are built from (alarms.py rules, edge events); the fault variant before the plain one.
ALARM_MESSAGE_KEYS = ("alarm.rule_value", "alarm.edge_event_fault", "alarm.edge_event")
#: Templates of what the system writes into histories and descriptions: alarm messages, the diagnosis and health
#: explanation copied from the alarm's evidence, and the comments of steps taken without one. The cloud model's
#: comment first: it ends like ``diag.fault_confidence``, which would otherwise claim the whole line.
WRITTEN_KEYS = ("wo.comment.cloud_diagnosis", *ALARM_MESSAGE_KEYS, "diag.fault_confidence", "health.explain",
                "health.explain_no_penalties", "health.envelope_line_others", "health.envelope_line",
                "health.velocity_zone", "health.velocity",
                "wo.comment.assigned", "wo.comment.verified", "wo.comment.diagnosis",
                *(k for k in texts.TEMPLATES if k.startswith("diag.ev.")))
#: List markers a system-written line may start with (``Diagnosis.explain``'s evidence lines).
LINE_PREFIXES = ("  - ",)


def text_lines(text: str) -> list[TextLinePublic]:
    """``text`` line by line, each with its message keys where the system wrote it from templates."""
    out = []
    for line in text.splitlines():
        prefix = next((p for p in LINE_PREFIXES if line.startswith(p)), "")
        parts = texts.parse_joined(WRITTEN_KEYS, line[len(prefix):]) or []
        out.append(TextLinePublic(text=line, parts=[text_public(t) for t in parts], prefix=prefix if parts else ""))
    return out


def _steps(history: list[Any]) -> list[StepPublic]:
    return [StepPublic(state=s.state, at=s.at, by=s.by, comment=s.comment, comment_lines=text_lines(s.comment))
            for s in history]


def _keyed(t: texts.Text | None) -> tuple[str | None, dict[str, str] | None]:
    return (t.key, dict(t.params)) if t is not None else (None, None)


def plan_public(i: PlanItem) -> PlanItemPublic:
    """A plan row; its title (an order's or a predicted inspection) and reason with keys where built from them."""
    title = texts.parse_any(("wo.title.fault_on_asset", "plan.title.inspect_predicted"), i.title)
    reason = texts.parse_any(("plan.reason.overdue", "plan.reason.due_this_week"), i.reason)
    (tk, tp), (rk, rp) = _keyed(title), _keyed(reason)
    return PlanItemPublic(asset=i.asset, title=i.title, title_key=tk, title_params=tp, due_at=i.due_at,
                          priority=i.priority, state=i.state, work_order=i.work_order, overdue=i.overdue,
                          reason=i.reason, reason_key=rk, reason_params=rp)


def alarm_public(mill: str, a: Alarm) -> AlarmPublic:
    m = texts.parse_any(ALARM_MESSAGE_KEYS, a.message)
    return AlarmPublic(id=a.id, mill=mill, asset=a.asset, rule=a.rule, severity=a.severity.value, state=a.state.value,
                       message=a.message, message_key=m.key if m else None, message_params=m.params if m else None,
                       value=a.value, count=a.count, raised_at=a.raised_at, evidence=a.evidence,
                       history=_steps(a.history))


def order_public(mill: str, w: WorkOrder, now: datetime | None = None) -> WorkOrderPublic:
    k = texts.keyed("wo.title.fault_on_asset", {"fault": w.fault, "asset": w.asset}, w.title)
    return WorkOrderPublic(id=w.id, mill=mill, asset=w.asset, title=w.title, title_key=k.key if k else None,
                           title_params=k.params if k else None, fault=w.fault, priority=w.priority.value,
                           state=w.state.value, created_at=w.created_at, created_by=w.created_by, due_at=w.due_at,
                           overdue=w.is_overdue(now or _now()), assignee=w.assignee, alarm_id=w.alarm_id,
                           description=w.description, description_lines=text_lines(w.description),
                           hi_at_open=w.hi_at_open, hi_at_verify=w.hi_at_verify,
                           resolution=w.resolution.value if w.resolution is not None else None,
                           history=_steps(w.history))


def _maintenance(hs: HealthStore, store: TimeSeriesStore | None = None) -> Maintenance:
    return Maintenance(hs, store)


@contextmanager
def _http_errors() -> Iterator[None]:
    """The use cases' refusals as HTTP answers: 404 unknown (or another mill's), 409 refused, 422 missing."""
    try:
        yield
    except RecordNotFound as exc:
        raise keyed_error(status.HTTP_404_NOT_FOUND, "not_found", {"kind": exc.kind, "id": repr(exc.ident)}) \
            from None
    except VerifyRefused as exc:
        raise keyed_error(status.HTTP_409_CONFLICT, "verify_refused",
                          {"id": exc.ident, "health": exc.health, "needed": exc.needed}) from None
    except InvalidTransition as exc:
        raise keyed_error(status.HTTP_409_CONFLICT, "transition_refused",
                          {"kind": exc.kind, "id": exc.ident, "action": exc.action, "state": exc.state}) from None
    except RecordConflict as exc:
        raise keyed_error(status.HTTP_409_CONFLICT, "conflict", {"id": exc.ident}, key="error.record_exists") \
            from None
    except MissingInput as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


# --- alarms ----------------------------------------------------------------------------------------

@router.get("/alarms")
def list_alarms(mill: ReadableMill, hs: HealthStoreDep, state: AlarmState | None = None,
                asset: AssetFilter = None, limit: Limit = 1000) -> list[AlarmPublic]:
    """Alarms of the mill, oldest first (filter by state or asset; at most ``limit``, the newest)."""
    found = _maintenance(hs).alarms(mill.id, state=state, asset=asset)
    return [alarm_public(mill.id, a) for a in found[-limit:]]


@router.post("/alarms", status_code=status.HTTP_201_CREATED)
def record_alarm(mill: WritableMill, body: AlarmCreate, user: CurrentUser, hs: HealthStoreDep) -> AlarmPublic:
    """Record an alarm raised at the edge (or by hand)."""
    with _http_errors():
        a = _maintenance(hs).record_alarm(
            mill.id, asset=body.asset, rule=body.rule, severity=body.severity, message=body.message,
            raised_at=_naive_utc(body.raised_at) or _now(), value=body.value if body.value is not None else 0.0,
            evidence={**body.evidence, "recorded_by": user.username})
    return alarm_public(mill.id, a)


@router.post("/alarms/{alarm_id}/{action}")
def alarm_step(mill: MaintainableMill, alarm_id: str, action: Literal["acknowledge", "clear"], body: Comment,
               user: CurrentUser, hs: HealthStoreDep) -> AlarmPublic:
    """Acknowledge or clear an alarm (409 when its state does not allow it)."""
    with _http_errors():
        a = _maintenance(hs).step_alarm(mill.id, alarm_id, action, by=user.username, at=_now(), comment=body.comment)
    return alarm_public(mill.id, a)


# --- work orders -----------------------------------------------------------------------------------

@router.get("/work-orders")
def list_work_orders(mill: ReadableMill, hs: HealthStoreDep,
                     state: Annotated[list[WOState] | None, Query(max_length=10)] = None,
                     asset: AssetFilter = None, limit: Limit = 1000) -> list[WorkOrderPublic]:
    """Work orders of the mill, oldest first (filter by state or asset; at most ``limit``, the newest)."""
    now = _now()
    found = _maintenance(hs).orders(mill.id, states=state, asset=asset)
    return [order_public(mill.id, w, now) for w in found[-limit:]]


@router.get("/work-orders/overdue")
def list_overdue(mill: ReadableMill, hs: HealthStoreDep) -> list[WorkOrderPublic]:
    """Work orders past their due date and not yet resolved, most overdue first."""
    now = _now()
    return [order_public(mill.id, w, now) for w in _maintenance(hs).overdue(mill.id, now)]


@router.post("/work-orders", status_code=status.HTTP_201_CREATED)
def create_work_order(mill: MaintainableMill, body: WorkOrderCreate, user: CurrentUser,
                      hs: HealthStoreDep) -> WorkOrderPublic:
    """Create a work order by hand, or from an alarm (``alarm_id``)."""
    now = _now()
    with _http_errors():
        w = _maintenance(hs).create_order(
            mill.id, by=user.username, at=now, alarm_id=body.alarm_id, asset=body.asset, title=body.title,
            priority=body.priority, fault=body.fault, due_at=_naive_utc(body.due_at), description=body.description,
            health_index=body.health_index)
    return order_public(mill.id, w, now)


@router.get("/work-orders/{order_id}")
def get_work_order(mill: ReadableMill, order_id: str, hs: HealthStoreDep) -> WorkOrderPublic:
    with _http_errors():
        return order_public(mill.id, _maintenance(hs).order(mill.id, order_id))


@router.post("/work-orders/{order_id}/{action}")
def work_order_step(mill: MaintainableMill, order_id: str,
                    action: Literal["assign", "start", "resolve", "reopen", "verify", "close", "cancel"],
                    body: WorkOrderStep, user: CurrentUser, hs: HealthStoreDep, store: StoreDep) -> WorkOrderPublic:
    """One lifecycle step (409 when refused: wrong state, or verify before the health index recovered).

    ``verify`` checks the asset's latest measured health index where the store has one (the
    ``health_index`` in the body only where it has none).
    """
    now = _now()
    with _http_errors():
        w = _maintenance(hs, store).step_order(mill.id, order_id, action, by=user.username, at=now,
                                               comment=body.comment, assignee=body.assignee,
                                               health_index=body.health_index,
                                               resolution=Resolution(body.resolution) if body.resolution else None)
    return order_public(mill.id, w, now)


# --- plan and report -------------------------------------------------------------------------------

@router.get("/plan")
def get_weekly_plan(mill: ReadableMill, hs: HealthStoreDep,
                    week_start: Annotated[InDatetime | None,
                                          Query(description="default: this Monday 00:00 UTC")] = None,
                    ) -> list[PlanItemPublic]:
    """The week's maintenance plan: overdue orders first, then those due in the week."""
    if week_start is None:
        today = _now().replace(hour=0, minute=0, second=0, microsecond=0)
        week_start = today - timedelta(days=today.weekday())
    ws = _naive_utc(week_start)
    assert ws is not None
    return [plan_public(i) for i in _maintenance(hs).weekly_plan(mill.id, ws, now=max(ws, _now()))]


@router.get("/report")
def get_monthly_report(mill: ReadableMill, hs: HealthStoreDep,
                       month: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM")] = None,
                       ) -> MonthlyReportPublic:
    """Faults found, time to fix and downtime avoided in a month (default: this month)."""
    try:
        start = datetime.strptime(month, "%Y-%m") if month else _now().replace(day=1, hour=0, minute=0, second=0,
                                                                              microsecond=0)
    except ValueError:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"month {month!r} is not a month (YYYY-MM)") \
            from None
    r = _maintenance(hs).monthly_report(mill.id, start)

    def fin(v: float) -> float | None:
        return None if v != v else round(v, 2)  # NaN (no resolved orders) -> null

    return MonthlyReportPublic(month=r.month, faults_found=r.faults_found, orders_created=r.orders_created,
                               orders_resolved=r.orders_resolved, orders_verified=r.orders_verified,
                               overdue=r.overdue, time_to_fix_h_median=fin(r.time_to_fix_h_median),
                               time_to_fix_h_mean=fin(r.time_to_fix_h_mean), downtime_avoided_h=r.downtime_avoided_h,
                               assumptions=r.assumptions, text=r.lines(),
                               text_parts=[text_public(t) for t in r.texts()])
