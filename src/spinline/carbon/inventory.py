"""Organisation inventory per mill and period: Scope 1 (fuels) and Scope 2, location- and market-based.

The GHG Protocol Scope 2 Guidance (2015) requires both Scope 2 figures where contractual
instruments exist (../shared/domain.md 4.1):

- location-based: purchased grid kWh × the grid-average factor of the mill's location and year
  (MEE provincial or regional factor, national as last resort);
- market-based: kWh covered by contractual instruments (green electricity certificates, PPAs,
  green tariffs) at the instrument's rate (0 for renewables), the rest at the residual-mix
  factor: the MEE national factor excluding market-traded non-fossil power.

On-site PV consumed on site is not purchased: it reduces grid kWh under both methods. Instruments
must meet the Scope 2 Quality Criteria; this module enforces the one it can check (same vintage
as the reporting year) and caps instruments at the purchased kWh, saying so in ``warnings``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from spinline.carbon.factors import Factor, FactorError, FactorLibrary, Selection, grid_regions
from spinline.carbon.wording import say
from spinline.core.units import conversion_factor, is_compatible


@dataclass(frozen=True, slots=True)
class FuelUse:
    """Fuel burnt on site in the period. ``fuel`` names an IPCC default; ``factor`` a library id."""

    quantity: float
    unit: str = "kg"
    fuel: str | None = None
    factor: str | None = None
    #: For volume units (L, m**3): kg per unit, supplied by the user (shown in the report).
    kg_per_unit: float | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class HeatUse:
    """Purchased steam or hot water in an energy unit (GJ, MJ, kWh)."""

    quantity: float
    unit: str = "GJ"
    factor: str | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class GreenInstrument:
    """A contractual instrument for market-based Scope 2."""

    kind: str            # gec (green electricity certificate) | ppa | green_tariff
    kwh: float
    vintage: int
    source: str = "wind"  # wind | pv | hydro | biomass ...
    id: str = ""
    #: Emission rate of the instrument for Scope 2 (renewables: 0).
    kg_per_kwh: float = 0.0


@dataclass(frozen=True, slots=True)
class InventoryLine:
    scope: str                 # "1" | "2-location" | "2-market"
    category: str              # fuel name, "grid electricity", "residual mix", "instrument", "heat"
    activity: float
    activity_unit: str
    factor_value: float
    factor_unit: str
    factor_id: str
    kgco2e: float
    custom: bool = False
    note: str = ""


@dataclass(frozen=True)
class Inventory:
    """kgCO2e by scope; both Scope 2 figures; the lines and factors behind them."""

    year: int
    consumption_kwh: float
    onsite_pv_kwh: float
    grid_kwh: float
    instrument_kwh: float
    residual_kwh: float
    lines: tuple[InventoryLine, ...]
    selections: tuple[Selection, ...]
    fuel_mj: float = 0.0
    heat_mj: float = 0.0
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def _sum(self, scope: str) -> float:
        return sum(x.kgco2e for x in self.lines if x.scope == scope)

    @property
    def scope1_kg(self) -> float:
        return self._sum("1")

    @property
    def scope2_location_kg(self) -> float:
        return self._sum("2-location")

    @property
    def scope2_market_kg(self) -> float:
        return self._sum("2-market")

    @property
    def total_location_kg(self) -> float:
        return self.scope1_kg + self.scope2_location_kg

    @property
    def total_market_kg(self) -> float:
        return self.scope1_kg + self.scope2_market_kg


def fuel_kg(use: FuelUse, factor: Factor) -> tuple[float, str]:
    """Fuel mass in kg from the reported quantity (mass, energy via the NCV, or volume × kg/unit).

    >>> from spinline.carbon.factors import FactorLibrary
    >>> gas = FactorLibrary.load().get("ipcc-natural-gas")
    >>> fuel_kg(FuelUse(quantity=2.0, unit="t", fuel="natural_gas"), gas)[0]
    2000.0
    >>> fuel_kg(FuelUse(quantity=96.0, unit="GJ", fuel="natural_gas"), gas)[0]   # 96 000 MJ / 48 MJ/kg
    2000.0
    """
    if is_compatible(use.unit, "kg"):
        return use.quantity * conversion_factor(use.unit, "kg"), ""
    if is_compatible(use.unit, "MJ"):
        if factor.ncv_tj_per_gg is None:
            raise FactorError(f"factor {factor.id} has no NCV: give the fuel in kg")
        mj = use.quantity * conversion_factor(use.unit, "MJ")
        return mj / factor.ncv_tj_per_gg, say("inv.fuel_ncv", mj=f"{mj:.6g}", ncv=factor.ncv_tj_per_gg)
    if use.kg_per_unit is not None:
        return use.quantity * use.kg_per_unit, say("inv.fuel_density", density=use.kg_per_unit, unit=use.unit)
    raise FactorError(f"cannot turn {use.quantity} {use.unit} of {use.fuel or use.factor} into kg: "
                      "give kg, an energy unit, or kg_per_unit")


def compute_inventory(lib: FactorLibrary, *, year: int, consumption_kwh: float, province: str = "",
                      grid_region: str = "", onsite_pv_kwh: float = 0.0, fuels: Sequence[FuelUse] = (),
                      heat: Sequence[HeatUse] = (), instruments: Sequence[GreenInstrument] = ()) -> Inventory:
    """The inventory of one mill for one period (see tests/carbon/test_inventory.py for worked cases)."""
    lines: list[InventoryLine] = []
    sels: list[Selection] = []
    warnings: list[str] = []
    fuel_mj = 0.0
    heat_mj = 0.0

    # --- Scope 1: fuels ---------------------------------------------------------------------------
    for use in fuels:
        if use.factor:
            f = lib.get(use.factor)
        elif use.fuel:
            sel = lib.select("fuel", ["IPCC"], year, fuel=use.fuel)
            sels.append(sel)
            f = sel.factor
        else:
            raise FactorError("a fuel use needs 'fuel' (natural_gas, coal, diesel, lpg) or 'factor'")
        kg, how = fuel_kg(use, f)
        if f.ncv_tj_per_gg is not None:
            fuel_mj += kg * f.ncv_tj_per_gg
        lines.append(InventoryLine("1", f.fuel or f.id, kg, "kg", f.value, f.unit, f.id, kg * f.value, f.custom,
                                   "; ".join(x for x in (use.note, how) if x)))

    # --- Scope 2: purchased heat (same under both methods) ------------------------------------------
    for h in heat:
        if not is_compatible(h.unit, "MJ"):
            raise FactorError(f"purchased heat must be in an energy unit (GJ, MJ, kWh), got {h.unit!r}")
        mj = h.quantity * conversion_factor(h.unit, "MJ")
        heat_mj += mj
        if h.factor:
            f = lib.get(h.factor)
        else:
            sel = lib.select("heat", ["CN"], year)
            sels.append(sel)
            f = sel.factor
        per_mj = f.value * conversion_factor("MJ", f.unit.split("/")[1])
        for scope in ("2-location", "2-market"):
            lines.append(InventoryLine(scope, "purchased heat", mj, "MJ", per_mj, "kgCO2/MJ", f.id, mj * per_mj,
                                       f.custom, h.note))

    # --- Scope 2: electricity ---------------------------------------------------------------------
    pv = max(onsite_pv_kwh, 0.0)
    if pv > consumption_kwh:
        warnings.append(say("inv.pv_exceeds", pv=f"{pv:.0f}", consumption=f"{consumption_kwh:.0f}"))
        pv = consumption_kwh
    grid = consumption_kwh - pv
    loc = lib.select("grid_location", grid_regions(province, grid_region), year)
    sels.append(loc)
    lines.append(InventoryLine("2-location", "grid electricity", grid, "kWh", loc.factor.value, loc.factor.unit,
                               loc.factor.id, grid * loc.factor.value, loc.factor.custom, "; ".join(loc.fallbacks)))

    valid: list[GreenInstrument] = []
    for ins in instruments:
        if ins.vintage != year:
            warnings.append(say("inv.instrument_vintage", kind=ins.kind, id=ins.id or "", kwh=f"{ins.kwh:.0f}",
                                vintage=ins.vintage, year=year))
            continue
        valid.append(ins)
    covered = 0.0
    for ins in valid:
        take = min(ins.kwh, grid - covered)
        if take < ins.kwh:
            warnings.append(say("inv.instrument_beyond_grid", kind=ins.kind, id=ins.id or "",
                                kwh=f"{ins.kwh - take:.0f}"))
        if take <= 0:
            continue
        covered += take
        category = say("inv.instrument_category", kind=ins.kind, source=ins.source)
        lines.append(InventoryLine("2-market", category, take, "kWh", ins.kg_per_kwh,
                                   "kgCO2/kWh", ins.id or ins.kind, take * ins.kg_per_kwh, False,
                                   say("inv.vintage", vintage=ins.vintage)))
    residual_kwh = grid - covered
    res = lib.select("grid_residual", ["CN"], year)
    sels.append(res)
    lines.append(InventoryLine("2-market", "residual mix", residual_kwh, "kWh", res.factor.value, res.factor.unit,
                               res.factor.id, residual_kwh * res.factor.value, res.factor.custom,
                               "; ".join(res.fallbacks)))
    return Inventory(year=year, consumption_kwh=consumption_kwh, onsite_pv_kwh=pv, grid_kwh=grid,
                     instrument_kwh=covered, residual_kwh=residual_kwh, lines=tuple(lines), selections=tuple(sels),
                     fuel_mj=fuel_mj, heat_mj=heat_mj, warnings=tuple(warnings))
