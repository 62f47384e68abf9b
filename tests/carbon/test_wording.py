"""The Chinese carbon report says its notes, warnings, gap reasons, savings basis and factor fallbacks in
Chinese: every English line the figures carry has a Chinese template, and none of them reaches the zh-CN page."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape

from spinline.carbon import wording
from spinline.carbon.factors import FactorLibrary
from spinline.carbon.inventory import FuelUse, GreenInstrument, compute_inventory
from spinline.carbon.report import opportunity_title, render_html
from spinline.cloud.carbon.service import figures_dict, month_report
from spinline.cloud.storage.embedded import EmbeddedStore
from spinline.core.site import load_site


def fields(tpl: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(tpl) if f}


def test_every_english_line_has_chinese_with_the_same_parameters() -> None:
    assert set(wording.EN) == set(wording.ZH)
    for key, tpl in wording.EN.items():
        assert fields(tpl) == fields(wording.ZH[key]), key


SAMPLE = {"kwh": "1234", "kg": "567", "days": "28", "hours": "41", "kw": "12.5", "top": "40%", "pv": "900",
          "consumption": "800", "kind": "gec", "id": "GEC-9", "vintage": "2022", "year": "2023", "source": "wind",
          "mj": "96000", "ncv": "48", "density": "0.84", "unit": "L", "used": "2022", "regions": "CN-Jiangsu",
          "region": "CN-East", "buckets": "48", "machine": "RF-01"}


def test_each_line_parses_back_and_turns_chinese() -> None:
    for key, tpl in wording.EN.items():
        en = wording.say(key, **{f: SAMPLE[f] for f in fields(tpl)})
        assert wording.parse(en) is not None and wording.parse(en)[0] == key, key  # type: ignore[index]
        out = wording.zh(en)
        assert out == wording.ZH[key].format_map({**SAMPLE, "kind": wording.KIND_ZH.get("gec", "gec")} if not
                                                 key.startswith("factor.") else {**SAMPLE, "kind": "gec"}), key
    # joined lines (an inventory note of fallbacks, one of which holds "; " itself) and a line a user typed
    joined = "; ".join([wording.say("factor.earlier_vintage", kind="grid_location", year=2026, used=2023),
                        wording.say("factor.wider_region", year=2023, regions="CN-Jiangsu", region="CN-East"),
                        "delivered by truck"])
    assert wording.zh(joined) == ("无 2026 年的电网排放因子（基于位置）；采用此前最近年份 2023 的因子；"
                                  "CN-Jiangsu 无 2023 年因子；采用 CN-East 的因子；delivered by truck")
    assert wording.zh(wording.say("inv.instrument_vintage", kind="gec", id="", kwh=5, vintage=2022,
                                  year=2023)).startswith("绿色电力凭证 gec （5 kWh")


@pytest.fixture(scope="module")
def month_dict(month_db: Path, mill_yaml: Path) -> dict[str, Any]:
    store = EmbeddedStore(month_db)
    try:
        return figures_dict(month_report(store, load_site(mill_yaml).mill("mill-a"), "2026-10"))
    finally:
        store.close()


def test_zh_report_has_no_english_line(month_dict: dict[str, Any]) -> None:
    d = month_dict
    # the inventory of a mill with every warning the inventory writes: PV above consumption, a certificate of
    # another year, certificates beyond the grid kWh, fuels in GJ and litres, a year with no factor (fallbacks)
    inv = compute_inventory(FactorLibrary.load(), year=2026, consumption_kwh=1000.0, province="Jiangsu",
                            grid_region="East", onsite_pv_kwh=400.0,
                            fuels=[FuelUse(96.0, "GJ", fuel="natural_gas"),
                                   FuelUse(10.0, "L", fuel="diesel", kg_per_unit=0.84)],
                            instruments=[GreenInstrument("gec", 900.0, 2026, "wind", "GEC-1"),
                                         GreenInstrument("gec", 50.0, 2025, "wind", "GEC-OLD")])
    pv_over = compute_inventory(FactorLibrary.load(), year=2026, consumption_kwh=1000.0, grid_region="East",
                                onsite_pv_kwh=1200.0)
    warnings = [*inv.warnings, *pv_over.warnings]
    assert len(warnings) == 3
    d = {**d, "inventory": {**d["inventory"], "warnings": warnings,
                            "lines": [{"scope": x.scope, "category": x.category, "activity": x.activity,
                                       "activity_unit": x.activity_unit, "factor": x.factor_value,
                                       "factor_unit": x.factor_unit, "factor_id": x.factor_id, "kgco2e": x.kgco2e,
                                       "custom": x.custom, "note": x.note} for x in inv.lines]},
         "notes": [*d["notes"], wording.say("fp.meters_above_main", kwh=12), wording.say("insight.leak_not_assessable"),
                   wording.say("fp.yarn_without_count", kg=300)],
         "data_quality": {**d["data_quality"], "gaps": [
             {"machine": "RF-01", "first_hour": 3, "hours": 2, "kwh": 1.0, "method": m, "reason": r}
             for m, r in [("estimated_typical", wording.say("gap.start")),
                          ("estimated_power", wording.say("gap.too_long", buckets=48)),
                          ("unfilled", wording.say("gap.readings_unknown"))]]}}
    d["green_factory"] = {**d["green_factory"], "trends": {
        k: {"first": 1.0, "last": 2.0, "slope_per_month": 0.5, "change_share": 1.0} for k in wording.TREND_ZH}}
    assert d["factor_selection"] and d["insight"]["opportunities"]
    english = [*d["notes"], *d["inventory"]["warnings"], *(x["note"] for x in d["inventory"]["lines"] if x["note"]),
               *(g["reason"] for g in d["data_quality"]["gaps"]),
               *(o["basis"] for o in d["insight"]["opportunities"]),
               *(f for s in d["factor_selection"] for f in s["fallbacks"])]
    assert any(s["fallbacks"] for s in d["factor_selection"])
    zh = render_html(d, "zh-CN")
    en = render_html(d, "en")
    for line in english:  # as the page escapes it
        assert str(escape(line)) in en, line
        assert str(escape(line)) not in zh, line
        assert str(escape(wording.zh(line))) in zh, line
    for words in ("厂内光伏发电量（1200 kWh）超过用电量（1000 kWh）", "未计入：其年份不是报告年度 2026",
                  "低位发热量", "用户给定密度",
                  "缺口位于统计期开始处", "缺口超过 48 个时段", "按典型值估算", "无产量时段的计量电量", "天然气",
                  "绿色电力凭证：gec（wind）", "单位产品综合能耗（kgce/t）：每月变化", "吨纱电耗（kWh/kg）：每月变化"):
        assert words in zh, words
    for phrase in ("no unmetered load", "excess is treated", "Quality Criteria", "beyond purchased", "NCV",
                   "user density", "gap at the start", "buckets", "machine-hours", "latest earlier vintage",
                   "estimated_typical", "natural_gas", "instrument:", "kgce_per_t：", "kwh_per_kg："):
        assert phrase not in zh, phrase
    # the mill by its Chinese name from the site file (names: {zh-CN: ...}), its default name in English
    assert "示范棉纺一厂" in zh and "Demo Cotton Spinning No.1" not in zh
    assert "Demo Cotton Spinning No.1" in en and "示范棉纺一厂" not in en
    # lines too: by name in the tables, and a savings title names the line in Chinese where the site does
    assert "32英支普梳细纱线" in zh and "Ring line Ne 32 carded" in en and "32英支" not in en
    titles = [opportunity_title(o, "zh-CN", d) for o in d["insight"]["opportunities"] if o.get("title_key")
              == "carbon.opp.line_best"]
    assert titles and all("英支" in x or "前纺" in x or "络筒" in x for x in titles), titles
    assert all("-" not in x.split("达到")[0] for x in titles), titles  # no line id left
    en_titles = [opportunity_title(o, "en", d) for o in d["insight"]["opportunities"]
                 if o.get("title_key") == "carbon.opp.line_best"]
    assert any(x.startswith("bring Ring line Ne 32 carded to its best-demonstrated") for x in en_titles), en_titles
    assert all("ring-c32" not in x and "prep-c32" not in x for x in en_titles), en_titles
