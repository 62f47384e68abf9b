"""Production KPIs of a mill, and the zone comparison at a standard count."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status

from spinline.cloud.api import schemas as s
from spinline.cloud.api.deps import CloudDep, CurrentUser, MetaDep, ReadableMill, SettingsDep, TimeRangeDep
from spinline.cloud.kpis.service import KpiRow

router = APIRouter(tags=["kpis"])

StandardNe = Annotated[float | None, Query(gt=0, le=200, description="standard count for normalisation "
                                                                       "(default: the server's, 40s)")]


def kpi_public(r: KpiRow) -> s.KpiPublic:
    k = r.kpis
    return s.KpiPublic(group=r.group, id=r.id, name=r.name, mill=r.mill, line=r.line,  # type: ignore[arg-type]
                       machine_type=r.machine_type, start=s.ts(r.window.start_ns), end=s.ts(r.window.end_ns),
                       hours=k.hours, machines=k.machines, spindles=k.spindles, run_h=k.run_h,
                       output_kg=k.output_kg, std_output_kg=k.std_output_kg, count_ne=k.count_ne,
                       efficiency_pct=k.efficiency_pct, running_efficiency_pct=k.running_efficiency_pct,
                       spindle_utilisation_pct=k.spindle_utilisation_pct,
                       availability_pct=k.availability_pct, performance_pct=k.performance_pct,
                       quality_pct=k.quality_pct, oee_pct=k.oee_pct,
                       ends_down_per_1000_spindle_h=k.ends_down_per_1000_spindle_h,
                       worst5_break_share_pct=k.worst5_break_share_pct, gps_g=k.gps_g, std_gps_g=k.std_gps_g,
                       energy_kwh=k.energy_kwh, sec_kwh_per_kg=k.sec_kwh_per_kg)


@router.get("/mills/{mill}/kpis")
def mill_kpis(mill: ReadableMill, cloud: CloudDep, settings: SettingsDep, span: TimeRangeDep,
              by: Literal["machine", "line", "mill", "shift"] = "mill",
              standard_ne: StandardNe = None) -> s.KpiReport:
    """KPIs per machine, line, the whole mill, or each shift (in the mill's time zone); docs/kpis.md."""
    std = standard_ne or settings.standard_ne
    rows = cloud.kpis.mill_kpis(mill.config, span.start_ns, span.end_ns, by=by, standard_ne=std)
    return s.KpiReport(standard_ne=std, start=s.ts(span.start_ns), end=s.ts(span.end_ns), by=by,
                       rows=[kpi_public(r) for r in rows])


@router.get("/zone/kpis")
def zone_kpis(user: CurrentUser, cloud: CloudDep, meta: MetaDep, settings: SettingsDep, span: TimeRangeDep,
              standard_ne: StandardNe = None) -> s.KpiReport:
    """One row per mill in the caller's scope, with output and GPS converted to a standard count."""
    std = standard_ne or settings.standard_ne
    rows = []
    for m in meta.mills():
        if user.sees(m.id):
            rows += cloud.kpis.mill_kpis(m.config, span.start_ns, span.end_ns, by="mill", standard_ne=std)
    return s.KpiReport(standard_ne=std, start=s.ts(span.start_ns), end=s.ts(span.end_ns), by="mill",
                       rows=[kpi_public(r) for r in rows])


@router.get("/mills/{mill}/reports/production/{period}",
            responses={200: {"content": {"application/pdf": {}, "text/html": {}, "text/csv": {}}}})
def production_report(mill: ReadableMill, cloud: CloudDep, settings: SettingsDep, period: str,
                      format: Annotated[Literal["pdf", "html", "csv"], Query()] = "pdf",  # noqa: A002
                      lang: Annotated[Literal["zh-CN", "en"], Query(description="language of the PDF")] = "zh-CN",
                      standard_ne: StandardNe = None) -> Response:
    """The weekly (``2026-W47``) or monthly (``2026-10``) production report as a file (PDF with charts)."""
    from spinline.cloud import reports

    try:
        r = reports.build(cloud.kpis, mill.config, period, standard_ne=standard_ne or settings.standard_ne)
        content, media, name = reports.render(r, format, lang)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    return Response(content, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})
