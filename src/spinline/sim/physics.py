"""Pure, vectorised formulas of the simulated mill (see docs/simulator.md and ../shared/domain.md).

Every function takes scalars or numpy arrays and returns the same shape, so the step model can
evaluate a whole block of time steps for every machine at once. Numbers quoted in docstrings are
from domain.md; the tag in brackets says how far to trust them ([S] sourced, [D] derived,
[U] rule of thumb).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np

from spinline.core.bearing import defect_frequencies
from spinline.core.yarn import ne_from_tex as ne_from_tex  # re-exported: the simulator's formulas in one place
from spinline.core.yarn import tex_from_ne as tex_from_ne

#: A float or a numpy array; every formula broadcasts, so callers pass scalars or whole blocks.
Num: TypeAlias = Any
Arr: TypeAlias = Any

#: TPM = TPI * 39.37 (inches per metre).
TPI_TO_TPM = 39.37
#: Reference speed for ring-frame power (Koç & Kaplan 2007: 17,500 rpm, ~33 W/spindle [S/D]).
RPM_REF = 17500.0
#: Ring-frame power per spindle at RPM_REF, kW (domain.md 3.1: 30-50 W/spindle [D]).
KW_PER_SPINDLE_REF = 0.033


# --- count, twist, delivery, production (domain.md 1.3) -------------------------------------------

def tpm(alpha_e: Num, ne: Num) -> Arr:
    """Turns per metre from the English twist multiplier: TPM = 39.37 * alpha_e * sqrt(Ne)."""
    return TPI_TO_TPM * alpha_e * np.sqrt(ne)


def delivery_m_min(spindle_rpm: Num, twist_tpm: Num) -> Arr:
    """Front-roller delivery: every spindle turn inserts one turn of twist, v = n / TPM."""
    return spindle_rpm / twist_tpm


def g_per_spindle_h(v_m_min: Num, tex: Num, efficiency: Num = 1.0) -> Arr:
    """Production per spindle, g/h = v * 60 * tex / 1000 * efficiency (scribd 64562188 [S])."""
    return v_m_min * 60.0 * tex / 1000.0 * efficiency


def ring_kg_h(spindles: Num, spindle_rpm: Num, alpha_e: Num, ne: Num,
              efficiency: Num = 1.0) -> Arr:
    """Frame production in kg/h from speed, twist multiplier, count and efficiency (0-1)."""
    v = delivery_m_min(spindle_rpm, tpm(alpha_e, ne))
    return spindles * g_per_spindle_h(v, tex_from_ne(ne), efficiency) / 1000.0


def default_spindle_rpm(ne: Num) -> Arr:
    """Typical spindle speed for a count when the site file gives none.

    Finer counts run faster on smaller rings (domain.md 1.2: 16,000-20,000 rpm for Ne 30-40,
    20,000-22,000 in Indian mills [S/U]); 14,500 + 100 rpm per Ne, kept in 14,500-20,000.
    """
    return np.clip(14500.0 + 100.0 * np.asarray(ne, dtype=float), 14500.0, 20000.0)


# --- ring-frame power (domain.md 1.3, 3.1) ----------------------------------------------------------

def ring_frame_kw(spindles: Num, spindle_rpm: Num, *, kw_per_spindle: Num = KW_PER_SPINDLE_REF,
                  rpm_ref: float = RPM_REF, compact: Num = 0.0,
                  fixed_kw: float = 3.0) -> Arr:
    """Running power: spindle drive ~ (rpm/rpm_ref)^2 (SITRA: cost ~ p(1+x)^2 [S]) + fixed loads.

    ``compact`` (0/1) adds 10 % for the suction of a compact condensing zone; ``fixed_kw`` is the
    drafting drive, controls and pneumafil fan that run whatever the speed.
    """
    drive = spindles * kw_per_spindle * (spindle_rpm / rpm_ref) ** 2
    return drive * (1.0 + 0.10 * compact) + fixed_kw


def motor_current_a(kw: Num, volts: float = 400.0, power_factor: float = 0.88) -> Arr:
    """Three-phase line current I = P / (sqrt(3) * V * pf)."""
    return kw * 1000.0 / (np.sqrt(3.0) * volts * power_factor)


# --- ends down (domain.md 1.4) -------------------------------------------------------------------------

#: Share of "bad" spindles and their break-rate multiple: 5 % at 9x gives 0.45/1.40 = 32 % of breaks,
#: inside the 30-35 % that the worst 5 % of spindles give in the Dasheng paper [S].
BAD_SPINDLE_SHARE = 0.05
BAD_SPINDLE_FACTOR = 9.0


def bad_spindle_break_share(share: float = BAD_SPINDLE_SHARE, factor: float = BAD_SPINDLE_FACTOR) -> float:
    """Expected share of all breaks that come from the bad spindles."""
    return share * factor / ((1.0 - share) + share * factor)


def split_break_rate(rate_per_1000_sph: Num, share: float = BAD_SPINDLE_SHARE,
                     factor: float = BAD_SPINDLE_FACTOR) -> tuple[Arr, Arr]:
    """Per-spindle rates (per spindle-hour) of good and bad spindles whose mix gives the frame rate."""
    good = rate_per_1000_sph / 1000.0 / ((1.0 - share) + share * factor)
    return good, good * factor


def rh_break_multiplier(rh_pct: Num, rh_target_pct: Num, tolerance_pct: float = 2.5,
                        per_pct: float = 0.12, cap: float = 3.0) -> Arr:
    """Break-rate multiple from RH off target: 1 inside +-tolerance, +per_pct per % beyond.

    Domain.md (a): x1.3-2 outside +-5 % RH [U]; at 5 % off this gives 1.3, at 10 % off 1.9.
    """
    off = np.maximum(np.abs(rh_pct - rh_target_pct) - tolerance_pct, 0.0)
    return np.minimum(1.0 + per_pct * off, cap)


def wear_break_multiplier(traveller_age_frac: Num, rise: float = 0.6) -> Arr:
    """Traveller ageing: break rate rises linearly with days since the change (saw-tooth [S])."""
    return 1.0 + rise * np.clip(traveller_age_frac, 0.0, 1.0)


def speed_break_multiplier(spindle_rpm: Num, rpm_ref: Num) -> Arr:
    """Yarn tension ~ n^2 (scribd 64562188 [S]); breaks follow tension, so ~ (n/n_ref)^2."""
    return (np.asarray(spindle_rpm) / rpm_ref) ** 2


def idle_pct(breaks_per_1000_sph: Num, patrol_h: Num) -> Arr:
    """Ends-down loss d = e * 0.75 * t, e in breaks per 100 spindle-hours (Balasubramanian [S])."""
    return breaks_per_1000_sph / 10.0 * 0.75 * patrol_h


# --- bearing defect frequencies ----------------------------------------------------------------------

def bearing_frequencies(n_balls: int, ball_d_mm: float, pitch_d_mm: float, contact_deg: float,
                        shaft_rpm: Num) -> dict[str, Arr]:
    """BPFO, BPFI, BSF and FTF in Hz for a shaft speed in rpm (``spinline.core.bearing``).

    Kinematic values, no slip, so tests can aim at them exactly.
    """
    return defect_frequencies(n_balls, ball_d_mm, pitch_d_mm, contact_deg, np.asarray(shaft_rpm, dtype=float) / 60.0)


# --- whole-mill energy band (domain.md 3.1 and (a)) ----------------------------------------------------

def ring_kwh_per_kg(count_ne: Num) -> Arr:
    """Ring frame alone: 1.34 kWh/kg at Ne 29.5 (Koç & Kaplan [S]), ~Ne^1.5 at fixed speed [D]."""
    return 1.34 * (np.asarray(count_ne, dtype=float) / 29.5) ** 1.5


def mill_kwh_per_kg_band(count_ne: float) -> tuple[float, float]:
    """Published whole-mill band for a count: ring is 30-50 % of mill energy (domain.md 3.2 [S]).

    Returns (ring / 0.5, ring / 0.3); Ne 30 gives about 2.7-4.6 kWh/kg, as domain.md 3.1 says.
    """
    ring = float(ring_kwh_per_kg(count_ne))
    return ring / 0.5, ring / 0.3


# --- progressive faults ------------------------------------------------------------------------------

def fault_progress(t_s: Num, start_s: float, ramp_s: float) -> Arr:
    """0 before onset, rising linearly to 1 at onset + ramp (a step when ramp is 0)."""
    t = np.asarray(t_s, dtype=float)
    if ramp_s <= 0:
        return (t >= start_s).astype(float)
    return np.clip((t - start_s) / ramp_s, 0.0, 1.0)
