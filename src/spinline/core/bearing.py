"""Rolling-element bearing kinematics, shared by the simulator (which injects faults at these
frequencies) and the health features (which look for them), so both use the same formulas.

With r = (d/D) cos(contact angle) and a stationary outer ring::

    FTF = f/2 (1 - r)   BPFO = n/2 f (1 - r)   BPFI = n/2 f (1 + r)   BSF = D/(2d) f (1 - r^2)

Real peaks sit 1-2 % lower through slip; these are the kinematic values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def defect_frequencies(n_balls: int, ball_d_mm: float, pitch_d_mm: float, contact_angle_deg: float,
                       shaft_hz: Any) -> dict[str, F64]:
    """bpfo, bpfi, bsf and ftf in Hz for a shaft speed (scalar or array, same shape back)."""
    f = np.asarray(shaft_hz, dtype=np.float64)
    r = ball_d_mm / pitch_d_mm * np.cos(np.deg2rad(contact_angle_deg))
    return {
        "bpfo": n_balls / 2.0 * f * (1.0 - r),
        "bpfi": n_balls / 2.0 * f * (1.0 + r),
        "bsf": pitch_d_mm / (2.0 * ball_d_mm) * f * (1.0 - r * r),
        "ftf": f / 2.0 * (1.0 - r),
    }
