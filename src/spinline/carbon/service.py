"""A mill's month from a ``TimeSeriesStore`` and the site -> every figure of the carbon report.

The one module of ``spinline.carbon`` that reads data, and it reads only hourly rollups through the
``TimeSeriesStore`` protocol (one ``rollup`` call for the month, one for the trend months), so a
month of 1-minute data costs a few hundred thousand rollup rows, never the 18 million raw ones.
The CLI, the API and the bench all call ``month_report``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spinline.carbon import inputs as ci
from spinline.carbon import insight as ins
from spinline.carbon.factors import Factor, FactorLibrary, Selection
from spinline.carbon.footprint import (
    PRODUCTION,
    CarbonIntensity,
    Footprint,
    LotFootprint,
    LotPart,
    MachineTotals,
    Rule,
    carbon_intensity,
    compute_footprint,
    count_key,
    electricity_factor,
    lot_footprint,
)
from spinline.carbon.green_factory import GreenFactoryMonth, Trend, trend
from spinline.carbon.inventory import Inventory, compute_inventory
from spinline.carbon.meters import CounterFill, GapFill, QualitySummary, fill_counter, reconcile
from spinline.cloud.storage.base import RESOLUTION_NS, TimeSeriesStore
from spinline.core.batch import F64
from spinline.core.site import Machine, MachineType, Mill, iter_machines, point_key

HOUR_NS = RESOLUTION_NS["1h"]
COUNTERS = ("energy", "output", "spindle_hours")
#: Share of a period's kWh that may be estimated (not measured, not interpolated) before the per-kg
#: figures are flagged as resting on estimates (``figures_dict``: ``data_quality.estimated_flagged``).
ESTIMATED_SHARE_LIMIT = 0.10


@dataclass(frozen=True)
class MachineInfo:
    machine: Machine
    line: str
    workshop: str
    count_ne: float | None


@dataclass(frozen=True)
class Dense:
    """Hourly arrays (points x buckets) of a rollup over a period's bucket grid."""

    index: dict[int, int]
    present: np.ndarray
    delta: np.ndarray
    mn: np.ndarray
    mx: np.ndarray
    last: np.ndarray
    mean: np.ndarray

    def row(self, key: int) -> int | None:
        return self.index.get(key)


def read_dense(store: TimeSeriesStore, keys: Sequence[int], start_ns: int, end_ns: int) -> Dense:
    """One hourly rollup call, scattered into dense (point, hour) arrays."""
    n = max(0, (end_ns - start_ns + HOUR_NS - 1) // HOUR_NS)
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    shape = (len(index), n)
    present = np.zeros(shape, dtype=bool)
    arrs = [np.full(shape, np.nan) for _ in range(5)]
    r = store.rollup(list(index), start_ns, end_ns, "1h")
    if len(r) and index:
        ks = np.fromiter(index, dtype=np.int64, count=len(index))
        order = np.argsort(ks)
        pos = np.clip(np.searchsorted(ks[order], r.point), 0, len(ks) - 1)
        hit = ks[order][pos] == r.point
        pi = np.where(hit, order[pos], -1)
        bi = (r.bucket_ns - start_ns) // HOUR_NS
        ok = hit & (bi >= 0) & (bi < n) & (r.count > 0)
        pi, bi = pi[ok], bi[ok]
        present[pi, bi] = True
        for a, col in zip(arrs, (r.delta, r.min, r.max, r.last, r.mean), strict=True):
            a[pi, bi] = col[ok]
    return Dense(index, present, *arrs)


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


def machines_of(mill: Mill) -> list[MachineInfo]:
    return [MachineInfo(m, line.id, ws.id, line.count_ne) for ws, line, m in iter_machines(mill)]


def _est_from_power(d: Dense, key: int) -> F64 | None:
    r = d.row(key)
    if r is None:
        return None
    return np.where(d.present[r], d.mean[r], np.nan)  # mean kW over an hour = kWh in the hour


def _fill(d: Dense, key: int, power_key: int | None, rollover: float | None, method: GapFill) -> CounterFill | None:
    r = d.row(key)
    if r is None or not d.present[r].any():
        return None
    est = _est_from_power(d, power_key) if power_key is not None else None
    # first reading of a bucket: its minimum, unless the counter dropped within it (max above last)
    first = np.where(d.mx[r] <= d.last[r], d.mn[r], np.nan)
    return fill_counter(d.present[r], d.delta[r], first, d.last[r], est_kwh=est, rollover=rollover, method=method)


def rollovers(store: TimeSeriesStore, mill_id: str) -> dict[str, float]:
    """Counter roll-over values by tag, as registered in the store (from the site file)."""
    out: dict[str, float] = {}
    for p in store.points(mill_id):
        r = getattr(p, "rollover", None)
        if r is not None:
            out[p.tag] = float(r)
    return out


@dataclass(frozen=True)
class _Period:
    machines: list[MachineTotals]
    main_kwh: float | None
    quality: QualitySummary
    kwh_h: dict[str, F64]
    kg_h: dict[str, F64]
    infos: dict[str, MachineInfo]


def read_period(store: TimeSeriesStore, mill: Mill, start_ns: int, end_ns: int,
                gap_fill: GapFill = "auto", tolerance: float = 0.05) -> _Period:
    """Machine totals, meter readings and data quality of a mill over [start, end)."""
    infos = machines_of(mill)
    keys: list[int] = []
    for mi in infos:
        for name in ("energy", "power", "output", "spindle_hours"):
            keys.append(point_key(f"{mill.id}/{mi.machine.id}/{name}"))
    d = read_dense(store, keys, start_ns, end_ns)
    rolls = rollovers(store, mill.id)
    n = d.present.shape[1]
    totals: list[MachineTotals] = []
    kwh_h: dict[str, F64] = {}
    kg_h: dict[str, F64] = {}
    meter_kwh: dict[str, float] = {}
    gaps, resets = {}, {}
    interp = est = 0.0
    notes: list[str] = []
    for mi in infos:
        m = mi.machine
        tag = f"{mill.id}/{m.id}/"
        f = _fill(d, point_key(tag + "energy"), point_key(tag + "power"), rolls.get(tag + "energy"), gap_fill)
        if f is None:
            if m.type != MachineType.ENERGY_METER or m.feeds:
                notes.append(f"{m.id}: no energy data in the period")
            e = np.zeros(n)
        else:
            e = f.kwh
            if f.gaps:
                gaps[m.id] = f.gaps
            if f.resets:
                resets[m.id] = f.resets
            if m.type != MachineType.ENERGY_METER:
                interp += float(f.interpolated.sum())
                est += float(f.estimated.sum())
        if m.type == MachineType.ENERGY_METER:
            meter_kwh[m.id] = float(e.sum())
            continue
        out = np.zeros(n)
        sph = 0.0
        if m.type.value in PRODUCTION:
            r = d.row(point_key(tag + "output"))
            if r is not None:
                out = np.where(d.present[r], np.nan_to_num(d.delta[r]), 0.0)
            r = d.row(point_key(tag + "spindle_hours"))
            if r is not None:
                sph = float(np.nansum(np.where(d.present[r], d.delta[r], 0.0)))
        kwh_h[m.id] = e
        kg_h[m.id] = out
        totals.append(MachineTotals(m.id, m.type.value, mi.line, mi.count_ne, float(e.sum()), float(out.sum()), sph))
    # meters: reconcile each against what it feeds; the main meter is a meter nobody feeds
    meters = {mi.machine.id: mi.machine for mi in infos if mi.machine.type == MachineType.ENERGY_METER}
    all_kwh = {t.machine: t.kwh for t in totals} | meter_kwh
    recs = reconcile({k: (meter_kwh[k], m.feeds) for k, m in meters.items() if k in meter_kwh and m.feeds},
                     all_kwh, tolerance)
    fed = {f for m in meters.values() for f in m.feeds}
    roots = [k for k in meters if k not in fed and k in meter_kwh and meters[k].feeds]
    main = sum(meter_kwh[k] for k in roots) if roots else None
    total = main if main is not None else sum(t.kwh for t in totals)
    q = QualitySummary(total_kwh=total, interpolated_kwh=interp, estimated_kwh=est, gaps=gaps, resets=resets,
                       reconciliations=tuple(recs), notes=tuple(notes))
    return _Period(totals, main, q, kwh_h, kg_h, {mi.machine.id: mi for mi in infos})


def covered_span(store: TimeSeriesStore, mill: Mill, start_ns: int, end_ns: int, now_ns: int) -> tuple[int, int]:
    """The hours of [start, end) a period's figures cover: from the hour of the mill's first reading
    to the end of the hour of its last one, never past ``now``.

    Gap fill estimates a missing hour of a counter from the hours around it. Before the mill's
    first reading, after its last one and after now, no machine reported anything: filling there
    made up the energy of hours that had no yarn (a mill that started three hours ago showed a
    whole month of "typical" kWh over three hours of kg). Within the span energy and yarn cover the
    same hours: a hole that every counter bridges is interpolated for energy and counted for yarn
    (the output counter's increase across it), and a single machine's missing hours are estimated
    and labelled. A reading is an hourly bucket with an energy or output value of any machine of
    the mill. With no reading at all the span is empty.
    """
    hi = min(end_ns, now_ns - now_ns % HOUR_NS + HOUR_NS)
    if hi <= start_ns:
        return start_ns, start_ns
    keys = [point_key(f"{mill.id}/{mi.machine.id}/{name}") for mi in machines_of(mill) for name in ("energy", "output")]
    r = store.rollup(keys, start_ns, hi, "1h")
    seen = r.bucket_ns[r.count > 0] if len(r) else np.empty(0, dtype=np.int64)
    if not len(seen):
        return start_ns, start_ns
    first = max(start_ns, int(seen.min()))
    last = int(seen.max())
    return first, min(hi, last - (last - start_ns) % HOUR_NS + HOUR_NS)


def month_report(store: TimeSeriesStore, mill: Mill, month: str, *,
                 library: FactorLibrary | None = None, inputs: ci.CarbonInputs | None = None,
                 rule: Rule = "mass", gap_fill: GapFill = "auto", tolerance: float = 0.05,
                 trend_months: int = 6, with_lots: bool = True, now_ns: int | None = None,
                 estimated_limit: float = ESTIMATED_SHARE_LIMIT) -> MonthFigures:
    """Every figure of one mill's month (the CLI, API and bench call this); ``site.mill(id)`` gives ``mill``.

    Only the month's covered hours count (``covered_span``): a month in progress is reported month
    to date, energy and yarn over the same hours. ``now_ns`` (default: the clock) fixes "now" for
    tests; ``estimated_limit`` is the estimated share of kWh above which the figures are flagged.
    """
    lib = library or FactorLibrary.load()
    inp = inputs or ci.CarbonInputs()
    year = ci.parse_month(month)[0]
    now = time.time_ns() if now_ns is None else now_ns
    month_start, month_end = ci.month_bounds_ns(month, mill.timezone)
    start, end = covered_span(store, mill, month_start, month_end, now)
    per = read_period(store, mill, start, end, gap_fill, tolerance)
    fp = compute_footprint(per.machines, per.main_kwh, rule)
    pin = inp.period(month)
    inv = compute_inventory(lib, year=year, consumption_kwh=fp.total_kwh, province=mill.province,
                            grid_region=mill.grid_region, onsite_pv_kwh=pin.onsite_pv_kwh, fuels=ci.fuels(pin),
                            heat=ci.heat(pin), instruments=ci.instruments(pin))
    # product footprint: life-cycle factors (MEE/NBS/NEA 2025) for grid and green electricity
    lca = lib.select("electricity_lca", ["CN"], year, allow_later=True)
    green: list[tuple[float, float]] = []
    green_sels: list[Selection] = []
    if inv.onsite_pv_kwh > 0:
        s = lib.select("electricity_lca", [f"CN-{pin.onsite_pv_source}", "CN"], year, allow_later=True)
        green_sels.append(s)
        green.append((inv.onsite_pv_kwh, s.factor.value))
    for il in inv.lines:
        if il.category.startswith("instrument"):
            src = il.category.split("(")[-1].rstrip(")")
            s = lib.select("electricity_lca", [f"CN-{src}", "CN"], year, allow_later=True)
            green_sels.append(s)
            green.append((il.activity, s.factor.value))
    grid_lca_kwh = fp.total_kwh - sum(k for k, _ in green)
    ef = electricity_factor(grid_lca_kwh, lca.factor.value, green)
    other_kg = inv.scope1_kg + sum(x.kgco2e for x in inv.lines if x.scope == "2-location"
                                   and x.category == "purchased heat")
    fib = inp.fibre
    counts = {c.key: carbon_intensity(c.kwh_per_kg, ef, other_kg, fp.yarn_kg, fib.factor if fib else None,
                                      fib.kg_per_kg_yarn if fib else 1.0) for c in fp.counts if c.kg > 0}
    mill_ci = carbon_intensity(fp.kwh_per_kg, ef, other_kg, fp.yarn_kg, fib.factor if fib else None,
                               fib.kg_per_kg_yarn if fib else 1.0)
    loc_per_kg = inv.total_location_kg / fp.yarn_kg if fp.yarn_kg else float("nan")

    # insight on hourly arrays
    n = (end - start) // HOUR_NS
    line_kwh: dict[str, F64] = defaultdict(lambda: np.zeros(n))
    line_kg: dict[str, F64] = {}
    comp = np.zeros(n)
    mill_kg = np.zeros(n)
    prod_kwh: dict[str, F64] = {}
    prod_kg: dict[str, F64] = {}
    for t in per.machines:
        e = per.kwh_h[t.machine][:n]
        if t.type == MachineType.AIR_COMPRESSOR.value:
            comp += e
        if t.type in PRODUCTION:
            prod_kwh[t.machine], prod_kg[t.machine] = e, per.kg_h[t.machine][:n]
            line_kwh[t.line] = line_kwh[t.line] + e
            mill_kg += per.kg_h[t.machine][:n]
    for line, last_stage in _line_final_stage(per.machines).items():
        line_kg[line] = sum((per.kg_h[t.machine][:n] for t in per.machines
                             if t.line == line and t.type == last_stage), np.zeros(n))
    loc_factor = next(s.factor.value for s in inv.selections if s.factor.kind == "grid_location")
    insight = ins.analyse(hours=n, line_kwh_h=dict(line_kwh), line_kg_h=line_kg, machine_kwh_h=prod_kwh,
                          machine_kg_h=prod_kg, compressor_kwh_h=comp, mill_kg_h=mill_kg,
                          hvac_kwh=fp.shared["hvac"], total_kwh=fp.total_kwh, kg_co2_per_kwh=loc_factor,
                          compressors_present=any(t.type == MachineType.AIR_COMPRESSOR.value for t in per.machines))

    gf, trends = _green_factory(store, mill, month, lib, inp, trend_months,
                                GreenFactoryMonth(month, fp.yarn_kg / 1000.0, fp.total_kwh, inv.fuel_mj + inv.heat_mj,
                                                  inv.total_location_kg, inv.total_market_kg))
    lots: list[LotFootprint] = []
    if with_lots:
        lots = _lots(store, mill, month, lib, inp, rule, gap_fill, {month: (fp, counts)}, start, end, now)
    notes = [*fp.notes, *inv.warnings, *insight.notes]
    return MonthFigures(mill=mill, month=month, start_ns=start, end_ns=end, rule=rule, gap_fill=gap_fill,
                        library=lib, footprint=fp, inventory=inv, carbon_counts=counts, carbon_mill=mill_ci,
                        carbon_location_per_kg=loc_per_kg, lca=lca, green_lca=tuple(green_sels),
                        quality=per.quality, insight=insight, green_factory=gf, trends=trends, lots=tuple(lots),
                        fibre_source=fib.source if fib else "", inputs=inp, notes=tuple(notes),
                        month_start_ns=month_start, month_end_ns=month_end, estimated_limit=estimated_limit)


def _line_final_stage(machines: Sequence[MachineTotals]) -> dict[str, str]:
    order = [t.value for t in (MachineType.BLOWROOM, MachineType.CARD, MachineType.COMBER, MachineType.DRAW_FRAME,
                               MachineType.ROVING_FRAME, MachineType.RING_FRAME, MachineType.WINDER)]
    out: dict[str, str] = {}
    for t in machines:
        if t.type in PRODUCTION and t.line and (t.line not in out or order.index(t.type) > order.index(out[t.line])):
            out[t.line] = t.type
    return out


def _green_factory(store: TimeSeriesStore, mill: Mill, month: str, lib: FactorLibrary,
                   inp: ci.CarbonInputs, n_months: int,
                   current: GreenFactoryMonth) -> tuple[tuple[GreenFactoryMonth, ...], dict[str, Trend | None]]:
    """GB/T 36132 indicators for the month and the ``n_months - 1`` before it (measured totals, no gap fill)."""
    rows: list[GreenFactoryMonth] = []
    if n_months > 1:
        first = ci.shift_month(month, -(n_months - 1))
        lo = ci.month_bounds_ns(first, mill.timezone)[0]
        hi = ci.month_bounds_ns(month, mill.timezone)[0]
        infos = machines_of(mill)
        meters = [mi.machine for mi in infos if mi.machine.type == MachineType.ENERGY_METER and mi.machine.feeds]
        fed = {f for m in meters for f in m.feeds}
        roots = [m.id for m in meters if m.id not in fed]
        energy_ids = roots or [mi.machine.id for mi in infos if mi.machine.type != MachineType.ENERGY_METER]
        rings = [mi.machine.id for mi in infos if mi.machine.type == MachineType.RING_FRAME]
        ek = [point_key(f"{mill.id}/{x}/energy") for x in energy_ids]
        ok = [point_key(f"{mill.id}/{x}/output") for x in rings]
        d = read_dense(store, ek + ok, lo, hi)
        for i in range(n_months - 1):
            mo = ci.shift_month(first, i)
            a, b = ci.month_bounds_ns(mo, mill.timezone)
            ia, ib = (a - lo) // HOUR_NS, (b - lo) // HOUR_NS

            def tot(keys: list[int], ia: int = ia, ib: int = ib) -> float:
                rs = [r for k in keys if (r := d.row(k)) is not None]
                return float(np.nansum(np.where(d.present[rs, ia:ib], d.delta[rs, ia:ib], 0.0))) if rs else 0.0

            kwh, kg = tot(ek), tot(ok)
            if kwh <= 0 or kg <= 0:
                continue
            p = inp.period(mo)
            inv = compute_inventory(lib, year=ci.parse_month(mo)[0], consumption_kwh=kwh, province=mill.province,
                                    grid_region=mill.grid_region, onsite_pv_kwh=p.onsite_pv_kwh, fuels=ci.fuels(p),
                                    heat=ci.heat(p), instruments=ci.instruments(p))
            rows.append(GreenFactoryMonth(mo, kg / 1000.0, kwh, inv.fuel_mj + inv.heat_mj, inv.total_location_kg,
                                          inv.total_market_kg))
    rows.append(current)
    trends = {"kgce_per_t": trend([r.kgce_per_t for r in rows]),
              "kgco2e_per_t": trend([r.kgco2e_per_t for r in rows]),
              "kwh_per_kg": trend([r.kwh / (r.yarn_t * 1000.0) if r.yarn_t else float("nan") for r in rows])}
    return tuple(rows), trends


def _lots(store: TimeSeriesStore, mill: Mill, month: str, lib: FactorLibrary, inp: ci.CarbonInputs,
          rule: Rule, gap_fill: GapFill, cache: dict[str, tuple[Footprint, dict[str, CarbonIntensity]]],
          start: int, end: int, now_ns: int) -> list[LotFootprint]:
    """Lots that ran in ``month``: each month they touch at that month's intensity of their count."""
    out: list[LotFootprint] = []
    for lot in inp.lots:
        a, b = ci.local_ns(lot.start, mill.timezone), ci.local_ns(lot.end, mill.timezone)
        if b <= start or a >= end:
            continue
        line = next((ln for ws in mill.workshops for ln in ws.lines if ln.id == lot.line), None)
        if line is None:
            continue
        rings = [m.id for m in line.machines if m.type == MachineType.RING_FRAME]
        key = count_key(line.count_ne)
        parts: list[LotPart] = []
        mo = _month_of(a, mill.timezone)
        while True:
            ma, mb = ci.month_bounds_ns(mo, mill.timezone)
            if ma >= b:
                break
            if mo not in cache:
                f = month_report(store, mill, mo, library=lib, inputs=inp, rule=rule, gap_fill=gap_fill,
                                 trend_months=1, with_lots=False, now_ns=now_ns)
                cache[mo] = (f.footprint, f.carbon_counts)
            fp, cc = cache[mo]
            lo, hi = max(a, ma), min(b, mb)
            lo -= lo % HOUR_NS
            d = read_dense(store, [point_key(f"{mill.id}/{r}/output") for r in rings], lo, hi)
            kg = float(np.nansum(np.where(d.present, d.delta, 0.0)))
            if key in cc and kg > 0:
                parts.append(LotPart(mo, kg, fp.count(key).kwh_per_kg, cc[key].spinning))
            mo = ci.shift_month(mo, 1)
        out.append(lot_footprint(lot.id, parts))
    return out


def _month_of(ts_ns: int, tz: str) -> str:
    from zoneinfo import ZoneInfo

    t = dt.datetime.fromtimestamp(ts_ns / 1e9, ZoneInfo(tz))
    return f"{t.year:04d}-{t.month:02d}"


def _iso(ts_ns: int) -> str:
    """UTC ISO 8601 with ``Z`` (the API's one timestamp format)."""
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def figures_dict(f: MonthFigures) -> dict[str, Any]:
    """The figures as plain JSON-able data (API, CSV/XLSX and HTML all use this)."""
    fp, inv, q, cc = f.footprint, f.inventory, f.quality, f.carbon_counts

    def num(x: float | None, nd: int = 6) -> float | None:
        return None if x is None or x != x else round(float(x), nd)

    return {
        "mill": f.mill.id, "mill_name": f.mill.name, "province": f.mill.province, "grid_region": f.mill.grid_region,
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
                    "opportunities": [{"title": o.title, "kwh_per_year": num(o.kwh_per_year, 1),
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
