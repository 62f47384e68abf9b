"""Across the mills in the caller's scope: the zone overview, and alarms and work orders with filters,
paging and totals (``?mill=`` narrows to one or more mills; a mill outside the scope answers 404).

Reading needs ``read`` on each mill; acknowledging, clearing and the work-order steps stay on the
mill's maintenance routes (``/mills/{mill}/maintenance/...``), where the role is checked.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from spinline.cloud.api import schemas as s
from spinline.cloud.api.deps import CloudDep, CurrentUser, require_mill_access
from spinline.cloud.api.routes.kpis import StandardNe
from spinline.cloud.api.routes.maintenance import AlarmPublic, WorkOrderPublic, alarm_public, order_public
from spinline.cloud.auth.roles import Principal
from spinline.cloud.meta.store import MetaStore
from spinline.health.alarms import AlarmState, Severity
from spinline.health.workorders import Priority, WOState

router = APIRouter(tags=["zone"])


class _Page(BaseModel):
    total: int = Field(description="how many match the filters (all pages)")
    offset: int
    limit: int


class AlarmPage(_Page):
    items: list[AlarmPublic]


class WorkOrderPage(_Page):
    items: list[WorkOrderPublic]

MillsQ = Annotated[list[str] | None, Query(description="only these mills (repeat the parameter); default: every "
                                                       "mill in scope")]
MachineQ = Annotated[str | None, Query(max_length=64, description="only this machine's assets (e.g. rf01)")]
StartQ = Annotated[datetime | None, Query(description="from this time (ISO 8601, UTC unless an offset is given)")]
EndQ = Annotated[datetime | None, Query(description="before this time")]
OffsetQ = Annotated[int, Query(ge=0, le=1_000_000)]
LimitQ = Annotated[int, Query(ge=1, le=500)]


def scoped_mills(user: Principal, meta: MetaStore, wanted: list[str] | None) -> list[str]:
    """The mills asked for (each must be in scope: 404 otherwise), or every mill of the caller's scope."""
    if wanted:
        for m in wanted:
            require_mill_access(m, user, meta=meta)
        return sorted(set(wanted))
    return [m.id for m in meta.mills() if user.sees(m.id)]


def _naive(d: datetime | None) -> datetime | None:
    if d is None:
        return None
    return d.astimezone(UTC).replace(tzinfo=None) if d.tzinfo is not None else d


@router.get("/zone/overview")
async def zone_overview(user: CurrentUser, cloud: CloudDep, standard_ne: StandardNe = None) -> s.ZoneOverviewPublic:
    """Every mill in scope in one call: status, today's KPIs and carbon, health, alarms, work orders, edges."""
    def build() -> s.ZoneOverviewPublic:
        mills = [m for m in cloud.meta.mills() if user.sees(m.id)]
        edges = cloud.meta.edges([m.id for m in mills]) if mills else []
        return cloud.zone.overview(mills, edges, standard_ne=standard_ne or cloud.settings.standard_ne)

    return await run_in_threadpool(build)


@router.get("/alarms")
def list_alarms(user: CurrentUser, cloud: CloudDep, mill: MillsQ = None, machine: MachineQ = None,
                state: Annotated[list[AlarmState] | None, Query()] = None,
                severity: Annotated[list[Severity] | None, Query()] = None,
                start: StartQ = None, end: EndQ = None, offset: OffsetQ = 0, limit: LimitQ = 50) -> AlarmPage:
    """Alarms of the mills in scope, newest first (by the time raised), with the total that match."""
    mills = scoped_mills(user, cloud.meta, mill)
    page = cloud.zone.queries.alarms(mills, machine=machine, states=[x.value for x in state or []],
                                     severities=[x.value for x in severity or []], start=_naive(start),
                                     end=_naive(end), offset=offset, limit=limit) if mills else None
    items: list[AlarmPublic] = [alarm_public(m, a) for m, a in page.items] if page else []
    return AlarmPage(total=page.total if page else 0, offset=offset, limit=limit, items=items)


@router.get("/work-orders")
def list_work_orders(user: CurrentUser, cloud: CloudDep, mill: MillsQ = None, machine: MachineQ = None,
                     state: Annotated[list[WOState] | None, Query()] = None,
                     priority: Annotated[list[Priority] | None, Query()] = None,
                     overdue: Annotated[bool | None, Query(description="only (not) overdue orders")] = None,
                     start: StartQ = None, end: EndQ = None, offset: OffsetQ = 0,
                     limit: LimitQ = 50) -> WorkOrderPage:
    """Work orders of the mills in scope, newest first (by creation), with the total that match."""
    mills = scoped_mills(user, cloud.meta, mill)
    now = datetime.now(UTC).replace(tzinfo=None)
    page = cloud.zone.queries.work_orders(mills, now, machine=machine, states=[x.value for x in state or []],
                                          priorities=[x.value for x in priority or []], overdue=overdue,
                                          start=_naive(start), end=_naive(end), offset=offset,
                                          limit=limit) if mills else None
    items: list[WorkOrderPublic] = [order_public(m, w, now) for m, w in page.items] if page else []
    return WorkOrderPage(total=page.total if page else 0, offset=offset, limit=limit, items=items)
