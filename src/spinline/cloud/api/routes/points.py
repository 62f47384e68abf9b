"""One point's values over a time range: raw or reduced for a chart, and rollups."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from fastapi.concurrency import run_in_threadpool

from spinline.cloud.api import schemas as s
from spinline.cloud.api.deps import (
    CloudDep,
    CurrentUser,
    SettingsDep,
    StoreDep,
    TimeRange,
    TimeRangeDep,
    not_found,
    slot,
)
from spinline.cloud.api.errors import keyed_error
from spinline.cloud.api.services import data
from spinline.cloud.auth.roles import Principal
from spinline.cloud.storage.base import PointInfo, TimeSeriesStore

router = APIRouter(prefix="/points", tags=["points"])

REF_DOC = "a point tag (mill/machine/point) or its 64-bit key"


def _point(store: TimeSeriesStore, ref: str, user: Principal) -> PointInfo:
    """The point, if the caller may read its mill; 404 alike for unknown and out-of-scope points."""
    p = data.find_point(store, ref, None if user.all_mills else sorted(user.mills))
    if p is None or not user.sees(p.mill):
        raise not_found("point", repr(ref))
    return p


def _chart(store: TimeSeriesStore, ref: str, user: Principal, span: TimeRange, limit: int,
           resolution: str) -> s.SeriesPublic:
    return data.series(store, _point(store, ref, user), span.start_ns, span.end_ns, limit, resolution)


def _fine_span(span: TimeRange, resolution: str, settings: SettingsDep) -> None:
    """Raw values and 1 min rollups are read row by row: their spans have their own, shorter limits."""
    limit = {"raw": settings.max_raw_span_days, "1m": settings.max_minute_span_days}.get(resolution)
    days = (span.end_ns - span.start_ns) / 86400e9
    if limit is not None and days > limit:
        raise keyed_error(status.HTTP_422_UNPROCESSABLE_CONTENT, "span_too_large",
                          {"days": f"{days:.1f}", "resolution": resolution, "limit": f"{limit:g}"},
                          key="error.span_too_large_resolution")


@router.get("/{ref:path}/range")
async def read_range(ref: str, user: CurrentUser, store: StoreDep, settings: SettingsDep, span: TimeRangeDep,
                     cloud: CloudDep,
               max_points: Annotated[int | None, Query(gt=1, le=100_000, description="reduce to about this many points "
                                                                       "(min/max-preserving)")] = 1000,
               resolution: Literal["auto", "raw", "1m", "1h"] = "auto") -> s.SeriesPublic:
    """Values of a point in [start, end), downsampled on the server to ``max_points``.

    Raw values and 1 min rollups are read row by row: such a read takes one of the process's heavy
    slots and runs in its low-priority lane (``api.limits.Lane``), so it cannot slow the charts.
    """
    _fine_span(span, resolution, settings)
    limit = min(max_points or settings.max_range_points, settings.max_range_points)
    if resolution not in ("raw", "1m"):
        # A chart: the lookup and the read in one trip to the thread pool (each trip waits for a thread).
        return await run_in_threadpool(_chart, store, ref, user, span, limit, resolution)
    p = await run_in_threadpool(_point, store, ref, user)
    await slot(cloud.heavy_slots, settings.heavy_wait_s, "busy",
               f"the server is busy with other expensive queries; no slot within {settings.heavy_wait_s:g} s")
    try:
        return await cloud.heavy_lane.run(data.series, store, p, span.start_ns, span.end_ns, limit, resolution)
    finally:
        cloud.heavy_slots.release()


@router.get("/{ref:path}/rollup")
def read_rollup(ref: str, user: CurrentUser, store: StoreDep, settings: SettingsDep, span: TimeRangeDep,
                resolution: Literal["1m", "1h"] = "1h") -> s.RollupPublic:
    """Min, max, mean, last, count and counter increase per bucket."""
    _fine_span(span, resolution, settings)
    p = _point(store, ref, user)
    return data.rollup(store, p, span.start_ns, span.end_ns, resolution)
