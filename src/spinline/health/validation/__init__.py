"""Loaders and scoring protocols for public real-machine data sets (../shared/data).

The data folder comes from ``$SPINLINE_DATA`` and defaults to ``<repo>/../shared/data``; a missing
folder raises ``DataMissing`` with the path, never a silent pass.
"""

from __future__ import annotations

import os
from pathlib import Path


class DataMissing(FileNotFoundError):
    """The shared real-data folder (or a file in it) is not where it should be."""


def data_dir() -> Path:
    env = os.environ.get("SPINLINE_DATA")
    p = Path(env) if env else Path(__file__).resolve().parents[4].parent / "shared" / "data"
    if not p.is_dir():
        raise DataMissing(f"real-data folder {p} is missing: set SPINLINE_DATA to ../shared/data")
    return p
