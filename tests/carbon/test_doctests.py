"""Run the worked examples in the carbon modules' docstrings (pytest here runs without --doctest-modules)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["factors", "meters", "inventory", "footprint", "insight", "green_factory", "inputs"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    mod = importlib.import_module(f"spinline.carbon.{name}")
    res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0
