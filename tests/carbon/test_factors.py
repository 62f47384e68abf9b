"""Factor library: published values, fuel arithmetic, fallbacks, custom factors."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinline.carbon.factors import FactorError, FactorLibrary, grid_regions


@pytest.fixture(scope="module")
def lib() -> FactorLibrary:
    return FactorLibrary.load()


def test_every_factor_has_value_unit_region_year_scope_source(lib: FactorLibrary) -> None:
    assert lib.version and lib.digest
    for f in lib.factors:
        assert f.value == f.value and f.value > 0, f.id
        assert f.unit and f.region and f.scope and f.source.document and f.source.table, f.id
        assert not f.custom


def test_published_grid_factors(lib: FactorLibrary) -> None:
    # domain.md 4.2, national average / excl. traded non-fossil / regional / LCA
    assert lib.get("cn-grid-2023").value == 0.5306
    assert lib.get("cn-grid-2022").value == 0.5366
    assert lib.get("cn-grid-2021").value == 0.5568
    assert lib.get("cn-grid-residual-2023").value == 0.6096
    assert lib.get("cn-east-2023").value == 0.5500
    assert lib.get("cn-central-2022").value == 0.5395
    assert lib.get("cn-electricity-lca-2023").value == 0.6205


def test_ipcc_fuel_factors_per_kg(lib: FactorLibrary) -> None:
    # IPCC 2006 Vol.2 Ch.2 Table 2.2 (kg/TJ) x NCV (Ch.1 Table 1.2, TJ/Gg) x 1e-6, AR6 GWP CH4 29.8, N2O 273
    # natural gas: (56100 + 1*29.8 + 0.1*273) * 48.0e-6 = 56157.1 * 48e-6 = 2.6955408
    assert lib.get("ipcc-natural-gas").value == pytest.approx(2.6955408, rel=1e-9)
    # bituminous coal: (94600 + 29.8 + 1.5*273) * 25.8e-6 = 95039.3 * 25.8e-6 = 2.45201394
    assert lib.get("ipcc-coal-bituminous").value == pytest.approx(2.45201394, rel=1e-9)
    # diesel: (74100 + 3*29.8 + 0.6*273) * 43.0e-6 = 74353.2 * 43e-6 = 3.1971876
    assert lib.get("ipcc-diesel").value == pytest.approx(3.1971876, rel=1e-9)
    # LPG: (63100 + 29.8 + 27.3) * 47.3e-6 = 63157.1 * 47.3e-6 = 2.98733083
    assert lib.get("ipcc-lpg").value == pytest.approx(2.98733083, rel=1e-9)


def test_select_falls_back_to_region_then_vintage_and_says_so(lib: FactorLibrary) -> None:
    sel = lib.select("grid_location", grid_regions("Jiangsu", "East"), 2026)
    assert sel.factor.id == "cn-east-2023"
    assert len(sel.fallbacks) == 2 and "2026" in sel.fallbacks[0] and "CN-Jiangsu" in sel.fallbacks[1]
    exact = lib.select("grid_location", grid_regions("Fujian", "East"), 2022)
    assert exact.factor.value == 0.4092 and exact.exact
    # Fujian has no 2023 factor: the newer regional vintage wins over the older provincial one
    assert lib.select("grid_location", grid_regions("Fujian", "East"), 2023).factor.id == "cn-east-2023"
    with pytest.raises(FactorError):
        lib.select("grid_location", ["CN"], 2019)


def test_user_file_overrides_and_is_custom(tmp_path: Path) -> None:
    extra = tmp_path / "mine.yaml"
    extra.write_text(
        "factors:\n"
        "  - {id: jiangsu-2023, kind: grid_location, region: CN-Jiangsu, year: 2023, value: 0.5, unit: kgCO2/kWh,\n"
        "     scope: '2', source: {document: 'our utility bill', table: 'p.2'}}\n"
        "  - {id: fibre-supplier, kind: fibre, region: CN-Xinjiang, year: 2025, value: 2.1, unit: kgCO2e/kg,\n"
        "     scope: '3', source: {document: 'supplier EPD'}}\n", encoding="utf-8")
    lib = FactorLibrary.load([extra])
    sel = lib.select("grid_location", grid_regions("Jiangsu", "East"), 2023)
    assert sel.factor.id == "jiangsu-2023" and sel.factor.custom and sel.exact
    assert {f.id for f in lib.custom_factors()} == {"jiangsu-2023", "fibre-supplier"}
    assert "[CUSTOM]" in sel.factor.label()
    assert lib.digest != FactorLibrary.load().digest


def test_bad_user_file_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("factors:\n  - {id: x, kind: nonsense, region: CN, year: 2023, value: 1, unit: kg, scope: '1',"
                   " source: {document: d}}\n", encoding="utf-8")
    with pytest.raises(FactorError, match="unknown kind"):
        FactorLibrary.load([bad])
