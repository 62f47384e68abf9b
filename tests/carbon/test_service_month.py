"""A simulated month of examples/mill.yaml through the store: per-count figures in the published band,
stage shares summing to the mill total, meters reconciled, and the report files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spinline.carbon.factors import FactorLibrary
from spinline.carbon.inputs import CarbonInputs
from spinline.cli import app
from spinline.cloud.carbon.service import figures_dict, month_report
from spinline.cloud.storage.embedded import EmbeddedStore
from spinline.core.site import load_site
from spinline.sim.physics import mill_kwh_per_kg_band


@pytest.mark.parametrize("rule", ["mass", "energy", "spindle_hours"])
def test_month_in_published_band_and_stages_sum(month_db: Path, mill_yaml: Path, rule: str) -> None:
    site = load_site(mill_yaml)
    store = EmbeddedStore(month_db)
    try:
        f = month_report(store, site.mill("mill-a"), "2026-10", rule=rule)  # type: ignore[arg-type]
    finally:
        store.close()
    fp = f.footprint
    assert fp.yarn_kg > 50_000 and fp.total_kwh > 200_000
    # stage shares add up to the mill total (the main meter), per kg too
    assert sum(s.kwh for s in fp.stages) == pytest.approx(fp.total_kwh, rel=1e-9)
    assert sum(s.share for s in fp.stages) == pytest.approx(1.0)
    assert sum(s.kwh_per_kg for s in fp.stages) == pytest.approx(fp.kwh_per_kg, rel=1e-9)
    assert sum(c.kwh for c in fp.counts) == pytest.approx(fp.total_kwh, rel=1e-9)
    lca = FactorLibrary.load().get("cn-electricity-lca-2023").value
    assert {c.key for c in fp.counts} == {"Ne32", "Ne40"}
    for c in fp.counts:
        lo, hi = mill_kwh_per_kg_band(float(c.key[2:]))
        assert lo <= c.kwh_per_kg <= hi, (rule, c.key, c.kwh_per_kg, (lo, hi))
        # no fuels: kgCO2e/kg = kWh/kg x life-cycle factor, so in the band x 0.6205 (domain.md 4.3)
        co2 = f.carbon_counts[c.key].spinning
        assert lo * lca <= co2 <= hi * lca
        assert co2 == pytest.approx(c.kwh_per_kg * lca, rel=1e-9)
    # the simulated meters agree with their machines within 5 %
    assert f.quality.reconciliations and all(r.ok for r in f.quality.reconciliations)
    assert f.quality.estimated_share == 0.0
    # inventory: East grid 2023 (no Jiangsu factor, no 2026 vintage), both Scope 2 figures
    assert f.inventory.scope2_location_kg == pytest.approx(fp.total_kwh * 0.5500, rel=1e-9)
    assert f.inventory.scope2_market_kg == pytest.approx(fp.total_kwh * 0.6096, rel=1e-9)


def test_market_based_with_certificates_and_lot(month_db: Path, mill_yaml: Path) -> None:
    site = load_site(mill_yaml)
    inp = CarbonInputs.model_validate({
        "fibre": {"factor": 2.0, "kg_per_kg_yarn": 1.1, "source": "test"},
        "lots": [{"id": "L1", "line": "ring-c32", "start": "2026-10-10T00:00", "end": "2026-10-12T00:00"}],
        "periods": {"2026-10": {"green_electricity": [{"kind": "gec", "kwh": 100000, "vintage": 2026}],
                                "fuels": [{"fuel": "diesel", "quantity": 500, "unit": "kg"}]}}})
    store = EmbeddedStore(month_db)
    try:
        f = month_report(store, site.mill("mill-a"), "2026-10", inputs=inp, trend_months=2)
    finally:
        store.close()
    inv = f.inventory
    assert inv.instrument_kwh == 100000
    assert inv.scope2_market_kg == pytest.approx((f.footprint.total_kwh - 100000) * 0.6096, rel=1e-9)
    assert inv.scope1_kg == pytest.approx(500 * 3.1971876, rel=1e-9)
    c = f.carbon_counts["Ne32"]
    assert c.cradle_to_gate == pytest.approx(c.spinning + 2.2)
    (lot,) = f.lots
    assert lot.parts[0].period == "2026-10" and lot.kg > 0
    assert lot.kwh_per_kg == pytest.approx(f.footprint.count("Ne32").kwh_per_kg)
    d = figures_dict(f)
    json.dumps(d)  # JSON-able for the API


def test_cli_report_writes_every_format(month_db: Path, mill_yaml: Path, tmp_path: Path) -> None:
    extra = tmp_path / "mine.yaml"
    extra.write_text("factors:\n  - {id: my-east-2026, kind: grid_location, region: CN-East, year: 2026, value: 0.52,"
                     " unit: kgCO2/kWh, scope: '2', source: {document: 'our own estimate'}}\n", encoding="utf-8")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["carbon", "report", "--site", str(mill_yaml), "--db", f"embedded:{month_db}",
                                   "--mill", "mill-a", "--month", "2026-10", "--out", str(out), "--rule", "energy",
                                   "--factors", str(extra), "--green-kwh", "50000"])
    assert res.exit_code == 0, res.output
    stem = out / "carbon_mill-a_2026-10"
    for suffix in (".html", ".pdf", ".xlsx", ".json", "_pact.json", "_inventory.csv", "_stages.csv"):
        assert Path(f"{stem}{suffix}").stat().st_size > 0, suffix
    html = Path(f"{stem}.html").read_text(encoding="utf-8")
    assert "my-east-2026 [CUSTOM]" in html and "Allocation rule: energy" in html
    assert Path(f"{stem}.pdf").read_bytes().startswith(b"%PDF")
    d = json.loads(Path(f"{stem}.json").read_text(encoding="utf-8"))
    assert d["custom_factors"] == ["my-east-2026"]
    assert d["inventory"]["instrument_kwh"] == 50000
    pact = json.loads(Path(f"{stem}_pact.json").read_text(encoding="utf-8"))
    assert {p["productNameCompany"] for p in pact} == {"Cotton yarn Ne32", "Cotton yarn Ne40"}
    for p in pact:
        assert p["pcf"]["declaredUnit"] == "kilogram" and float(p["pcf"]["pCfExcludingBiogenic"]) > 0
        assert "CUSTOM" in p["comment"]
    from openpyxl import load_workbook

    assert "inventory" in load_workbook(f"{stem}.xlsx").sheetnames


def test_pdf_in_chinese_with_charts(month_db: Path, mill_yaml: Path, tmp_path: Path) -> None:
    from spinline.carbon.report import render
    from spinline.core.pdf import CJK_FONT, text_of

    site = load_site(mill_yaml)
    store = EmbeddedStore(month_db)
    try:
        f = month_report(store, site.mill("mill-a"), "2026-10", trend_months=2)
    finally:
        store.close()
    res = CliRunner().invoke(app, ["carbon", "report", "--site", str(mill_yaml), "--db", f"embedded:{month_db}",
                                   "--mill", "mill-a", "--month", "2026-10", "--out", str(tmp_path),
                                   "--lang", "zh-CN"])
    assert res.exit_code == 0, res.output
    data = (tmp_path / "carbon_mill-a_2026-10_zh-CN.pdf").read_bytes()
    assert data.startswith(b"%PDF") and CJK_FONT.encode() in data
    text = text_of(data)
    flat = "".join(text.split())
    # headings, Scope 1/2 and the mill's figure in Chinese, numbers as in the figures
    for words in ("能源与碳排放月报", "组织温室气体清单", "范围二（基于位置）", "单位纱线指标", "绿色工厂指标",
                  "数据质量"):
        assert words in flat, words
    assert f"全厂单位电耗{f.footprint.kwh_per_kg:.3f}kWh/kg" in flat
    # the charts: titles, stage names on the axis and shares in the pie's legend
    for words in ("各工序单位电耗", "各工序用电占比", "各纱支单位产品碳排放", "细纱", "梳棉", "络筒", "Ne32", "Ne40"):
        assert words in flat, words
    ring = next(s for s in f.footprint.stages if s.key == "ring_frame")
    assert f"细纱{100 * ring.share:.1f}%" in flat
    # English, and a bad language
    content, media, name = render(f, "pdf", "en")
    assert media == "application/pdf" and name == "carbon_mill-a_2026-10.pdf"
    assert "Energy by stage" in text_of(content) and "能源" not in text_of(content)
    bad = CliRunner().invoke(app, ["carbon", "report", "--site", str(mill_yaml), "--db", f"embedded:{month_db}",
                                   "--mill", "mill-a", "--month", "2026-10", "--out", str(tmp_path), "--lang", "de"])
    assert bad.exit_code != 0 and "zh-CN or en" in bad.output
