"""Synthetic vibration snapshots with known faults, for tests, docs and the bench.

Not the mill simulator (``spinline.sim``): a minimal, seeded signal model of one bearing housing
so the health pipeline can be checked against faults whose type and severity are known exactly.

* healthy: 1x and 2x shaft components, broadband noise, a structural resonance excited by noise;
* bearing outer / inner / ball: impacts at BPFO / BPFI / 2xBSF ringing the resonance (inner and
  ball impacts amplitude-modulated at shaft speed / cage speed, as they rotate in and out of the
  load zone);
* imbalance: 1x grows; misalignment: 2x (and some 1x) grows; looseness: 3x, 4x harmonics and 0.5x.

``severity`` 0..1 scales the fault from absent to failure (shaft faults reach ISO zone C on a class-I
machine; bearing faults show in the envelope long before they move the velocity RMS, as real ones do).
Fault components keep a fixed phase to the shaft, as a real unbalance mass does.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from spinline.core.site import Bearing
from spinline.health.features import bearing_frequencies

FAULTS: tuple[str, ...] = ("bearing_outer", "bearing_inner", "bearing_ball", "imbalance", "misalignment",
                           "looseness")


def snapshot(*, fs: float = 25600.0, n: int = 25600, shaft_hz: float = 24.7, bearing: Bearing,
             fault: str | None = None, severity: float = 0.0, seed: int = 0) -> NDArray[np.float64]:
    """One snapshot (n samples, g) of a housing with an optional fault at ``severity`` (0..1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    ph = rng.uniform(0, 2 * np.pi, 6)
    w = 2 * np.pi * shaft_hz
    # Healthy: ~0.5 mm/s at 1x on a 25 Hz shaft is 0.5 * 2 pi 25 / 9806 = 0.008 g.
    x = 0.008 * np.sin(w * t + ph[0]) + 0.003 * np.sin(2 * w * t + ph[1]) + 0.02 * rng.standard_normal(n)
    if fault is None or severity <= 0:
        return x
    s = float(np.clip(severity, 0.0, 1.5))
    if fault.startswith("bearing_"):
        fr = bearing_frequencies(bearing, shaft_hz)
        rate = {"bearing_outer": float(fr["bpfo"]), "bearing_inner": float(fr["bpfi"]),
                "bearing_ball": 2 * float(fr["bsf"])}[fault]
        period = fs / rate
        times = np.arange(rng.uniform(0, period), n - 1, period)
        times = times + rng.normal(0, 0.005 * period, times.size)  # slip jitter
        amp = np.ones(times.size)
        if fault == "bearing_inner":
            amp = 0.6 + 0.4 * np.cos(w * times / fs)
        elif fault == "bearing_ball":
            amp = 0.6 + 0.4 * np.cos(2 * np.pi * float(fr["ftf"]) * times / fs)
        imp = np.zeros(n)
        np.add.at(imp, np.clip(times.astype(int), 0, n - 1), amp)
        k = np.arange(256) / fs
        ring = np.exp(-k * 900.0) * np.sin(2 * np.pi * 5200.0 * k)
        x = x + 0.6 * s * np.convolve(imp, ring)[:n]
        # spalls grow: the late stage adds broadband energy as well
        x = x + 0.05 * s**2 * rng.standard_normal(n)
    elif fault == "imbalance":
        x = x + 0.06 * s * np.sin(w * t + ph[0])
    elif fault == "misalignment":
        x = x + 0.10 * s * np.sin(2 * w * t + ph[1]) + 0.02 * s * np.sin(w * t + ph[0])
    elif fault == "looseness":
        x = x + s * (0.05 * np.sin(3 * w * t + ph[4]) + 0.04 * np.sin(4 * w * t + ph[5])
                     + 0.02 * np.sin(0.5 * w * t + ph[2]))
    else:
        raise ValueError(f"unknown fault {fault!r} (have {', '.join(FAULTS)})")
    return x
