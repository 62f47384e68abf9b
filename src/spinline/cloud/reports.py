"""Weekly and monthly production reports: the figures a mill is run by, per line, frame, shift and day.

A mill manager's week is read as: what did we make (kg, and kg at the standard count so weeks of
different counts compare), how well (efficiency, OEE and its A/P/Q, spindle utilisation, g/spindle/
shift), what hurt (ends down per 1000 spindle-hours and the frames that break most, the worst 5 %
share that points at defective spindles), and what it cost in energy (kWh/kg). Every figure comes
from ``KpiService`` (formulas in docs/kpis.md); this module only picks the periods, orders the
rows and renders them.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, select_autoescape

from spinline.cloud.kpis.formulas import Kpis
from spinline.cloud.kpis.service import KpiRow, KpiService
from spinline.core.pdf import Lang
from spinline.core.site import Mill, local_name

# ASCII digits and nothing after them: "\d" takes other scripts' digits and "$" a trailing newline.
_WEEK = re.compile(r"([0-9]{4})-W([0-9]{2})")
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")


@dataclass(frozen=True, slots=True)
class Period:
    label: str          # "2026-W47" or "2026-10"
    start_ns: int
    end_ns: int
    days: list[tuple[str, int, int]]  # (YYYY-MM-DD, start_ns, end_ns) in the mill's time zone


def _ns(d: date, tz: ZoneInfo) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()) * 10**9


def period(label: str, timezone: str) -> Period:
    """``2026-W47`` (ISO week, Monday to Monday) or ``2026-10`` (calendar month), in local time."""
    tz = ZoneInfo(timezone)
    if m := _WEEK.fullmatch(label):
        try:
            first = date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
        except ValueError:
            raise ValueError(f"no ISO week {m.group(2)} in {m.group(1)} ({label!r})") from None
        last = first + timedelta(days=7)
    elif m := _MONTH.fullmatch(label):
        y, mo = int(m.group(1)), int(m.group(2))
        if not 1 <= mo <= 12:
            raise ValueError(f"no month {mo} in {label!r}")
        first = date(y, mo, 1)
        last = date(y + (mo == 12), mo % 12 + 1, 1)
    else:
        raise ValueError(f"a period is YYYY-Www (ISO week) or YYYY-MM (month), got {label!r}")
    days = []
    d = first
    while d < last:
        days.append((d.isoformat(), _ns(d, tz), _ns(d + timedelta(days=1), tz)))
        d += timedelta(days=1)
    return Period(label, _ns(first, tz), _ns(last, tz), days)


@dataclass(frozen=True, slots=True)
class ProductionReport:
    mill: str
    mill_name: str
    period: Period
    standard_ne: float
    summary: KpiRow
    lines: list[KpiRow]
    frames: list[KpiRow]          # ring frames, most ends down first
    shifts: list[KpiRow]          # one row per shift name, summed over the period
    daily: list[KpiRow]
    #: The site file's names in other languages of the mill and its lines, by id (``name_in``).
    names: dict[str, dict[str, str]] = field(default_factory=dict)

    def name_in(self, row: KpiRow, lang: str) -> str:
        """A mill or line row's name in ``lang`` where the site file gives one."""
        return local_name(row.name, self.names.get(row.id, {}), lang)


def build(kpis: KpiService, mill: Mill, label: str, *, standard_ne: float = 40.0) -> ProductionReport:
    """Assemble the report; the summary's output equals the sum of its output lines' by construction."""
    p = period(label, mill.timezone)
    summary = kpis.mill_kpis(mill, p.start_ns, p.end_ns, by="mill", standard_ne=standard_ne)[0]
    lines = kpis.mill_kpis(mill, p.start_ns, p.end_ns, by="line", standard_ne=standard_ne)
    machines = kpis.mill_kpis(mill, p.start_ns, p.end_ns, by="machine", standard_ne=standard_ne)
    frames = sorted((r for r in machines if r.machine_type == "ring_frame"),
                    key=lambda r: -(r.kpis.ends_down_per_1000_spindle_h or 0.0))
    shifts = _by_shift_name(kpis.mill_kpis(mill, p.start_ns, p.end_ns, by="shift", standard_ne=standard_ne))
    daily = [kpis.mill_kpis(mill, s, e, by="mill", standard_ne=standard_ne)[0] for _, s, e in p.days]
    names = {mill.id: dict(mill.names),
             **{ln.id: dict(ln.names) for ws in mill.workshops for ln in ws.lines if ln.names}}
    return ProductionReport(mill.id, mill.name or mill.id, p, standard_ne, summary, lines, frames, shifts, daily, names)


def _by_shift_name(rows: list[KpiRow]) -> list[KpiRow]:
    """One row per shift name: a week has 21 shift windows; a manager compares A, B and C."""
    out: dict[str, list[KpiRow]] = {}
    for r in rows:
        out.setdefault(r.window.shift or r.id, []).append(r)
    merged = []
    for name, group in out.items():
        # Weighted merges of the rates by their own denominators keep the formulas exact.
        k = [r.kpis for r in group]
        merged.append(KpiRow("shift", name, name, group[0].mill, None, None, group[0].window, _merge(k)))
    return sorted(merged, key=lambda r: r.id)


def _wmean(values: list[float | None], weights: list[float]) -> float | None:
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None and w > 0]
    total = sum(w for _, w in pairs)
    return None if not total else sum(v * w for v, w in pairs) / total


def _base_of(pcts: list[float | None], kg: list[float]) -> list[float]:
    """The denominators behind output ratios (kg ÷ pct), so merged efficiencies stay Σ kg ÷ Σ base."""
    return [x * 100.0 / v if v else 0.0 for v, x in zip(pcts, kg, strict=True)]


def _merge(ks: list[Kpis]) -> Kpis:
    out = sum(k.output_kg for k in ks)
    hours = sum(k.hours for k in ks)
    run = sum(k.run_h for k in ks)
    energy = sum(k.energy_kwh for k in ks)
    std = [k.std_output_kg for k in ks]
    spindle_h = [(k.spindle_utilisation_pct or 0.0) * k.spindles * k.hours / 100.0 for k in ks]
    return Kpis(
        hours=hours, machines=max(k.machines for k in ks), spindles=max(k.spindles for k in ks), output_kg=out,
        std_output_kg=None if any(s is None for s in std) else sum(s for s in std if s is not None),
        count_ne=_wmean([k.count_ne for k in ks], [k.output_kg for k in ks]), run_h=run, energy_kwh=energy,
        efficiency_pct=_wmean([k.efficiency_pct for k in ks],
                              _base_of([k.efficiency_pct for k in ks], [k.output_kg for k in ks])),
        running_efficiency_pct=_wmean([k.running_efficiency_pct for k in ks],
                                      _base_of([k.running_efficiency_pct for k in ks], [k.output_kg for k in ks])),
        spindle_utilisation_pct=_wmean([k.spindle_utilisation_pct for k in ks], [k.hours for k in ks]),
        availability_pct=_wmean([k.availability_pct for k in ks], [k.hours for k in ks]),
        performance_pct=_wmean([k.performance_pct for k in ks], [k.run_h for k in ks]),
        quality_pct=_wmean([k.quality_pct for k in ks], [k.output_kg for k in ks]),
        oee_pct=_wmean([k.oee_pct for k in ks], [k.hours for k in ks]),
        ends_down_per_1000_spindle_h=_wmean([k.ends_down_per_1000_spindle_h for k in ks], spindle_h),
        worst5_break_share_pct=_wmean([k.worst5_break_share_pct for k in ks], spindle_h),
        gps_g=_wmean([k.gps_g for k in ks], [k.hours for k in ks]),
        std_gps_g=_wmean([k.std_gps_g for k in ks], [k.hours for k in ks]),
        sec_kwh_per_kg=energy / out if out > 0 else None,
    )


COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("output_kg", "Output kg", "{:,.0f}"), ("std_output_kg", "kg at std count", "{:,.0f}"),
    ("count_ne", "Count Ne", "{:.1f}"), ("efficiency_pct", "Efficiency %", "{:.1f}"),
    ("running_efficiency_pct", "Running eff. %", "{:.1f}"),
    ("oee_pct", "OEE %", "{:.1f}"), ("availability_pct", "A %", "{:.1f}"), ("performance_pct", "P %", "{:.1f}"),
    ("quality_pct", "Q %", "{:.1f}"), ("spindle_utilisation_pct", "Spindle util. %", "{:.1f}"),
    ("ends_down_per_1000_spindle_h", "Ends down /1000 sp·h", "{:.1f}"),
    ("worst5_break_share_pct", "Worst 5 % share %", "{:.0f}"), ("gps_g", "g/spindle/shift", "{:.0f}"),
    ("energy_kwh", "kWh", "{:,.0f}"), ("sec_kwh_per_kg", "kWh/kg", "{:.2f}"),
)


def _fmt(row: KpiRow) -> list[str]:
    d = asdict(row.kpis)
    return ["–" if d[k] is None else f.format(d[k]) for k, _, f in COLUMNS]


_TEMPLATE = """<!doctype html><html lang="{{ lang }}"><head><meta charset="utf-8">
<title>{{ title }}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #bbb;padding:3px 6px;text-align:right}th:first-child,td:first-child{text-align:left}
caption{text-align:left;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:1em}.charts svg{height:240px;width:auto}</style></head><body>
<h1>{{ title }}</h1>
<p>{{ basis }}{% if lang == "en" %} OEE performance is against each frame's top speed.{% endif %}</p>
<div class="charts">{% for c in charts %}{{ c }}{% endfor %}</div>
{% for title, rows in sections %}<table><caption>{{ title }}</caption>
<tr><th></th>{% for head in heads %}<th>{{ head }}</th>{% endfor %}</tr>
{% for name, cells in rows %}<tr><td>{{ name }}</td>{% for c in cells %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endfor %}</body></html>
"""


def sections(r: ProductionReport, lang: str = "en") -> list[tuple[str, list[tuple[str, list[str]]]]]:
    t = PDF_TEXT[lang]
    return [
        (t["mill"], [(r.name_in(r.summary, lang), _fmt(r.summary))]),
        (t["lines"], [(r.name_in(x, lang), _fmt(x)) for x in r.lines]),
        (t["shifts"], [(x.name, _fmt(x)) for x in r.shifts]),
        (t["frames"], [(x.id, _fmt(x)) for x in r.frames]),
        (t["days"], [(day, _fmt(x)) for (day, _, _), x in zip(r.period.days, r.daily, strict=True)]),
    ]


def heads(lang: str) -> list[str]:
    """Column heads in ``lang`` (zh-CN as Chinese mills name the figures)."""
    return [HEADS_ZH[k] if lang == "zh-CN" else h for k, h, _ in COLUMNS]


def render_html(r: ProductionReport, lang: str = "en") -> str:
    """The report as one HTML page in ``lang`` (zh-CN or en), with the PDF's charts as inline SVG."""
    from markupsafe import Markup

    from spinline.core import pdf

    lg = pdf.check_lang(lang)
    t = PDF_TEXT[lg]
    env = Environment(autoescape=select_autoescape(default=True))
    return env.from_string(_TEMPLATE).render(
        lang=lg, title=t["title"].format(mill=r.name_in(r.summary, lg), period=r.period.label),
        basis=t["basis"].format(ne=r.standard_ne), charts=[Markup(pdf.svg(c)) for c in charts(r, lg)],  # noqa: S704
        sections=sections(r, lg), heads=heads(lg))


def render_csv(r: ProductionReport) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["section", "name", *(k for k, _, _ in COLUMNS)])
    for title, rows in (("mill", [r.summary]), ("line", r.lines), ("shift", r.shifts), ("frame", r.frames)):
        for x in rows:
            d = asdict(x.kpis)
            w.writerow([title, x.id, *("" if d[k] is None else d[k] for k, _, _ in COLUMNS)])
    for (day, _, _), x in zip(r.period.days, r.daily, strict=True):
        d = asdict(x.kpis)
        w.writerow(["day", day, *("" if d[k] is None else d[k] for k, _, _ in COLUMNS)])
    return buf.getvalue()


#: Column heads and report text per language (zh-CN as Chinese mills say them).
HEADS_ZH = {
    "output_kg": "产量 kg", "std_output_kg": "标准品产量 kg", "count_ne": "纱支 Ne", "efficiency_pct": "生产效率 %",
    "running_efficiency_pct": "运转效率 %", "oee_pct": "OEE %", "availability_pct": "开动率 %",
    "performance_pct": "性能率 %", "quality_pct": "合格率 %", "spindle_utilisation_pct": "锭子利用率 %",
    "ends_down_per_1000_spindle_h": "千锭时断头", "worst5_break_share_pct": "最差5%锭子断头占比 %",
    "gps_g": "锭班产量 g", "energy_kwh": "电量 kWh", "sec_kwh_per_kg": "单位电耗 kWh/kg",
}
PDF_TEXT: dict[str, dict[str, str]] = {
    "en": {"title": "{mill}: production {period}", "mill": "Mill", "lines": "Lines", "shifts": "Shifts",
           "frames": "Ring frames (most ends down first)", "days": "Days",
           "basis": "Standard count for comparison: Ne {ne:g}. Efficiency is production efficiency as mills quote "
                    "it: kg made / kg at 100 % at the speed run over the whole planned time (doffs, stops and "
                    "ends down lower it); running efficiency counts the run time only. Formulas: docs/kpis.md.",
           "c_output": "Output by day", "c_eff": "Efficiency by day", "c_ends": "Ends down by ring frame",
           "c_shift": "Output by shift", "eff": "production efficiency", "run_eff": "running efficiency",
           "ends_unit": "per 1000 spindle-h"},
    "zh-CN": {"title": "{mill} 生产报表 {period}", "mill": "全厂", "lines": "生产线", "shifts": "班次",
              "frames": "细纱机（按千锭时断头从高到低）", "days": "逐日",
              "basis": "对比用标准纱支：Ne {ne:g}。生产效率为纺纱厂通用口径：实际产量 ÷ 按实际车速在全部计划时间内的"
                       "理论产量（落纱、停台和断头均计入损失）；运转效率只计开车时间。公式见 docs/kpis.md。",
              "c_output": "逐日产量", "c_eff": "逐日效率", "c_ends": "各细纱机千锭时断头", "c_shift": "各班次产量",
              "eff": "生产效率", "run_eff": "运转效率", "ends_unit": "根/千锭时"},
}


def charts(r: ProductionReport, lang: Lang) -> list[Any]:
    """Daily output and efficiency, ends down per ring frame, output per shift: the PDF's and the HTML's."""
    from spinline.core import pdf

    t = PDF_TEXT[lang]
    days = [d[5:] for d, _, _ in r.period.days]
    return [
        pdf.bar_chart(days, {t["c_output"]: [x.kpis.output_kg for x in r.daily]}, t["c_output"], lang, unit="kg",
                      width=380, height=170),
        pdf.line_chart(days, {t["eff"]: [x.kpis.efficiency_pct for x in r.daily],
                              t["run_eff"]: [x.kpis.running_efficiency_pct for x in r.daily]},
                       t["c_eff"], lang, unit="%", width=380, height=170),
        pdf.bar_chart([x.id for x in r.frames], {t["c_ends"]: [x.kpis.ends_down_per_1000_spindle_h for x in r.frames]},
                      t["c_ends"], lang, unit=t["ends_unit"], width=380, height=160),
        pdf.bar_chart([x.name for x in r.shifts], {t["c_shift"]: [x.kpis.output_kg for x in r.shifts]},
                      t["c_shift"], lang, unit="kg", width=300, height=160),
    ]


def write_pdf(r: ProductionReport, path: Path, lang: str = "en") -> None:
    """The report as a PDF with charts (daily output and efficiency, ends down per frame, shifts)."""
    from reportlab.platypus import PageBreak, Paragraph, Spacer

    from spinline.core import pdf

    lg = pdf.check_lang(lang)
    t = PDF_TEXT[lg]
    st = pdf.styles(lg)
    story: list[object] = [Paragraph(t["title"].format(mill=r.name_in(r.summary, lg), period=r.period.label),
                                     st["Title"]),
                           Paragraph(t["basis"].format(ne=r.standard_ne), st["Normal"]), Spacer(1, 6)]
    c = charts(r, lg)
    story += [pdf.side_by_side(*c[:2]), pdf.side_by_side(*c[2:])]
    for key, rows in (("mill", [(r.name_in(r.summary, lg), r.summary)]),
                      ("lines", [(r.name_in(x, lg), x) for x in r.lines]),
                      ("shifts", [(x.name, x) for x in r.shifts]), ("frames", [(x.id, x) for x in r.frames]),
                      ("days", [(d, x) for (d, _, _), x in zip(r.period.days, r.daily, strict=True)])):
        if key == "frames":
            story.append(PageBreak())
        story += [Paragraph(t[key], st["Heading2"]),
                  pdf.table([["", *heads(lg)]] + [[name, *_fmt(x)] for name, x in rows], lg,
                            width=pdf.PAGE_WIDTH)]
    pdf.build(path, story, title=t["title"].format(mill=r.mill, period=r.period.label))


def write(r: ProductionReport, out: Path, *, lang: str = "en", pdf: bool = True) -> list[Path]:
    """HTML, CSV and (``pdf``) the PDF in ``lang`` (zh-CN or en; ``_zh-CN`` added to its name)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"production-{r.mill}-{r.period.label}"
    html, csv_ = out / f"{stem}.html", out / f"{stem}.csv"
    html.write_text(render_html(r, lang), encoding="utf-8")
    csv_.write_text(render_csv(r), encoding="utf-8")
    written = [html, csv_]
    if pdf:
        p = out / (f"{stem}.pdf" if lang == "en" else f"{stem}_{lang}.pdf")
        write_pdf(r, p, lang)
        written.append(p)
    return written


#: Downloadable formats of a production report: media type.
FORMATS: dict[str, str] = {"pdf": "application/pdf", "html": "text/html; charset=utf-8",
                           "csv": "text/csv; charset=utf-8"}


def render(r: ProductionReport, fmt: str, lang: str = "en") -> tuple[bytes, str, str]:
    """One file of the report in memory: (content, media type, file name). For the API download."""
    import tempfile

    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
    name = f"production-{r.mill}-{r.period.label}" + (f"_{lang}" if fmt != "csv" and lang != "en" else "") + \
        f".{fmt}"
    if fmt == "html":
        return render_html(r, lang).encode("utf-8"), FORMATS[fmt], name
    if fmt == "csv":
        return render_csv(r).encode("utf-8"), FORMATS[fmt], name
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        write_pdf(r, path, lang)
        return path.read_bytes(), FORMATS[fmt], name
