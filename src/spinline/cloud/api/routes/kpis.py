"""Production KPIs of a mill, and the zone comparison at a standard count."""

from __future__ import annotations

import functools
import math
from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status

from spinline.cloud.api import schemas as s
from spinline.cloud.api.deps import (
    CloudDep,
    CurrentUser,
    Gone,
    HeavyWork,
    KpiRangeDep,
    MetaDep,
    ReadableMill,
    ReportLang,
    SettingsDep,
    TimeRange,
)
from spinline.cloud.api.errors import keyed_error
from spinline.cloud.kpis.service import KpiRow

router = APIRouter(tags=["kpis"])

StandardNe = Annotated[float | None, Query(ge=1, le=200, description="standard count for normalisation "
                                                                       "(default: the server's, 40s)")]


def _finite(v: object) -> object:
    """NaN or infinity (a ratio with nothing under it) is sent as null, as the schema says."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def kpi_public(r: KpiRow) -> s.KpiPublic:
    k = {name: _finite(v) for name, v in asdict(r.kpis).items()}
    return s.KpiPublic(group=r.group, id=r.id, name=r.name, mill=r.mill, line=r.line,  # type: ignore[arg-type]
                       machine_type=r.machine_type, start=s.ts(r.window.start_ns), end=s.ts(r.window.end_ns),
                       **k)  # type: ignore[arg-type]


def _shift_span(span: TimeRange, by: str, max_days: float) -> None:
    days = (span.end_ns - span.start_ns) / 86400e9
    if by == "shift" and days > max_days:
        raise keyed_error(status.HTTP_422_UNPROCESSABLE_CONTENT, "span_too_large",
                          {"days": f"{days:.1f}", "what": "KPIs by shift", "limit": f"{max_days:g}"})


@router.get("/mills/{mill}/kpis", dependencies=[HeavyWork])
async def mill_kpis(mill: ReadableMill, cloud: CloudDep, settings: SettingsDep, span: KpiRangeDep, gone: Gone,
                    by: Literal["machine", "line", "mill", "shift"] = "mill",
                    standard_ne: StandardNe = None) -> s.KpiReport:
    """KPIs per machine, line, the whole mill, or each shift (in the mill's time zone); docs/kpis.md."""
    _shift_span(span, by, settings.max_shift_kpi_span_days)
    std = standard_ne or settings.standard_ne
    rows = await cloud.heavy_lane.run(functools.partial(cloud.kpis.mill_kpis, mill.config, span.start_ns, span.end_ns,
                                                        by=by, standard_ne=std, cancelled=gone))
    return s.KpiReport(standard_ne=std, start=s.ts(span.start_ns), end=s.ts(span.end_ns), by=by,
                       rows=[kpi_public(r) for r in rows])


@router.get("/zone/kpis", dependencies=[HeavyWork])
async def zone_kpis(user: CurrentUser, cloud: CloudDep, meta: MetaDep, settings: SettingsDep, span: KpiRangeDep,
                    gone: Gone, standard_ne: StandardNe = None) -> s.KpiReport:
    """One row per mill in the caller's scope, with output and GPS converted to a standard count."""
    std = standard_ne or settings.standard_ne

    def work() -> list[KpiRow]:
        rows = []
        for m in meta.mills():
            if user.sees(m.id):
                rows += cloud.kpis.mill_kpis(m.config, span.start_ns, span.end_ns, by="mill", standard_ne=std,
                                             cancelled=gone)
        return rows

    rows = await cloud.heavy_lane.run(work)
    return s.KpiReport(standard_ne=std, start=s.ts(span.start_ns), end=s.ts(span.end_ns), by="mill",
                       rows=[kpi_public(r) for r in rows])


@router.get("/mills/{mill}/reports/production/{period}",
            responses={200: {"content": {"application/pdf": {}, "text/html": {}, "text/csv": {}}}})
def production_report(mill: ReadableMill, cloud: CloudDep, settings: SettingsDep, period: str, lang: ReportLang,
                      format: Annotated[Literal["pdf", "html", "csv"], Query()] = "pdf",  # noqa: A002
                      standard_ne: StandardNe = None) -> Response:
    """The weekly (``2026-W47``) or monthly (``2026-10``) production report as a file (PDF with charts)."""
    from spinline.cloud import reports

    try:
        r = reports.build(cloud.kpis, mill.config, period, standard_ne=standard_ne or settings.standard_ne)
        content, media, name = reports.render(r, format, lang)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    return Response(content, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})
