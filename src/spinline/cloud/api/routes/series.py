"""Many points of one mill in one call, each reduced on the server for a chart, and their display metadata
(``GET /mills/{mill}/points``: names, units, ranges, state labels).

``GET /mills/{mill}/series?machine=rf01`` gives every point of a machine; ``&tag=...`` (repeated)
picks points by tag, key or ``machine/point`` name. Each series is min/max-preserving downsampled
(``storage.downsample``) to ``max_points``, read from the 1 min or 1 h rollups for long spans
(``TimeSeriesStore.range`` with ``resolution=auto``), so 30 days of 1 s data is read as rollups,
never as raw rows. Keys are strings (64-bit keys exceed JavaScript's 2^53).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from spinline.cloud.api import schemas as s
from spinline.cloud.api.deps import MetaDep, ReadableMill, SettingsDep, StoreDep, TimeRangeDep
from spinline.cloud.api.services import data
from spinline.cloud.storage.base import PointInfo, TimeSeriesStore
from spinline.core.site import EDGE_MACHINE_ID, iter_machines

router = APIRouter(tags=["series"])

#: Most points one series call returns (a machine has a few dozen).
MAX_SERIES_POINTS = 100


class PointSeries(BaseModel):
    tag: str
    key: s.PointKey
    machine: str
    name: str
    unit: str
    kind: str
    resolution: str = Field(description="which data answered: raw, 1m or 1h rollups")
    reduced: bool = Field(description="true when downsampled (min/max-preserving) to max_points")
    points: list[tuple[int, float | None]] = Field(description="[ts_ms, value] pairs in time order")


class MultiSeriesPublic(BaseModel):
    mill: str
    start: datetime
    end: datetime
    max_points: int
    series: list[PointSeries]
    unknown: list[str] = Field(default_factory=list, description="requested names that match no point of the mill")


def _selected(infos: list[PointInfo], machine: str | None, tags: list[str] | None) -> tuple[list[PointInfo], list[str]]:
    if machine is None and not tags:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "give machine or at least one tag")
    pool = [p for p in infos if machine is None or p.machine == machine]
    chosen = pool if not tags else data.select_points(pool, tags)
    unknown = [t for t in tags or [] if not data.select_points(pool, [t])]
    if machine is not None and not pool:
        unknown.insert(0, machine)
    return chosen, unknown


def _read(store: TimeSeriesStore, chosen: list[PointInfo], start_ns: int, end_ns: int, max_points: int,
          resolution: str) -> list[PointSeries]:
    out = []
    for p in chosen:
        r = store.range(p.key, start_ns, end_ns, max_points=max_points, resolution=resolution)  # type: ignore[arg-type]
        ts = (r.ts_ns // 1_000_000).tolist()
        vals = [None if v != v or v in (float("inf"), float("-inf")) else v for v in r.value.tolist()]
        out.append(PointSeries(tag=p.tag, key=str(p.key), machine=p.machine, name=p.name, unit=p.unit, kind=p.kind,
                               resolution=r.resolution, reduced=r.reduced, points=list(zip(ts, vals, strict=True))))
    return out


@router.get("/mills/{mill}/series", responses={422: {"model": s.ErrorPublic}})
async def read_series(mill: ReadableMill, store: StoreDep, settings: SettingsDep, span: TimeRangeDep,
                      machine: Annotated[str | None, Query(max_length=64, description="every point of this machine")]
                      = None,
                      tag: Annotated[list[str] | None, Query(description="tags, keys or machine/point names "
                                                                         "(repeat the parameter)")] = None,
                      max_points: Annotated[int, Query(ge=2, description="per series, at most this many pairs")]
                      = 1000,
                      resolution: Literal["auto", "raw", "1m", "1h"] = "auto") -> MultiSeriesPublic:
    """Several points' values in [start, end), each downsampled on the server to ``max_points``."""
    infos = await run_in_threadpool(store.points, mill.id)
    chosen, unknown = _selected(infos, machine, tag)
    if len(chosen) > MAX_SERIES_POINTS:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"{len(chosen)} points selected; at most {MAX_SERIES_POINTS} per call")
    limit = min(max_points, settings.max_range_points)
    series = await run_in_threadpool(_read, store, chosen, span.start_ns, span.end_ns, limit, resolution)
    return MultiSeriesPublic(mill=mill.id, start=s.ts(span.start_ns), end=s.ts(span.end_ns), max_points=limit,
                             series=series, unknown=unknown)


class PointMetaPublic(BaseModel):
    tag: str
    key: s.PointKey
    machine: str
    machine_name: str
    machine_type: str
    line: str
    workshop: str
    name: str = Field(description="the point's name in the site file (the console's message catalogue key)")
    display_name: str = Field(description="a readable English name: the description, else the name spelt out")
    description: str
    unit: str
    kind: str = Field(description="gauge, counter or state")
    group: Literal["production", "vibration", "link", "edge"]
    interval_s: float
    min: float | None = Field(description="lower end of the expected range (site file), if given")
    max: float | None = Field(description="upper end of the expected range (site file), if given")
    states: dict[str, str] | None = Field(description="state code -> label for state points")


_LINK = ("link_state", "link_errors", "link_latency_ms")


def _group(p: PointInfo) -> str:
    if p.machine == EDGE_MACHINE_ID:
        return "edge"
    if p.name.startswith("vib_"):
        return "vibration"
    return "link" if p.name in _LINK else "production"


@router.get("/mills/{mill}/points")
def read_point_meta(mill: ReadableMill, store: StoreDep, meta: MetaDep,
                    machine: Annotated[str | None, Query(max_length=64, description="only this machine's points")]
                    = None) -> list[PointMetaPublic]:
    """Display metadata of the mill's (or one machine's) points: names, units, ranges and state labels."""
    names = {m.id: m.name or m.id for _, _, m in iter_machines(mill.config)}
    display = meta.point_display(mill.id)
    out = []
    for p in store.points(mill.id):
        if machine is not None and p.machine != machine:
            continue
        d = display.get(p.tag, {})
        desc = str(d.get("description") or "")
        out.append(PointMetaPublic(
            tag=p.tag, key=str(p.key), machine=p.machine, machine_name=names.get(p.machine, p.machine),
            machine_type=p.machine_type, line=p.line, workshop=p.workshop, name=p.name,
            display_name=desc if desc and desc != "derived at the edge" else p.name.replace("_", " "),
            description=desc, unit=p.unit, kind=p.kind, group=_group(p), interval_s=p.interval_s,  # type: ignore[arg-type]
            min=d.get("min"), max=d.get("max"), states=d.get("states")))
    return out
