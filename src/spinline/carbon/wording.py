"""The carbon figures' explanatory lines in English and Chinese: one template per line, both languages beside.

Notes, inventory warnings and line notes, gap reasons, the savings' basis and factor fallbacks are built
here (``say``) in English, which the JSON, CSV and English report carry; the Chinese report turns each such
line back into its template and parameters and writes the Chinese one (``zh``). Because the English is
rendered from the same template it is parsed with, the two cannot drift; a line that matches no template
(a note a user typed in an input file) stays as written.
"""

from __future__ import annotations

from spinline.core.texts import match

#: key -> English template (``{name}`` placeholders, parameters formatted as the English shows them).
EN: dict[str, str] = {
    "fp.meters_above_main": "machine meters sum to {kwh} kWh more than the main meter: no unmetered load taken",
    "fp.yarn_without_count": "{kg} kg of yarn from ring frames on lines without a count",
    "insight.leak_not_assessable": "compressor leak signature not assessable: no hour without production "
                                   "in the period",
    "insight.basis.line_best": "daily kWh/kg above the line's 10th percentile over {days} production days",
    "insight.basis.idle": "metered kWh in hours with no output ({hours} machine-hours)",
    "insight.basis.air_leaks": "compressor draws {kw} kW with no air demand ({hours} h); "
                               "a leak load runs all year (8 760 h)",
    "insight.basis.hvac": "kWh above {top} of mill energy (domain.md (a): HVAC 30-40% of mill load)",
    "inv.pv_exceeds": "on-site PV ({pv} kWh) exceeds consumption ({consumption} kWh): "
                      "the excess is treated as exported",
    "inv.instrument_vintage": "instrument {kind} {id} ({kwh} kWh, vintage {vintage}) excluded: its vintage is "
                              "not the reporting year {year} (Scope 2 Quality Criteria)",
    "inv.instrument_beyond_grid": "instrument {kind} {id}: {kwh} kWh beyond purchased grid electricity not counted",
    "inv.instrument_category": "instrument: {kind} ({source})",
    "inv.vintage": "vintage {vintage}",
    "inv.fuel_ncv": "{mj} MJ / NCV {ncv} MJ/kg",
    "inv.fuel_density": "user density {density} kg/{unit}",
    "factor.earlier_vintage": "no {kind} factor for {year}; used the latest earlier vintage {used}",
    "factor.later_vintage": "no {kind} factor for {year} or earlier; used the earliest published, {used}",
    "factor.wider_region": "no {year} factor for {regions}; used {region}",
    "gap.start": "gap at the start of the period",
    "gap.end": "gap at the end of the period",
    "gap.reset": "counter reset during the gap",
    "gap.too_long": "gap longer than {buckets} buckets",
    "gap.estimate_selected": "estimation selected",
    "gap.readings_unknown": "counter readings around the gap unknown",
    "service.no_energy": "{machine}: no energy data in the period",
}

#: key -> Chinese template, same placeholders (a test checks every key and placeholder is here).
ZH: dict[str, str] = {
    "fp.meters_above_main": "各机台电表合计比总表多 {kwh} kWh：不计非计量负荷",
    "fp.yarn_without_count": "{kg} kg 纱线来自未设定纱支的生产线上的细纱机",
    "insight.leak_not_assessable": "无法评估空压机泄漏特征：统计期内没有停产的小时",
    "insight.basis.line_best": "{days} 个生产日中，日单耗（kWh/kg）高于本线第 10 百分位的电量",
    "insight.basis.idle": "无产量时段的计量电量（{hours} 机台小时）",
    "insight.basis.air_leaks": "无用气需求时空压机功率 {kw} kW（{hours} 小时）；泄漏负荷全年运行（8 760 小时）",
    "insight.basis.hvac": "超出全厂能耗 {top} 的空调电量（常规：空调占全厂负荷 30-40%）",
    "inv.pv_exceeds": "厂内光伏发电量（{pv} kWh）超过用电量（{consumption} kWh）：超出部分按上网电量处理",
    "inv.instrument_vintage": "绿色电力凭证 {kind} {id}（{kwh} kWh，年份 {vintage}）未计入：其年份不是报告年度 {year}"
                              "（范围二质量准则）",
    "inv.instrument_beyond_grid": "绿色电力凭证 {kind} {id}：超出外购电网电量的 {kwh} kWh 未计入",
    "inv.instrument_category": "绿色电力凭证：{kind}（{source}）",
    "inv.vintage": "年份 {vintage}",
    "inv.fuel_ncv": "{mj} MJ ÷ 低位发热量 {ncv} MJ/kg",
    "inv.fuel_density": "用户给定密度 {density} kg/{unit}",
    "factor.earlier_vintage": "无 {year} 年的{kind}；采用此前最近年份 {used} 的因子",
    "factor.later_vintage": "无 {year} 年及更早的{kind}；采用最早发布的 {used} 年因子",
    "factor.wider_region": "{regions} 无 {year} 年因子；采用 {region} 的因子",
    "gap.start": "缺口位于统计期开始处",
    "gap.end": "缺口位于统计期末尾",
    "gap.reset": "缺口期间计数器复位",
    "gap.too_long": "缺口超过 {buckets} 个时段",
    "gap.estimate_selected": "选择了估算",
    "gap.readings_unknown": "缺口前后的计数器读数未知",
    "service.no_energy": "{machine}：统计期内无电量数据",
}

#: Factor kinds as Chinese reports name them (a ``{kind}`` parameter of the factor lines).
KIND_ZH: dict[str, str] = {
    "grid_location": "电网排放因子（基于位置）", "grid_residual": "剩余电力组合排放因子",
    "grid_fossil": "化石能源电力排放因子", "electricity_lca": "电力全生命周期碳足迹因子",
    "fuel": "燃料排放因子", "heat": "热力排放因子",
}
#: The green-factory trends (``figures_dict``'s ``green_factory.trends`` keys).
TREND_ZH: dict[str, str] = {"kgce_per_t": "单位产品综合能耗（kgce/t）", "kgco2e_per_t": "单位产品碳排放（kgCO2e/t）",
                            "kwh_per_kg": "吨纱电耗（kWh/kg）"}
#: Gap fill methods (``GapSpan.method``).
METHOD_ZH: dict[str, str] = {"interpolated": "插值", "estimated_power": "按功率估算",
                             "estimated_typical": "按典型值估算", "unfilled": "未补齐"}


def say(key: str, **params: object) -> str:
    """The English line of ``key``; KeyError names a missing key or parameter (a programming error)."""
    return EN[key].format_map({k: str(v) for k, v in params.items()})


def parse(text: str) -> tuple[str, dict[str, str]] | None:
    """(key, parameters) of an English line ``say`` built, or None when no template renders back to it.

    A parameter never holds ``"; "`` (the separator of joined lines), so a line's last parameter cannot
    swallow the lines after it.
    """
    for key, tpl in EN.items():
        found = match(tpl, text, empty=True)
        if found is not None and tpl.format_map(found) == text and not any("; " in v for v in found.values()):
            return key, found
    return None


def zh(text: str) -> str:
    """``text`` in Chinese: each line ``say`` built (alone, or ``"; "``-joined as notes are) in its Chinese
    wording; a part that no template built stays as written."""
    if not text:
        return text
    pieces = text.split("; ")
    out: list[str] = []
    i = 0
    while i < len(pieces):
        for j in range(i + 1, len(pieces) + 1):  # shortest first; some lines hold "; " themselves
            if (hit := parse("; ".join(pieces[i:j]))) is not None:
                key, params = hit
                if "kind" in params and key.startswith("factor."):
                    params = {**params, "kind": KIND_ZH.get(params["kind"], params["kind"])}
                out.append(ZH[key].format_map(params))
                i = j
                break
        else:
            out.append(pieces[i])
            i += 1
    return "；".join(out)
