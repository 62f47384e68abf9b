"""Weekly/monthly production reports over a simulated week in the real embedded store."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from spinline.cloud import reports
from spinline.cloud.kpis.service import KpiService
from spinline.cloud.storage.catalog import point_infos
from spinline.cloud.storage.embedded import EmbeddedStore
from spinline.core.site import Site, load_site
from spinline.sim.history import generate


def test_period_parsing_in_the_mill_time_zone() -> None:
    w = reports.period("2026-W47", "Asia/Shanghai")
    start = datetime.fromtimestamp(w.start_ns / 1e9, ZoneInfo("Asia/Shanghai"))
    assert (start.year, start.month, start.day, start.hour, start.weekday()) == (2026, 11, 16, 0, 0)
    assert len(w.days) == 7 and (w.end_ns - w.start_ns) == 7 * 86400 * 10**9
    m = reports.period("2026-02", "UTC")
    assert len(m.days) == 28 and m.days[0][0] == "2026-02-01"
    assert len(reports.period("2026-12", "UTC").days) == 31
    for bad in ("2026-13", "2026/10", "W47", "2026-W60"):
        with pytest.raises(ValueError):
            reports.period(bad, "UTC")


@pytest.fixture(scope="module")
def week_store(tmp_path_factory: pytest.TempPathFactory, mill_yaml: Path) -> tuple[Site, Path]:
    site = load_site(mill_yaml)
    path = tmp_path_factory.mktemp("reports") / "cloud"
    path.mkdir()
    store = EmbeddedStore(path / "spinline.duckdb")
    store.migrate()
    store.register_points(point_infos(site, "mill-a"))
    w = reports.period("2026-W47", "Asia/Shanghai")
    for batch in generate(site, "mill-a", w.start_ns, 7 * 86400, step_s=60.0, seed=3):
        store.write(batch)
    store.refresh_rollups()
    store.close()
    return site, path


def test_weekly_report_is_consistent(week_store: tuple[Site, Path], tmp_path: Path) -> None:
    site, path = week_store
    store = EmbeddedStore(path / "spinline.duckdb")
    try:
        r = reports.build(KpiService(store), site.mill("mill-a"), "2026-W47")
    finally:
        store.close()
    s = r.summary.kpis
    assert s.output_kg > 0 and s.hours == pytest.approx(168.0)
    # The mill's output is its ring lines' output (the output stage), and the days add up to the week.
    ring_lines = [x for x in r.lines if x.id.startswith("ring-")]
    assert sum(x.kpis.output_kg for x in ring_lines) == pytest.approx(s.output_kg, rel=1e-6)
    assert sum(d.kpis.output_kg for d in r.daily) == pytest.approx(s.output_kg, rel=1e-3)
    assert sum(x.kpis.output_kg for x in r.shifts) == pytest.approx(s.output_kg, rel=1e-3)
    assert [x.id for x in r.shifts] == ["A", "B", "C"]
    # Frames ordered worst first, with plausible mill figures (domain.md ranges).
    ends = [x.kpis.ends_down_per_1000_spindle_h or 0.0 for x in r.frames]
    assert ends == sorted(ends, reverse=True) and len(r.frames) == 9
    assert 10 < (s.ends_down_per_1000_spindle_h or 0) < 80
    assert 50 < (s.oee_pct or 0) <= 100 and 80 < (s.efficiency_pct or 0) <= 100
    assert 1.5 < (s.sec_kwh_per_kg or 0) < 8
    files = reports.write(r, tmp_path, pdf=False)
    html = files[0].read_text()
    assert "Ring frames (most ends down first)" in html and "rf01" in html and "2026-11-16" in html
    assert files[1].read_text().count("\nday,") == 7


def test_pdf_report_in_chinese_with_charts(week_store: tuple[Site, Path], tmp_path: Path) -> None:
    from spinline.core.pdf import CJK_FONT, text_of

    site, path = week_store
    store = EmbeddedStore(path / "spinline.duckdb")
    try:
        r = reports.build(KpiService(store), site.mill("mill-a"), "2026-W47")
    finally:
        store.close()
    (pdf,) = [p for p in reports.write(r, tmp_path, lang="zh-CN") if p.suffix == ".pdf"]
    assert pdf.name == "production-mill-a-2026-W47_zh-CN.pdf"
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and CJK_FONT.encode() in data      # the built-in CID font, nothing embedded
    text = text_of(data)
    flat = "".join(text.split())               # table heads wrap over lines
    # Chinese headings and column heads as mills say them, the figures beside them
    for words in ("生产报表", "细纱机（按千锭时断头从高到低）", "千锭时断头", "生产效率%", "运转效率%",
                  "单位电耗kWh/kg"):
        assert words in flat, words
    assert f"{r.summary.kpis.efficiency_pct:.1f}" in text
    # the charts: their titles, the day labels of the x axis and the legend of the efficiency lines
    for words in ("逐日产量", "逐日效率", "各细纱机千锭时断头", "各班次产量", "11-16", "11-22", "运转效率"):
        assert words in text, words
    # the same report in English
    en = reports.render(r, "pdf", "en")
    assert en[1] == "application/pdf" and en[2] == "production-mill-a-2026-W47.pdf"
    assert "Output by day" in text_of(en[0]) and "生产" not in text_of(en[0])
    with pytest.raises(ValueError, match="unknown language"):
        reports.write_pdf(r, tmp_path / "x.pdf", "fr")
    # the HTML page in both languages, with the same charts (inline SVG) and the same table figures
    zh_html, media, name = reports.render(r, "html", "zh-CN")
    en_html = reports.render(r, "html", "en")[0].decode()
    assert name == "production-mill-a-2026-W47_zh-CN.html" and media.startswith("text/html")
    zh_html = zh_html.decode()
    for words in ("生产报表", "千锭时断头", "细纱机（按千锭时断头从高到低）", "逐日产量", "各细纱机千锭时断头"):
        assert words in zh_html, words
    assert zh_html.count("<svg") == en_html.count("<svg") == 4 and "Output by day" in en_html
    assert "Ring frames" not in zh_html and "生产" not in en_html
    cells = lambda h: re.findall(r"<tr><td>[^<]*</td>((?:<td>[^<]*</td>)*)</tr>", h)  # noqa: E731 (figures, not names)
    assert cells(zh_html) == cells(en_html) and f"<td>{r.summary.kpis.efficiency_pct:.1f}</td>" in cells(en_html)[0]
    # the mill and its lines by the site file's names in each language (names: {zh-CN: ...})
    for zh, en in (("示范棉纺一厂", "Demo Cotton Spinning No.1"), ("32英支普梳细纱线", "Ring line Ne 32 carded")):
        assert zh in zh_html and en not in zh_html and en in en_html and zh not in en_html, (zh, en)
    assert "示范棉纺一厂" in text


def test_report_cli(week_store: tuple[Site, Path], tmp_path: Path, mill_yaml: Path) -> None:
    from spinline.cli import app

    _, path = week_store
    res = CliRunner().invoke(app, ["cloud", "report", "--db", f"embedded:{path}", "--site", str(mill_yaml),
                                   "--mill", "mill-a", "--period", "2026-W47", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "production-mill-a-2026-W47.html").exists()
    assert (tmp_path / "production-mill-a-2026-W47.pdf").exists()
    res = CliRunner().invoke(app, ["cloud", "report", "--db", f"embedded:{path}", "--site", str(mill_yaml),
                                   "--mill", "mill-a", "--period", "2026-W47", "--out", str(tmp_path),
                                   "--lang", "zh-CN"])
    assert res.exit_code == 0 and (tmp_path / "production-mill-a-2026-W47_zh-CN.pdf").exists(), res.output
    res = CliRunner().invoke(app, ["cloud", "report", "--db", f"embedded:{path}", "--site", str(mill_yaml),
                                   "--mill", "mill-a", "--period", "2026-W47", "--lang", "fr"])
    assert res.exit_code == 2 and "--lang must be zh-CN or en" in res.output
    bad = CliRunner().invoke(app, ["cloud", "report", "--db", f"embedded:{path}", "--site", str(mill_yaml),
                                   "--mill", "mill-a", "--period", "2026-13", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "YYYY-MM" in bad.output or "month" in bad.output
