"""Production KPI formulas of a spinning mill: pure functions, no I/O (see docs/kpis.md).

Sources: ../shared/domain.md section (b) "KPIs a mill manager expects" and sections 1.3-1.4.
Every function takes plain numbers (or numpy arrays) in the units named in its docstring and
returns ``None`` where the KPI is undefined (a ratio over zero), never NaN or a division error,
so an API can show "no data" rather than a made-up 0.

The additive quantities of one machine over a window live in ``Totals``; groups (a line, a mill,
a shift) add their machines' ``Totals`` and *then* take the ratios, so a mill's efficiency is
Σ actual kg ÷ Σ theoretical kg, never a mean of percentages.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import numpy.typing as npt

from spinline.core.yarn import NE_TEX, tex_from_ne

#: tex = TEX_PER_NE / Ne (1 Ne = 840 yd of yarn per lb).
TEX_PER_NE = NE_TEX
#: GPS is quoted per spindle per standard 8 h shift.
STANDARD_SHIFT_H = 8.0
#: Default standard count for comparing mills (SITRA converts to 40s; Chinese practice uses 21s).
DEFAULT_STANDARD_NE = 40.0
#: Share of spindles whose breaks the "worst spindles" KPI counts.
WORST_FRACTION = 0.05

F64 = npt.NDArray[np.float64]


def theoretical_kg_per_h(spindle_rpm: float, tpm: float, count_ne: float, spindles: int) -> float:
    """Production of a ring frame at 100 % efficiency, kg/h.

    kg/h = n · 60 · tex · N / (TPM · 10⁶), with n the spindle speed (rpm), TPM the twist in turns
    per metre, tex = 590.5 / Ne and N the spindles: each spindle delivers n / TPM metres of yarn a
    minute, weighing tex grams per 1000 m.
    """
    if tpm <= 0:
        raise ValueError(f"twist must be positive, got {tpm} turns/m")
    return spindle_rpm * 60.0 * tex_from_ne(count_ne) * spindles / (tpm * 1e6)


def theoretical_kg_per_h_array(spindle_rpm: F64, tpm: F64, count_ne: F64, spindles: int) -> F64:
    """``theoretical_kg_per_h`` element-wise; rows with a non-positive twist or count give 0."""
    ok = (tpm > 0) & (count_ne > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = spindle_rpm * 60.0 * (TEX_PER_NE / count_ne) * spindles / (tpm * 1e6)
    return np.where(ok, out, 0.0)


def running_speed(mean_rpm: F64, max_rpm: F64, run_fraction: F64) -> F64:
    """Mean spindle speed *while running* in each bucket, from the bucket's mean and maximum.

    A bucket's mean speed includes the minutes the frame stood (speed 0), so the speed while
    running is mean ÷ (share of the bucket it ran); when a frame reports its set speed even while
    stopped that quotient overshoots, hence the cap at the bucket's maximum. Buckets where the
    frame did not run give 0.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(run_fraction > 0, mean_rpm / run_fraction, 0.0)
    return np.minimum(np.nan_to_num(v), np.nan_to_num(max_rpm))


def ratio(num: float, den: float) -> float | None:
    """num / den, or None when the denominator is not positive."""
    return num / den if den > 0 else None


def pct(num: float, den: float) -> float | None:
    """100 · num / den, or None when the denominator is not positive."""
    r = ratio(num, den)
    return None if r is None else 100.0 * r


def efficiency_pct(actual_kg: float, theoretical_kg: float) -> float | None:
    """Efficiency % = actual kg ÷ theoretical kg at 100 % × 100.

    What the theoretical kg covers names the figure: over the planned (calendar) time it is the
    *production efficiency* mills quote (doffs, stops and ends down all lower it, typically
    90-96 %); over the run time only it is the *running efficiency* (ends down and slow spindles
    only, ~99 % on a good frame). ``kpis`` gives both.
    """
    return pct(actual_kg, theoretical_kg)


def spindle_utilisation_pct(spindle_hours_worked: float, spindles_installed: int, hours: float) -> float | None:
    """Spindle utilisation % = spindle-hours worked ÷ (spindles installed × hours) × 100."""
    return pct(spindle_hours_worked, spindles_installed * hours)


@dataclass(frozen=True, slots=True)
class Oee:
    """OEE and its three factors, each a fraction 0..1 (None where undefined)."""

    availability: float | None
    performance: float | None
    quality: float | None

    @property
    def oee(self) -> float | None:
        if self.availability is None or self.performance is None or self.quality is None:
            return None
        return self.availability * self.performance * self.quality


def oee(*, run_h: float, planned_h: float, actual_kg: float, rated_kg: float, good_kg: float) -> Oee:
    """OEE = A × P × Q.

    A = run time ÷ planned time; P = actual output ÷ rated output for the run time at the nominal
    speed (``rated_kg``); Q = saleable (good) kg ÷ total kg.
    """
    return Oee(availability=ratio(run_h, planned_h), performance=ratio(actual_kg, rated_kg),
               quality=ratio(good_kg, actual_kg))


def ends_down_per_1000_spindle_h(breaks: float, spindle_hours: float) -> float | None:
    """Ends down per 1000 spindle-hours = breaks ÷ (spindles × hours) × 1000."""
    r = ratio(breaks, spindle_hours)
    return None if r is None else 1000.0 * r


def worst_share_pct(breaks_per_spindle: Sequence[float] | npt.NDArray[np.float64],
                    fraction: float = WORST_FRACTION) -> float | None:
    """Share % of all breaks that came from the worst ``fraction`` of spindles.

    The worst spindles are the ceil(fraction × N) with the most breaks (at least one spindle).
    """
    b = np.sort(np.asarray(breaks_per_spindle, dtype=np.float64))[::-1]
    if not len(b):
        return None
    k = max(1, math.ceil(fraction * len(b) - 1e-9))
    return pct(float(b[:k].sum()), float(b.sum()))


def grams_per_spindle_shift(output_kg: float, spindles: int, hours: float,
                            shift_h: float = STANDARD_SHIFT_H) -> float | None:
    """GPS: grams per spindle per 8 h shift = kg · 1000 ÷ spindles × (8 h ÷ hours of the window)."""
    if spindles <= 0 or hours <= 0:
        return None
    return output_kg * 1000.0 / spindles * (shift_h / hours)


def standard_count_factor(count_ne: float, standard_ne: float = DEFAULT_STANDARD_NE) -> float:
    """Multiply kg spun at ``count_ne`` by this to get kg of the standard count.

    The ratio of the theoretical production per spindle at the standard count to that at the
    actual count, at the same spindle speed and twist multiplier: production ∝ tex ÷ TPM and
    TPM = α·√Ne, so production ∝ Ne^-1.5 and the factor is (Ne ÷ Ne_std)^1.5.
    """
    if count_ne <= 0 or standard_ne <= 0:
        raise ValueError("counts must be positive")
    return float((count_ne / standard_ne) ** 1.5)


@dataclass(frozen=True, slots=True)
class Totals:
    """Additive quantities of one machine (or a group of machines) over a window.

    planned_h, run_h:     machine-hours planned and run
    output_kg:            kg produced (counter increase)
    good_kg:              saleable kg (output less hard waste, when the machine reports waste)
    theoretical_kg:       kg at 100 % efficiency at the measured running speed, for the run time
    calendar_kg:          kg at 100 % efficiency at the speed run, for the whole planned time (doffs and
                          stops included): the base of the production efficiency
    rated_kg:             kg at 100 % at the nominal (top) speed, for the run time
    std_kg:               output converted to the standard count (``standard_count_factor``)
    count_kg:             Σ kg × Ne (for the output-weighted mean count)
    spindles:             spindles installed
    spindle_hours:        spindle-hours worked
    breaks:               end breaks
    worst5_x_breaks:      Σ (worst-5 % break share % × breaks), for the break-weighted share
    worst5_breaks:        breaks in the buckets that reported a worst-5 % share
    energy_kwh:           electricity used
    machines:             machines counted
    """

    planned_h: float = 0.0
    run_h: float = 0.0
    output_kg: float = 0.0
    good_kg: float = 0.0
    theoretical_kg: float = 0.0
    calendar_kg: float = 0.0
    rated_kg: float = 0.0
    std_kg: float = 0.0
    count_kg: float = 0.0
    spindles: int = 0
    spindle_hours: float = 0.0
    breaks: float = 0.0
    worst5_x_breaks: float = 0.0
    worst5_breaks: float = 0.0
    energy_kwh: float = 0.0
    machines: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(Totals)})

    @staticmethod
    def sum(items: Iterable[Totals]) -> Totals:
        out = Totals()
        for t in items:
            out = out + t
        return out


@dataclass(frozen=True, slots=True)
class Kpis:
    """The KPIs of one machine or group over a window of ``hours``."""

    hours: float
    machines: int
    spindles: int
    output_kg: float
    std_output_kg: float | None
    count_ne: float | None
    run_h: float
    energy_kwh: float
    efficiency_pct: float | None
    running_efficiency_pct: float | None
    spindle_utilisation_pct: float | None
    availability_pct: float | None
    performance_pct: float | None
    quality_pct: float | None
    oee_pct: float | None
    ends_down_per_1000_spindle_h: float | None
    worst5_break_share_pct: float | None
    gps_g: float | None
    std_gps_g: float | None
    sec_kwh_per_kg: float | None


def kpis(t: Totals, hours: float) -> Kpis:
    """Every KPI from the totals of a machine or group over a window of ``hours``."""
    o = oee(run_h=t.run_h, planned_h=t.planned_h, actual_kg=t.output_kg, rated_kg=t.rated_kg, good_kg=t.good_kg)
    spinning = t.spindles > 0

    def as_pct(x: float | None) -> float | None:
        return None if x is None else 100.0 * x

    return Kpis(
        hours=hours, machines=t.machines, spindles=t.spindles, output_kg=t.output_kg,
        std_output_kg=t.std_kg if spinning else None,
        count_ne=ratio(t.count_kg, t.output_kg) if spinning else None,
        run_h=t.run_h, energy_kwh=t.energy_kwh,
        efficiency_pct=efficiency_pct(t.output_kg, t.calendar_kg),
        running_efficiency_pct=efficiency_pct(t.output_kg, t.theoretical_kg),
        spindle_utilisation_pct=spindle_utilisation_pct(t.spindle_hours, t.spindles, hours) if spinning else None,
        availability_pct=as_pct(o.availability), performance_pct=as_pct(o.performance),
        quality_pct=as_pct(o.quality), oee_pct=as_pct(o.oee),
        ends_down_per_1000_spindle_h=ends_down_per_1000_spindle_h(t.breaks, t.spindle_hours) if spinning else None,
        worst5_break_share_pct=ratio(t.worst5_x_breaks, t.worst5_breaks) if spinning else None,
        gps_g=grams_per_spindle_shift(t.output_kg, t.spindles, hours) if spinning else None,
        std_gps_g=grams_per_spindle_shift(t.std_kg, t.spindles, hours) if spinning else None,
        sec_kwh_per_kg=ratio(t.energy_kwh, t.output_kg) if t.energy_kwh > 0 else None,
    )


@dataclass(frozen=True, slots=True)
class Buckets:
    """One machine's rollup buckets over a window, aligned: every array has one row per bucket.

    ``delta`` holds counter increases by point name (output, run_hours, spindle_hours, breaks,
    energy, waste), ``mean`` and ``max`` gauge aggregates (spindle_speed, twist, count_ne,
    worst5_break_share); a point that reported nothing in a bucket is NaN there, and a point the
    machine lacks is simply absent.
    """

    bucket_h: float
    n: int
    delta: dict[str, F64]
    mean: dict[str, F64]
    max: dict[str, F64]

    def counter(self, name: str) -> F64:
        """Increases per bucket (0 where none was reported)."""
        d = self.delta.get(name)
        return np.zeros(self.n) if d is None else np.nan_to_num(d)

    def gauge(self, name: str, fallback: float, table: str = "mean") -> F64:
        """Gauge per bucket; a bucket without a reading takes the window's mean, else ``fallback``."""
        c = (self.mean if table == "mean" else self.max).get(name)
        if c is None or not np.any(np.isfinite(c)):
            return np.full(self.n, fallback)
        return np.where(np.isnan(c), float(np.nanmean(c)), c)


def planned_hours(b: Buckets) -> F64:
    """Planned hours per bucket: its length, except around a hole in the data.

    A bucket right after a hole (an edge that was off, a demo restarted after a pause) carries the
    counters' whole increase across the hole: output *and* run hours above the bucket's own length.
    That time was planned too: the bucket counts for the run hours it booked, and the empty buckets
    of the hole just before it inside the window count for nothing (their time is in those run
    hours already). So the hole's output is measured against the time it was made in, not against
    one minute (which read as a production efficiency of 92-118 % on the day a demo was restarted).
    """
    held = np.full(b.n, b.bucket_h)
    raw = b.delta.get("run_hours")
    if raw is None or not b.n:
        return held
    excess = np.nan_to_num(raw) - b.bucket_h
    for j in np.flatnonzero(excess > 1e-9):
        left = float(excess[j])
        held[j] += left
        k = j - 1
        while k >= 0 and left > 0 and np.isnan(raw[k]):
            take = min(float(held[k]), left)
            held[k] -= take
            left -= take
            k -= 1
    return held


def machine_totals(b: Buckets, *, window_h: float, spindles: int | None = None, count_ne: float | None = None,
                   standard_ne: float = DEFAULT_STANDARD_NE, nominal_rpm: float | None = None) -> Totals:
    """Totals of one machine over a window from its buckets (see docs/kpis.md, "From rollups").

    ``spindles`` (installed) and ``count_ne`` (the line's count, used where the frame reports none)
    make it a ring frame; other machines get output, run time, energy and availability only.
    ``nominal_rpm`` is the speed OEE performance is measured against (default: the top speed in
    these buckets; the KPI service passes the top speed over the whole requested range, so a slow
    shift is not its own yardstick).
    """
    out = b.counter("output")
    run = b.counter("run_hours")
    output = float(out.sum())
    held = planned_hours(b)
    base = Totals(planned_h=window_h + float(held.sum()) - b.n * b.bucket_h, run_h=float(run.sum()), output_kg=output,
                  good_kg=output - float(b.counter("waste").sum()), energy_kwh=float(b.counter("energy").sum()),
                  machines=1)
    if not spindles:
        return base
    ne = b.gauge("count_ne", count_ne or 0.0)
    tpm = b.gauge("twist", 0.0)
    theoretical = rated = calendar = 0.0
    if "spindle_speed" in b.mean:
        mean_rpm = b.gauge("spindle_speed", 0.0)
        max_rpm = b.gauge("spindle_speed", 0.0, table="max") if "spindle_speed" in b.max else mean_rpm
        # A bucket right after a hole in the data carries the counters' whole increase across the
        # hole (run hours above its own length): its speed is that of the time it was read.
        n_run = running_speed(mean_rpm, max_rpm, np.minimum(run / b.bucket_h, 1.0))
        theoretical = float(np.sum(theoretical_kg_per_h_array(n_run, tpm, ne, spindles) * run))
        nominal = nominal_rpm if nominal_rpm is not None else (float(max_rpm.max()) if b.n else 0.0)
        rated = float(np.sum(theoretical_kg_per_h_array(np.full(b.n, nominal), tpm, ne, spindles) * run))
        # Production efficiency's base: every bucket in full at the speed run in it; a bucket the
        # frame stood in all through counts at its run-weighted mean speed of the window (the speed
        # it would have run), or the nominal speed when it never ran.
        ran = float(run.sum())
        n_fill = float(np.sum(n_run * run) / ran) if ran > 0 else nominal
        n_cal = np.where(run > 0, n_run, n_fill)
        calendar = float(np.sum(theoretical_kg_per_h_array(n_cal, tpm, ne, spindles) * held))
    factor = np.where(ne > 0, (np.maximum(ne, 0.0) / standard_ne) ** 1.5, 0.0)
    breaks = b.counter("breaks")
    share = b.mean.get("worst5_break_share")
    seen = np.zeros(b.n, dtype=bool) if share is None else np.isfinite(share)
    share_v = np.zeros(b.n) if share is None else np.nan_to_num(share)
    return replace(base, theoretical_kg=theoretical, calendar_kg=calendar, rated_kg=rated,
                   std_kg=float(np.sum(out * factor)),
                   count_kg=float(np.sum(out * ne)), spindles=spindles,
                   spindle_hours=float(b.counter("spindle_hours").sum()), breaks=float(breaks.sum()),
                   worst5_x_breaks=float(np.sum(share_v * breaks * seen)),
                   worst5_breaks=float(np.sum(breaks[seen])))
