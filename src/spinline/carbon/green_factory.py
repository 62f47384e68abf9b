"""GB/T 36132 green-factory performance indicators: energy and carbon per unit product, per month.

GB/T 36132 (2018; replaced by GB/T 36132-2025) scores, among its performance indicators,
*integrated energy consumption per unit product* and *carbon emissions per unit product*
(../shared/domain.md 4.1). Integrated energy is in kg of standard coal equivalent (kgce):

- electricity at its equivalent value 0.1229 kgce/kWh (GB/T 2589-2020 *General principles for
  calculation of the comprehensive energy consumption*, conversion coefficients appendix: 3.6 MJ /
  29.3076 MJ per kgce = 0.12284, tabulated as 0.1229);
- fuels and heat at their net calorific value / 29.3076 MJ per kgce (the definition of 1 kgce in
  GB/T 2589: 7 000 kcal = 29 307.6 kJ).

Carbon per unit product uses the location-based inventory (Scope 1 + Scope 2 location), the basis
of GB/T 32150 enterprise accounting; the market-based figure is shown alongside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: GB/T 2589-2020, electricity equivalent value, kgce/kWh.
KGCE_PER_KWH = 0.1229
#: GB/T 2589: 1 kgce = 29.3076 MJ (7 000 kcal).
MJ_PER_KGCE = 29.3076


@dataclass(frozen=True, slots=True)
class GreenFactoryMonth:
    month: str
    yarn_t: float
    kwh: float
    fuel_heat_mj: float
    scope12_location_kg: float
    scope12_market_kg: float | None = None

    @property
    def kgce(self) -> float:
        return integrated_energy_kgce(self.kwh, self.fuel_heat_mj)

    @property
    def kgce_per_t(self) -> float:
        return self.kgce / self.yarn_t if self.yarn_t else float("nan")

    @property
    def kgco2e_per_t(self) -> float:
        return self.scope12_location_kg / self.yarn_t if self.yarn_t else float("nan")

    @property
    def kgco2e_per_t_market(self) -> float | None:
        if self.scope12_market_kg is None or not self.yarn_t:
            return None
        return self.scope12_market_kg / self.yarn_t


def integrated_energy_kgce(kwh: float, fuel_heat_mj: float = 0.0) -> float:
    """kgce of a month's electricity and fuels/heat.

    100 000 kWh × 0.1229 = 12 290 kgce; 293 076 MJ of gas / 29.3076 = 10 000 kgce -> 22 290.

    >>> round(integrated_energy_kgce(100_000, 293_076), 6)
    22290.0
    """
    return kwh * KGCE_PER_KWH + fuel_heat_mj / MJ_PER_KGCE


@dataclass(frozen=True, slots=True)
class Trend:
    """Change of an indicator over the months given, first to last, and its least-squares slope."""

    first: float
    last: float
    slope_per_month: float

    @property
    def change_share(self) -> float:
        return (self.last - self.first) / self.first if self.first else float("nan")


def trend(values: Sequence[float]) -> Trend | None:
    """Least-squares slope per month of a series (NaN months skipped); None with fewer than 2.

    >>> t = trend([400.0, 390.0, 380.0])
    >>> t.slope_per_month, round(t.change_share, 4)
    (-10.0, -0.05)
    """
    pts = [(i, v) for i, v in enumerate(values) if v == v]
    if len(pts) < 2:
        return None
    n = len(pts)
    mx = sum(i for i, _ in pts) / n
    my = sum(v for _, v in pts) / n
    sxx = sum((i - mx) ** 2 for i, _ in pts)
    slope = sum((i - mx) * (v - my) for i, v in pts) / sxx if sxx else 0.0
    return Trend(pts[0][1], pts[-1][1], slope)
