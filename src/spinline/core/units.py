"""Units of measure, checked with pint.

One registry for the process, extended with the units a spinning mill talks in, so that a site file
saying ``unit: kWh`` or ``unit: rpm`` is checked, and so energy can be converted to kWh whatever the
meter reports (Wh, MWh, kJ ...).
"""

from __future__ import annotations

from functools import lru_cache

import pint

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


@lru_cache(maxsize=1)
def registry() -> pint.UnitRegistry:  # type: ignore[type-arg]
    """The process-wide unit registry (pint registries are expensive to build)."""
    ureg: pint.UnitRegistry = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    for definition in _EXTRA_DEFINITIONS:
        name = definition.split("=")[0].strip()
        if name not in ureg:
            ureg.define(definition)
    return ureg


def parse_unit(text: str) -> pint.Unit:
    """Parse a unit string; raise ``ValueError`` with pint's reason when it is not a unit."""
    ureg = registry()
    try:
        return ureg.Unit(text)
    except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError, AttributeError,
            TypeError, ValueError, AssertionError, SyntaxError) as exc:
        raise ValueError(f"unknown unit {text!r} ({exc})") from None


def conversion_factor(src: str, dst: str) -> float:
    """Multiplier taking a value in ``src`` to ``dst`` (multiplicative units only)."""
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
