"""PDF building blocks of the monthly reports (production and carbon), in Chinese or English.

Chinese text uses reportlab's built-in CID font ``STSong-Light`` (``UnicodeCIDFont``): nothing to
download or ship, the PDF names the font and every reader brings its own Song face (Adobe's
Asian font packs, poppler's substitutes). Charts are ``reportlab.graphics`` drawings (vector, in
the same PDF, no plotting library), one helper per chart kind, so both reports look alike.

``Lang`` values are BCP 47 tags as the console sends them (``zh-CN``, ``en``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

Lang = Literal["zh-CN", "en"]
LANGS: tuple[str, ...] = ("zh-CN", "en")
CJK_FONT = "STSong-Light"
#: Series colours (colour-blind safe, Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000")


def check_lang(lang: str) -> Lang:
    """``lang`` as a ``Lang``; a ValueError naming the choices otherwise."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}: use one of {', '.join(LANGS)}")
    return lang  # type: ignore[return-value]


def fonts(lang: Lang) -> tuple[str, str]:
    """(regular, bold) font names for ``lang``, registering the CJK font on first use."""
    if lang == "zh-CN":
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.cidfonts import UnicodeCIDFont

        if CJK_FONT not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(UnicodeCIDFont(CJK_FONT))
        return CJK_FONT, CJK_FONT
    return "Helvetica", "Helvetica-Bold"


def styles(lang: Lang) -> dict[str, Any]:
    """Title, Heading2, Normal, Small and Warn paragraph styles in the language's font."""
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet

    regular, bold = fonts(lang)
    base = getSampleStyleSheet()
    wrap = {"wordWrap": "CJK"} if lang == "zh-CN" else {}
    return {
        "Title": ParagraphStyle("T", parent=base["Title"], fontName=bold, **wrap),
        "Heading2": ParagraphStyle("H2", parent=base["Heading2"], fontName=bold, spaceBefore=8, **wrap),
        "Normal": ParagraphStyle("N", parent=base["Normal"], fontName=regular, leading=13, **wrap),
        "Small": ParagraphStyle("S", parent=base["Normal"], fontName=regular, fontSize=7.5, leading=9.5, **wrap),
        "Warn": ParagraphStyle("W", parent=base["Normal"], fontName=bold, textColor=colors.HexColor("#A04000"),
                               leading=13, **wrap),
    }


def fmt(v: Any) -> str:
    """A table cell: numbers to a readable precision, None empty."""
    if isinstance(v, bool):
        return "✓" if v else "✗"
    if isinstance(v, float):
        if not math.isfinite(v):
            return ""
        return f"{v:,.4g}" if abs(v) < 100 else f"{v:,.0f}"
    return "" if v is None else str(v)[:70]


def table(rows: Sequence[Sequence[Any]], lang: Lang, *, col_widths: Sequence[float] | None = None,
          width: float | None = None, first_col: float = 110.0) -> Any:
    """A grid table with a grey header row that repeats on each page.

    With ``width`` the table is fitted to it: the first column ``first_col`` wide, the others
    sharing the rest, and header and first-column text wrapped (long Chinese heads, line names).
    """
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import Paragraph, Table, TableStyle

    regular, bold = fonts(lang)
    cells: list[list[Any]] = [[fmt(c) for c in r] for r in rows]
    if width is not None and cells:
        n = len(cells[0])
        col_widths = [first_col] + [(width - first_col) / max(1, n - 1)] * (n - 1)
        wrap = {"wordWrap": "CJK"} if lang == "zh-CN" else {}
        head = ParagraphStyle("th", fontName=bold, fontSize=6.5, leading=8, **wrap)
        body = ParagraphStyle("td", fontName=regular, fontSize=7, leading=8.5, **wrap)
        cells = [[Paragraph(c, head) for c in cells[0]]] + [[Paragraph(r[0], body), *r[1:]] for r in cells[1:]]
    t = Table(cells, repeatRows=1, colWidths=col_widths, hAlign="LEFT")
    t.setStyle(TableStyle([("FONTNAME", (0, 0), (-1, -1), regular), ("FONTNAME", (0, 0), (-1, 0), bold),
                           ("FONTSIZE", (0, 0), (-1, -1), 7), ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                           ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#E8E8E8")),
                           ("VALIGN", (0, 0), (-1, -1), "MIDDLE"), ("ALIGN", (1, 1), (-1, -1), "RIGHT")]))
    return t


#: Usable width of a landscape A4 page with the margins of ``build`` (pt).
PAGE_WIDTH = 842.0 - 72.0


def _nice_max(v: float) -> float:
    """A round axis maximum at or above ``v`` (1, 2, 2.5 or 5 x 10^k)."""
    if v <= 0 or not math.isfinite(v):
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * e >= v:
            return m * e
    return 10 * e


def _frame(title: str, lang: Lang, width: float, height: float) -> Any:
    from reportlab.graphics.shapes import Drawing, String

    _, bold = fonts(lang)
    d = Drawing(width, height)
    d.add(String(0, height - 12, title, fontName=bold, fontSize=9))
    return d


def _axis(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.4g}"


def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) if v is not None and math.isfinite(float(v)) else 0.0 for v in values]


def bar_chart(labels: Sequence[str], series: dict[str, Sequence[float | None]], title: str, lang: Lang, *,
              width: float = 360, height: float = 180, unit: str = "", stacked: bool = False) -> Any:
    """Vertical bars per label, one colour per series (a legend when there are several)."""
    from reportlab.graphics.charts.barcharts import VerticalBarChart
    from reportlab.graphics.charts.legends import Legend
    from reportlab.lib import colors

    regular, _ = fonts(lang)
    d = _frame(title + (f" ({unit})" if unit else ""), lang, width, height)
    data = [_clean(v) for v in series.values()]
    c = VerticalBarChart()
    c.x, c.y, c.width, c.height = 40, 30, width - 55 - (90 if len(series) > 1 else 0), height - 55
    c.data = data or [[0.0]]
    top = max((sum(col) for col in zip(*data, strict=True)) if stacked and data else
              (max(v) for v in data if v), default=1.0)
    step = _nice_max(top / 5)
    c.valueAxis.valueMin, c.valueAxis.valueMax = 0.0, step * max(1, math.ceil(top / step - 1e-9))
    c.valueAxis.valueStep = step
    c.valueAxis.labels.fontName = regular
    c.valueAxis.labels.fontSize = 7
    c.valueAxis.labelTextFormat = _axis
    c.categoryAxis.categoryNames = [str(x) for x in labels] or [""]
    c.categoryAxis.labels.fontName = regular
    c.categoryAxis.labels.fontSize = 6.5
    if len(labels) > 8:
        c.categoryAxis.labels.angle = 45
        c.categoryAxis.labels.boxAnchor = "ne"
    c.barSpacing, c.groupSpacing = 1, 4
    if stacked:
        c.categoryAxis.style = "stacked"
    for i in range(len(data)):
        c.bars[i].fillColor = colors.HexColor(PALETTE[i % len(PALETTE)])
        c.bars[i].strokeColor = None
    d.add(c)
    if len(series) > 1:
        lg = Legend()
        lg.x, lg.y = width - 85, height - 30
        lg.fontName, lg.fontSize = regular, 7
        lg.colorNamePairs = [(colors.HexColor(PALETTE[i % len(PALETTE)]), n) for i, n in enumerate(series)]
        d.add(lg)
    return d


def line_chart(labels: Sequence[str], series: dict[str, Sequence[float | None]], title: str, lang: Lang, *,
               width: float = 360, height: float = 180, unit: str = "", y_min: float | None = None) -> Any:
    """Lines over labelled points (days, months); gaps where a value is missing."""
    from reportlab.graphics.charts.legends import Legend
    from reportlab.graphics.charts.linecharts import HorizontalLineChart
    from reportlab.lib import colors

    regular, _ = fonts(lang)
    d = _frame(title + (f" ({unit})" if unit else ""), lang, width, height)
    c = HorizontalLineChart()
    c.x, c.y, c.width, c.height = 40, 30, width - 55 - (90 if len(series) > 1 else 0), height - 55
    data = [[float(v) if v is not None and math.isfinite(float(v)) else None for v in s] for s in series.values()]
    c.data = data or [[0.0]]
    vals = [v for s in data for v in s if v is not None]
    lo = y_min if y_min is not None else (min(vals) if vals else 0.0)
    hi = max(vals) if vals else 1.0
    if hi <= lo:
        hi = lo + 1.0
    pad = (hi - lo) * 0.1
    c.valueAxis.valueMin = lo - pad if y_min is None else y_min
    c.valueAxis.valueMax = hi + pad
    c.valueAxis.labels.fontName = regular
    c.valueAxis.labels.fontSize = 7
    c.valueAxis.labelTextFormat = _axis
    step = max(1, len(labels) // 10)
    c.categoryAxis.categoryNames = [str(x) if i % step == 0 else "" for i, x in enumerate(labels)] or [""]
    c.categoryAxis.labels.fontName = regular
    c.categoryAxis.labels.fontSize = 6.5
    c.categoryAxis.labels.angle = 30
    c.categoryAxis.labels.boxAnchor = "ne"
    for i in range(len(data)):
        c.lines[i].strokeColor = colors.HexColor(PALETTE[i % len(PALETTE)])
        c.lines[i].strokeWidth = 1.5
    d.add(c)
    if len(series) > 1:
        lg = Legend()
        lg.x, lg.y = width - 85, height - 30
        lg.fontName, lg.fontSize = regular, 7
        lg.colorNamePairs = [(colors.HexColor(PALETTE[i % len(PALETTE)]), n) for i, n in enumerate(series)]
        d.add(lg)
    return d


def pie_chart(labels: Sequence[str], values: Sequence[float | None], title: str, lang: Lang, *,
              width: float = 300, height: float = 180) -> Any:
    """Shares of a whole, labelled with their percentage."""
    from reportlab.graphics.charts.legends import Legend
    from reportlab.graphics.charts.piecharts import Pie
    from reportlab.lib import colors

    regular, _ = fonts(lang)
    d = _frame(title, lang, width, height)
    vals = _clean(values)
    total = sum(vals) or 1.0
    p = Pie()
    p.x, p.y, p.width, p.height = 10, 10, height - 40, height - 40
    p.data = vals or [1.0]
    p.labels = None
    p.slices.strokeWidth = 0.5
    for i in range(len(vals)):
        p.slices[i].fillColor = colors.HexColor(PALETTE[i % len(PALETTE)])
    d.add(p)
    lg = Legend()
    lg.x, lg.y = height - 20, height - 30
    lg.fontName, lg.fontSize = regular, 7
    lg.columnMaximum = 12
    lg.alignment = "right"
    lg.colorNamePairs = [(colors.HexColor(PALETTE[i % len(PALETTE)]), f"{n} {100 * v / total:.1f}%")
                         for i, (n, v) in enumerate(zip(labels, vals, strict=True))]
    d.add(lg)
    return d


#: Faces a browser has for the CJK text of a chart drawn for the PDF (the PDF names STSong-Light).
SVG_CJK_FONTS = "'Noto Sans CJK SC', 'Source Han Sans SC', 'Microsoft YaHei', 'PingFang SC', STSong, SimSun, sans-serif"


def svg(drawing: Any) -> str:
    """A chart drawing as inline SVG for the HTML reports (the same drawing the PDF carries)."""
    from reportlab.graphics import renderSVG

    text = renderSVG.drawToString(drawing)
    return text[text.index("<svg"):].replace(f"font-family: {CJK_FONT}", f"font-family: {SVG_CJK_FONTS}")


def side_by_side(*drawings: Any) -> Any:
    """Charts in one row (a borderless table)."""
    from reportlab.platypus import Table

    return Table([list(drawings)], hAlign="LEFT")


def build(path: Path, story: list[Any], *, title: str, landscape_page: bool = True) -> None:
    """Write the story as an A4 PDF (landscape by default: the tables are wide)."""
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.platypus import SimpleDocTemplate

    size = landscape(A4) if landscape_page else A4
    SimpleDocTemplate(str(path), pagesize=size, title=title, leftMargin=36, rightMargin=36, topMargin=36,
                      bottomMargin=36).build(story)


#: Machine types and shared loads as mills name them (zh-CN as Chinese spinning mills say them).
TERMS: dict[str, dict[str, str]] = {
    "blowroom": {"zh-CN": "清花", "en": "blowroom"},
    "card": {"zh-CN": "梳棉", "en": "card"},
    "comber": {"zh-CN": "精梳", "en": "comber"},
    "draw_frame": {"zh-CN": "并条", "en": "draw frame"},
    "roving_frame": {"zh-CN": "粗纱", "en": "roving frame"},
    "ring_frame": {"zh-CN": "细纱", "en": "ring frame"},
    "winder": {"zh-CN": "络筒", "en": "winder"},
    "air_compressor": {"zh-CN": "空压", "en": "compressor"},
    "compressed_air": {"zh-CN": "压缩空气", "en": "compressed air"},
    "hvac": {"zh-CN": "空调", "en": "HVAC"},
    "unmetered": {"zh-CN": "未计量", "en": "unmetered"},
    "energy_meter": {"zh-CN": "电表", "en": "energy meter"},
}


def term(key: str, lang: Lang) -> str:
    """A machine type or load in the language (the key itself when unknown)."""
    return TERMS.get(key, {}).get(lang, key)


def text_of(data: bytes) -> str:
    """The text drawn in a PDF written by ``build`` (ASCII85+Flate streams, ``(...) Tj`` strings).

    For checks of what a report says without a PDF library: CID-font strings are UTF-16BE, the
    others Latin-1. Not a general PDF parser.
    """
    import base64
    import re
    import zlib

    out: list[str] = []
    for raw in re.findall(rb"stream\r?\n(.*?)endstream", data, re.S):
        s = raw.strip()
        s = s[:-2] if s.endswith(b"~>") else s
        try:
            content = zlib.decompress(base64.a85decode(s))
        except (ValueError, zlib.error):
            continue
        font_cid = False
        for tok in re.finditer(rb"/(\S+) [\d.]+ Tf|\(((?:\\.|[^\\)])*)\) Tj", content, re.S):
            if tok.group(1) is not None:
                font_cid = _is_cid_font(data, tok.group(1))
                continue
            b = re.sub(rb"\\([0-7]{1,3}|.)", _unescape, tok.group(2), flags=re.S)
            out.append(b.decode("utf-16-be", "replace") if font_cid else b.decode("latin-1"))
    return "\n".join(out)


def _unescape(m: Any) -> bytes:
    g: bytes = m.group(1)
    if g[:1].isdigit():
        return bytes([int(g, 8) & 0xFF])
    return {b"n": b"\n", b"r": b"\r", b"t": b"\t"}.get(g, g)


def _is_cid_font(data: bytes, resource: bytes) -> bool:
    """Whether the font resource named ``resource`` (e.g. F2) is the CJK CID font."""
    import re

    m = re.search(rb"/" + re.escape(resource) + rb" (\d+) 0 R", data)
    if m is None:
        return False
    obj = re.search(rb"\n" + m.group(1) + rb" 0 obj\s*<<(.*?)>>", data, re.S)
    return obj is not None and CJK_FONT.encode() in obj.group(1)
