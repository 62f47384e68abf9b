"""``spinline carbon``: the monthly energy and carbon report, and the factor library."""

from __future__ import annotations

from pathlib import Path

import typer

from spinline.core.errors import SpinlineError

app = typer.Typer(help="Carbon footprint and energy analytics.", no_args_is_help=True, add_completion=False)


@app.command()
def report(
    site: Path = typer.Option(..., "--site", help="site YAML file"),
    db: str = typer.Option("embedded", "--db", help="store: embedded[:PATH] or postgresql://..."),
    mill: str = typer.Option(..., "--mill", help="mill id"),
    month: str = typer.Option(..., "--month", help="YYYY-MM, the mill's local calendar month"),
    out: Path = typer.Option(Path("."), "--out", help="folder for the report files"),
    rule: str = typer.Option("mass", "--rule", help="shared-load allocation: mass | energy | spindle_hours"),
    gap_fill: str = typer.Option("auto", "--gap-fill", help="auto | estimate | none"),
    factors: list[Path] = typer.Option([], "--factors", help="extra factor YAML (custom factors)"),
    inputs: Path | None = typer.Option(None, "--inputs", help="carbon inputs YAML (fuels, certificates, lots ...)"),
    green_kwh: float = typer.Option(0.0, "--green-kwh", help="green-certificate kWh for the month (adds one)"),
    tolerance: float = typer.Option(0.05, "--tolerance", help="sub-meter reconciliation tolerance (share)"),
    pdf: bool = typer.Option(True, "--pdf/--no-pdf", help="also write the PDF"),
    lang: str = typer.Option("en", "--lang", help="language of the PDF: zh-CN | en"),
    estimated_limit: float = typer.Option(0.10, "--estimated-limit", min=0.0, max=1.0,
                                          help="flag the figures when more than this share of kWh is estimated"),
) -> None:
    """Write a month's report: HTML, PDF, CSV/XLSX data, JSON figures and PACT product footprints."""
    from spinline.carbon import inputs as ci
    from spinline.carbon.factors import FactorLibrary
    from spinline.carbon.report import write_report
    from spinline.cloud.carbon.service import month_report
    from spinline.cloud.storage.factory import open_store
    from spinline.core.site_cli import load_site_or_exit, mill_or_exit

    if rule not in ("mass", "energy", "spindle_hours"):
        raise typer.BadParameter("--rule must be mass, energy or spindle_hours")
    if gap_fill not in ("auto", "estimate", "none"):
        raise typer.BadParameter("--gap-fill must be auto, estimate or none")
    if lang not in ("zh-CN", "en"):
        raise typer.BadParameter("--lang must be zh-CN or en")
    the_mill = mill_or_exit(load_site_or_exit(site), mill)
    try:
        lib = FactorLibrary.load(factors)
        inp = ci.load_inputs(inputs)
        if green_kwh > 0:
            inp = inp.with_green_kwh(month, green_kwh, ci.parse_month(month)[0])
        store = open_store(db)
        try:
            fig = month_report(store, the_mill, month, library=lib, inputs=inp, rule=rule,  # type: ignore[arg-type]
                               gap_fill=gap_fill, tolerance=tolerance,  # type: ignore[arg-type]
                               estimated_limit=estimated_limit)
            paths = write_report(fig, out, pdf=pdf, lang=lang)
        finally:
            store.close()
    except (SpinlineError, KeyError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    fp, inv = fig.footprint, fig.inventory
    typer.echo(f"{mill} {month}: {fp.total_kwh:,.0f} kWh, {fp.yarn_kg:,.0f} kg yarn, {fp.kwh_per_kg:.3f} kWh/kg, "
               f"{fig.carbon_mill.spinning:.3f} kgCO2e/kg; Scope 2 location "
               f"{inv.scope2_location_kg / 1000:,.1f} t, market {inv.scope2_market_kg / 1000:,.1f} t"
               + (" (month to date)" if fig.month_to_date else ""))
    if fig.estimated_flagged:
        typer.echo(f"warning: {fig.quality.estimated_share:.0%} of the kWh is estimated (limit "
                   f"{fig.estimated_limit:.0%}): the per-kg figures rest on estimates")
    for p in paths:
        typer.echo(str(p))


@app.command()
def factors(extra: list[Path] = typer.Option([], "--factors", help="extra factor YAML")) -> None:
    """List the factor library (custom factors marked)."""
    from spinline.carbon.factors import FactorLibrary

    lib = FactorLibrary.load(extra)
    typer.echo(f"{lib.name} {lib.version} ({lib.digest})")
    for f in sorted(lib.factors, key=lambda x: (x.kind, x.region, x.year)):
        typer.echo(f"  {f.label()}  [{f.source.document}; {f.source.table}]")
