"""Units: the common ones are checked without pint, and a site accepts and refuses exactly what pint does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spinline.core.units import COMMON_UNITS, check_unit, conversion_factor, parse_unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("unit", sorted(COMMON_UNITS))
def test_every_common_unit_is_a_pint_unit(unit: str) -> None:
    parse_unit(unit)   # raises ValueError if pint does not know it: the fast path would accept a non-unit
    check_unit(unit)


def test_other_units_still_go_to_pint() -> None:
    check_unit("kilowatt_hour / spindle")
    with pytest.raises(ValueError, match="unknown unit 'kgg'"):
        check_unit("kgg")
    assert conversion_factor("Wh", "kWh") == pytest.approx(1e-3)


def test_loading_the_example_mill_does_not_import_pint() -> None:
    """An edge that only loads its site (common units) never pays for pint (nor the scipy it imports)."""
    code = ("import sys\nfrom spinline.core.site import load_site, derived_points\n"
            f"s = load_site({str(ROOT / 'examples' / 'mill.yaml')!r})\n"
            "assert s.points() and derived_points(s)\n"
            "print(sorted(m for m in ('pint', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
