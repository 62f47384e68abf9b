"""Per-asset baselines of a fleet: speed line, speed bands, robust centre and scale, fleet prior.

Split out of ``fleet.py`` so that they can be fitted on any selection of rows per asset (the fleet
model fits them on each asset's earliest 75 % of normal rows; a cross-fitted calibration, tried and
not kept, fitted them once per fold) and to keep ``fleet.py`` to the choice and the calibration.
The rules themselves are described in ``fleet.py`` (per-asset baselines, fleet prior) and
``speed_bands.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spinline.health import speed_bands as sb

F64 = NDArray[np.float64]

#: Rows of its own an asset needs to weigh as much as the fleet prior on its scale.
N_PRIOR = 20
FLEET = "__fleet__"


def robust_scale(x: F64) -> F64:
    med = np.nanmedian(x, axis=0)
    mad = 1.4826 * np.nanmedian(np.abs(x - med), axis=0)
    std = np.nanstd(x, axis=0)
    return np.maximum(mad, 0.1 * std)  # type: ignore[no-any-return]


@dataclass(slots=True)
class AssetBaseline:
    centre: F64
    scale: F64
    s_ref: float
    n_fit: int
    n_cal: int
    weight: float
    threshold: float
    threshold_from: str
    #: Centre and scale per speed band (``speed_bands.py``); empty without banding.
    bands: dict[int, tuple[F64, F64]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"centre": self.centre.tolist(), "scale": self.scale.tolist(), "s_ref": self.s_ref,
                "n_fit": self.n_fit, "n_cal": self.n_cal, "weight": round(self.weight, 4),
                "threshold": self.threshold, "threshold_from": self.threshold_from,
                "bands": {str(k): [c.tolist(), sc.tolist()] for k, (c, sc) in self.bands.items()}}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> AssetBaseline:
        return AssetBaseline(np.asarray(d["centre"], dtype=np.float64), np.asarray(d["scale"], dtype=np.float64),
                             float(d["s_ref"]), int(d["n_fit"]), int(d["n_cal"]), float(d["weight"]),
                             float(d["threshold"]), str(d["threshold_from"]),
                             {int(k): (np.asarray(v[0], dtype=np.float64), np.asarray(v[1], dtype=np.float64))
                              for k, v in d.get("bands", {}).items()})


@dataclass(slots=True)
class Standardiser:
    """The fleet's speed line and every asset's baseline, fitted on the rows ``idx`` gives per asset."""

    names: list[str]
    slope: F64
    s_ref: dict[str, float]
    origin: float | None
    baselines: dict[str, AssetBaseline]

    @staticmethod
    def fit(x: F64, logs: F64 | None, idx: dict[str, np.ndarray], floor: F64,
            n_cal: dict[str, int] | None = None) -> Standardiser:
        """Speed line (one ridge-shrunk slope for the fleet, per-asset reference speed), speed bands,
        per-asset robust centre and scale with scales shrunk toward the fleet's typical scale."""
        names = [n for n in idx if idx[n].size]
        p = x.shape[1]
        all_rows = np.concatenate([idx[n] for n in names])
        s_ref = {n: (float(np.nanmedian(logs[idx[n]])) if logs is not None and np.isfinite(logs[idx[n]]).any()
                     else 0.0) for n in names}
        slope = np.zeros(p)
        if logs is not None:
            ds_l, xc_l = [], []
            for n in names:
                rows = idx[n]
                ok = np.isfinite(logs[rows])
                ds_l.append(logs[rows][ok] - s_ref[n])
                xc_l.append(x[rows][ok] - np.nanmedian(x[rows][ok], axis=0))
            ds = np.concatenate(ds_l)
            xc = np.nan_to_num(np.concatenate(xc_l))
            if ds.size >= 8:
                slope = (ds @ xc) / (float(ds @ ds) + ds.size * 0.01**2)
        origin = sb.band_origin(logs[all_rows]) if logs is not None else None
        st = Standardiser(names, slope, s_ref, origin, {})
        band_of = st.bands_of(logs, x.shape[0])
        own_scale = {n: robust_scale(st.resid(x, logs, idx[n], n)) for n in names}
        prior = np.exp(np.nanmedian(np.log(np.maximum(np.vstack(list(own_scale.values())), 1e-300)), axis=0))
        cal = n_cal or {}
        for n in names:
            r = st.resid(x, logs, idx[n], n)
            centre = np.nanmedian(r, axis=0)
            w = idx[n].size / (idx[n].size + N_PRIOR) if len(names) > 1 else 1.0
            sc = np.exp(w * np.log(np.maximum(own_scale[n], 1e-300)) + (1 - w) * np.log(prior))
            sc = np.maximum.reduce([sc, floor, 1e-9 * np.maximum(np.abs(centre), 1.0)])
            centre = np.nan_to_num(centre)
            bands = sb.fit_bands(r, band_of[idx[n]], centre, sc, floor, N_PRIOR) if origin is not None else {}
            st.baselines[n] = AssetBaseline(centre, sc, s_ref[n], idx[n].size, cal.get(n, 0), w, math.nan, "", bands)
        # The fleet itself, for assets that turn up only when scoring.
        r_all = np.vstack([st.resid(x, logs, idx[n], n) for n in names])
        c_all = np.nan_to_num(np.nanmedian(r_all, axis=0))
        sc_all = np.maximum.reduce([robust_scale(r_all), floor, 1e-9 * np.maximum(np.abs(c_all), 1.0)])
        b_all = np.concatenate([band_of[idx[n]] for n in names])
        st.baselines[FLEET] = AssetBaseline(
            c_all, sc_all, float(np.median(list(s_ref.values()))), all_rows.size, sum(cal.values()), 0.0, math.nan, "",
            sb.fit_bands(r_all, b_all, c_all, sc_all, floor, N_PRIOR) if origin is not None else {})
        return st

    def bands_of(self, logs: F64 | None, n: int) -> np.ndarray:
        return sb.band_index(logs, self.origin) if logs is not None else np.full(n, -1, dtype=np.int64)

    def resid(self, x: F64, logs: F64 | None, rows: np.ndarray, name: str) -> F64:
        if logs is None:
            return x[rows]
        ref = self.s_ref[name] if name in self.s_ref else self.baselines[FLEET].s_ref
        d = np.where(np.isfinite(logs[rows]), logs[rows] - ref, 0.0)
        return x[rows] - d[:, None] * self.slope[None, :]  # type: ignore[no-any-return]

    def z(self, x: F64, logs: F64 | None, rows_by: dict[str, np.ndarray]) -> tuple[F64, np.ndarray]:
        """Standardised rows of each asset (in ``rows_by`` order) and the asset of each."""
        band_of = self.bands_of(logs, x.shape[0])
        zs, who = [], []
        for n, rows in rows_by.items():
            if not rows.size:
                continue
            bl = self.baselines.get(n, self.baselines[FLEET])
            zs.append(sb.standardise(self.resid(x, logs, rows, n), band_of[rows], bl.centre, bl.scale, bl.bands))
            who += [n] * rows.size
        return (np.vstack(zs) if zs else np.zeros((0, x.shape[1]))), np.asarray(who, dtype=object)
