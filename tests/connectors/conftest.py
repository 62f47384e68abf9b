from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _load_peers():  # the helper module, loaded by path (tests are not a package)
    name = "spinline_test_peers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "peers.py")
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


peers = _load_peers()
