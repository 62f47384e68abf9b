"""Health of a mill's machines: the health index per asset, rolled up per machine, line and mill.

The index of an asset is the edge's ``health_index`` where it sent one, else computed here from the
anomaly score and velocity RMS (``spinline.health.health_index``); either way the answer says which
evidence drove it (the largest penalty), the dominant envelope line and the ISO 20816 zone. The
rollup takes the **minimum** at each level (a line stops when one machine stops) and names the child
that drives it. Reading needs ``read`` on the mill.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from spinline.cloud.api.deps import ReadableMill, StoreDep, TimeRangeDep, not_found
from spinline.cloud.api.schemas import ErrorPublic, ts
from spinline.cloud.api.services.health_history import MachineHealthHistory, machine_history
from spinline.cloud.api.timefmt import UtcDatetime
from spinline.cloud.maintenance.pipeline import LatestHealth, latest_health
from spinline.core.site import iter_machines
from spinline.core.texts import Text
from spinline.health.health_index import Rollup, rollup, status

router = APIRouter(tags=["health"])


class TextPublic(BaseModel):
    """Server-built English beside its console message key and parameters (``text`` == the key's English)."""

    text: str
    key: str
    params: dict[str, str]


def text_public(t: Text) -> TextPublic:
    return TextPublic(text=t.en, key=t.key, params=dict(t.params))


class AssetHealthPublic(BaseModel):
    asset: str
    machine: str
    channel: str
    line: str
    at: UtcDatetime
    value: float
    status: str
    #: "edge" when the edge computed the index, "cloud" when computed from its features here.
    source: str
    driver: str
    penalties: dict[str, float]
    dominant_envelope: str | None
    iso_zone: str | None
    features: dict[str, float]
    explanation: str
    #: ``explanation`` in parts ("; "-joined there) as console message keys and parameters
    explanation_parts: list[TextPublic]


class NodePublic(BaseModel):
    id: str
    level: str
    value: float
    mean: float
    status: str
    worst: str
    children: list[NodePublic]


class MillHealthPublic(BaseModel):
    mill: str
    value: float | None
    status: str | None
    worst: str | None
    assets: list[AssetHealthPublic]
    #: mill -> lines -> machines -> assets (empty when no asset has data yet)
    rollup: NodePublic | None


def _node(r: Rollup) -> NodePublic:
    return NodePublic(id=r.id, level=r.level, value=r.value, mean=r.mean, status=status(r.value), worst=r.worst,
                      children=[_node(c) for c in r.children])


def _asset(h: LatestHealth) -> AssetHealthPublic:
    x = h.health
    return AssetHealthPublic(asset=h.asset.id, machine=h.asset.machine, channel=h.asset.channel, line=h.asset.line,
                             at=h.at, value=x.value, status=x.index.status, source=x.source, driver=x.index.driver,
                             penalties={k: round(v, 2) for k, v in x.index.penalties.items()},
                             dominant_envelope=x.dominant_envelope[0] if x.dominant_envelope else None,
                             iso_zone=x.iso_zone, features={k: round(v, 4) for k, v in x.features.items()},
                             explanation=x.explain(), explanation_parts=[text_public(t) for t in x.texts()])


@router.get("/mills/{mill}/health")
async def mill_health(mill: ReadableMill, store: StoreDep) -> MillHealthPublic:
    """The latest health index of every vibration asset, and its rollup to machine, line and mill."""
    rows = await run_in_threadpool(latest_health, store, mill.id)
    if not rows:
        return MillHealthPublic(mill=mill.id, value=None, status=None, worst=None, assets=[], rollup=None)
    tree = rollup((mill.id, h.asset.line or "-", h.asset.machine, h.asset.id, h.health.value) for h in rows)
    return MillHealthPublic(mill=mill.id, value=tree.value, status=status(tree.value), worst=tree.worst,
                            assets=[_asset(h) for h in rows], rollup=_node(tree))


@router.get("/mills/{mill}/machines/{machine}/health/history", responses={404: {"model": ErrorPublic}})
async def machine_health_history(
    mill: ReadableMill, machine: Annotated[str, Path(max_length=64, description="machine id, e.g. rf01")],
    store: StoreDep, span: TimeRangeDep,
    max_points: Annotated[int, Query(ge=2, le=5000, description="per asset, at most this many samples")] = 500,
) -> MachineHealthHistory:
    """Health index, anomaly score, ISO zone and drivers of each vibration asset of a machine over time,
    and the bearing defect lines (BPFO/BPFI/BSF/FTF in Hz, with their envelope amplitudes) of the latest
    features."""
    config = next((m for _, _, m in iter_machines(mill.config) if m.id == machine), None)
    if config is None:
        raise not_found("machine", repr(machine))
    assets, latest = await run_in_threadpool(machine_history, store, mill.id, config, machine, span.start_ns,
                                             span.end_ns, max_points)
    return MachineHealthHistory(mill=mill.id, machine=machine, start=ts(span.start_ns), end=ts(span.end_ns),
                                assets=assets, latest=latest)
