"""Loads ``helpers.py`` and ``services.py`` (the e2e tests' shared pieces) by path: tests are not a package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _load(name: str, file: str) -> ModuleType:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / file)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


helpers = _load("spinline_e2e_helpers", "helpers.py")
services = _load("spinline_e2e_services", "services.py")
