"""Scope 1, Scope 2 location-based and market-based, worked by hand."""

from __future__ import annotations

import pytest

from spinline.carbon.factors import FactorLibrary
from spinline.carbon.inventory import FuelUse, GreenInstrument, HeatUse, compute_inventory


@pytest.fixture(scope="module")
def lib() -> FactorLibrary:
    return FactorLibrary.load()


def test_scope1_fuels(lib: FactorLibrary) -> None:
    # diesel 1 000 kg x 3.1971876 = 3 197.1876 kg; natural gas 96 GJ = 96 000 MJ / 48 MJ/kg = 2 000 kg
    # x 2.6955408 = 5 391.0816 kg; LPG 0.5 t = 500 kg x 2.98733083 = 1 493.665415. Scope 1 = 10 081.934815
    inv = compute_inventory(lib, year=2023, consumption_kwh=0.0, province="Jiangsu", grid_region="East",
                            fuels=[FuelUse(1000.0, "kg", fuel="diesel"), FuelUse(96.0, "GJ", fuel="natural_gas"),
                                   FuelUse(0.5, "t", fuel="lpg")])
    assert inv.scope1_kg == pytest.approx(3197.1876 + 5391.0816 + 1493.665415, rel=1e-9)
    assert inv.fuel_mj == pytest.approx(1000 * 43.0 + 96000 + 500 * 47.3)


def test_scope2_location_based(lib: FactorLibrary) -> None:
    # 1 000 000 kWh consumed, 100 000 kWh from on-site PV -> 900 000 kWh purchased.
    # Jiangsu has no provincial factor: East grid 2023, 0.5500 -> 900 000 x 0.55 = 495 000 kgCO2
    inv = compute_inventory(lib, year=2023, consumption_kwh=1_000_000.0, province="Jiangsu", grid_region="East",
                            onsite_pv_kwh=100_000.0)
    assert inv.grid_kwh == 900_000.0
    assert inv.scope2_location_kg == pytest.approx(495_000.0)
    assert inv.scope1_kg == 0.0
    sel = next(s for s in inv.selections if s.factor.kind == "grid_location")
    assert sel.factor.id == "cn-east-2023" and "CN-Jiangsu" in sel.fallbacks[0]


def test_scope2_market_based_with_certificates(lib: FactorLibrary) -> None:
    # Same mill. Green certificates: 300 000 kWh vintage 2023 (counted at 0) and 50 000 kWh vintage 2022
    # (excluded: not the reporting year). Residual 900 000 - 300 000 = 600 000 kWh x 0.6096 = 365 760 kgCO2.
    # Purchased heat 100 GJ = 100 000 MJ x 0.11 kgCO2/MJ = 11 000 kg, in both Scope 2 figures.
    inv = compute_inventory(lib, year=2023, consumption_kwh=1_000_000.0, province="Jiangsu", grid_region="East",
                            onsite_pv_kwh=100_000.0, heat=[HeatUse(100.0, "GJ")],
                            instruments=[GreenInstrument("gec", 300_000.0, 2023, "wind", "GEC-1"),
                                         GreenInstrument("gec", 50_000.0, 2022, "wind", "GEC-OLD")])
    assert inv.instrument_kwh == 300_000.0 and inv.residual_kwh == 600_000.0
    assert inv.scope2_market_kg == pytest.approx(365_760.0 + 11_000.0)
    assert inv.scope2_location_kg == pytest.approx(495_000.0 + 11_000.0)
    assert any("GEC-OLD" in w and "vintage" in w for w in inv.warnings)


def test_instruments_capped_at_purchased_kwh(lib: FactorLibrary) -> None:
    # 200 000 kWh bought, 250 000 kWh of PPA: only 200 000 count; market-based Scope 2 = 0
    inv = compute_inventory(lib, year=2023, consumption_kwh=200_000.0, grid_region="Central",
                            instruments=[GreenInstrument("ppa", 250_000.0, 2023, "pv", "PPA-7")])
    assert inv.scope2_market_kg == 0.0 and inv.residual_kwh == 0.0
    assert inv.scope2_location_kg == pytest.approx(200_000 * 0.5271)
    assert any("beyond purchased" in w for w in inv.warnings)


def test_custom_factor_flows_into_inventory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    extra = tmp_path / "f.yaml"
    extra.write_text("factors:\n  - {id: biomass-pellets, kind: fuel, fuel: pellets, region: CN, year: 2024,"
                     " value: 0.05, unit: kgCO2e/kg, scope: '1', source: {document: supplier sheet}}\n")
    lib = FactorLibrary.load([extra])
    inv = compute_inventory(lib, year=2024, consumption_kwh=0.0,
                            fuels=[FuelUse(2000.0, "kg", factor="biomass-pellets")])
    assert inv.scope1_kg == pytest.approx(100.0)
    assert inv.lines[0].custom
