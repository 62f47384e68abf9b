"""Live values pushed to the browser with Server-Sent Events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent

from spinline.cloud.api.deps import ReadableMill, SettingsDep, StoreDep
from spinline.cloud.api.services import data

router = APIRouter(tags=["stream"])


@router.get("/mills/{mill}/stream", response_class=EventSourceResponse)
async def stream_latest(
    mill: ReadableMill, store: StoreDep, settings: SettingsDep,
    points: Annotated[str | None, Query(description="comma-separated tags, keys or machine/point; default: all")]
    = None,
    max_events: Annotated[int | None, Query(ge=1, description="close after this many events")] = None,
) -> AsyncIterator[ServerSentEvent]:
    """``event: latest`` with the values that changed since the last event (all of them first).

    ``data`` is a JSON list of ``LatestValue``; ``id`` is the newest timestamp sent (ns), so a
    reconnecting browser resumes without a gap in what it shows.
    """
    infos = await run_in_threadpool(store.points, mill.id)
    selected = data.select_points(infos, None if points is None else points.split(","))
    seen: dict[int, int] = {}
    sent = 0
    while max_events is None or sent < max_events:
        values = await run_in_threadpool(data.latest, store, selected)
        fresh = [v for v in values if seen.get(v.key) != int(v.ts.timestamp() * 1e6)]
        if fresh or sent == 0:
            for v in fresh:
                seen[v.key] = int(v.ts.timestamp() * 1e6)
            newest = max((int(v.ts.timestamp() * 1e6) * 1000 for v in values), default=0)
            yield ServerSentEvent(event="latest", id=str(newest), data=[v.model_dump(mode="json") for v in fresh])
            sent += 1
        await asyncio.sleep(settings.stream_interval_s)
