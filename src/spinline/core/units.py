"""Units of measure, checked with pint.

One registry for the process, extended with the units a spinning mill talks in, so that a site file
saying ``unit: kWh`` or ``unit: rpm`` is checked, and so energy can be converted to kWh whatever the
meter reports (Wh, MWh, kJ ...).

pint is imported on first use, not with this module: importing it (and the bare scipy package it
pulls in) and building the registry cost an edge ~7 MB of its 100 MB budget and ~0.2 s of CPU, only to
check a site file whose units are the usual few. ``check_unit`` (what site validation calls) accepts
the units of ``COMMON_UNITS`` without pint (every one of them is a unit pint parses:
``tests/core/test_units.py``) and asks pint about any other, so a site accepts and refuses exactly
what pint does; conversions always go through pint.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pint

#: Standard gravity, mm/s^2 per g: accelerometers read g, ISO 20816 judges velocity in mm/s (the health
#: features integrate with it, the simulator turns a healthy velocity into g with it).
G_MM_S2 = 9806.65

_EXTRA_DEFINITIONS = (
    # Yarn count systems are inverse linear densities; keep them dimensionless labels here, the
    # conversions between them live in spinline.sim.physics (tex = 590.5 / Ne).
    "Ne = [] ",
    "Nm = [] ",
    "tex = gram / kilometer",
    "ends = [] ",
    "spindle = [] ",
    "event = [] ",
    "kgce = [] ",
)

#: Unit strings a site uses most (the examples, the simulated mills, the edge's derived points), each
#: one pint parses: checked without loading pint. Anything else is checked by pint.
COMMON_UNITS: frozenset[str] = frozenset({
    "dimensionless", "percent", "event", "spindle", "spindle * hour", "Ne", "Nm", "tex", "ktex", "ends",
    "kW", "W", "MW", "kWh", "Wh", "MWh", "kVA", "V", "kV", "A", "Hz",
    "s", "ms", "min", "hour", "day",
    "rpm", "1/min", "1/m", "m/min", "m/s", "mm/s", "g", "m/s**2", "mm", "um", "m", "km",
    "degC", "K", "bar", "mbar", "Pa", "kPa", "MPa", "psi",
    "kg", "kg/h", "m**3", "m**3/h", "m**3/min", "l/min", "l", "byte", "kgce",
})


@lru_cache(maxsize=1)
def registry() -> pint.UnitRegistry:  # type: ignore[type-arg]
    """The process-wide unit registry (pint registries are expensive to build)."""
    import pint

    ureg: pint.UnitRegistry = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)  # type: ignore[type-arg]
    for definition in _EXTRA_DEFINITIONS:
        name = definition.split("=")[0].strip()
        if name not in ureg:
            ureg.define(definition)
    return ureg


def parse_unit(text: str) -> pint.Unit:
    """Parse a unit string; raise ``ValueError`` with pint's reason when it is not a unit."""
    import pint

    ureg = registry()
    try:
        return ureg.Unit(text)
    except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError, AttributeError,
            TypeError, ValueError, AssertionError, SyntaxError) as exc:
        raise ValueError(f"unknown unit {text!r} ({exc})") from None


def check_unit(text: str) -> None:
    """Raise ``ValueError`` (pint's reason) unless ``text`` is a unit; the common ones without pint."""
    if text not in COMMON_UNITS:
        parse_unit(text)


def conversion_factor(src: str, dst: str) -> float:
    """Multiplier taking a value in ``src`` to ``dst`` (multiplicative units only)."""
    import pint

    ureg = registry()
    try:
        return float(ureg.Quantity(1.0, parse_unit(src)).to(parse_unit(dst)).magnitude)
    except pint.errors.DimensionalityError as exc:
        raise ValueError(f"cannot convert {src!r} to {dst!r}: {exc}") from None


def is_compatible(src: str, dst: str) -> bool:
    """True when a value in ``src`` can be expressed in ``dst`` (e.g. Wh and kWh)."""
    try:
        return bool(parse_unit(src).dimensionality == parse_unit(dst).dimensionality)
    except ValueError:
        return False
