"""Report periods are parsed strictly, and an empty month gets a clear message (issue 13, item 10)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from spinline.carbon.inputs import parse_month
from spinline.cli import app
from spinline.cloud.reports import period
from spinline.cloud.storage.catalog import point_infos
from spinline.cloud.storage.factory import open_store
from spinline.core.site import load_site


@pytest.mark.parametrize("label", ["2026-10\n", "2026-1_0", " 2026-10", "2026-W4_7", "2026-W47\n", "２０２６-10",
                                   "2026-13", "2026-W54", "2026-00"])
def test_production_periods_are_strict(label: str) -> None:
    with pytest.raises(ValueError):
        period(label, "Asia/Shanghai")


@pytest.mark.parametrize("label", ["2026-10\n", "2026-1_0", "+2026-10", "2026-10-01", "2026-13", "2026-1"])
def test_carbon_months_are_strict(label: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        parse_month(label)


def test_good_periods_still_parse() -> None:
    assert period("2026-W47", "UTC").label == "2026-W47" and len(period("2026-10", "UTC").days) == 31
    assert parse_month("2026-10") == (2026, 10)


def test_carbon_report_of_a_month_without_production(tmp_path: Path, mill_yaml: Path) -> None:
    site = load_site(mill_yaml)
    store = open_store(f"embedded:{tmp_path / 's.duckdb'}")
    store.migrate()
    store.register_points(point_infos(site, "mill-a"))
    store.close()
    db = f"embedded:{tmp_path / 's.duckdb'}"
    res = CliRunner().invoke(app, ["carbon", "report", "--site", str(mill_yaml), "--db", db,
                                   "--mill", "mill-a", "--month", "2026-10", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert "no yarn production" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
