"""Federated runs over HTTP (``spinline.cloud.models.fedrun``): start one for a machine type, read its state.

* ``POST /api/v1/models/federated-runs`` ``{"machine_type", "held_out"?, "days"?, "timeout_s"?}``: 202 with
  the run's record (``status: running``) once the Flower server listens and every federated mill's edge
  has its join request queued; the run ends in the background (``done`` with the candidate's version, or
  ``failed`` with the reason and, per mill, whether its edge took the request). 422: the run cannot
  start (fewer than two federated mills of that type, a mill without an active edge, no Flower venv).
* ``GET /api/v1/models/federated-runs/{run_id}``: the record.

A run spans every federated mill of the zone and its result is a fleet model, whose status is the zone
operator's (as in ``routes.models``): other roles get 403.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from spinline.cloud.api.deps import CloudDep, CurrentUser, forbidden, not_found
from spinline.cloud.api.schemas import ErrorPublic
from spinline.cloud.auth.roles import Permission, Principal
from spinline.cloud.models.federated import FederatedError
from spinline.cloud.models.fedrun import FederatedRuns

router = APIRouter(prefix="/models/federated-runs", tags=["models"])
RunPath = Annotated[str, Path(max_length=64, description="run id, e.g. fl-0123456789ab")]


class StartRun(BaseModel):
    machine_type: str = Field(min_length=1, max_length=64, description="e.g. ring_frame")
    held_out: list[str] | None = Field(default=None, max_length=100,
                                       description="mills that only evaluate (default: a mill-wise split)")
    days: float = Field(default=90.0, gt=0, le=3650, description="span of feature rows the edges use")
    timeout_s: float = Field(default=300.0, ge=5, le=3600,
                             description="how long the server waits for every mill's edge, per round")


def _runs(user: Principal, cloud: CloudDep) -> FederatedRuns:
    if not (user.all_mills and user.has(Permission.MANAGE_EDGES)):
        raise forbidden("federated runs train a fleet model: they are the zone operator's")
    if cloud.federated is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "federated runs are starting")
    return cloud.federated


@router.post("", status_code=status.HTTP_202_ACCEPTED, responses={403: {"model": ErrorPublic},
                                                                    422: {"model": ErrorPublic}})
async def start_run(body: StartRun, user: CurrentUser, cloud: CloudDep) -> dict[str, Any]:
    """Start a federated run; the federated mills' edges are asked to join (see the module docstring)."""
    runs = _runs(user, cloud)
    try:
        started = await run_in_threadpool(lambda: runs.start(body.machine_type, actor=user.username,
                                                             held_out=body.held_out, days=body.days,
                                                             timeout_s=body.timeout_s))
    except FederatedError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    threading.Thread(target=runs.finish, args=(started,), name=f"federated-{started.run_id}", daemon=True).start()
    rec = await run_in_threadpool(runs.get, started.run_id)
    assert rec is not None
    return rec


@router.get("/{run_id}", responses={403: {"model": ErrorPublic}, 404: {"model": ErrorPublic}})
async def show_run(run_id: RunPath, user: CurrentUser, cloud: CloudDep) -> dict[str, Any]:
    """A federated run's record: status, mills, server, candidate version or the reason it failed."""
    rec = await run_in_threadpool(_runs(user, cloud).get, run_id)
    if rec is None:
        raise not_found(f"federated run {run_id}")
    return rec
