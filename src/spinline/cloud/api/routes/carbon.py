"""Carbon figures of a mill's month for the dashboard: the same numbers as ``spinline carbon report``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status

from spinline.carbon.factors import FactorError
from spinline.carbon.footprint import AllocationError
from spinline.carbon.report import pact_footprints, render
from spinline.carbon.service import figures_dict, month_report
from spinline.cloud.api.deps import ReadableMill, SettingsDep, StoreDep

router = APIRouter(tags=["carbon"])


RuleQ = Annotated[Literal["mass", "energy", "spindle_hours"], Query(description="shared-load allocation rule")]


@router.get("/mills/{mill}/carbon/{month}")
def carbon_month(mill: ReadableMill, store: StoreDep, settings: SettingsDep, month: str,
                 rule: RuleQ = "mass") -> dict[str, Any]:
    """Inventory (Scope 1, Scope 2 location and market), per-kg figures, indicators, data quality, factors.

    A month in progress is reported month to date over the hours its data covers (``period``);
    ``energy.estimated_flagged`` (and the same beside the product footprint and in
    ``data_quality``) is true when the estimated share of kWh exceeds the configured limit
    (``SPINLINE_CARBON_ESTIMATED_LIMIT``, default 10 %).
    """
    try:
        return figures_dict(month_report(store, mill.config, month, rule=rule,
                                         estimated_limit=settings.carbon_estimated_limit))
    except (FactorError, AllocationError, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


@router.get("/mills/{mill}/carbon/{month}/pact")
def carbon_pact(mill: ReadableMill, store: StoreDep, settings: SettingsDep, month: str,
                rule: RuleQ = "mass") -> list[dict[str, Any]]:
    """PACT (Pathfinder) v2 ProductFootprints, one per yarn count."""
    try:
        return pact_footprints(month_report(store, mill.config, month, rule=rule,
                                            estimated_limit=settings.carbon_estimated_limit))
    except (FactorError, AllocationError, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


LangQ = Annotated[Literal["zh-CN", "en"], Query(description="language of the PDF (zh-CN uses the built-in "
                                                             "STSong-Light CID font)")]


@router.get("/mills/{mill}/carbon/{month}/report",
            responses={200: {"content": {"application/pdf": {}, "text/html": {}}}})
def carbon_report(mill: ReadableMill, store: StoreDep, settings: SettingsDep, month: str, rule: RuleQ = "mass",
                  format: Annotated[Literal["pdf", "html", "xlsx", "json"], Query()] = "pdf",  # noqa: A002
                  lang: LangQ = "zh-CN") -> Response:
    """The month's report as a file to download (PDF with charts, in Chinese by default)."""
    try:
        fig = month_report(store, mill.config, month, rule=rule, estimated_limit=settings.carbon_estimated_limit)
        content, media, name = render(fig, format, lang)
    except (FactorError, AllocationError, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    return Response(content, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})
