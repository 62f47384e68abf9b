"""Energy insight: baselines per kg, idle consumption, compressor leak signature, HVAC share, and
savings opportunities ranked in kWh and tCO2e per year.

Works on hourly arrays (one value per hour of the period). Each figure says how it was derived:

- *baseline*: the median daily kWh/kg of a line over days with real production (at least half
  the median daily output), and the best-demonstrated level (10th percentile). The opportunity is
  what the line used above its best-demonstrated level, annualised: achieved on the same machines
  in the same month, so it is a realistic target, not a textbook one;
- *idle consumption*: kWh a production machine drew in hours it produced nothing (nights, stops);
- *compressor leak signature*: compressor power in hours with no air demand (no production
  anywhere in the mill). A healthy system unloads to near zero; what remains feeds leaks. With no
  such hour in the period the signature cannot be read and the report says so;
- *HVAC share*: HVAC kWh over mill kWh, against the 30-40% of mill load in domain.md (a) [S].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from spinline.carbon.wording import say
from spinline.core.batch import F64
from spinline.core.texts import Text

HOURS_PER_YEAR = 8760.0
#: domain.md (a) Utilities: hvac 30-40 % of mill load [S].
HVAC_SHARE_BAND = (0.30, 0.40)


@dataclass(frozen=True, slots=True)
class Baseline:
    key: str                    # line id or count
    median_kwh_per_kg: float
    best_kwh_per_kg: float      # 10th percentile of production days
    actual_kwh_per_kg: float
    days: int
    excess_kwh: float           # above best-demonstrated over the period


@dataclass(frozen=True, slots=True)
class Opportunity:
    title: str
    kwh_per_year: float
    tco2e_per_year: float
    basis: str
    #: the title as a message key and parameters (``text.en == title``), for the console's languages
    text: Text | None = None


@dataclass(frozen=True)
class Insight:
    baselines: tuple[Baseline, ...]
    idle_kwh: dict[str, float]                   # machine -> kWh while producing nothing
    idle_hours: dict[str, int]
    compressor_leak_kw: float | None
    compressor_no_demand_hours: int
    hvac_share: float
    opportunities: tuple[Opportunity, ...]
    notes: tuple[str, ...] = ()


def daily(hourly: F64, hours_per_day: int = 24) -> F64:
    """Sum hourly values to days (a trailing partial day is kept).

    >>> daily(np.arange(30.0)).tolist()
    [276.0, 159.0]
    """
    n = len(hourly)
    pad = (-n) % hours_per_day
    return np.r_[hourly, np.zeros(pad)].reshape(-1, hours_per_day).sum(axis=1)


def baseline(key: str, kwh_h: F64, kg_h: F64) -> Baseline | None:
    """Baseline kWh/kg of one line or count from its hourly kWh and output.

    Days 1-4: 300 kWh/100 kg, 280/100, 330/100, 40/5 (a stop day, left out: under half the
    median output). Median of 3.0, 2.8, 3.3 is 3.0; 10th percentile 2.84; excess over best =
    (3.0-2.84)·100 + (3.3-2.84)·100 = 16 + 46 = 62 kWh (plus 0 for 2.8).

    >>> kwh = np.zeros(96); kg = np.zeros(96)
    >>> for d, (e, m) in enumerate([(300, 100), (280, 100), (330, 100), (40, 5)]):
    ...     kwh[d * 24] = e; kg[d * 24] = m
    >>> b = baseline("L", kwh, kg)
    >>> b.median_kwh_per_kg, round(b.best_kwh_per_kg, 4), round(b.excess_kwh, 6), b.days
    (3.0, 2.84, 62.0, 3)
    """
    e, m = daily(kwh_h), daily(kg_h)
    if not (m > 0).any():
        return None
    prod = m >= 0.5 * float(np.median(m[m > 0]))
    if not prod.any():
        return None
    ratio = e[prod] / m[prod]
    best = float(np.percentile(ratio, 10))
    excess = float(np.sum(np.maximum(ratio - best, 0.0) * m[prod]))
    actual = float(e.sum() / m.sum())
    return Baseline(key, float(np.median(ratio)), best, actual, int(prod.sum()), excess)


def idle_energy(kwh_h: F64, kg_h: F64) -> tuple[float, int]:
    """kWh in hours with no output, and how many such hours had any consumption.

    >>> idle_energy(np.array([10.0, 2.0, 10.0, 1.5]), np.array([5.0, 0.0, 5.0, 0.0]))
    (3.5, 2)
    """
    idle = (kg_h <= 0) & (kwh_h > 0)
    return float(kwh_h[idle].sum()), int(idle.sum())


def compressor_leak(comp_kwh_h: F64, mill_kg_h: F64) -> tuple[float | None, int]:
    """Mean compressor power (kW) in hours when the mill produced nothing; None if no such hour.

    >>> compressor_leak(np.array([60.0, 12.0, 14.0, 60.0]), np.array([500.0, 0.0, 0.0, 480.0]))
    (13.0, 2)
    """
    no_demand = mill_kg_h <= 0
    if not no_demand.any():
        return None, 0
    return float(comp_kwh_h[no_demand].mean()), int(no_demand.sum())


def analyse(*, hours: int, line_kwh_h: Mapping[str, F64], line_kg_h: Mapping[str, F64],
            machine_kwh_h: Mapping[str, F64], machine_kg_h: Mapping[str, F64], compressor_kwh_h: F64,
            mill_kg_h: F64, hvac_kwh: float, total_kwh: float, kg_co2_per_kwh: float,
            compressors_present: bool = True) -> Insight:
    """All insight figures for a period; opportunities annualised by 8 760 / hours of the period."""
    scale = HOURS_PER_YEAR / hours if hours else 0.0
    bases = [b for k in sorted(line_kwh_h) if (b := baseline(k, line_kwh_h[k], line_kg_h[k])) is not None]
    idle: dict[str, float] = {}
    idle_h: dict[str, int] = {}
    for m, e in machine_kwh_h.items():
        idle[m], idle_h[m] = idle_energy(e, machine_kg_h[m])
    leak_kw, nd_hours = compressor_leak(compressor_kwh_h, mill_kg_h) if compressors_present else (None, 0)
    notes: list[str] = []
    opps: list[Opportunity] = []

    def opp(title: Text, kwh: float, basis: str) -> None:
        if kwh > 0:
            per_year = kwh * scale
            opps.append(Opportunity(title.en, per_year, per_year * kg_co2_per_kwh / 1000.0, basis, title))

    for b in bases:
        opp(Text("carbon.opp.line_best", {"line": b.key, "best": f"{b.best_kwh_per_kg:.3f}"}), b.excess_kwh,
            say("insight.basis.line_best", days=b.days))
    total_idle = sum(idle.values())
    opp(Text("carbon.opp.idle_off"), total_idle,
        say("insight.basis.idle", hours=sum(idle_h.values())))
    if leak_kw is not None:
        leaks = Text("carbon.opp.air_leaks")
        opps.append(Opportunity(leaks.en, leak_kw * HOURS_PER_YEAR,
                                leak_kw * HOURS_PER_YEAR * kg_co2_per_kwh / 1000.0,
                                say("insight.basis.air_leaks", kw=f"{leak_kw:.1f}", hours=nd_hours), leaks))
    elif compressors_present:
        notes.append(say("insight.leak_not_assessable"))
    share = hvac_kwh / total_kwh if total_kwh else 0.0
    lo, hi = HVAC_SHARE_BAND
    if share > hi:
        opp(Text("carbon.opp.hvac_share", {"share": f"{share:.0%}", "top": f"{hi:.0%}"}), (share - hi) * total_kwh,
            say("insight.basis.hvac", top=f"{hi:.0%}"))
    opps.sort(key=lambda o: o.kwh_per_year, reverse=True)
    return Insight(tuple(bases), idle, idle_h, leak_kw, nd_hours, share, tuple(opps), tuple(notes))


def sum_series(series: Sequence[F64], n: int) -> F64:
    out = np.zeros(n)
    for s in series:
        out += s
    return out
