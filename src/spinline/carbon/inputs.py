"""The "carbon inputs" file: what the mill knows and the site file and meters do not.

Fuel burnt, purchased heat, green electricity instruments, on-site PV, production lots, the fibre
factor and the company/product ids for PACT. One YAML file per mill; per-period items sit under the
month they belong to, so one file can serve a year of reports. Schema (all keys optional)::

    mill: mill-a
    company: {name: Demo Cotton Spinning Co., ids: ["urn:uuid:..."]}
    products:                       # PACT product ids/names per count (default: generated)
      Ne32: {name: "Ne 32 carded cotton yarn", ids: ["urn:pathfinder:product:customcode:vendor-assigned:C32"]}
    fibre:                          # upstream fibre, for a cradle-to-gate figure
      factor: 2.0                   # kgCO2e per kg fibre (custom: cite your supplier)
      kg_per_kg_yarn: 1.10          # fibre input per kg yarn, waste included
      source: "supplier EPD 2025, cotton lint, Xinjiang"
    lots:
      - {id: L-2026-101, line: ring-c32, start: "2026-10-25T06:00", end: "2026-11-05T06:00"}
    periods:
      "2026-10":
        fuels:                      # Scope 1; fuel: natural_gas | coal | diesel | lpg, or factor: <library id>
          - {fuel: diesel, quantity: 800, unit: kg, note: stand-by generator}
          - {fuel: natural_gas, quantity: 120, unit: GJ}
        heat: [{quantity: 50, unit: GJ}]          # purchased steam / hot water, energy units
        onsite_pv_kwh: 40000                      # self-consumed on-site PV generation
        green_electricity:                        # certificates (gec), PPAs, green tariffs
          - {kind: gec, kwh: 150000, vintage: 2026, source: wind, id: "GEC-2026-000123"}

Times without a zone are the mill's local time.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from spinline.carbon.factors import FactorError
from spinline.carbon.inventory import FuelUse, GreenInstrument, HeatUse


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FuelIn(_M):
    quantity: float = Field(ge=0)
    unit: str = "kg"
    fuel: str | None = None
    factor: str | None = None
    kg_per_unit: float | None = Field(default=None, gt=0)
    note: str = ""


class HeatIn(_M):
    quantity: float = Field(ge=0)
    unit: str = "GJ"
    factor: str | None = None
    note: str = ""


class GreenIn(_M):
    kind: str = "gec"
    kwh: float = Field(ge=0)
    vintage: int
    source: str = "wind"
    id: str = ""


class PeriodIn(_M):
    fuels: list[FuelIn] = Field(default_factory=list)
    heat: list[HeatIn] = Field(default_factory=list)
    onsite_pv_kwh: float = Field(default=0.0, ge=0)
    onsite_pv_source: str = "pv"
    green_electricity: list[GreenIn] = Field(default_factory=list)


class LotIn(_M):
    id: str
    line: str
    start: dt.datetime
    end: dt.datetime


class FibreIn(_M):
    factor: float = Field(gt=0)
    kg_per_kg_yarn: float = Field(default=1.10, gt=0)
    source: str = "user supplied"


class ProductIn(_M):
    name: str = ""
    ids: list[str] = Field(default_factory=list)
    cpc: str = ""


class CompanyIn(_M):
    name: str = ""
    ids: list[str] = Field(default_factory=list)


class CarbonInputs(_M):
    mill: str = ""
    company: CompanyIn = CompanyIn()
    products: dict[str, ProductIn] = Field(default_factory=dict)
    fibre: FibreIn | None = None
    lots: list[LotIn] = Field(default_factory=list)
    periods: dict[str, PeriodIn] = Field(default_factory=dict)

    @field_validator("periods")
    @classmethod
    def _months(cls, v: dict[str, PeriodIn]) -> dict[str, PeriodIn]:
        for k in v:
            parse_month(k)
        return v

    def period(self, month: str) -> PeriodIn:
        return self.periods.get(month, PeriodIn())

    def with_green_kwh(self, month: str, kwh: float, year: int) -> CarbonInputs:
        """A copy with an extra certificate for ``month`` (the CLI's --green-kwh)."""
        p = self.period(month)
        extra = GreenIn(kind="gec", kwh=kwh, vintage=year, source="wind", id="cli --green-kwh")
        periods = dict(self.periods)
        periods[month] = p.model_copy(update={"green_electricity": [*p.green_electricity, extra]})
        return self.model_copy(update={"periods": periods})


_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")


def parse_month(text: str) -> tuple[int, int]:
    """``"2026-10"`` -> (2026, 10).

    >>> parse_month("2026-10")
    (2026, 10)

    Strict: four and two ASCII digits, nothing before or after (no ``2026-1_0``, no trailing newline).
    """
    m = _MONTH.fullmatch(text) if isinstance(text, str) else None
    try:
        if m is None:
            raise ValueError
        y, mo = int(m.group(1)), int(m.group(2))
        dt.date(y, mo, 1)
    except ValueError:
        raise ValueError(f"a month is YYYY-MM, got {text!r}") from None
    return y, mo


def month_bounds_ns(month: str, tz: str) -> tuple[int, int]:
    """[start, end) of a local calendar month in UTC nanoseconds.

    >>> a, b = month_bounds_ns("2026-10", "Asia/Shanghai")   # local midnight = 16:00 UTC the day before
    >>> a == int(dt.datetime(2026, 9, 30, 16, tzinfo=dt.UTC).timestamp()) * 10**9, (b - a) // (3600 * 10**9)
    (True, 744)
    """
    y, m = parse_month(month)
    z = ZoneInfo(tz)
    a = dt.datetime(y, m, 1, tzinfo=z)
    b = dt.datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=z)
    return int(a.timestamp()) * 10**9, int(b.timestamp()) * 10**9


def shift_month(month: str, k: int) -> str:
    """The month ``k`` months after (negative: before).

    >>> shift_month("2026-01", -1), shift_month("2026-12", 1)
    ('2025-12', '2027-01')
    """
    y, m = parse_month(month)
    i = y * 12 + (m - 1) + k
    return f"{i // 12:04d}-{i % 12 + 1:02d}"


def local_ns(t: dt.datetime, tz: str) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=ZoneInfo(tz))
    return int(t.timestamp() * 1e9)


def fuels(p: PeriodIn) -> list[FuelUse]:
    return [FuelUse(f.quantity, f.unit, f.fuel, f.factor, f.kg_per_unit, f.note) for f in p.fuels]


def heat(p: PeriodIn) -> list[HeatUse]:
    return [HeatUse(h.quantity, h.unit, h.factor, h.note) for h in p.heat]


def instruments(p: PeriodIn) -> list[GreenInstrument]:
    return [GreenInstrument(g.kind, g.kwh, g.vintage, g.source, g.id) for g in p.green_electricity]


def load_inputs(path: str | Path | None) -> CarbonInputs:
    """Read and validate a carbon inputs file (None: empty inputs)."""
    if path is None:
        return CarbonInputs()
    p = Path(path)
    try:
        data: Any = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise FactorError(f"{p}: cannot read carbon inputs ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise FactorError(f"{p}: not valid YAML ({exc})") from None
    try:
        return CarbonInputs.model_validate(data)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
        raise FactorError(f"{p}: {msgs}") from None
