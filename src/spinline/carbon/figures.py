"""A month's carbon figures as one value, and as plain JSON-able data.

Pure: ``spinline.cloud.carbon.service.month_report`` reads the store and builds a ``MonthFigures``;
the report writers (``spinline.carbon.report``), the API and the bench read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spinline.carbon import inputs as ci
from spinline.carbon import insight as ins
from spinline.carbon.factors import Factor, FactorLibrary, Selection
from spinline.carbon.footprint import CarbonIntensity, Footprint, LotFootprint
from spinline.carbon.green_factory import GreenFactoryMonth, Trend
from spinline.carbon.inventory import Inventory
from spinline.carbon.meters import QualitySummary
from spinline.core.site import Mill

HOUR_NS = 3_600_000_000_000
#: Share of a period's kWh that may be estimated (not measured, not interpolated) before the per-kg
#: figures are flagged as resting on estimates (``figures_dict``: ``estimated_flagged``).
ESTIMATED_SHARE_LIMIT = 0.10


@dataclass(frozen=True)
class MonthFigures:
    """Everything a month's carbon report shows."""

    mill: Mill
    month: str
    start_ns: int
    end_ns: int
    rule: str
    gap_fill: str
    library: FactorLibrary
    footprint: Footprint
    inventory: Inventory
    carbon_counts: dict[str, CarbonIntensity]
    carbon_mill: CarbonIntensity
    carbon_location_per_kg: float
    lca: Selection
    green_lca: tuple[Selection, ...]
    quality: QualitySummary
    insight: ins.Insight
    green_factory: tuple[GreenFactoryMonth, ...]
    trends: dict[str, Trend | None]
    lots: tuple[LotFootprint, ...] = ()
    fibre_source: str = ""
    inputs: ci.CarbonInputs = field(default_factory=ci.CarbonInputs)
    notes: tuple[str, ...] = ()
    #: The calendar month's [start, end); ``start_ns``/``end_ns`` are the hours covered within it.
    month_start_ns: int = 0
    month_end_ns: int = 0
    #: Estimated share of kWh above which the per-kg figures are flagged.
    estimated_limit: float = ESTIMATED_SHARE_LIMIT

    @property
    def hours(self) -> int:
        return (self.end_ns - self.start_ns) // HOUR_NS

    @property
    def month_to_date(self) -> bool:
        """The covered hours stop before the month's end (a month in progress, or data that stops)."""
        return self.end_ns < self.month_end_ns

    @property
    def estimated_flagged(self) -> bool:
        return self.quality.estimated_share > self.estimated_limit

    def factors_used(self) -> list[Factor]:
        seen: dict[str, Factor] = {}
        for s in (*self.inventory.selections, self.lca, *self.green_lca):
            seen[s.factor.id] = s.factor
        for line in self.inventory.lines:
            if line.factor_id in {f.id for f in self.library.factors}:
                seen.setdefault(line.factor_id, self.library.get(line.factor_id))
        return list(seen.values())

    def custom_factors_used(self) -> list[Factor]:
        return [f for f in self.factors_used() if f.custom]


def _iso(ts_ns: int) -> str:
    """UTC ISO 8601 with ``Z`` (the API's one timestamp format)."""
    import datetime as dt

    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def figures_dict(f: MonthFigures) -> dict[str, Any]:
    """The figures as plain JSON-able data (API, CSV/XLSX and HTML all use this)."""
    fp, inv, q, cc = f.footprint, f.inventory, f.quality, f.carbon_counts

    def num(x: float | None, nd: int = 6) -> float | None:
        return None if x is None or x != x else round(float(x), nd)

    return {
        "mill": f.mill.id, "mill_name": f.mill.name, "mill_names": dict(f.mill.names), "province": f.mill.province,
        "grid_region": f.mill.grid_region,
        "line_names": {ln.id: {"name": ln.name or ln.id, "names": dict(ln.names)}
                       for ws in f.mill.workshops for ln in ws.lines},
        "month": f.month, "allocation_rule": f.rule, "gap_fill": f.gap_fill,
        "period": {"month_start": _iso(f.month_start_ns), "month_end": _iso(f.month_end_ns),
                   "covered_start": _iso(f.start_ns), "covered_end": _iso(f.end_ns), "hours": f.hours,
                   "month_to_date": f.month_to_date},
        "library": {"name": f.library.name, "version": f.library.version, "digest": f.library.digest,
                    "files": list(f.library.files)},
        "energy": {"total_kwh": num(fp.total_kwh, 3), "yarn_kg": num(fp.yarn_kg, 3), "kwh_per_kg": num(fp.kwh_per_kg),
                   "estimated_share": num(q.estimated_share), "estimated_flagged": f.estimated_flagged,
                   "shared_kwh": {k: num(v, 3) for k, v in fp.shared.items()}},
        "stages": [{"stage": s.key, "kwh": num(s.kwh, 3), "kwh_per_kg_yarn": num(s.kwh_per_kg), "share": num(s.share)}
                   for s in fp.stages],
        "lines": [{"line": s.key, "kwh": num(s.kwh, 3), "output_kg": num(s.kg, 3), "kwh_per_kg": num(s.kwh_per_kg)}
                  for s in fp.lines],
        "counts": [{"count": c.key, "kwh": num(c.kwh, 3), "yarn_kg": num(c.kg, 3), "kwh_per_kg": num(c.kwh_per_kg),
                    "kgco2e_per_kg_spinning": num(cc[c.key].spinning) if c.key in cc else None,
                    "kgco2e_per_kg_cradle_to_gate": num(cc[c.key].cradle_to_gate) if c.key in cc else None,
                    "stages_kwh_per_kg": {k: num(v / c.kg) for k, v in fp.count_stages.get(c.key, {}).items()}
                    if c.kg else {}}
                   for c in fp.counts],
        "product_footprint": {"electricity_kgco2e_per_kwh": num(f.carbon_mill.electricity_kg_per_kwh),
                              "kgco2e_per_kg_spinning": num(f.carbon_mill.spinning),
                              "kgco2e_per_kg_cradle_to_gate": num(f.carbon_mill.cradle_to_gate),
                              "kgco2_per_kg_location_based": num(f.carbon_location_per_kg),
                              "estimated_share": num(q.estimated_share), "estimated_flagged": f.estimated_flagged,
                              "fibre_source": f.fibre_source},
        "inventory": {"year": inv.year, "consumption_kwh": num(inv.consumption_kwh, 3),
                      "onsite_pv_kwh": num(inv.onsite_pv_kwh, 3), "grid_kwh": num(inv.grid_kwh, 3),
                      "instrument_kwh": num(inv.instrument_kwh, 3), "residual_kwh": num(inv.residual_kwh, 3),
                      "scope1_kg": num(inv.scope1_kg, 3), "scope2_location_kg": num(inv.scope2_location_kg, 3),
                      "scope2_market_kg": num(inv.scope2_market_kg, 3),
                      "lines": [{"scope": x.scope, "category": x.category, "activity": num(x.activity, 3),
                                 "activity_unit": x.activity_unit, "factor": num(x.factor_value, 8),
                                 "factor_unit": x.factor_unit, "factor_id": x.factor_id, "kgco2e": num(x.kgco2e, 3),
                                 "custom": x.custom, "note": x.note} for x in inv.lines],
                      "warnings": list(inv.warnings)},
        "factors": [{"id": x.id, "kind": x.kind, "region": x.region, "year": x.year, "value": x.value, "unit": x.unit,
                     "scope": x.scope, "trust": x.trust, "custom": x.custom, "document": x.source.document,
                     "table": x.source.table, "note": x.note} for x in f.factors_used()],
        "factor_selection": [{"requested": s.requested, "used": s.factor.id, "fallbacks": list(s.fallbacks)}
                             for s in (*inv.selections, f.lca, *f.green_lca)],
        "custom_factors": [x.id for x in f.custom_factors_used()],
        "data_quality": {"total_kwh": num(q.total_kwh, 3), "interpolated_kwh": num(q.interpolated_kwh, 3),
                         "estimated_kwh": num(q.estimated_kwh, 3), "estimated_share": num(q.estimated_share),
                         "estimated_share_limit": f.estimated_limit, "estimated_flagged": f.estimated_flagged,
                         "interpolated_share": num(q.interpolated_share),
                         "gaps": [{"machine": m, "first_hour": g.start, "hours": g.end - g.start,
                                   "kwh": num(g.kwh, 3), "method": g.method, "reason": g.reason}
                                  for m, gs in q.gaps.items() for g in gs],
                         "counter_resets": [{"machine": m, "hour": h, "kind": k} for m, rs in q.resets.items()
                                            for h, k in rs],
                         "reconciliation": [{"meter": r.meter, "meter_kwh": num(r.meter_kwh, 3),
                                             "children_kwh": num(r.children_kwh, 3),
                                             "difference_share": num(r.difference_share), "ok": r.ok,
                                             "tolerance": r.tolerance} for r in q.reconciliations],
                         "notes": list(q.notes)},
        "insight": {"hvac_share": num(f.insight.hvac_share), "compressor_leak_kw": num(f.insight.compressor_leak_kw),
                    "compressor_no_demand_hours": f.insight.compressor_no_demand_hours,
                    "idle_kwh": num(sum(f.insight.idle_kwh.values()), 3),
                    "baselines": [{"line": b.key, "median_kwh_per_kg": num(b.median_kwh_per_kg),
                                   "best_kwh_per_kg": num(b.best_kwh_per_kg),
                                   "actual_kwh_per_kg": num(b.actual_kwh_per_kg),
                                   "days": b.days} for b in f.insight.baselines],
                    "opportunities": [{"title": o.title, "title_key": o.text.key if o.text else None,
                                       "title_params": dict(o.text.params) if o.text else None,
                                       "kwh_per_year": num(o.kwh_per_year, 1),
                                       "tco2e_per_year": num(o.tco2e_per_year, 3), "basis": o.basis}
                                      for o in f.insight.opportunities]},
        "green_factory": {"months": [{"month": r.month, "yarn_t": num(r.yarn_t, 4), "kwh": num(r.kwh, 3),
                                      "kgce": num(r.kgce, 3), "kgce_per_t": num(r.kgce_per_t, 3),
                                      "kgco2e_per_t": num(r.kgco2e_per_t, 3),
                                      "kgco2e_per_t_market": num(r.kgco2e_per_t_market, 3)} for r in f.green_factory],
                          "trends": {k: None if t is None else {"first": num(t.first), "last": num(t.last),
                                                                 "slope_per_month": num(t.slope_per_month),
                                                                 "change_share": num(t.change_share)}
                                     for k, t in f.trends.items()}},
        "lots": [{"lot": lf.lot, "kg": num(lf.kg, 3), "kwh_per_kg": num(lf.kwh_per_kg),
                  "kgco2e_per_kg": num(lf.kgco2e_per_kg),
                  "parts": [{"month": p.period, "kg": num(p.kg, 3), "kwh_per_kg": num(p.kwh_per_kg),
                             "kgco2e_per_kg": num(p.kgco2e_per_kg)} for p in lf.parts]} for lf in f.lots],
        "notes": list(f.notes),
    }
