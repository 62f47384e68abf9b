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
from dataclasses import dataclass

import numpy as np

from spinline.carbon import inputs as ci
from spinline.carbon import insight as ins
from spinline.carbon.factors import FactorLibrary, Selection
from spinline.carbon.figures import ESTIMATED_SHARE_LIMIT, MonthFigures, figures_dict
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
from spinline.carbon.inventory import compute_inventory
from spinline.carbon.meters import CounterFill, GapFill, QualitySummary, fill_counter, reconcile
from spinline.carbon.wording import say
from spinline.cloud.storage.base import RESOLUTION_NS, TimeSeriesStore
from spinline.core.batch import F64
from spinline.core.site import Machine, MachineType, Mill, iter_machines, point_key

HOUR_NS = RESOLUTION_NS["1h"]
__all__ = ["MonthFigures", "figures_dict", "month_report", "read_dense", "read_period"]  # figures re-exported
COUNTERS = ("energy", "output", "spindle_hours")


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
                notes.append(say("service.no_energy", machine=m.id))
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
