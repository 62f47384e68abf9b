"""Events of a mill (notes, doffs, alarms raised by other parts): list and record."""

from __future__ import annotations

import time
from datetime import UTC
from typing import Annotated

from fastapi import APIRouter, Query, status

from spinline.cloud.api import schemas as s
from spinline.cloud.api.deps import CurrentUser, MetaDep, ReadableMill, TimeRangeDep, WritableMill
from spinline.cloud.meta.store import EventRecord

router = APIRouter(prefix="/mills/{mill}/events", tags=["events"])


def event_public(e: EventRecord) -> s.EventPublic:
    return s.EventPublic(id=e.id, mill=e.mill, ts=s.ts(e.ts_ns), machine=e.machine, kind=e.kind, severity=e.severity,
                         message=e.message, source=e.source)


@router.get("")
def list_events(mill: ReadableMill, meta: MetaDep, span: TimeRangeDep,
                kind: Annotated[list[str] | None, Query(description="only these kinds", max_length=50)] = None,
                machine: Annotated[str | None, Query(max_length=64)] = None,
                limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> list[s.EventPublic]:
    """Events in [start, end), newest first."""
    return [event_public(e) for e in meta.events(mill.id, start_ns=span.start_ns, end_ns=span.end_ns,
                                                 kinds=kind, machine=machine, limit=limit)]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_event(mill: WritableMill, body: s.EventCreate, user: CurrentUser, meta: MetaDep) -> s.EventPublic:
    ts = body.ts
    if ts is not None and ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)          # a time without an offset is UTC, as everywhere in the API
    ts_ns = int(ts.timestamp() * 1e6) * 1000 if ts is not None else time.time_ns()
    return event_public(meta.add_event(mill=mill.id, ts_ns=ts_ns, kind=body.kind, severity=body.severity,
                                       message=body.message, machine=body.machine, source=user.username))
