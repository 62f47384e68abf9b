"""Carbon figures of a mill's month for the dashboard: the same numbers as ``spinline carbon report``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status

from spinline.carbon.factors import FactorError
from spinline.carbon.footprint import AllocationError
from spinline.carbon.report import pact_footprints
from spinline.carbon.service import figures_dict, month_report
from spinline.cloud.api.deps import CloudDep, HeavyWork, ReadableMill, StoreDep

router = APIRouter(tags=["carbon"])


RuleQ = Annotated[Literal["mass", "energy", "spindle_hours"], Query(description="shared-load allocation rule")]


@router.get("/mills/{mill}/carbon/{month}", dependencies=[HeavyWork])
async def carbon_month(mill: ReadableMill, store: StoreDep, cloud: CloudDep, month: str,
                       rule: RuleQ = "mass") -> dict[str, Any]:
    """Inventory (Scope 1, Scope 2 location and market), per-kg figures, indicators, data quality, factors."""
    try:
        return await cloud.heavy_lane.run(lambda: figures_dict(month_report(store, mill.config, month, rule=rule)))
    except (FactorError, AllocationError, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


@router.get("/mills/{mill}/carbon/{month}/pact", dependencies=[HeavyWork])
async def carbon_pact(mill: ReadableMill, store: StoreDep, cloud: CloudDep, month: str,
                      rule: RuleQ = "mass") -> list[dict[str, Any]]:
    """PACT (Pathfinder) v2 ProductFootprints, one per yarn count."""
    try:
        return await cloud.heavy_lane.run(lambda: pact_footprints(month_report(store, mill.config, month, rule=rule)))
    except (FactorError, AllocationError, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
