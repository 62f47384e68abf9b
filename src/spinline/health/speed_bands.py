"""Speed bands: each asset's centre and scale per band of operating speed, not one straight line.

Why: a single log-linear speed term, one slope for the whole fleet (``fleet.fit_fleet``), misfits
three things that are ordinary on real machines: vibration grows about with speed squared (curved
on a log scale), at a rate that scales with each machine's own level (the slope differs between
assets), and the noise itself grows with speed (one scale per asset is too wide at low speed and
too narrow at high speed). A machine that runs at a few settings (a mill's counts) then scores its
normal high-speed rows as anomalies and hides real faults at low speed.

What: the line is kept (it still removes the trend *within* a band), and on top of it every asset
gets its own robust centre and scale per band of speed: bands ``BAND_WIDTH`` wide on a log scale
(5 % of speed; across 5 % an amplitude that grows with speed squared moves ~10 %, which the line
absorbs), counted from the slowest normal row. A band with few normal rows of an asset borrows from
that asset's all-speed centre and scale with the weight ``n / (n + n_prior)`` the fleet uses for
short baselines, so a band seen ten times is mostly the asset's overall baseline and one seen
hundreds of times is its own. Rows at a speed no normal row of the asset had, or with no speed,
use the asset's all-speed baseline. Bands are used only when the normal rows span at least two
bands; with one speed the model is exactly the line-only model it was before.

The band width is fixed from the physics above, not from any result; the decision to band at all
was taken after the simulated fleet with three speed regimes lost to an IsolationForest with the
line-only model (docs/health-validation.md, section 0).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

#: Width of a speed band on the natural-log scale: 5 % of speed.
BAND_WIDTH = math.log(1.05)


def band_origin(log_speed: F64) -> float | None:
    """Lower edge of the first band (the slowest finite normal speed), or ``None`` when the normal
    rows do not span two bands (nothing to band: the line-only model is kept)."""
    s = log_speed[np.isfinite(log_speed)]
    if s.size == 0:
        return None
    origin = float(s.min())
    return origin if np.unique(band_index(s, origin)).size >= 2 else None


def band_index(log_speed: F64, origin: float | None) -> np.ndarray:
    """Band of each row (``-1``: no finite speed, or no banding)."""
    if origin is None:
        return np.full(log_speed.shape, -1, dtype=np.int64)
    ok = np.isfinite(log_speed)
    out = np.full(log_speed.shape, -1, dtype=np.int64)
    out[ok] = np.floor((log_speed[ok] - origin) / BAND_WIDTH + 1e-9).astype(np.int64)
    return np.where(out < -1, -1, out)


def fit_bands(resid: F64, bands: np.ndarray, centre: F64, scale: F64, floor: F64, n_prior: int,
              ) -> dict[int, tuple[F64, F64]]:
    """Per band: (centre, scale) of one asset's normal residuals, shrunk toward the asset's all-speed ones."""
    out: dict[int, tuple[F64, F64]] = {}
    for b in np.unique(bands[bands >= 0]).tolist():
        r = resid[bands == b]
        n = r.shape[0]
        if n < 2:
            continue
        med = np.nan_to_num(np.nanmedian(r, axis=0), nan=0.0)
        mad = 1.4826 * np.nanmedian(np.abs(r - med), axis=0)
        own = np.nan_to_num(np.maximum(mad, 0.1 * np.nanstd(r, axis=0)), nan=0.0)
        w = n / (n + n_prior)
        c = w * med + (1.0 - w) * centre
        sc = np.exp(w * np.log(np.maximum(own, 1e-300)) + (1.0 - w) * np.log(np.maximum(scale, 1e-300)))
        out[int(b)] = (c, np.maximum.reduce([sc, floor, 1e-9 * np.maximum(np.abs(c), 1.0)]))
    return out


def standardise(resid: F64, bands: np.ndarray, centre: F64, scale: F64,
                by_band: dict[int, tuple[F64, F64]]) -> F64:
    """Robust z of residual rows: by their band's centre and scale where the asset has one, else its own."""
    z = (resid - centre) / scale
    for b, (c, sc) in by_band.items():
        m = bands == b
        if m.any():
            z[m] = (resid[m] - c) / sc
    return np.where(np.isfinite(z), z, 0.0)
