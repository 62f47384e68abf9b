"""Carbon figures of a mill's month for the dashboard: the same numbers as ``spinline carbon report``."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel, Field

from spinline.carbon import inputs as ci
from spinline.carbon.factors import FactorError
from spinline.carbon.footprint import AllocationError
from spinline.carbon.report import pact_footprints, render
from spinline.cloud.api.deps import CloudDep, HeavyWork, ReadableMill, ReportLang, SettingsDep, StoreDep
from spinline.cloud.api.schemas import ErrorPublic
from spinline.cloud.carbon.service import figures_dict, month_report

router = APIRouter(tags=["carbon"])


class MonthTrendPublic(BaseModel):
    month: str = Field(description="YYYY-MM in the mill's time zone")
    partial: bool = Field(description="true for the current month (to date)")
    yarn_t: float | None
    kwh: float | None
    kwh_per_kg: float | None
    kgce_per_t: float | None = Field(description="integrated energy, kg of standard coal per t of yarn (GB/T 2589)")
    kgco2e_per_kg: float | None = Field(description="Scope 1 + 2 location-based, per kg of yarn")
    kgco2e_per_kg_market: float | None = Field(description="Scope 1 + 2 market-based, per kg of yarn")


class CarbonTrendPublic(BaseModel):
    mill: str
    months: list[MonthTrendPublic] = Field(description="oldest first; figures null for a month without production")
    basis: str


def _fin(v: float | None, nd: int = 4) -> float | None:
    return None if v is None or not math.isfinite(v) else round(v, nd)


def _this_month(tz: str) -> str:
    t = datetime.now(ZoneInfo(tz))
    return f"{t.year:04d}-{t.month:02d}"


RuleQ = Annotated[Literal["mass", "energy", "spindle_hours"], Query(description="shared-load allocation rule")]


@router.get("/mills/{mill}/carbon/trend", responses={422: {"model": ErrorPublic}}, dependencies=[HeavyWork])
def carbon_trend(mill: ReadableMill, store: StoreDep,
                 months: Annotated[int, Query(ge=1, le=36, description="how many months, this one included")] = 12,
                 ) -> CarbonTrendPublic:
    """kWh/kg, kgce/t and kgCO2e/kg month by month (measured totals, no gap fill; this month to date).

    The same GB/T 36132 indicator rows the monthly report's trend uses (``carbon.service.month_report``).
    """
    current = _this_month(mill.timezone)
    try:
        f = month_report(store, mill.config, current, trend_months=months, with_lots=False)
        rows = {r.month: r for r in f.green_factory}
    except (FactorError, AllocationError, ValueError, TypeError, ZeroDivisionError):
        rows = {}  # a mill without production this month: the figures of each month are unknown
    out = []
    for i in range(months):
        mo = ci.shift_month(current, i - months + 1)
        r = rows.get(mo)
        if r is None or not r.yarn_t:
            out.append(MonthTrendPublic(month=mo, partial=mo == current, yarn_t=None, kwh=None, kwh_per_kg=None,
                                        kgce_per_t=None, kgco2e_per_kg=None, kgco2e_per_kg_market=None))
            continue
        mkt = r.kgco2e_per_t_market
        out.append(MonthTrendPublic(month=mo, partial=mo == current, yarn_t=_fin(r.yarn_t), kwh=_fin(r.kwh, 1),
                                    kwh_per_kg=_fin(r.kwh / (r.yarn_t * 1000.0)), kgce_per_t=_fin(r.kgce_per_t, 2),
                                    kgco2e_per_kg=_fin(r.kgco2e_per_t / 1000.0),
                                    kgco2e_per_kg_market=_fin(mkt / 1000.0) if mkt is not None else None))
    return CarbonTrendPublic(mill=mill.id, months=out, basis="measured monthly totals of energy and ring-frame "
                             "output; Scope 1 + 2 with the factors of each month's year")


@router.get("/mills/{mill}/carbon/{month}", dependencies=[HeavyWork])
async def carbon_month(mill: ReadableMill, store: StoreDep, settings: SettingsDep, cloud: CloudDep, month: str,
                       rule: RuleQ = "mass") -> dict[str, Any]:
    """Inventory (Scope 1, Scope 2 location and market), per-kg figures, indicators, data quality, factors.

    A month in progress is reported month to date over the hours its data covers (``period``);
    ``energy.estimated_flagged`` (and the same beside the product footprint and in
    ``data_quality``) is true when the estimated share of kWh exceeds the configured limit
    (``SPINLINE_CARBON_ESTIMATED_LIMIT``, default 10 %).
    """
    try:
        return await cloud.heavy_lane.run(lambda: figures_dict(month_report(
            store, mill.config, month, rule=rule, estimated_limit=settings.carbon_estimated_limit)))
    except (FactorError, AllocationError, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


@router.get("/mills/{mill}/carbon/{month}/pact", dependencies=[HeavyWork])
async def carbon_pact(mill: ReadableMill, store: StoreDep, settings: SettingsDep, cloud: CloudDep, month: str,
                      rule: RuleQ = "mass") -> list[dict[str, Any]]:
    """PACT (Pathfinder) v2 ProductFootprints, one per yarn count."""
    try:
        return await cloud.heavy_lane.run(lambda: pact_footprints(month_report(
            store, mill.config, month, rule=rule, estimated_limit=settings.carbon_estimated_limit)))
    except (FactorError, AllocationError, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None

@router.get("/mills/{mill}/carbon/{month}/report", dependencies=[HeavyWork],
            responses={200: {"content": {"application/pdf": {}, "text/html": {}}}})
def carbon_report(mill: ReadableMill, store: StoreDep, settings: SettingsDep, month: str, lang: ReportLang,
                  rule: RuleQ = "mass",
                  format: Annotated[Literal["pdf", "html", "xlsx", "json"], Query()] = "pdf",  # noqa: A002
                  ) -> Response:
    """The month's report as a file to download (PDF or HTML with charts, in the reader's language)."""
    try:
        fig = month_report(store, mill.config, month, rule=rule, estimated_limit=settings.carbon_estimated_limit)
        content, media, name = render(fig, format, lang)
    except (FactorError, AllocationError, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    return Response(content, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})
