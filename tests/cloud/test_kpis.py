"""KPI formulas with hand-worked examples: the arithmetic is written next to every assertion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spinline.cloud.kpis import (
    Buckets,
    Totals,
    efficiency_pct,
    ends_down_per_1000_spindle_h,
    grams_per_spindle_shift,
    kpis,
    machine_totals,
    oee,
    running_speed,
    spindle_utilisation_pct,
    standard_count_factor,
    tex_from_ne,
    theoretical_kg_per_h,
    worst_share_pct,
)

approx = pytest.approx


def test_tex_from_count() -> None:
    # tex = 590.5 / Ne: Ne 59.05 -> 590.5 / 59.05 = 10 tex; Ne 30 -> 590.5 / 30 = 19.683 tex
    assert tex_from_ne(59.05) == approx(10.0)
    assert tex_from_ne(30) == approx(19.6833, abs=1e-4)
    with pytest.raises(ValueError):
        tex_from_ne(0)


def test_theoretical_production() -> None:
    # kg/h = n·60·tex·N / (TPM·1e6)
    # 15 000 rpm, 1000 turns/m, Ne 59.05 (10 tex), 1000 spindles:
    #   15000·60·10·1000 / (1000·1e6) = 9e9 / 1e9 = 9.0 kg/h
    assert theoretical_kg_per_h(15000, 1000, 59.05, 1000) == approx(9.0)
    # domain.md §1.3 worked example: Ne 30, TPM 819, 18 000 rpm, one spindle:
    #   18000·60·19.6833 / (819·1e6) = 21 258 000 / 819e6 kg/h = 0.025956 kg/h ≈ 26 g/spindle·h
    assert theoretical_kg_per_h(18000, 819, 30, 1) * 1000 == approx(25.956, abs=1e-3)


def test_machine_efficiency() -> None:
    # actual 8.1 kg in 1 h of running at 9.0 kg/h theoretical: 8.1 / 9.0 × 100 = 90 %
    assert efficiency_pct(8.1, 9.0) == approx(90.0)
    assert efficiency_pct(1.0, 0.0) is None


def test_production_efficiency_counts_doffs_and_stops() -> None:
    # An 8 h shift of a 1000-spindle frame at 15 000 rpm, 10 tex, 1000 turns/m -> 9.0 kg/h at 100 %.
    # In each 1 h bucket it doffs 4 min and in hour 5 it stands the whole hour (a stop); while
    # running it loses 1 % to ends down: 56 min × 9.0 kg/h × 0.99 = 8.316 kg an hour, 7 hours.
    run = np.r_[np.full(4, 56 / 60), 0.0, np.full(3, 56 / 60)]
    kg = run * 9.0 * 0.99
    b = Buckets(bucket_h=1.0, n=8,
                delta={"output": kg, "run_hours": run},
                mean={"spindle_speed": np.where(run > 0, 15000.0 * run, 0.0), "twist": np.full(8, 1000.0)},
                max={"spindle_speed": np.where(run > 0, 15000.0, 0.0)})
    k = kpis(machine_totals(b, window_h=8.0, spindles=1000, count_ne=59.05), 8.0)
    # running efficiency: 58.212 kg ÷ (9.0 × 7 × 56/60 = 58.8 kg) = 99 %: ends down only
    assert k.running_efficiency_pct == approx(99.0)
    # production efficiency: 58.212 ÷ (9.0 × 8 h = 72 kg; the stopped hour at the speed run) = 80.85 %
    assert k.efficiency_pct == approx(100 * 58.212 / 72.0)
    # A frame that never ran in the window: 0 %, at its nominal speed (not "no data")
    idle = Buckets(bucket_h=1.0, n=2, delta={"output": np.zeros(2), "run_hours": np.zeros(2)},
                   mean={"spindle_speed": np.zeros(2), "twist": np.full(2, 1000.0)},
                   max={"spindle_speed": np.zeros(2)})
    k0 = kpis(machine_totals(idle, window_h=2.0, spindles=1000, count_ne=59.05, nominal_rpm=15000.0), 2.0)
    assert k0.efficiency_pct == 0.0 and k0.running_efficiency_pct is None


def test_a_hole_in_the_data_bridged_by_the_counters() -> None:
    # 4 buckets of 1 h at 15 000 rpm, 9.0 kg/h at 100 %; nothing read in buckets 1 and 2 (the edge was
    # down), so bucket 3 carries the counters' increase over three hours: 3 h run, 3 × 8.1 = 24.3 kg.
    b = Buckets(bucket_h=1.0, n=4,
                delta={"output": np.array([8.1, np.nan, np.nan, 24.3]),
                       "run_hours": np.array([1.0, np.nan, np.nan, 3.0])},
                mean={"spindle_speed": np.array([15000.0, np.nan, np.nan, 15000.0]), "twist": np.full(4, 1000.0)},
                max={"spindle_speed": np.array([15000.0, np.nan, np.nan, 15000.0])})
    k = kpis(machine_totals(b, window_h=4.0, spindles=1000, count_ne=59.05), 4.0)
    # the speed of bucket 3 is the 15 000 rpm it was read at (not 15 000 ÷ 3): theoretical 9.0 × 4 h run
    # = 36 kg -> running 32.4 / 36 = 90 %; over the 4 h: 36 kg -> production efficiency 90 %
    assert k.running_efficiency_pct == approx(90.0)
    assert k.efficiency_pct == approx(90.0)


def test_spindle_utilisation() -> None:
    # 7600 spindle-hours worked on 1000 spindles over an 8 h shift: 7600 / (1000·8) × 100 = 95 %
    assert spindle_utilisation_pct(7600, 1000, 8) == approx(95.0)


def test_oee() -> None:
    # planned 8 h, ran 7.2 h                          -> A = 7.2 / 8      = 0.90
    # rated 9 kg/h at nominal speed: 9 × 7.2 = 64.8 kg; made 58.32 kg -> P = 58.32 / 64.8 = 0.90
    # 2.916 kg hard waste: good 55.404 kg            -> Q = 55.404 / 58.32 = 0.95
    # OEE = 0.90 × 0.90 × 0.95 = 0.7695
    o = oee(run_h=7.2, planned_h=8, actual_kg=58.32, rated_kg=64.8, good_kg=55.404)
    assert (o.availability, o.performance, o.quality) == (approx(0.9), approx(0.9), approx(0.95))
    assert o.oee == approx(0.7695)
    assert oee(run_h=0, planned_h=0, actual_kg=0, rated_kg=0, good_kg=0).oee is None


def test_ends_down_per_1000_spindle_hours() -> None:
    # 228 breaks in 7600 spindle-hours: 228 / 7600 × 1000 = 30 per 1000 spindle-h
    assert ends_down_per_1000_spindle_h(228, 7600) == approx(30.0)
    assert ends_down_per_1000_spindle_h(5, 0) is None


def test_worst_five_percent_share() -> None:
    # 20 spindles: 5 % of 20 = 1 spindle. One spindle broke 10 times, the other 19 twice each:
    #   total = 10 + 19·2 = 48; worst spindle's share = 10 / 48 = 20.833 %
    assert worst_share_pct([10] + [2] * 19) == approx(20.8333, abs=1e-4)
    # 40 spindles -> the worst 2: breaks 9, 7 and 38 spindles with 1: (9 + 7) / (16 + 38) = 29.63 %
    assert worst_share_pct([9, 7] + [1] * 38) == approx(29.6296, abs=1e-4)
    # 1008 spindles: ceil(0.05 · 1008) = ceil(50.4) = 51 worst spindles; 51 with 2 breaks, the rest 0
    #   -> 102 / 102 = 100 %
    assert worst_share_pct([2] * 51 + [0] * 957) == approx(100.0)
    assert worst_share_pct([0] * 10) is None


def test_grams_per_spindle_shift() -> None:
    # 200 kg on 1000 spindles in one 8 h shift: 200 000 g / 1000 = 200 g/spindle/shift
    assert grams_per_spindle_shift(200, 1000, 8) == approx(200.0)
    # 600 kg over a 24 h day: 600 000 / 1000 × 8/24 = 200 g per spindle per 8 h shift
    assert grams_per_spindle_shift(600, 1000, 24) == approx(200.0)


def test_standard_count_factor() -> None:
    # factor = (Ne / Ne_std)^1.5 (production ∝ tex/TPM ∝ Ne^-1.5 at equal speed and twist multiplier)
    # Ne 10 -> 40s: (10/40)^1.5 = 0.25^1.5 = 0.125   (1 kg of coarse 10s is 0.125 kg of 40s-equivalent)
    assert standard_count_factor(10, 40) == approx(0.125)
    # Ne 160 -> 40s: 4^1.5 = 8;  Ne 84 -> 21s: (84/21)^1.5 = 4^1.5 = 8
    assert standard_count_factor(160, 40) == approx(8.0)
    assert standard_count_factor(84, 21) == approx(8.0)
    # The factor equals the ratio of theoretical production per spindle (std ÷ actual), same rpm and α:
    # TPM = α·√Ne with α = 100: Ne 10 -> TPM 316.23, Ne 40 -> TPM 632.46
    p10 = theoretical_kg_per_h(15000, 100 * math.sqrt(10), 10, 1)
    p40 = theoretical_kg_per_h(15000, 100 * math.sqrt(40), 40, 1)
    assert p40 / p10 == approx(standard_count_factor(10, 40))


def test_running_speed_from_bucket_mean_and_max() -> None:
    # ran half the bucket at 15 000 rpm, stood at 0 rpm the other half: mean 7500 / 0.5 = 15 000
    # a frame that keeps reporting its set speed while stopped: mean 15 000 / 0.5 = 30 000, capped at max 15 000
    # did not run: 0
    v = running_speed(np.array([7500.0, 15000.0, 0.0]), np.array([15000.0, 15000.0, 15000.0]),
                      np.array([0.5, 0.5, 0.0]))
    assert v.tolist() == [15000.0, 15000.0, 0.0]


def _frame_buckets() -> Buckets:
    # One ring frame, 1000 spindles, Ne 59.05 (10 tex) from the line, twist 1000 turns/m, two 1 h buckets.
    return Buckets(
        bucket_h=1.0, n=2,
        delta={"output": np.array([8.1, 3.24]), "run_hours": np.array([1.0, 0.5]),
               "spindle_hours": np.array([950.0, 450.0]), "breaks": np.array([30.0, 12.0]),
               "energy": np.array([80.0, 45.0])},
        mean={"spindle_speed": np.array([15000.0, 6000.0]), "twist": np.array([1000.0, np.nan]),
              "worst5_break_share": np.array([35.0, 30.0])},
        max={"spindle_speed": np.array([15000.0, 12000.0])},
    )


def test_machine_totals_and_kpis_of_a_ring_frame() -> None:
    t = machine_totals(_frame_buckets(), window_h=2.0, spindles=1000, count_ne=59.05, standard_ne=40)
    # bucket 1: ran 1 h at 15 000 rpm -> theoretical 9.0 kg/h × 1 h = 9.0 kg
    # bucket 2: ran 0.5 h; mean 6000 / 0.5 = 12 000 rpm (= its max); twist missing -> window mean 1000:
    #   12000·60·10·1000 / (1000·1e6) = 7.2 kg/h × 0.5 h = 3.6 kg
    assert t.theoretical_kg == approx(9.0 + 3.6)
    # nominal speed = the top speed seen, 15 000 rpm -> rated 9.0 kg/h × (1 + 0.5) h = 13.5 kg
    assert t.rated_kg == approx(13.5)
    # production efficiency's base: both hours in full at the speed run in each:
    #   9.0 kg/h × 1 h + 7.2 kg/h × 1 h = 16.2 kg (the half hour stood still counts: a stop is a loss)
    assert t.calendar_kg == approx(16.2)
    k = kpis(t, hours=2.0)
    # output 8.1 + 3.24 = 11.34 kg; production efficiency 11.34 / 16.2 = 70 %;
    # running efficiency (run time only) 11.34 / 12.6 = 90 %
    assert k.output_kg == approx(11.34)
    assert k.efficiency_pct == approx(70.0)
    assert k.running_efficiency_pct == approx(90.0)
    # A = 1.5 h run / 2 h planned = 75 %; P = 11.34 / 13.5 = 84 %; Q = 100 % (no waste point);
    # OEE = 0.75 × 0.84 × 1.0 = 63 %
    assert (k.availability_pct, k.performance_pct, k.quality_pct) == (approx(75.0), approx(84.0), approx(100.0))
    assert k.oee_pct == approx(63.0)
    # spindle-hours 950 + 450 = 1400 of 1000 × 2 installed -> 70 %
    assert k.spindle_utilisation_pct == approx(70.0)
    # breaks 30 + 12 = 42 in 1400 spindle-h -> 42 / 1400 × 1000 = 30 per 1000 spindle-h
    assert k.ends_down_per_1000_spindle_h == approx(30.0)
    # worst-5 % share weighted by breaks: (35·30 + 30·12) / 42 = 1410 / 42 = 33.571 %
    assert k.worst5_break_share_pct == approx(33.5714, abs=1e-4)
    # GPS: 11.34 kg · 1000 / 1000 spindles × 8 h / 2 h = 45.36 g
    assert k.gps_g == approx(45.36)
    # 40s-equivalent: factor (59.05/40)^1.5 = 1.47625^1.5 = 1.793660 -> 11.34 × 1.793660 = 20.340 kg
    assert k.std_output_kg == approx(20.3401, abs=1e-3)
    assert k.std_gps_g == approx(45.36 * 1.793660, abs=1e-3)
    # energy 80 + 45 = 125 kWh -> 125 / 11.34 = 11.023 kWh/kg
    assert k.sec_kwh_per_kg == approx(11.0229, abs=1e-4)
    assert k.count_ne == approx(59.05)


def test_waste_point_gives_quality() -> None:
    b = _frame_buckets()
    b.delta["waste"] = np.array([0.81, 0.324])
    # good = 11.34 − 1.134 = 10.206 kg -> Q = 10.206 / 11.34 = 90 %
    assert kpis(machine_totals(b, window_h=2.0, spindles=1000, count_ne=59.05), 2.0).quality_pct == approx(90.0)


def test_other_machine_has_output_and_availability_only() -> None:
    # a card: 6 h run of 8 planned -> A = 75 %; no spindles -> no spinning KPIs
    b = Buckets(bucket_h=8.0, n=1, delta={"output": np.array([500.0]), "run_hours": np.array([6.0])},
                mean={}, max={})
    k = kpis(machine_totals(b, window_h=8.0), 8.0)
    assert k.output_kg == 500.0 and k.availability_pct == approx(75.0)
    assert k.efficiency_pct is None and k.gps_g is None and k.oee_pct is None


def test_groups_add_totals_then_take_ratios() -> None:
    # frame A: 9 kg of 10 theoretical over the shift (90 %); frame B: 4 kg of 8 (50 %)
    # line efficiency = (9 + 4) / (10 + 8) = 72.22 %, not the mean of 90 and 50 (70 %)
    a = Totals(output_kg=9, calendar_kg=10, theoretical_kg=9.5, spindles=1000, planned_h=8, machines=1)
    b = Totals(output_kg=4, calendar_kg=8, theoretical_kg=5, spindles=500, planned_h=8, machines=1)
    k = kpis(a + b, hours=8)
    assert k.efficiency_pct == approx(72.2222, abs=1e-4)
    # running: (9 + 4) / (9.5 + 5) = 89.66 %
    assert k.running_efficiency_pct == approx(89.6552, abs=1e-4)
    assert k.machines == 2 and k.spindles == 1500


def test_standard_count_comparison_of_two_mills() -> None:
    # mill X spins Ne 20: 200 kg on 1000 spindles in 8 h -> GPS 200 g;
    #   40s-equivalent: 200 × (20/40)^1.5 = 200 × 0.353553 = 70.71 kg -> 70.71 g
    # mill Y spins Ne 80: 30 kg on 1000 spindles in 8 h -> GPS 30 g;
    #   40s-equivalent: 30 × (80/40)^1.5 = 30 × 2.828427 = 84.85 kg -> 84.85 g
    # Y makes fewer grams but more work in standard-count terms.
    def mill(kg: float, ne: float) -> Totals:
        return Totals(output_kg=kg, std_kg=kg * standard_count_factor(ne, 40), count_kg=kg * ne,
                      spindles=1000, planned_h=8, machines=1)

    x, y = kpis(mill(200, 20), 8), kpis(mill(30, 80), 8)
    assert (x.gps_g, y.gps_g) == (approx(200.0), approx(30.0))
    assert x.std_gps_g == approx(70.7107, abs=1e-4)
    assert y.std_gps_g == approx(84.8528, abs=1e-4)
    assert y.std_gps_g > x.std_gps_g


def test_a_hole_in_the_data_is_planned_time_of_the_output_it_carries() -> None:
    # A ring frame at 15 000 rpm (9.0 kg/h at 100 %) makes 8.1 kg/h (90 %), one-minute buckets over
    # two hours; the edge was off for the first 90 minutes of the window (and 2 h before it): the
    # bucket after the hole carries 3.5 h of output and run hours. Measured against the time it was
    # made in, the efficiency stays 90 %, not 8.1 * 4 / (2 * 9.0) = 180 %.
    n, hole = 120, 90
    out = np.r_[np.full(hole, np.nan), 8.1 * 3.5 + 8.1 / 60, np.full(n - hole - 1, 8.1 / 60)]
    run = np.r_[np.full(hole, np.nan), 3.5 + 1 / 60, np.full(n - hole - 1, 1 / 60)]
    speed = np.r_[np.full(hole, np.nan), np.full(n - hole, 15000.0)]
    b = Buckets(bucket_h=1 / 60, n=n, delta={"output": out, "run_hours": run},
                mean={"spindle_speed": speed, "twist": np.full(n, 1000.0)}, max={"spindle_speed": speed})
    t = machine_totals(b, window_h=2.0, spindles=1000, count_ne=59.05)
    k = kpis(t, 2.0)
    assert k.efficiency_pct == approx(90.0, abs=0.5)
    assert t.planned_h == approx(4.0)         # the window's 2 h + the 2 h of the hole before it
    assert k.availability_pct == approx(100.0, abs=0.1)
