"""Yarn count arithmetic shared by the simulator, the KPIs and carbon (domain.md 1.3).

One place for the constant so the simulated mill and the KPIs computed from it cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: tex = NE_TEX / Ne: 1 Ne is 840 yards of yarn per pound, tex is grams per 1000 m.
NE_TEX = 590.5


def tex_from_ne(ne: Any) -> Any:
    """Linear density in tex of an English count; scalars or arrays. A count must be positive."""
    arr = np.asarray(ne, dtype=float)
    if np.any(arr <= 0):
        raise ValueError(f"count must be positive, got Ne {ne}")
    out = NE_TEX / arr
    return float(out) if out.ndim == 0 else out


def ne_from_tex(tex: Any) -> Any:
    """English count of a linear density in tex (the same relation, inverted)."""
    return tex_from_ne(tex)
