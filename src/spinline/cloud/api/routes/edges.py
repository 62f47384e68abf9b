"""Edge credentials (create: the secret once; revoke) and the fleet status of the edges."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from spinline.cloud.api import schemas as s
from spinline.cloud.api.deps import CloudDep, CurrentUser, MetaDep, StoreDep, not_found, require_mill_access
from spinline.cloud.api.services import fleet
from spinline.cloud.auth.roles import Permission, Principal
from spinline.cloud.meta.store import ConflictError, EdgeRecord, MetaStore

router = APIRouter(prefix="/edges", tags=["edges"])


def _edge(meta: MetaStore, edge_id: str, user: Principal, permission: Permission = Permission.READ) -> EdgeRecord:
    rec = meta.edge(edge_id)
    if rec is None or not user.sees(rec.mill):
        raise not_found("edge", repr(edge_id))
    require_mill_access(rec.mill, user, permission=permission)
    return rec


@router.get("")
def list_edges(user: CurrentUser, meta: MetaDep, store: StoreDep, cloud: CloudDep,
               mill: Annotated[str | None, Query(description="only this mill's edges")] = None) -> list[s.EdgePublic]:
    """Fleet status: last seen, buffer depth, lag, versions (agent and models), desired vs running models,
    refused batches and refused model updates per reason."""
    if mill is not None:
        require_mill_access(mill, user)
        scope: list[str] | None = [mill]
    else:
        scope = None if user.all_mills else sorted(user.mills)
    return fleet.fleet(store, meta.edges(scope), cloud.models)


@router.post("", status_code=status.HTTP_201_CREATED, responses={409: {"model": s.ErrorPublic}})
def create_edge(body: s.EdgeCreate, user: CurrentUser, cloud: CloudDep) -> s.EdgeCreated:
    """Register an edge of one mill. The answer holds its secret: it is never shown again.

    Edge ids are global: an id in use (by any mill, or revoked) answers 409 with a message that does
    not say whose it is.
    """
    require_mill_access(body.mill, user, meta=cloud.meta, permission=Permission.MANAGE_EDGES)
    try:
        rec, secret = cloud.edges.create(edge_id=body.id, mill=body.mill, description=body.description,
                                         created_by=user.username)
    except ConflictError:
        raise HTTPException(status.HTTP_409_CONFLICT, "this edge id is not available; choose another") from None
    pub = fleet.edge_public(rec, None, {})
    return s.EdgeCreated(**pub.model_dump(), secret=secret)


@router.get("/{edge_id}")
def read_edge(edge_id: str, user: CurrentUser, meta: MetaDep, store: StoreDep, cloud: CloudDep) -> s.EdgePublic:
    rec = _edge(meta, edge_id, user)
    return fleet.fleet(store, [rec], cloud.models)[0]


@router.get("/{edge_id}/rejections")
def read_rejections(edge_id: str, user: CurrentUser, meta: MetaDep, store: StoreDep,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[s.RejectionPublic]:
    """The most recent refused batches of an edge, newest first, with the reason and detail."""
    rec = _edge(meta, edge_id, user)
    return [s.RejectionPublic(edge=r.edge, reason=r.reason, detail=r.detail, ts=s.ts(r.ts_ns))
            for r in store.recent_rejections(rec.id, limit)]


@router.delete("/{edge_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_edge(edge_id: str, user: CurrentUser, cloud: CloudDep) -> Response:
    """Revoke an edge: its payloads are refused (401) from now on. The id is not reused."""
    rec = _edge(cloud.meta, edge_id, user, Permission.MANAGE_EDGES)
    if not cloud.edges.revoke(rec.id):
        raise not_found("active edge", repr(edge_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
