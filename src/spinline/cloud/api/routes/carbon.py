"""Carbon figures of a mill's month for the dashboard: the same numbers as ``spinline carbon report``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status

from spinline.carbon.factors import FactorError
from spinline.carbon.footprint import AllocationError
from spinline.carbon.report import pact_footprints, render_html, tables, write_pdf, write_xlsx
from spinline.carbon.service import figures_dict, month_report
from spinline.cloud.api.deps import ReadableMill, StoreDep

router = APIRouter(tags=["carbon"])


RuleQ = Annotated[Literal["mass", "energy", "spindle_hours"], Query(description="shared-load allocation rule")]


@router.get("/mills/{mill}/carbon/{month}")
def carbon_month(mill: ReadableMill, store: StoreDep, month: str, rule: RuleQ = "mass") -> dict[str, Any]:
    """Inventory (Scope 1, Scope 2 location and market), per-kg figures, indicators, data quality, factors."""
    try:
        return figures_dict(month_report(store, mill.config, month, rule=rule))
    except (FactorError, AllocationError, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None


@router.get("/mills/{mill}/carbon/{month}/pact")
def carbon_pact(mill: ReadableMill, store: StoreDep, month: str, rule: RuleQ = "mass") -> list[dict[str, Any]]:
    """PACT (Pathfinder) v2 ProductFootprints, one per yarn count."""
    try:
        return pact_footprints(month_report(store, mill.config, month, rule=rule))
    except (FactorError, AllocationError, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None


_MEDIA = {"html": "text/html; charset=utf-8", "pdf": "application/pdf",
          "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


@router.get("/mills/{mill}/carbon/{month}/report", response_class=Response,
            responses={200: {"content": {m: {} for m in _MEDIA.values()}}})
def carbon_report_file(mill: ReadableMill, store: StoreDep, month: str, rule: RuleQ = "mass",
                       format: Literal["html", "pdf", "xlsx"] = "html") -> Response:  # noqa: A002 (the query name)
    """The month's report as one file (what ``spinline carbon report`` writes), for the console's download."""
    try:
        d = figures_dict(month_report(store, mill.config, month, rule=rule))
    except (FactorError, AllocationError, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None
    if format == "html":
        body = render_html(d).encode()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"report.{format}"
            if format == "pdf":
                write_pdf(path, d)
            else:
                write_xlsx(path, tables(d))
            body = path.read_bytes()
    name = f"carbon_{mill.id}_{month}.{format}"
    return Response(body, media_type=_MEDIA[format], headers={"Content-Disposition": f'attachment; filename="{name}"'})
