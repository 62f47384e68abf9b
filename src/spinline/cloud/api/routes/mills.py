"""Mills in the caller's scope, each mill's tree and latest values."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from spinline.cloud.api import schemas as s
from spinline.cloud.api.deps import CurrentUser, MetaDep, ReadableMill, StoreDep
from spinline.cloud.api.services import data

router = APIRouter(tags=["mills"])

PointsQuery = Annotated[str | None, Query(
    description="comma-separated tags, keys or machine/point names of this mill; default: every point")]


@router.get("/mills")
def list_mills(user: CurrentUser, meta: MetaDep) -> list[s.MillPublic]:
    """The mills the caller may see (all of them for a zone operator)."""
    return [data.mill_public(m) for m in meta.mills() if user.sees(m.id)]


@router.get("/mills/{mill}")
def read_mill(mill: ReadableMill) -> s.MillPublic:
    return data.mill_public(mill)


@router.get("/mills/{mill}/tree")
def read_tree(mill: ReadableMill, store: StoreDep) -> s.MillTree:
    """Workshops -> lines -> machines -> points, with each point's tag and key."""
    return data.tree(mill, store.points(mill.id))


@router.get("/mills/{mill}/latest")
def read_latest(mill: ReadableMill, store: StoreDep, points: PointsQuery = None) -> list[s.LatestValue]:
    """The most recent value of each (selected) point of the mill."""
    wanted = None if points is None else points.split(",")
    return data.latest(store, data.select_points(store.points(mill.id), wanted))
