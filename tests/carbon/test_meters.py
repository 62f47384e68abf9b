"""Counter roll-over and resets, gap detection and fill, sub-meter reconciliation (hand-worked)."""

from __future__ import annotations

import numpy as np
import pytest

from spinline.carbon.meters import Step, counter_increments, detect_gaps, fill_counter, reconcile

NAN = np.nan


def test_counter_rollover_uint32_register() -> None:
    # air compressor energy: uint32 at 0.001 kWh/count -> rollover 2**32 * 0.001 = 4294967.296 kWh
    # readings 4294960.0, 4294966.5, (wrap) 3.2, 10.0
    # increments: 6.5; 3.2 + 4294967.296 - 4294966.5 = 3.996; 6.8  -> total 17.296
    inc, kind = counter_increments(np.array([4294960.0, 4294966.5, 3.2, 10.0]), 4294967.296)
    assert inc == pytest.approx([6.5, 3.996, 6.8])
    assert inc.sum() == pytest.approx(17.296)
    assert kind.tolist() == [Step.NORMAL, Step.ROLLOVER, Step.NORMAL]


def test_counter_reset_counts_the_new_value() -> None:
    # meter restarted: 5000 -> 5010 -> 4 -> 9: increments 10, 4 (since restart), 5 = 19
    inc, kind = counter_increments(np.array([5000.0, 5010.0, 4.0, 9.0]), rollover=None)
    assert inc.tolist() == [10.0, 4.0, 5.0]
    assert kind.tolist() == [Step.NORMAL, Step.RESET, Step.NORMAL]


def test_detect_gaps() -> None:
    ts = np.array([0, 60, 120, 180, 900, 960]) * 10**9
    assert detect_gaps(ts, 60 * 10**9) == [(180 * 10**9, 900 * 10**9, 11)]


def test_gap_interpolated_when_counter_bridges_it() -> None:
    # hourly buckets 0..4; bucket 0: first 1000 last 1050 (delta 50); buckets 1-3 missing;
    # bucket 4: first 1200, last 1250. The store's delta for bucket 4 = 50 within + (1200-1050) = 200.
    # Interpolation: the 150 kWh counted across the hole are spread 50/50/50 over buckets 1-3;
    # bucket 4 keeps its own 50. Total 50+150+50 = 250 (= 1250 - 1000), all measured.
    present = np.array([True, False, False, False, True])
    r = fill_counter(present, np.array([50.0, NAN, NAN, NAN, 200.0]), np.array([1000.0, NAN, NAN, NAN, 1200.0]),
                     np.array([1050.0, NAN, NAN, NAN, 1250.0]))
    assert r.kwh.tolist() == [50.0, 50.0, 50.0, 50.0, 50.0]
    assert r.interpolated.sum() == 150.0 and r.estimated.sum() == 0.0
    assert r.total == 250.0
    assert r.gaps[0].method == "interpolated"


def test_gap_estimated_from_power_at_end_of_period() -> None:
    # buckets 0-1 measured 40 kWh each; 2-3 missing at the end of the period (nothing after to bridge);
    # the power gauge read 42 kW mean in bucket 2 and nothing in bucket 3 -> 42 kWh (power) and the
    # typical (median of measured) 40 kWh -> estimated 82; total 162; estimated share 82/162 = 50.6%.
    present = np.array([True, True, False, False])
    r = fill_counter(present, np.array([40.0, 40.0, NAN, NAN]), np.array([0.0, 40.0, NAN, NAN]),
                     np.array([40.0, 80.0, NAN, NAN]), est_kwh=np.array([NAN, NAN, 42.0, NAN]))
    assert r.kwh.tolist() == [40.0, 40.0, 42.0, 40.0]
    assert r.estimated.sum() == 82.0
    assert r.estimated.sum() / r.total == pytest.approx(82 / 162)
    assert r.gaps[0].method == "estimated_typical" and "end of the period" in r.gaps[0].reason


def test_gap_with_reset_inside_is_estimated_not_interpolated() -> None:
    # bucket 0 last 500; bucket 2 first 3, last 13 (the meter restarted during the hole);
    # store delta for bucket 2 = 10 within + 3 (since restart) = 13. Interpolation impossible:
    # bucket 1 is estimated from power (30 kW -> 30 kWh); the 3 kWh step is dropped from bucket 2
    # (it is inside the estimate) -> [10, 30, 10].
    present = np.array([True, False, True])
    r = fill_counter(present, np.array([10.0, NAN, 13.0]), np.array([490.0, NAN, 3.0]), np.array([500.0, NAN, 13.0]),
                     est_kwh=np.array([NAN, 30.0, NAN]))
    assert r.kwh.tolist() == [10.0, 30.0, 10.0]
    assert r.gaps[0].method == "estimated_power" and "reset" in r.gaps[0].reason
    assert (2, "reset") in r.resets


def test_gap_fill_none_keeps_store_figures() -> None:
    present = np.array([True, False, True])
    r = fill_counter(present, np.array([10.0, NAN, 30.0]), np.array([0.0, NAN, 20.0]), np.array([10.0, NAN, 30.0]),
                     method="none")
    assert r.kwh.tolist() == [10.0, 0.0, 30.0] and r.gaps[0].method == "unfilled"


def test_reset_between_adjacent_buckets_is_flagged() -> None:
    present = np.array([True, True])
    r = fill_counter(present, np.array([10.0, 5.0]), np.array([90.0, 1.0]), np.array([100.0, 5.0]))
    assert r.resets == ((1, "reset"),)


def test_reconciliation_against_sub_meters() -> None:
    # main 10 000 kWh feeds prep 2 000 + ring 5 000 + util 2 600 = 9 600: 4% apart, inside 5%.
    # ring meter 5 000 feeds frames 2 600 + 2 100 = 4 700: 6% apart, flagged.
    kwh = {"prep": 2000.0, "ring": 5000.0, "util": 2600.0, "rf1": 2600.0, "rf2": 2100.0}
    res = reconcile({"main": (10000.0, ["prep", "ring", "util"]), "ring": (5000.0, ["rf1", "rf2"])}, kwh, 0.05)
    by = {r.meter: r for r in res}
    assert by["main"].difference_share == pytest.approx(0.04) and by["main"].ok
    assert by["ring"].difference_kwh == pytest.approx(300.0) and not by["ring"].ok
