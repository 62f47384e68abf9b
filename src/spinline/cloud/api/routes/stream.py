"""Live values pushed to the browser with Server-Sent Events.

A browser's ``EventSource`` cannot send an Authorization header: the stream authenticates with the
session cookie as well as with a bearer token (never a token in the URL). Each user may hold
``max_streams_per_user`` streams open at once (429 ``too_many_streams`` beyond); a stream ends at
once when its session or token ends (logout, revocation, the user disabled or changed) and, at the
next poll, when it expires.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent

from spinline.cloud.api import schemas as s
from spinline.cloud.api.deps import ApiError, Caller, CallerDep, CloudDep, ReadableMill, SettingsDep, StoreDep
from spinline.cloud.api.services import data
from spinline.cloud.api.services.streams import LiveStream, TooManyStreams
from spinline.core.aio import wait_event
from spinline.core.errors import AuthError

router = APIRouter(tags=["stream"])


async def stream_slot(caller: CallerDep, cloud: CloudDep) -> AsyncIterator[LiveStream]:
    """One of the caller's stream slots, held until the response is over (429 when none is left)."""
    try:
        slot = cloud.streams.open(caller.principal.user_id, caller.credential)
    except TooManyStreams as exc:
        raise ApiError(status.HTTP_429_TOO_MANY_REQUESTS, "too_many_streams", str(exc),
                       headers={"Retry-After": "5"}) from None
    try:
        yield slot
    finally:
        cloud.streams.close(slot)


StreamSlot = Annotated[LiveStream, Depends(stream_slot)]


def _still_valid(cloud: CloudDep, caller: Caller) -> bool:
    """Whether the stream's credential still authenticates (another process may have ended it)."""
    if caller.kind == "bearer":
        return cloud.accounts.check_token(caller.credential)
    try:
        cloud.accounts.session(caller.credential, touch=False)
    except AuthError:
        return False
    return True


@router.get("/mills/{mill}/stream", response_class=EventSourceResponse,
            responses={429: {"model": s.ErrorPublic, "description": "too many open streams for this user"}})
async def stream_latest(
    mill: ReadableMill, store: StoreDep, settings: SettingsDep, cloud: CloudDep, caller: CallerDep, slot: StreamSlot,
    points: Annotated[str | None, Query(description="comma-separated tags, keys or machine/point; default: all")]
    = None,
    max_events: Annotated[int | None, Query(ge=1, description="close after this many events")] = None,
) -> AsyncIterator[ServerSentEvent]:
    """``event: latest`` with the values that changed since the last event (all of them first).

    ``data`` is a JSON list of ``LatestValue``; ``id`` is the newest timestamp sent (ns), so a
    reconnecting browser resumes without a gap in what it shows. Authenticates with the session
    cookie (browsers) or a bearer token.
    """
    infos = await run_in_threadpool(store.points, mill.id)
    selected = data.select_points(infos, None if points is None else points.split(","))
    seen: dict[str, int] = {}
    sent = 0
    while max_events is None or sent < max_events:
        if slot.ended.is_set() or not await run_in_threadpool(_still_valid, cloud, caller):
            return
        values = await run_in_threadpool(data.latest, store, selected)
        fresh = [v for v in values if seen.get(v.key) != int(v.ts.timestamp() * 1e6)]
        if fresh or sent == 0:
            for v in fresh:
                seen[v.key] = int(v.ts.timestamp() * 1e6)
            newest = max((int(v.ts.timestamp() * 1e6) * 1000 for v in values), default=0)
            yield ServerSentEvent(event="latest", id=str(newest), data=[v.model_dump(mode="json") for v in fresh])
            sent += 1
        await wait_event(slot.ended, settings.stream_interval_s)
