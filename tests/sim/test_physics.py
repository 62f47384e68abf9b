"""The formulas against the worked examples and sources in domain.md."""

from __future__ import annotations

import numpy as np
import pytest

from spinline.sim import physics as ph


def test_count_twist_delivery_production_worked_example() -> None:
    # domain.md 1.3: Ne 30 (19.7 tex), alpha_e 3.8 -> TPM ~819; 18,000 rpm -> ~22 m/min -> ~26 g/spindle-h.
    assert ph.tex_from_ne(30.0) == pytest.approx(19.68, abs=0.01)
    tpm = ph.tpm(3.8, 30.0)
    assert tpm == pytest.approx(819, abs=1)
    v = ph.delivery_m_min(18000.0, tpm)
    assert v == pytest.approx(22.0, abs=0.1)
    assert ph.g_per_spindle_h(v, ph.tex_from_ne(30.0)) == pytest.approx(26.0, abs=0.3)
    assert ph.g_per_spindle_h(v, ph.tex_from_ne(30.0), 0.95) == pytest.approx(24.7, abs=0.3)


def test_ring_kwh_per_kg_anchor_and_band() -> None:
    assert ph.ring_kwh_per_kg(29.5) == pytest.approx(1.34)
    lo, hi = ph.mill_kwh_per_kg_band(30.0)
    # domain.md 3.1: Ne 30 whole mill ~2.7-4.6 kWh/kg.
    assert lo == pytest.approx(2.7, abs=0.05) and hi == pytest.approx(4.6, abs=0.05)


def test_koc_kaplan_case_power() -> None:
    # 20 tex combed at 17,500 rpm, alpha_e 4: ~33 W/spindle gives ~1.34 kWh/kg.
    ne = ph.ne_from_tex(20.0)
    g_h = ph.g_per_spindle_h(ph.delivery_m_min(17500.0, ph.tpm(4.0, ne)), 20.0)
    kw = ph.ring_frame_kw(1.0, 17500.0, fixed_kw=0.0)
    assert kw / (g_h / 1000.0) == pytest.approx(1.34, rel=0.06)


def test_bad_spindles_share_and_idle() -> None:
    assert 0.30 <= ph.bad_spindle_break_share() <= 0.35
    good, bad = ph.split_break_rate(30.0)
    mix = (1 - ph.BAD_SPINDLE_SHARE) * good + ph.BAD_SPINDLE_SHARE * bad
    assert mix * 1000 == pytest.approx(30.0)
    assert ph.idle_pct(30.0, 0.5) == pytest.approx(3.0 * 0.75 * 0.5)


def test_rh_multiplier_shape() -> None:
    assert ph.rh_break_multiplier(57.0, 57.0) == 1.0
    assert 1.2 <= ph.rh_break_multiplier(62.0, 57.0) <= 1.4
    assert ph.rh_break_multiplier(70.0, 57.0) > ph.rh_break_multiplier(62.0, 57.0)


def test_bearing_frequencies_known_bearing() -> None:
    # Pure kinematics, checked by hand: n=9, d=7.94 mm, D=39.04 mm, 0 deg, 1797 rpm (CWRU 6205 drive end).
    f = ph.bearing_frequencies(9, 7.94, 39.04, 0.0, 1797.0)
    assert f["bpfo"] == pytest.approx(107.4, abs=0.5)
    assert f["bpfi"] == pytest.approx(162.2, abs=0.5)
    assert f["ftf"] == pytest.approx(11.93, abs=0.1)
    assert f["bsf"] == pytest.approx(70.6, abs=0.5)


def test_fault_progress() -> None:
    t = np.array([0.0, 50.0, 100.0, 150.0, 300.0])
    assert list(ph.fault_progress(t, 100.0, 100.0)) == [0.0, 0.0, 0.0, 0.5, 1.0]
    assert list(ph.fault_progress(t, 100.0, 0.0)) == [0.0, 0.0, 1.0, 1.0, 1.0]
