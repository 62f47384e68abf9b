"""Allocation rules, stage/line/count figures and lots, worked by hand.

The mill of these tests (kWh, kg, spindle-hours for the period):

    br   blowroom   line prep     Ne32   100 kWh  1 300 kg
    rf1  ring       line ring-32  Ne32   600 kWh    400 kg  4 000 sph
    rf2  ring       line ring-40  Ne40   200 kWh    200 kg  1 000 sph
    wd   winder     line wind     -      100 kWh    600 kg
    hv   hvac                            300 kWh
    ac   compressor                      100 kWh
    main meter                         1 500 kWh  -> unmetered 1 500 - 1 400 = 100 kWh

Shared = 300 + 100 + 100 = 500 kWh. Yarn = ring output = 400 + 200 = 600 kg. Mill: 1 500 / 600 = 2.5 kWh/kg.
"""

from __future__ import annotations

import pytest

from spinline.carbon.footprint import (
    AllocationError,
    LotPart,
    MachineTotals,
    carbon_intensity,
    compute_footprint,
    electricity_factor,
    lot_footprint,
)

MILL = [
    MachineTotals("br", "blowroom", "prep", 32.0, kwh=100.0, output_kg=1300.0),
    MachineTotals("rf1", "ring_frame", "ring-32", 32.0, kwh=600.0, output_kg=400.0, spindle_hours=4000.0),
    MachineTotals("rf2", "ring_frame", "ring-40", 40.0, kwh=200.0, output_kg=200.0, spindle_hours=1000.0),
    MachineTotals("wd", "winder", "wind", None, kwh=100.0, output_kg=600.0),
    MachineTotals("hv", "hvac", "util", None, kwh=300.0),
    MachineTotals("ac", "air_compressor", "util", None, kwh=100.0),
]


def _by_machine(fp) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return {a.machine.machine: a.kwh for a in fp.machines}


def test_shared_loads_and_mill_total() -> None:
    fp = compute_footprint(MILL, 1500.0, "mass")
    assert fp.shared == {"hvac": 300.0, "compressed_air": 100.0, "unmetered": 100.0}
    assert fp.total_kwh == pytest.approx(1500.0) and fp.yarn_kg == 600.0
    assert fp.kwh_per_kg == pytest.approx(2.5)


def test_rule_mass() -> None:
    # weights 1300:400:200:600 (2 500 kg): br +260, rf1 +80, rf2 +40, wd +120
    fp = compute_footprint(MILL, 1500.0, "mass")
    assert _by_machine(fp) == pytest.approx({"br": 360.0, "rf1": 680.0, "rf2": 240.0, "wd": 220.0})
    # Ne32 = br 360 + rf1 680 + wd 220 x 400/600 = 1 186.667 kWh / 400 kg = 2.966667 kWh/kg
    # Ne40 = rf2 240 + wd 220 x 200/600 = 313.333 kWh / 200 kg = 1.566667 kWh/kg
    assert fp.count("Ne32").kwh_per_kg == pytest.approx(2.966667, abs=1e-6)
    assert fp.count("Ne40").kwh_per_kg == pytest.approx(1.566667, abs=1e-6)


def test_rule_energy() -> None:
    # weights 100:600:200:100 (1 000 kWh): br +50, rf1 +300, rf2 +100, wd +50
    fp = compute_footprint(MILL, 1500.0, "energy")
    assert _by_machine(fp) == pytest.approx({"br": 150.0, "rf1": 900.0, "rf2": 300.0, "wd": 150.0})
    # Ne32 = 150 + 900 + 100 = 1 150 / 400 = 2.875; Ne40 = 300 + 50 = 350 / 200 = 1.75
    assert fp.count("Ne32").kwh_per_kg == pytest.approx(2.875)
    assert fp.count("Ne40").kwh_per_kg == pytest.approx(1.75)


def test_rule_spindle_hours() -> None:
    # only ring frames: 4 000:1 000 -> rf1 +400, rf2 +100; br and wd keep their own kWh
    fp = compute_footprint(MILL, 1500.0, "spindle_hours")
    assert _by_machine(fp) == pytest.approx({"br": 100.0, "rf1": 1000.0, "rf2": 300.0, "wd": 100.0})
    # Ne32 = 100 + 1 000 + 66.667 = 1 166.667 / 400 = 2.916667; Ne40 = 300 + 33.333 = 333.333 / 200 = 1.666667
    assert fp.count("Ne32").kwh_per_kg == pytest.approx(2.916667, abs=1e-6)
    assert fp.count("Ne40").kwh_per_kg == pytest.approx(1.666667, abs=1e-6)


@pytest.mark.parametrize("rule", ["mass", "energy", "spindle_hours"])
def test_stage_and_count_shares_sum_to_mill_total(rule: str) -> None:
    fp = compute_footprint(MILL, 1500.0, rule)  # type: ignore[arg-type]
    assert sum(s.kwh for s in fp.stages) == pytest.approx(1500.0)
    assert sum(s.share for s in fp.stages) == pytest.approx(1.0)
    assert sum(s.kwh_per_kg for s in fp.stages) == pytest.approx(fp.kwh_per_kg)
    assert sum(c.kwh for c in fp.counts) == pytest.approx(1500.0)


def test_stage_figures_mass_rule() -> None:
    # blowroom 360/600 = 0.6, ring (680+240)/600 = 1.533333, winding 220/600 = 0.366667 -> 2.5
    fp = compute_footprint(MILL, 1500.0, "mass")
    st = {s.key: s.kwh_per_kg for s in fp.stages}
    assert st == pytest.approx({"blowroom": 0.6, "ring_frame": 1.533333, "winder": 0.366667}, abs=1e-6)
    lines = {x.key: x for x in fp.lines}
    assert lines["ring-32"].kwh_per_kg == pytest.approx(680 / 400)


def test_no_driver_is_an_error() -> None:
    no_rings = [m for m in MILL if m.type != "ring_frame"]
    with pytest.raises(AllocationError):
        compute_footprint(no_rings, 1500.0, "spindle_hours")


def test_main_meter_below_machines_is_noted() -> None:
    fp = compute_footprint(MILL, 1300.0, "energy")
    assert fp.shared["unmetered"] == 0.0 and fp.notes


def test_carbon_per_kg_with_fibre() -> None:
    # electricity: 900 kWh grid at 0.6205 + 100 kWh PV at 0.0545 -> (558.45 + 5.45)/1000 = 0.5639 kgCO2e/kWh
    ef = electricity_factor(900.0, 0.6205, [(100.0, 0.0545)])
    assert ef == pytest.approx(0.5639)
    # 2.5 kWh/kg x 0.5639 = 1.40975; diesel 60 kgCO2e over 600 kg = 0.1; fibre 2.0 x 1.1 = 2.2
    ci = carbon_intensity(2.5, ef, 60.0, 600.0, fibre_factor=2.0, fibre_kg_per_kg_yarn=1.1)
    assert ci.spinning == pytest.approx(1.50975)
    assert ci.cradle_to_gate == pytest.approx(3.70975)


def test_lot_spanning_two_months() -> None:
    # Lot L-77 on the Ne32 line: 25 Oct - 5 Nov. October: 3 000 kg at 3.10 kWh/kg and 1.92 kgCO2e/kg;
    # November: 1 000 kg at 3.50 kWh/kg and 2.10 kgCO2e/kg (a colder month, more HVAC).
    # kWh = 9 300 + 3 500 = 12 800 -> 12 800 / 4 000 = 3.2 kWh/kg
    # kgCO2e = 5 760 + 2 100 = 7 860 -> 1.965 kgCO2e/kg
    lf = lot_footprint("L-77", [LotPart("2026-10", 3000.0, 3.10, 1.92), LotPart("2026-11", 1000.0, 3.50, 2.10)])
    assert lf.kg == 4000.0
    assert lf.kwh_per_kg == pytest.approx(3.2)
    assert lf.kgco2e_per_kg == pytest.approx(1.965)
