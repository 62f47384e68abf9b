"""Write a month's figures: HTML (jinja2), PDF (reportlab), CSV + XLSX (openpyxl), PACT JSON.

All files are rendered from ``figures.figures_dict``, so every format shows the same numbers.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from spinline.carbon import pact
from spinline.carbon.figures import MonthFigures, figures_dict
from spinline.carbon.footprint import RULES


def tables(d: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """(sheet/CSV name, rows) views of the figures: one table each."""
    dq = d["data_quality"]
    lib = d["library"]
    summary = [
        {"item": "mill", "value": d["mill"]}, {"item": "month", "value": d["month"]},
        {"item": "allocation_rule", "value": f"{d['allocation_rule']}: {RULES[d['allocation_rule']]}"},
        {"item": "gap_fill", "value": d["gap_fill"]},
        {"item": "factor_library", "value": f"{lib['name']} {lib['version']} ({lib['digest']})"},
        {"item": "custom_factors", "value": ", ".join(d["custom_factors"]) or "none"},
        {"item": "total_kwh", "value": d["energy"]["total_kwh"]}, {"item": "yarn_kg", "value": d["energy"]["yarn_kg"]},
        {"item": "kwh_per_kg", "value": d["energy"]["kwh_per_kg"]},
        {"item": "scope1_kgco2e", "value": d["inventory"]["scope1_kg"]},
        {"item": "scope2_location_kgco2e", "value": d["inventory"]["scope2_location_kg"]},
        {"item": "scope2_market_kgco2e", "value": d["inventory"]["scope2_market_kg"]},
        {"item": "kgco2e_per_kg_spinning", "value": d["product_footprint"]["kgco2e_per_kg_spinning"]},
        {"item": "kgco2e_per_kg_cradle_to_gate", "value": d["product_footprint"]["kgco2e_per_kg_cradle_to_gate"]},
        {"item": "estimated_kwh_share", "value": dq["estimated_share"]},
        {"item": "interpolated_kwh_share", "value": dq["interpolated_share"]},
    ]
    counts = [{k: v for k, v in c.items() if k != "stages_kwh_per_kg"} for c in d["counts"]]
    count_stages = [{"count": c["count"], "stage": s, "kwh_per_kg": v} for c in d["counts"]
                    for s, v in c["stages_kwh_per_kg"].items()]
    lots = [{"lot": lot["lot"], "month": p["month"], "kg": p["kg"], "kwh_per_kg": p["kwh_per_kg"],
             "kgco2e_per_kg": p["kgco2e_per_kg"]} for lot in d["lots"] for p in lot["parts"]]
    return {
        "summary": summary, "inventory": d["inventory"]["lines"], "stages": d["stages"], "counts": counts,
        "count_stages": count_stages, "lines": d["lines"], "lots": lots, "green_factory": d["green_factory"]["months"],
        "opportunities": d["insight"]["opportunities"], "baselines": d["insight"]["baselines"],
        "reconciliation": dq["reconciliation"], "gaps": dq["gaps"], "counter_resets": dq["counter_resets"],
        "factors": d["factors"],
    }


def render_html(d: dict[str, Any]) -> str:
    text = resources.files("spinline.carbon").joinpath("data/report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(text).render(d=d, rule_text=RULES[d["allocation_rule"]])


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys or ["empty"])
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in r.items()})


def write_xlsx(path: Path, views: dict[str, list[dict[str, Any]]]) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)  # type: ignore[arg-type]
    for name, rows in views.items():
        ws = wb.create_sheet(name[:31])
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        ws.append(keys)
        for r in rows:
            ws.append([json.dumps(r.get(k)) if isinstance(r.get(k), list | dict) else r.get(k) for k in keys])
    wb.save(path)


def _pdf_table(rows: Iterable[list[Any]]) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    data = [[_fmt(c) for c in r] for r in rows]
    t = Table(data, repeatRows=1)
    t.setStyle(TableStyle([("FONTSIZE", (0, 0), (-1, -1), 7), ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                           ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey)]))
    return t


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 100 else f"{v:,.0f}"
    return "" if v is None else str(v)[:70]


def write_pdf(path: Path, d: dict[str, Any]) -> None:
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

    st = getSampleStyleSheet()
    inv = d["inventory"]
    story: list[Any] = [
        Paragraph(f"Energy and carbon report: {d['mill']} {d['month']}", st["Title"]),
        Paragraph(f"Allocation rule: <b>{d['allocation_rule']}</b>: {RULES[d['allocation_rule']]}. "
                  f"Gap fill: {d['gap_fill']}. Factor library {d['library']['name']} {d['library']['version']} "
                  f"({d['library']['digest']}).", st["Normal"]),
    ]
    if d["custom_factors"]:
        story.append(Paragraph(f"<b>CUSTOM factors used: {', '.join(d['custom_factors'])}</b>", st["Normal"]))
    for n in d["notes"]:
        story.append(Paragraph(n, st["Italic"]))
    story += [Spacer(1, 6), Paragraph("Organisation inventory (kgCO2e)", st["Heading2"]),
              _pdf_table([["scope", "source", "activity", "unit", "factor", "factor unit", "factor id", "kgCO2e"]]
                         + [[x["scope"], x["category"], x["activity"], x["activity_unit"], x["factor"],
                             x["factor_unit"], x["factor_id"] + (" [CUSTOM]" if x["custom"] else ""), x["kgco2e"]]
                            for x in inv["lines"]]),
              Paragraph(f"Scope 1 {inv['scope1_kg']:,.0f} kg; "
                        f"Scope 2 location-based {inv['scope2_location_kg']:,.0f} kg; "
                        f"Scope 2 market-based {inv['scope2_market_kg']:,.0f} kg.", st["Normal"]),
              Paragraph("Per kg of yarn", st["Heading2"]),
              Paragraph(f"Mill {d['energy']['kwh_per_kg']:.3f} kWh/kg, "
                        f"{d['product_footprint']['kgco2e_per_kg_spinning']:.3f} kgCO2e/kg (spinning stage).",
                        st["Normal"]),
              _pdf_table([["stage", "kWh", "kWh/kg yarn", "share"]]
                         + [[s["stage"], s["kwh"], s["kwh_per_kg_yarn"], s["share"]] for s in d["stages"]]),
              Spacer(1, 4),
              _pdf_table([["count", "kWh", "yarn kg", "kWh/kg", "kgCO2e/kg", "cradle-to-gate"]]
                         + [[c["count"], c["kwh"], c["yarn_kg"], c["kwh_per_kg"], c["kgco2e_per_kg_spinning"],
                             c["kgco2e_per_kg_cradle_to_gate"]] for c in d["counts"]]),
              Paragraph("GB/T 36132 indicators", st["Heading2"]),
              _pdf_table([["month", "yarn t", "kWh", "kgce/t", "kgCO2e/t loc.", "kgCO2e/t mkt."]]
                         + [[r["month"], r["yarn_t"], r["kwh"], r["kgce_per_t"], r["kgco2e_per_t"],
                             r["kgco2e_per_t_market"]] for r in d["green_factory"]["months"]]),
              Paragraph("Savings opportunities", st["Heading2"]),
              _pdf_table([["opportunity", "kWh/yr", "tCO2e/yr"]]
                         + [[o["title"], o["kwh_per_year"], o["tco2e_per_year"]]
                            for o in d["insight"]["opportunities"]]),
              Paragraph("Data quality", st["Heading2"]),
              Paragraph(f"Estimated {d['data_quality']['estimated_kwh']:,.1f} kWh "
                        f"({100 * d['data_quality']['estimated_share']:.2f}%), interpolated "
                        f"{d['data_quality']['interpolated_kwh']:,.1f} kWh; {len(d['data_quality']['gaps'])} gaps, "
                        f"{len(d['data_quality']['counter_resets'])} counter resets.", st["Normal"]),
              _pdf_table([["meter", "kWh", "sub-meters", "difference", "status"]]
                         + [[r["meter"], r["meter_kwh"], r["children_kwh"], r["difference_share"],
                             "ok" if r["ok"] else "FLAGGED"] for r in d["data_quality"]["reconciliation"]]),
              Paragraph("Factors", st["Heading2"]),
              _pdf_table([["id", "region", "year", "value", "unit", "source"]]
                         + [[f["id"] + (" [CUSTOM]" if f["custom"] else ""), f["region"], f["year"], f["value"],
                             f["unit"], f["document"]] for f in d["factors"]])]
    SimpleDocTemplate(str(path), pagesize=landscape(A4), title=f"Carbon report {d['mill']} {d['month']}").build(story)


def pact_footprints(f: MonthFigures, d: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One PACT ProductFootprint per count of the month."""
    d = d or figures_dict(f)
    inp = f.inputs
    sources = [(x.source.document, str(x.year)) for x in f.factors_used()]
    out = []
    for key, c in f.carbon_counts.items():
        prod = inp.products.get(key)
        c2g = c.cradle_to_gate
        out.append(pact.product_footprint(
            mill_id=f.mill.id, mill_name=f.mill.name, month=f.month, timezone=f.mill.timezone, count=key,
            kgco2e_per_kg=c2g if c2g is not None else c.spinning, spinning_kgco2e_per_kg=c.spinning,
            cradle_to_gate=c2g is not None, company_name=inp.company.name, company_ids=inp.company.ids or None,
            product_name=prod.name if prod else "", product_ids=(prod.ids or None) if prod else None,
            cpc=prod.cpc if prod else "", factor_sources=sources, rule=f.rule,
            estimated_share=f.quality.estimated_share, custom_factors=[x.id for x in f.custom_factors_used()]))
    return out


def write_report(f: MonthFigures, out_dir: str | Path, *, pdf: bool = True) -> list[Path]:
    """Write every file of a month's report into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = figures_dict(f)
    stem = f"carbon_{f.mill.id}_{f.month}"
    written: list[Path] = []
    p = out / f"{stem}.html"
    p.write_text(render_html(d), encoding="utf-8")
    written.append(p)
    if pdf:
        p = out / f"{stem}.pdf"
        write_pdf(p, d)
        written.append(p)
    views = tables(d)
    for name, rows in views.items():
        p = out / f"{stem}_{name}.csv"
        write_csv(p, rows)
        written.append(p)
    p = out / f"{stem}.xlsx"
    write_xlsx(p, views)
    written.append(p)
    p = out / f"{stem}.json"
    p.write_text(json.dumps(d, indent=1, ensure_ascii=False), encoding="utf-8")
    written.append(p)
    p = out / f"{stem}_pact.json"
    p.write_text(json.dumps(pact_footprints(f, d), indent=1, ensure_ascii=False), encoding="utf-8")
    written.append(p)
    return written
