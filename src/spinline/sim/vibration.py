"""Vibration waveforms of rotating machines, with progressive mechanical faults.

What each fault looks like (the classic signatures a condition-monitoring engineer reads):

- bearing outer race: an impact each time a ball rolls over the defect, at BPFO, each ringing a
  structural resonance (default 3.6 kHz); the load zone is fixed, so the impacts are of equal size;
- inner race: impacts at BPFI whose size is modulated at shaft speed (the defect turns through the
  load zone);
- ball (rolling element): impacts at 2 x BSF (the defect strikes both races), modulated at the cage
  frequency FTF;
- imbalance: 1x shaft speed; misalignment: 2x (and some 1x, 3x); looseness: many harmonics and
  half-harmonics; belt slip: the shaft turns slower (the caller lowers ``shaft_rpm``) plus a
  sub-synchronous belt component.

Amplitudes (g) grow linearly with the fault level (severity x progress). The envelope spectrum of
an outer-race snapshot therefore peaks at BPFO and its harmonics, which is what the tests check.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

from spinline.core.site import Bearing
from spinline.core.units import G_MM_S2
from spinline.sim.physics import bearing_frequencies

RESONANCE_HZ = 3600.0
#: A healthy machine's running-speed vibration, as velocity peak in mm/s at 1x, 2x and 3x: the same
#: velocity whatever the shaft speed (velocity is what ISO 20816 judges), about 1 mm/s RMS in all, in
#: zone A of classes II-IV and low in zone B of class I. Fixed in g instead (0.05 g at 1x), a slow shaft
#: vibrated in zone C (a 980 rpm fan read 3.5 mm/s) and every healthy asset of the demo read "watch".
HEALTHY_MM_S = {"1x": 1.3, "2x": 0.5, "3x": 0.25}
#: Broadband noise of a healthy machine and its sensor, g RMS.
HEALTHY_NOISE_G = 0.02


def healthy_g(harmonic: int, shaft_hz: float) -> float:
    """Acceleration amplitude (g) of a healthy machine's ``harmonic`` x running speed."""
    return HEALTHY_MM_S[f"{harmonic}x"] * 2 * np.pi * harmonic * shaft_hz / G_MM_S2


def _impacts(n: int, fs: float, rate_hz: float, rng: np.random.Generator,
             jitter: float = 0.01) -> npt.NDArray[np.float64]:
    """Unit impulses at ``rate_hz`` with slight random slip between impacts (real bearings slip 1-2 %)."""
    x = np.zeros(n)
    if rate_hz <= 0:
        return x
    period = fs / rate_hz
    k = int(n / period) + 2
    times = np.cumsum(period * (1.0 + jitter * rng.standard_normal(k))) - period * rng.uniform(0, 1)
    idx = np.round(times).astype(np.int64)
    idx = idx[(idx >= 0) & (idx < n)]
    x[idx] = 1.0
    return x


def _ring(x: npt.NDArray[np.float64], fs: float, f_res: float, decay_s: float = 0.0008) -> npt.NDArray[np.float64]:
    """Pass impulses through a damped resonator: each becomes a decaying burst at ``f_res``."""
    r = np.exp(-1.0 / (decay_s * fs))
    w = 2 * np.pi * f_res / fs
    return np.asarray(lfilter([np.sin(w)], [1.0, -2 * r * np.cos(w), r * r], x))


def synthesize(fs_hz: float, duration_s: float, shaft_rpm: float, bearing: Bearing | None,
               levels: Mapping[str, float], rng: np.random.Generator, resonance_hz: float = RESONANCE_HZ,
               ) -> npt.NDArray[np.float32]:
    """One acceleration waveform in g (float32).

    ``levels`` maps fault type names (``bearing_outer``, ``imbalance`` ...) to severity x progress;
    a stopped machine (``shaft_rpm`` 0) gives sensor noise only.
    """
    n = max(1, int(round(fs_hz * duration_s)))
    t = np.arange(n) / fs_hz
    y = HEALTHY_NOISE_G * rng.standard_normal(n)
    fr = shaft_rpm / 60.0
    if fr <= 0:
        return y.astype(np.float32)
    lv = {k: max(0.0, float(v)) for k, v in levels.items()}
    ph0 = rng.uniform(0, 2 * np.pi, 12)
    a1 = healthy_g(1, fr) + 0.3 * lv.get("imbalance", 0.0) + 0.08 * lv.get("misalignment", 0.0)
    a2 = healthy_g(2, fr) + 0.25 * lv.get("misalignment", 0.0)
    a3 = healthy_g(3, fr) + 0.05 * lv.get("misalignment", 0.0)
    for k, a in ((1, a1), (2, a2), (3, a3)):
        y += a * np.sin(2 * np.pi * k * fr * t + ph0[k])
    loose = lv.get("looseness", 0.0)
    if loose > 0:
        for k in range(1, 11):
            y += 0.05 * loose * np.sin(2 * np.pi * k * fr * t + ph0[k % 12])
            y += 0.025 * loose * np.sin(2 * np.pi * (k - 0.5) * fr * t + ph0[(k + 5) % 12])
    slip = lv.get("belt_slip", 0.0)
    if slip > 0:
        y += 0.1 * slip * np.sin(2 * np.pi * 0.4 * fr * t + ph0[4])
    if bearing is not None:
        f = bearing_frequencies(bearing.n_balls, bearing.ball_diameter_mm, bearing.pitch_diameter_mm,
                                bearing.contact_angle_deg, shaft_rpm)
        hits = np.zeros(n)
        outer = lv.get("bearing_outer", 0.0)
        if outer > 0:
            hits += 0.6 * outer * _impacts(n, fs_hz, float(f["bpfo"]), rng)
        inner = lv.get("bearing_inner", 0.0)
        if inner > 0:
            mod = 0.5 * (1.0 + np.cos(2 * np.pi * fr * t + ph0[5]))
            hits += 0.8 * inner * _impacts(n, fs_hz, float(f["bpfi"]), rng) * mod
        ball = lv.get("bearing_ball", 0.0)
        if ball > 0:
            mod = 0.5 * (1.0 + np.cos(2 * np.pi * float(f["ftf"]) * t + ph0[6]))
            hits += 0.6 * ball * _impacts(n, fs_hz, 2.0 * float(f["bsf"]), rng) * mod
        if hits.any():
            y += _ring(hits, fs_hz, min(resonance_hz, 0.4 * fs_hz))
    return y.astype(np.float32)
