"""The model registry over HTTP: list and show versions, canary, promote, roll back, retire, pin a
version for a mill's selector, and the fleet view of desired vs running models.

Scoping (``spinline.cloud.auth.roles``): reading needs ``read``; steering needs ``manage_edges``. A
caller sees the fleet models (per machine type) and the per-asset models of the mills in their scope;
another mill's model answers 404 like an unknown one. A mill manager steers his mill's edges: the
per-asset models of his mill (canary, promote, rollback, retire) and which version runs where in his
mill (``deploy``); the status of a fleet model, which every mill shares, is the zone operator's.
Refused lifecycle steps answer 409 with the reason.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from spinline.cloud.api.deps import CloudDep, CurrentUser, forbidden, not_found, require_mill_access
from spinline.cloud.api.errors import ApiError
from spinline.cloud.auth.roles import Permission, Principal
from spinline.cloud.models.registry import (
    InvalidModelTransition,
    ModelRegistry,
    ModelVersion,
    RegistryError,
    UnknownModel,
)

router = APIRouter(prefix="/models", tags=["models"])

NamePath = Annotated[str, "model line, e.g. ring_frame.mahalanobis"]


class Steer(BaseModel):
    reason: str = Field(min_length=3, max_length=500, description="why (recorded with the transition)")
    mills: list[str] | None = Field(default=None, description="fleet models: the mills it goes to")
    share: float = Field(default=0.25, gt=0, le=1, description="canary: share of the matching assets")


class Rollback(BaseModel):
    reason: str = Field(min_length=3, max_length=500)
    version: str | None = Field(default=None, description="default: the canary, else the active version")


class Deploy(BaseModel):
    mill: str
    selector_kind: Literal["mill", "machine_type", "edge", "asset"]
    selector: str
    role: Literal["active", "canary"] = "active"
    share: float = Field(default=1.0, gt=0, le=1)


def _registry(cloud: CloudDep) -> ModelRegistry:
    if cloud.models is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the model registry is starting")
    return cloud.models


def _visible(reg: ModelRegistry, user: Principal, name: str, version: str | None = None) -> ModelVersion:
    try:
        m = reg.get(name, version)
    except UnknownModel:
        raise not_found("model", name) from None
    if m.mill is not None and not user.sees(m.mill):
        raise not_found("model", name)
    return m


def _steerable(reg: ModelRegistry, user: Principal, name: str, version: str | None,
               mills: list[str] | None) -> ModelVersion:
    m = _visible(reg, user, name, version)
    if m.mill is not None:
        require_mill_access(m.mill, user, permission=Permission.MANAGE_EDGES)
    elif not user.all_mills:
        if not user.has(Permission.MANAGE_EDGES):
            raise forbidden(f"a {user.role.value} may not manage edges")
        raise forbidden("a fleet model's status is the zone operator's; pin a version for your mill with deploy")
    for mill in mills or []:
        require_mill_access(mill, user, permission=Permission.MANAGE_EDGES)
    return m


def _call(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except InvalidModelTransition as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except UnknownModel as exc:
        raise ApiError(status.HTTP_404_NOT_FOUND, "not_found", str(exc)) from None
    except RegistryError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


@router.get("")
def list_models(user: CurrentUser, cloud: CloudDep,
                name: Annotated[str | None, Query(description="one model line")] = None,
                state: Annotated[str | None, Query(alias="status")] = None) -> list[dict[str, Any]]:
    """Versions the caller may see: fleet models and their own mills' per-asset models."""
    reg = _registry(cloud)
    mills = None if user.all_mills else sorted(user.mills)
    return [m.public() for m in reg.versions(mills=mills, name=name, status=state)]


@router.get("/fleet")
def fleet_models(user: CurrentUser, cloud: CloudDep,
                 mill: Annotated[str | None, Query(description="only this mill")] = None) -> dict[str, Any]:
    """Per mill, edge and asset: the desired version beside the running one; each edge's refusals."""
    reg = _registry(cloud)
    if mill is not None:
        require_mill_access(mill, user)
        mills = [mill]
    else:
        mills = sorted(r.id for r in cloud.meta.mills()) if user.all_mills else sorted(user.mills)
    return {m: reg.fleet(m, [e.id for e in cloud.meta.edges([m])]) for m in mills}


@router.get("/{name}")
def show_model(name: str, user: CurrentUser, cloud: CloudDep) -> dict[str, Any]:
    """The line's active version (else its newest), with its transitions."""
    return _visible(_registry(cloud), user, name).public()


@router.get("/{name}/{version}")
def show_version(name: str, version: str, user: CurrentUser, cloud: CloudDep) -> dict[str, Any]:
    return _visible(_registry(cloud), user, name, version).public()


@router.post("/{name}/{version}/canary")
async def canary(name: str, version: str, body: Steer, user: CurrentUser, cloud: CloudDep) -> dict[str, Any]:
    """Send a candidate to a share of the matching assets as a canary (judged automatically)."""
    reg = _registry(cloud)
    m = _steerable(reg, user, name, version, body.mills)
    out = await run_in_threadpool(_call, reg.canary, m.name, m.version, mills=body.mills, actor=user.username,
                                  reason=body.reason, share=body.share)
    return out.public()  # type: ignore[no-any-return]


@router.post("/{name}/{version}/promote")
async def promote(name: str, version: str, body: Steer, user: CurrentUser, cloud: CloudDep) -> dict[str, Any]:
    """Make a version active (the active one it supersedes is retired, kept for a rollback)."""
    reg = _registry(cloud)
    m = _steerable(reg, user, name, version, body.mills)
    out = await run_in_threadpool(_call, reg.promote, m.name, m.version, mills=body.mills, actor=user.username,
                                  reason=body.reason)
    return out.public()  # type: ignore[no-any-return]


@router.post("/{name}/rollback")
async def rollback(name: str, body: Rollback, user: CurrentUser, cloud: CloudDep) -> dict[str, Any]:
    """Retire the canary (or the active version) and restore the one it superseded; recorded with the reason."""
    reg = _registry(cloud)
    _steerable(reg, user, name, body.version, None)
    out = await run_in_threadpool(_call, reg.rollback, name, actor=user.username, reason=body.reason,
                                  version=body.version)
    return out.public()  # type: ignore[no-any-return]


@router.post("/{name}/{version}/retire")
async def retire(name: str, version: str, body: Rollback, user: CurrentUser, cloud: CloudDep) -> dict[str, Any]:
    reg = _registry(cloud)
    m = _steerable(reg, user, name, version, None)
    out = await run_in_threadpool(_call, reg.retire, m.name, m.version, actor=user.username, reason=body.reason)
    return out.public()  # type: ignore[no-any-return]


@router.post("/{name}/{version}/deploy", status_code=status.HTTP_204_NO_CONTENT)
async def deploy(name: str, version: str, body: Deploy, user: CurrentUser, cloud: CloudDep) -> None:
    """Pin an active or canary version for a selector of one mill (the mill's manager or the zone operator)."""
    reg = _registry(cloud)
    m = _visible(reg, user, name, version)
    require_mill_access(body.mill, user, meta=cloud.meta, permission=Permission.MANAGE_EDGES)
    if body.selector_kind == "mill" and body.selector != body.mill:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "a mill selector names the mill itself")
    if body.selector_kind == "asset" and not body.selector.startswith(f"{body.mill}/"):
        raise not_found("asset", body.selector)
    if body.selector_kind == "edge":
        rec = cloud.meta.edge(body.selector)
        if rec is None or rec.mill != body.mill:
            raise not_found("edge", body.selector)
    await run_in_threadpool(_call, reg.desire, body.mill, body.selector_kind, body.selector, m, actor=user.username,
                            role=body.role, share=body.share)
