"""Write a month's figures: HTML (jinja2), PDF (reportlab), CSV + XLSX (openpyxl), PACT JSON.

All files are rendered from ``figures.figures_dict``, so every format shows the same numbers.
"""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from spinline.carbon import pact, wording
from spinline.carbon.figures import MonthFigures, figures_dict
from spinline.carbon.footprint import RULES
from spinline.core import texts
from spinline.core.pdf import Lang
from spinline.core.site import local_name


def tables(d: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """(sheet/CSV name, rows) views of the figures: one table each."""
    dq = d["data_quality"]
    lib = d["library"]
    summary = [
        {"item": "mill", "value": d["mill"]}, {"item": "month", "value": d["month"]},
        {"item": "hours_covered", "value": f"{d['period']['covered_start']} .. {d['period']['covered_end']} "
                                           f"({d['period']['hours']} h)"},
        {"item": "month_to_date", "value": d["period"]["month_to_date"]},
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
        {"item": "estimated_flagged", "value": dq["estimated_flagged"]},
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


#: Savings titles in Chinese by message key (the console's zh-CN ``server.carbon.opp`` entries; a test compares).
OPPORTUNITY_ZH: dict[str, str] = {
    "carbon.opp.line_best": "使 {line} 达到其已实现的最佳单耗 {best} kWh/kg",
    "carbon.opp.idle_off": "生产设备停机时关断电源",
    "carbon.opp.air_leaks": "修复压缩空气泄漏",
    "carbon.opp.hvac_share": "空调占全厂能耗 {share}，高于常规区间上限 {top}",
}


def line_title(d: dict[str, Any], line: str, lang: str) -> str:
    """A line's name in ``lang`` (site file ``names``), else its default name, else its id."""
    n = (d.get("line_names") or {}).get(line) or {}
    return local_name(str(n.get("name") or ""), n.get("names") or {}, lang, line)


def opportunity_title(o: dict[str, Any], lang: str, d: dict[str, Any] | None = None) -> str:
    """A savings opportunity's title in ``lang`` (its English title where it has no key).

    A line is called by its name in ``lang`` (site file ``names``, else its default name), as the tables
    beside the title call it; the server's own title carries the id (``d`` absent: the id stays)."""
    key, params = o.get("title_key"), dict(o.get("title_params") or {})
    if d is not None and "line" in params:
        params["line"] = line_title(d, params["line"], lang)
    if lang == "zh-CN" and key in OPPORTUNITY_ZH:
        return OPPORTUNITY_ZH[key].format_map(params)
    if key in texts.TEMPLATES:
        return texts.render(key, params)
    return str(o["title"])


def render_html(d: dict[str, Any], lang: str = "en") -> str:
    """The month's report as one HTML page in ``lang`` (zh-CN or en), with the PDF's charts as inline SVG.

    One template per language (``data/report.html.j2``, ``data/report.zh-CN.html.j2``): a Chinese report
    is written as Chinese sentences, not English ones with words swapped; both print the same figures
    (a test compares them).
    """
    from markupsafe import Markup

    from spinline.core import pdf

    lg = pdf.check_lang(lang)
    name = "data/report.html.j2" if lg == "en" else f"data/report.{lg}.html.j2"
    text = resources.files("spinline.carbon").joinpath(name).read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    rule = RULE_TEXT_ZH.get(d["allocation_rule"], RULES[d["allocation_rule"]]) if lg == "zh-CN" \
        else RULES[d["allocation_rule"]]
    svgs = [Markup(pdf.svg(c)) for c in charts(d, lg)]  # noqa: S704 (our own drawings, rendered by reportlab)
    return env.from_string(text).render(d=d, mill_title=mill_title(d, lg),
                                        rule_text=rule, charts=svgs, category_zh=CATEGORY_ZH, scope_zh=SCOPE_ZH,
                                        term=lambda k: pdf.term(k, lg), opp_title=lambda o: opportunity_title(o, lg, d),
                                        line_title=lambda line: line_title(d, line, lg),
                                        tr=lambda s: say_in(s, lg), method_zh=wording.METHOD_ZH,
                                        kind_zh=wording.KIND_ZH, trend_zh=wording.TREND_ZH)


def mill_title(d: dict[str, Any], lang: str) -> str:
    """The mill's name in ``lang`` where the site file gives one (``names``), else its default name, else its id."""
    return local_name(d["mill_name"], d.get("mill_names") or {}, lang, d["mill"])


def say_in(text: str, lang: str) -> str:
    """An explanatory line of the figures (a note, warning, reason, basis) in ``lang``."""
    return wording.zh(text) if lang == "zh-CN" else text


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


#: Text of the PDF report per language; figures and ids are never translated.
PDF_TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Energy and carbon report: {mill} {month}",
        "basis": "Allocation rule: {rule}. Gap fill: {gap_fill}. Factor library {lib}.",
        "covered": "Hours covered: {start} to {end} UTC ({hours} h).",
        "mtd": "Month to date: the month is not over, or its data stops before its end.",
        "estimated": "{share:.1f}% of the kWh is estimated (limit {limit:.0f}%): the per-kg figures rest on estimates.",
        "custom": "CUSTOM factors used: {ids}",
        "inventory": "Organisation inventory (kgCO2e)",
        "inv_cols": "scope|source|activity|unit|factor|factor unit|factor id|kgCO2e",
        "scopes": "Scope 1 {s1:,.0f} kg; Scope 2 location-based {s2l:,.0f} kg; Scope 2 market-based {s2m:,.0f} kg.",
        "per_kg": "Per kg of yarn",
        "mill_line": "Mill {kwh_kg:.3f} kWh/kg, {co2_kg:.3f} kgCO2e/kg (spinning stage){flag}.",
        "flag": " [ESTIMATED {share:.0f}%]",
        "stage_cols": "stage|kWh|kWh/kg yarn|share",
        "count_cols": "count|kWh|yarn kg|kWh/kg|kgCO2e/kg|cradle-to-gate",
        "chart_stage": "Energy per kg of yarn by stage", "chart_share": "Energy by stage",
        "chart_count": "Carbon per kg of yarn by count", "chart_trend": "Integrated energy by month",
        "gf": "GB/T 36132 indicators", "gf_cols": "month|yarn t|kWh|kgce/t|kgCO2e/t loc.|kgCO2e/t mkt.",
        "opp": "Savings opportunities", "opp_cols": "opportunity|kWh/yr|tCO2e/yr",
        "dq": "Data quality",
        "dq_line": "Estimated {est:,.1f} kWh ({share:.2f}%), interpolated {interp:,.1f} kWh; {gaps} gaps, "
                   "{resets} counter resets.",
        "rec_cols": "meter|kWh|sub-meters|difference|status", "ok": "ok", "flagged": "FLAGGED",
        "factors": "Factors", "factor_cols": "id|region|year|value|unit|source",
    },
    "zh-CN": {
        "title": "能源与碳排放月报：{mill} {month}",
        "basis": "公共能耗分摊规则：{rule}。缺数补齐：{gap_fill}。排放因子库 {lib}。",
        "covered": "数据覆盖时段：{start} 至 {end}（UTC，共 {hours} 小时）。",
        "mtd": "本月至今：本月尚未结束，或数据在月末之前中止。",
        "estimated": "{share:.1f}% 的电量为估算值（上限 {limit:.0f}%）：单位产品指标依赖估算。",
        "custom": "使用了自定义排放因子：{ids}",
        "inventory": "组织温室气体清单（kgCO2e）",
        "inv_cols": "范围|排放源|活动数据|单位|排放因子|因子单位|因子编号|kgCO2e",
        "scopes": "范围一 {s1:,.0f} kg；范围二（基于位置）{s2l:,.0f} kg；范围二（基于市场）{s2m:,.0f} kg。",
        "per_kg": "单位纱线指标",
        "mill_line": "全厂单位电耗 {kwh_kg:.3f} kWh/kg，纺纱工序碳足迹 {co2_kg:.3f} kgCO2e/kg{flag}。",
        "flag": "【估算 {share:.0f}%】",
        "stage_cols": "工序|电量 kWh|kWh/kg 纱|占比",
        "count_cols": "纱支|电量 kWh|纱线 kg|kWh/kg|kgCO2e/kg|摇篮到大门",
        "chart_stage": "各工序单位电耗", "chart_share": "各工序用电占比",
        "chart_count": "各纱支单位产品碳排放", "chart_trend": "综合能耗（按月）",
        "gf": "绿色工厂指标（GB/T 36132）", "gf_cols": "月份|纱线 t|电量 kWh|kgce/t|kgCO2e/t 位置|kgCO2e/t 市场",
        "opp": "节能机会", "opp_cols": "措施|kWh/年|tCO2e/年",
        "dq": "数据质量",
        "dq_line": "估算电量 {est:,.1f} kWh（{share:.2f}%），插值电量 {interp:,.1f} kWh；数据缺口 {gaps} 处，"
                   "计数器复位 {resets} 次。",
        "rec_cols": "电表|电量 kWh|下级表合计|差异|状态", "ok": "正常", "flagged": "超差",
        "factors": "排放因子", "factor_cols": "编号|区域|年份|数值|单位|来源",
    },
}
#: Inventory sources as Chinese GHG reports name them.
CATEGORY_ZH = {"grid electricity": "外购电力", "residual mix": "剩余电力组合", "on-site PV": "厂内光伏",
               "purchased heat": "外购热力", "natural_gas": "天然气", "coal": "煤炭", "diesel": "柴油",
               "lpg": "液化石油气"}
SCOPE_ZH = {"1": "范围一", "2-location": "范围二（基于位置）", "2-market": "范围二（基于市场）"}
RULE_TEXT_ZH = {"mass": "按纱线产量（质量）分摊", "energy": "按各机台直接用电量分摊", "spindle_hours": "按锭时分摊"}


def charts(d: dict[str, Any], lang: Lang, *, trend: bool = False) -> list[Any]:
    """The report's charts (PDF and HTML): energy per kg by stage, share by stage, carbon per kg by count
    (when there are counts), then the monthly trend of integrated energy (when there are two months or more;
    with ``trend`` its place is kept, None, so the PDF can set it apart)."""
    from spinline.core import pdf

    t = PDF_TEXT[lang]
    stages = d["stages"]
    names = [pdf.term(s["stage"], lang) for s in stages]
    out: list[Any] = [pdf.bar_chart(names, {"kWh/kg": [s["kwh_per_kg_yarn"] for s in stages]}, t["chart_stage"],
                                    lang, unit="kWh/kg", width=260),
                      pdf.pie_chart(names, [s["kwh"] for s in stages], t["chart_share"], lang, width=250)]
    if d["counts"]:
        out.append(pdf.bar_chart([c["count"] for c in d["counts"]],
                                 {"kgCO2e/kg": [c["kgco2e_per_kg_spinning"] for c in d["counts"]]},
                                 t["chart_count"], lang, unit="kgCO2e/kg", width=220))
    months = d["green_factory"]["months"]
    if len(months) > 1:
        out.append(pdf.line_chart([r["month"] for r in months], {"kgce/t": [r["kgce_per_t"] for r in months]},
                                  t["chart_trend"], lang, unit="kgce/t", width=420, height=150))
    elif trend:
        out.append(None)
    return out


def write_pdf(path: Path, d: dict[str, Any], lang: str = "en") -> None:
    """The month's PDF: headline figures with their charts, then the tables (``lang``: zh-CN or en)."""
    from reportlab.platypus import Paragraph, Spacer

    from spinline.core import pdf

    lg = pdf.check_lang(lang)
    t = PDF_TEXT[lg]
    st = pdf.styles(lg)
    inv, dq, per, en = d["inventory"], d["data_quality"], d["period"], d["energy"]
    cols = {k: v.split("|") for k, v in t.items() if k.endswith("_cols")}
    rule = RULE_TEXT_ZH.get(d["allocation_rule"], d["allocation_rule"]) if lg == "zh-CN" else \
        f"{d['allocation_rule']}: {RULES[d['allocation_rule']]}"
    story: list[Any] = [
        Paragraph(t["title"].format(mill=mill_title(d, lg), month=d["month"]), st["Title"]),
        Paragraph(t["basis"].format(rule=rule, gap_fill=d["gap_fill"],
                                    lib=f"{d['library']['name']} {d['library']['version']} ({d['library']['digest']})"),
                  st["Normal"]),
        Paragraph(t["covered"].format(start=per["covered_start"].replace("T", " ").rstrip("Z"),
                                      end=per["covered_end"].replace("T", " ").rstrip("Z"), hours=per["hours"]),
                  st["Normal"]),
    ]
    if per["month_to_date"]:
        story.append(Paragraph(t["mtd"], st["Warn"]))
    if dq["estimated_flagged"]:
        story.append(Paragraph(t["estimated"].format(share=100 * dq["estimated_share"],
                                                     limit=100 * dq["estimated_share_limit"]), st["Warn"]))
    if d["custom_factors"]:
        story.append(Paragraph(t["custom"].format(ids=", ".join(d["custom_factors"])), st["Warn"]))
    for n in d["notes"]:
        story.append(Paragraph(say_in(n, lg), st["Small"]))
    flag = t["flag"].format(share=100 * en["estimated_share"]) if en["estimated_flagged"] else ""
    kwh_kg = en["kwh_per_kg"] if en["kwh_per_kg"] is not None else float("nan")
    co2_kg = d["product_footprint"]["kgco2e_per_kg_spinning"]
    story += [Spacer(1, 4), Paragraph(t["per_kg"], st["Heading2"]),
              Paragraph(t["mill_line"].format(kwh_kg=kwh_kg, co2_kg=co2_kg if co2_kg is not None else float("nan"),
                                              flag=flag), st["Normal"])]
    stages = d["stages"]
    *per_kg, trend = charts(d, lg, trend=True)
    story.append(pdf.side_by_side(*per_kg))
    story += [pdf.table([cols["stage_cols"]] + [[pdf.term(s["stage"], lg), s["kwh"], s["kwh_per_kg_yarn"], s["share"]]
                                                for s in stages], lg),
              Spacer(1, 4),
              pdf.table([cols["count_cols"]] + [[c["count"], c["kwh"], c["yarn_kg"], c["kwh_per_kg"],
                                                 c["kgco2e_per_kg_spinning"], c["kgco2e_per_kg_cradle_to_gate"]]
                                                for c in d["counts"]], lg),
              Paragraph(t["inventory"], st["Heading2"]),
              pdf.table([cols["inv_cols"]] + [[x["scope"], CATEGORY_ZH.get(x["category"], say_in(x["category"], lg))
                                               if lg == "zh-CN" else x["category"], x["activity"], x["activity_unit"],
                                               x["factor"], x["factor_unit"],
                                               x["factor_id"] + (" [CUSTOM]" if x["custom"] else ""), x["kgco2e"]]
                                              for x in inv["lines"]], lg),
              Paragraph(t["scopes"].format(s1=inv["scope1_kg"], s2l=inv["scope2_location_kg"],
                                           s2m=inv["scope2_market_kg"]), st["Normal"]),
              Paragraph(t["gf"], st["Heading2"])]
    months = d["green_factory"]["months"]
    if trend is not None:
        story.append(trend)
    story += [pdf.table([cols["gf_cols"]] + [[r["month"], r["yarn_t"], r["kwh"], r["kgce_per_t"], r["kgco2e_per_t"],
                                              r["kgco2e_per_t_market"]] for r in months], lg),
              Paragraph(t["opp"], st["Heading2"]),
              pdf.table([cols["opp_cols"]] + [[opportunity_title(o, lg, d), o["kwh_per_year"], o["tco2e_per_year"]]
                                              for o in d["insight"]["opportunities"]], lg),
              Paragraph(t["dq"], st["Heading2"]),
              Paragraph(t["dq_line"].format(est=dq["estimated_kwh"], share=100 * dq["estimated_share"],
                                            interp=dq["interpolated_kwh"], gaps=len(dq["gaps"]),
                                            resets=len(dq["counter_resets"])), st["Normal"]),
              pdf.table([cols["rec_cols"]] + [[r["meter"], r["meter_kwh"], r["children_kwh"],
                                               r["difference_share"], t["ok"] if r["ok"] else t["flagged"]]
                                              for r in dq["reconciliation"]], lg),
              Paragraph(t["factors"], st["Heading2"]),
              pdf.table([cols["factor_cols"]] + [[f["id"] + (" [CUSTOM]" if f["custom"] else ""), f["region"],
                                                  f["year"], f["value"], f["unit"], f["document"]]
                                                 for f in d["factors"]], lg)]
    pdf.build(path, story, title=t["title"].format(mill=d["mill"], month=d["month"]))


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


def write_report(f: MonthFigures, out_dir: str | Path, *, pdf: bool = True, lang: str = "en") -> list[Path]:
    """Write every file of a month's report into ``out_dir``; returns the paths written.

    ``lang`` (zh-CN or en) is the language of the PDF (``_zh-CN`` added to its name in Chinese);
    the data files are the same in both.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = figures_dict(f)
    stem = f"carbon_{f.mill.id}_{f.month}"
    written: list[Path] = []
    p = out / f"{stem}.html"
    p.write_text(render_html(d, lang), encoding="utf-8")
    written.append(p)
    if pdf:
        p = out / (f"{stem}.pdf" if lang == "en" else f"{stem}_{lang}.pdf")
        write_pdf(p, d, lang)
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


#: Downloadable formats of one month's report: media type and file suffix.
FORMATS: dict[str, tuple[str, str]] = {
    "pdf": ("application/pdf", "pdf"), "html": ("text/html; charset=utf-8", "html"),
    "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
    "json": ("application/json", "json"),
}


def render(f: MonthFigures, fmt: str, lang: str = "en") -> tuple[bytes, str, str]:
    """One file of the report in memory: (content, media type, file name). For the API download."""
    import tempfile

    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
    media, suffix = FORMATS[fmt]
    d = figures_dict(f)
    name = f"carbon_{f.mill.id}_{f.month}" + ("" if lang == "en" or fmt not in ("pdf", "html") else f"_{lang}") + \
        f".{suffix}"
    if fmt == "html":
        return render_html(d, lang).encode("utf-8"), media, name
    if fmt == "json":
        return json.dumps(d, indent=1, ensure_ascii=False).encode("utf-8"), media, name
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        if fmt == "pdf":
            write_pdf(path, d, lang)
        else:
            write_xlsx(path, tables(d))
        return path.read_bytes(), media, name
