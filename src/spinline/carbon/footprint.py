"""Product footprint: energy and emissions per kg of yarn by stage, line, count and lot.

Functional unit: 1 kg of ring-spun yarn leaving the mill (cradle-to-gate of the spinning stage;
with a fibre factor, cradle-to-gate including fibre). The yarn mass is the ring frames' output,
because ring spinning is where yarn is made and where the count is known; winding rewinds it.

Every kWh of the mill ends on a production machine, so the stage figures add up to the mill total:

1. production machines (blowroom ... winder) keep their own metered kWh;
2. shared loads (HVAC, compressed air, and the *unmetered* remainder of the main meter over all
   machine meters: lighting, offices, losses) are allocated to the production machines by one of
   three documented rules, printed on every report:

   - ``mass``: in proportion to each machine's output kg (every kg processed bears the same share);
   - ``energy``: in proportion to each machine's own kWh (shared load follows process load);
   - ``spindle_hours``: in proportion to spindle-hours; only ring frames have them, so all shared
     load goes to ring spinning, split between frames by spindle-hours worked (the humidified
     ring hall is where most HVAC goes: 39% of a mill's electricity is air conditioning in
     Koç & Kaplan's breakdown, domain.md 3.2);
3. machines on a line with a count carry their kWh to that count; machines without one (winding
   serves every count) split theirs between counts by yarn mass.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from spinline.carbon.wording import say
from spinline.core.site import STAGE_ORDER, MachineType

Rule = Literal["mass", "energy", "spindle_hours"]
RULES: dict[str, str] = {
    "mass": "shared loads (HVAC, compressed air, unmetered) allocated to production machines in proportion "
            "to their output mass (kg)",
    "energy": "shared loads (HVAC, compressed air, unmetered) allocated to production machines in proportion "
              "to their own metered energy (kWh)",
    "spindle_hours": "shared loads (HVAC, compressed air, unmetered) allocated to ring frames in proportion to "
                     "spindle-hours worked; other stages bear none",
}
PRODUCTION = frozenset(t.value for t in STAGE_ORDER)
SHARED_TYPES = {MachineType.HVAC.value: "hvac", MachineType.AIR_COMPRESSOR.value: "compressed_air"}


class AllocationError(ValueError):
    """Shared load cannot be allocated by the chosen rule (no driver anywhere)."""


@dataclass(frozen=True, slots=True)
class MachineTotals:
    """One machine's figures for a period."""

    machine: str
    type: str
    line: str = ""
    count_ne: float | None = None
    kwh: float = 0.0
    output_kg: float = 0.0
    spindle_hours: float = 0.0


@dataclass(frozen=True)
class Allocated:
    """A production machine's direct kWh plus its share of each shared load."""

    machine: MachineTotals
    shared: dict[str, float]

    @property
    def kwh(self) -> float:
        return self.machine.kwh + sum(self.shared.values())


def shared_loads(machines: Sequence[MachineTotals], main_kwh: float | None) -> tuple[dict[str, float], list[str]]:
    """kWh of each shared load: HVAC, compressed air, and the main meter's unmetered remainder.

    >>> ms = [MachineTotals("rf", "ring_frame", kwh=600.0), MachineTotals("hv", "hvac", kwh=300.0)]
    >>> shared_loads(ms, 1000.0)
    ({'hvac': 300.0, 'compressed_air': 0.0, 'unmetered': 100.0}, [])
    """
    out = {"hvac": 0.0, "compressed_air": 0.0, "unmetered": 0.0}
    notes: list[str] = []
    for m in machines:
        if m.type in SHARED_TYPES:
            out[SHARED_TYPES[m.type]] += m.kwh
    if main_kwh is not None:
        rest = main_kwh - sum(m.kwh for m in machines)
        if rest >= 0:
            out["unmetered"] = rest
        else:
            notes.append(say("fp.meters_above_main", kwh=f"{-rest:.0f}"))
    return out, notes


def allocate(machines: Sequence[MachineTotals], shared: Mapping[str, float], rule: Rule) -> list[Allocated]:
    """Production machines with their shares of each shared load under ``rule``.

    Hand-worked (tests/carbon/test_footprint.py): two machines, 100 kWh/50 kg and 300 kWh/150 kg,
    share 200 kWh of HVAC. By mass 50:150 -> 50 and 150; by energy 100:300 -> the same here.

    >>> a = allocate([MachineTotals("x", "card", kwh=100, output_kg=50), MachineTotals("y", "card", kwh=300,
    ...               output_kg=150)], {"hvac": 200.0}, "mass")
    >>> [round(x.kwh, 6) for x in a]
    [150.0, 450.0]
    """
    prod = [m for m in machines if m.type in PRODUCTION]
    if rule == "mass":
        w = [m.output_kg for m in prod]
    elif rule == "energy":
        w = [m.kwh for m in prod]
    elif rule == "spindle_hours":
        w = [m.spindle_hours if m.type == MachineType.RING_FRAME.value else 0.0 for m in prod]
    else:
        raise AllocationError(f"unknown allocation rule {rule!r} (mass, energy, spindle_hours)")
    total_w = sum(w)
    total_shared = sum(shared.values())
    if total_w <= 0:
        if total_shared > 0:
            raise AllocationError(f"no {rule} driver on any production machine: cannot allocate {total_shared:.0f} kWh")
        return [Allocated(m, {k: 0.0 for k in shared}) for m in prod]
    return [Allocated(m, {k: v * wi / total_w for k, v in shared.items()}) for m, wi in zip(prod, w, strict=True)]


@dataclass(frozen=True, slots=True)
class Intensity:
    """kWh and kg with the per-kg figure."""

    key: str
    kwh: float
    kg: float
    share: float = 0.0          # of the mill total kWh

    @property
    def kwh_per_kg(self) -> float:
        return self.kwh / self.kg if self.kg else float("nan")


@dataclass(frozen=True)
class Footprint:
    """Energy per kg of yarn by stage, line and count for one period (electricity, all stages)."""

    rule: str
    total_kwh: float
    yarn_kg: float
    shared: dict[str, float]
    stages: tuple[Intensity, ...]                    # kWh of the stage per kg of mill yarn (sums to total)
    lines: tuple[Intensity, ...]                     # kWh of the line per kg of that line's own output
    counts: tuple[Intensity, ...]                    # kWh attributed to the count per kg of that count's yarn
    count_stages: dict[str, dict[str, float]]        # count -> stage -> kWh
    machines: tuple[Allocated, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def kwh_per_kg(self) -> float:
        return self.total_kwh / self.yarn_kg if self.yarn_kg else float("nan")

    def count(self, key: str) -> Intensity:
        for c in self.counts:
            if c.key == key:
                return c
        raise KeyError(f"no count {key!r} in this footprint")


def count_key(count_ne: float | None) -> str:
    """Label of a count: ``Ne32``; ``Ne32.5`` keeps a decimal.

    >>> count_key(32.0), count_key(32.5), count_key(None)
    ('Ne32', 'Ne32.5', '')
    """
    if count_ne is None:
        return ""
    return f"Ne{count_ne:g}"


def compute_footprint(machines: Sequence[MachineTotals], main_kwh: float | None, rule: Rule) -> Footprint:
    """Stage, line and count figures for one period (see the module docstring for the method)."""
    shared, notes = shared_loads(machines, main_kwh)
    alloc = allocate(machines, shared, rule)
    rings = [m for m in machines if m.type == MachineType.RING_FRAME.value]
    yarn_by_count: dict[str, float] = defaultdict(float)
    for m in rings:
        yarn_by_count[count_key(m.count_ne)] += m.output_kg
    yarn_kg = sum(yarn_by_count.values())
    total_kwh = sum(a.kwh for a in alloc)
    count_stage: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    stage_kwh: dict[str, float] = defaultdict(float)
    line_kwh: dict[str, float] = defaultdict(float)
    line_last: dict[str, tuple[int, float]] = {}
    known = {k: v for k, v in yarn_by_count.items() if k}
    known_total = sum(known.values())
    for a in alloc:
        m = a.machine
        stage_kwh[m.type] += a.kwh
        if m.line:
            line_kwh[m.line] += a.kwh
            order = [t.value for t in STAGE_ORDER].index(m.type)
            prev = line_last.get(m.line)
            if prev is None or order > prev[0]:
                line_last[m.line] = (order, m.output_kg)
            elif order == prev[0]:
                line_last[m.line] = (order, prev[1] + m.output_kg)
        key = count_key(m.count_ne)
        if key and key in known:
            count_stage[key][m.type] += a.kwh
        elif known_total > 0:
            for k, kg in known.items():
                count_stage[k][m.type] += a.kwh * kg / known_total
        else:
            count_stage[key or "unknown"][m.type] += a.kwh
    if known_total < yarn_kg:
        notes.append(say("fp.yarn_without_count", kg=f"{yarn_kg - known_total:.0f}"))
    stages = tuple(Intensity(t.value, stage_kwh.get(t.value, 0.0), yarn_kg,
                             stage_kwh.get(t.value, 0.0) / total_kwh if total_kwh else 0.0)
                   for t in STAGE_ORDER if t.value in stage_kwh)
    lines = tuple(Intensity(k, v, line_last[k][1], v / total_kwh if total_kwh else 0.0)
                  for k, v in line_kwh.items())
    counts = tuple(Intensity(k, sum(st.values()), yarn_by_count.get(k, 0.0),
                             sum(st.values()) / total_kwh if total_kwh else 0.0)
                   for k, st in sorted(count_stage.items()))
    return Footprint(rule=rule, total_kwh=total_kwh, yarn_kg=yarn_kg, shared=shared, stages=stages, lines=lines,
                     counts=counts, count_stages={k: dict(v) for k, v in count_stage.items()},
                     machines=tuple(alloc), notes=tuple(notes))


@dataclass(frozen=True, slots=True)
class CarbonIntensity:
    """kgCO2e per kg of yarn: spinning stage (electricity + other energy) and, optionally, fibre."""

    electricity_kg_per_kwh: float        # average footprint factor of the electricity used
    electricity: float                   # kgCO2e/kg yarn from electricity
    other_energy: float                  # kgCO2e/kg yarn from fuels and purchased heat
    fibre: float | None = None           # kgCO2e/kg yarn from fibre (upstream), when a factor is given

    @property
    def spinning(self) -> float:
        return self.electricity + self.other_energy

    @property
    def cradle_to_gate(self) -> float | None:
        return None if self.fibre is None else self.spinning + self.fibre


def electricity_factor(grid_kwh: float, grid_factor: float, green: Sequence[tuple[float, float]]) -> float:
    """Average footprint factor of a mill's electricity: grid kWh at the life-cycle grid factor and
    green kWh (certificates, PPAs, on-site PV) at their source factors.

    900 kWh grid at 0.6205 + 100 kWh PV at 0.0545: (558.45 + 5.45) / 1000 = 0.5639 kgCO2e/kWh.

    >>> round(electricity_factor(900.0, 0.6205, [(100.0, 0.0545)]), 4)
    0.5639
    """
    kwh = grid_kwh + sum(k for k, _ in green)
    if kwh <= 0:
        return grid_factor
    return (grid_kwh * grid_factor + sum(k * f for k, f in green)) / kwh


def carbon_intensity(kwh_per_kg: float, el_factor: float, other_kg: float, yarn_kg: float,
                     fibre_factor: float | None = None, fibre_kg_per_kg_yarn: float = 1.0) -> CarbonIntensity:
    """kgCO2e per kg of yarn from kWh/kg, the electricity factor, and the period's other energy.

    Other energy (fuels, heat) is spread over every kg of yarn alike. The fibre term is the
    fibre factor × kg of fibre per kg of yarn (1.05-1.15 with waste, domain.md 4.3).

    >>> ci = carbon_intensity(3.0, 0.6205, other_kg=500.0, yarn_kg=10000.0, fibre_factor=2.0,
    ...                       fibre_kg_per_kg_yarn=1.1)
    >>> round(ci.electricity, 4), round(ci.other_energy, 4), round(ci.cradle_to_gate or 0, 4)
    (1.8615, 0.05, 4.1115)
    """
    other = other_kg / yarn_kg if yarn_kg else 0.0
    fibre = None if fibre_factor is None else fibre_factor * fibre_kg_per_kg_yarn
    return CarbonIntensity(el_factor, kwh_per_kg * el_factor, other, fibre)


@dataclass(frozen=True, slots=True)
class LotPart:
    """A lot's production in one period, with that period's intensities for its count."""

    period: str
    kg: float
    kwh_per_kg: float
    kgco2e_per_kg: float


@dataclass(frozen=True)
class LotFootprint:
    lot: str
    parts: tuple[LotPart, ...]

    @property
    def kg(self) -> float:
        return sum(p.kg for p in self.parts)

    @property
    def kwh(self) -> float:
        return sum(p.kg * p.kwh_per_kg for p in self.parts)

    @property
    def kgco2e(self) -> float:
        return sum(p.kg * p.kgco2e_per_kg for p in self.parts)

    @property
    def kwh_per_kg(self) -> float:
        return self.kwh / self.kg if self.kg else float("nan")

    @property
    def kgco2e_per_kg(self) -> float:
        return self.kgco2e / self.kg if self.kg else float("nan")


def lot_footprint(lot: str, parts: Sequence[LotPart]) -> LotFootprint:
    """A lot's footprint: each period's kg at that period's intensity, so a lot spanning two months
    carries each month's factors and meters (e.g. a new grid-factor vintage at a year boundary).

    >>> lf = lot_footprint("L1", [LotPart("2022-12", 600, 3.0, 1.70), LotPart("2023-01", 400, 3.5, 1.90)])
    >>> round(lf.kwh_per_kg, 4), round(lf.kgco2e_per_kg, 4)
    (3.2, 1.78)
    """
    return LotFootprint(lot, tuple(p for p in parts if p.kg > 0))
