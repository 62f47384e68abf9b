"""Vibration and process features, vectorised over channels.

Every function takes signals shaped ``(channels, samples)`` (a 1-D signal is treated as one
channel) and returns one value per channel, so the edge featurises all sensors of a gateway with
a handful of FFTs instead of a Python loop per sensor. Everything spectral comes from **one** real
FFT per channel (``featurize`` shares it between velocity RMS and the envelope), which is what makes
the ">= 500 channels of 25.6 kHz in real time on one core" budget reachable.

Conventions (why they are what they are):

* Acceleration is in g. Time features are computed on the signal with its mean removed, because
  an accelerometer's DC offset is a sensor artefact, not vibration.
* Velocity RMS is in mm/s over 10-1000 Hz, integrated in the frequency domain (divide by jω), the
  quantity and band ISO 20816-1 / ISO 10816-1 grade.
* Envelope amplitudes at the bearing defect frequencies are reported as a **peak-to-background
  ratio** (the largest envelope line within a slip tolerance of each harmonic, divided by the
  median envelope level around it), averaged over the first harmonics. A ratio is dimensionless,
  independent of sensor gain and load, and is ~1-2 on a healthy bearing; a clean defect line gives
  5-50. That makes it usable by both the diagnosis rules and the anomaly model.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spinline.core.bearing import defect_frequencies
from spinline.core.site import VIB_FEATURES, Bearing
from spinline.core.units import G_MM_S2 as G_MM_S2  # re-exported: the tests integrate with it too

F64 = NDArray[np.float64]


#: Feature names ``featurize`` emits: ``VIB_FEATURES`` minus the two that come from the models.
FEATURE_NAMES: tuple[str, ...] = tuple(n for n, _ in VIB_FEATURES if n not in ("anomaly_score", "health_index"))

#: Defect-frequency keys, in the order ``bearing_frequencies`` returns them.
DEFECTS: tuple[str, ...] = ("bpfo", "bpfi", "bsf", "ftf")

#: ISO 20816-1:2016 Annex B (= ISO 10816-1:1995 Table B.1) zone boundaries, broadband velocity RMS
#: 10-1000 Hz in mm/s, for the A/B, B/C and C/D boundaries of each machine class:
#: I small machines (<= 15 kW), II medium (15-75 kW, or <= 300 kW on special foundations),
#: III large machines on rigid foundations, IV large machines on soft foundations.
ISO_ZONE_LIMITS: dict[str, tuple[float, float, float]] = {
    "I": (0.71, 1.8, 4.5),
    "II": (1.12, 2.8, 7.1),
    "III": (1.8, 4.5, 11.2),
    "IV": (2.8, 7.1, 18.0),
}
#: Zone codes as emitted in the ``iso_zone`` feature: 0=A (new), 1=B (unrestricted operation),
#: 2=C (restricted, plan maintenance), 3=D (damage likely).
ISO_ZONES: tuple[str, ...] = ("A", "B", "C", "D")

MachineClass = Literal["I", "II", "III", "IV"]


def _as2d(x: ArrayLike) -> F64:
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"signals must be shaped (channels, samples), got {a.shape}")
    return a  # type: ignore[return-value]


def _per_channel(v: ArrayLike | float, n: int, name: str) -> F64:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.size == 1:
        return np.full(n, float(a[0]))
    if a.size != n:
        raise ValueError(f"{name}: need one value or one per channel ({n}), got {a.size}")
    return a


# --- bearing kinematics ------------------------------------------------------------------------

def bearing_frequencies(bearing: Bearing, shaft_hz: float | ArrayLike) -> dict[str, F64]:
    """Defect frequencies (Hz) of a site-file bearing (formulas in ``spinline.core.bearing``).

    ``bpfo`` outer-race pass, ``bpfi`` inner-race pass, ``bsf`` ball spin (a ball defect strikes
    both races once per spin, so its envelope line is usually at 2x bsf), ``ftf`` cage.
    For the CWRU drive-end SKF 6205 (9 balls, d = 7.94 mm, D = 39.04 mm) these are 3.5848, 5.4152,
    2.357 and 0.3983 times shaft speed.
    """
    return defect_frequencies(bearing.n_balls, bearing.ball_diameter_mm, bearing.pitch_diameter_mm,
                              bearing.contact_angle_deg, shaft_hz)


def _defect_matrix(bearing: Bearing | Sequence[Bearing | None] | None, shaft_hz: F64) -> F64:
    """(channels, 4) defect frequencies; NaN rows where a channel has no bearing."""
    c = shaft_hz.size
    out = np.full((c, len(DEFECTS)), np.nan)
    bearings: Sequence[Bearing | None]
    bearings = [bearing] * c if bearing is None or isinstance(bearing, Bearing) else bearing
    if len(bearings) != c:
        raise ValueError(f"bearing: need one or one per channel ({c}), got {len(bearings)}")
    for i, b in enumerate(bearings):
        if b is not None:
            fr = bearing_frequencies(b, shaft_hz[i])
            out[i] = [float(fr[k]) for k in DEFECTS]
    return out


# --- time domain ---------------------------------------------------------------------------------

def time_features(x: ArrayLike) -> dict[str, F64]:
    """RMS, peak, crest factor, kurtosis (Pearson: 3 for Gaussian) and skewness per channel.

    Computed on the mean-removed signal. Kurtosis is the classic early indicator of bearing impacts
    (impulsive signals push it well above 3) before the RMS moves.
    """
    a = _as2d(x)
    xc = a - a.mean(axis=1, keepdims=True)
    x2 = xc * xc
    m2 = x2.mean(axis=1, dtype=np.float64)
    m3 = np.einsum("ij,ij->i", x2, xc, dtype=np.float64) / a.shape[1]
    m4 = np.einsum("ij,ij->i", x2, x2, dtype=np.float64) / a.shape[1]
    rms = np.sqrt(m2)
    peak = np.abs(xc).max(axis=1).astype(np.float64)
    safe = np.where(m2 > 0, m2, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        crest = np.where(rms > 0, peak / np.where(rms > 0, rms, 1.0), 0.0)
        kurt = np.nan_to_num(m4 / (safe * safe), nan=0.0)
        skew = np.nan_to_num(m3 / safe**1.5, nan=0.0)
    return {"rms_g": rms, "peak_g": peak, "crest": crest, "kurtosis": kurt, "skewness": skew}


# --- spectral ------------------------------------------------------------------------------------
# numpy.fft (pocketfft, like scipy.fft; float32 kept since numpy 2.0) rather than scipy.fft: the same
# figures, and an edge with vibration channels does not load scipy (~18 MB resident, issue 12 item 12).

@functools.lru_cache(maxsize=256)
def next_fast_len(target: int) -> int:
    """Smallest n >= target whose prime factors are 2, 3, 5, 7 and 11: a length pocketfft transforms
    fast (scipy.fft.next_fast_len for complex transforms, which numpy does not expose)."""
    if target < 1:
        raise ValueError(f"target must be >= 1, got {target}")
    n = target
    while True:
        m = n
        for p in (2, 3, 5, 7, 11):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _rfft(a: F64) -> NDArray[np.complex128]:
    return np.fft.rfft(a, axis=1)


def _band_power(spec: NDArray[np.complex128], n: int, fs: float, lo: float, hi: float,
                weight: F64 | None = None) -> F64:
    """Mean-square of the part of a signal in [lo, hi) Hz, by Parseval on its rfft."""
    k = np.arange(spec.shape[1])
    f = k * fs / n
    sel = (f >= lo) & (f < hi) & (k > 0)
    if n % 2 == 0:
        sel &= k < n // 2  # the Nyquist bin appears once, not twice; excluding it is harmless
    p = spec[:, sel].real ** 2 + spec[:, sel].imag ** 2
    if weight is not None:
        p = p * weight[sel]
    return 2.0 * p.sum(axis=1) / float(n) ** 2  # type: ignore[no-any-return]


def band_energies(x: ArrayLike, fs: float, bands: Sequence[tuple[float, float]]) -> F64:
    """Mean-square (g^2) of each channel in each band: shape (channels, len(bands)).

    The bands partition the spectrum the way a technician reads it (e.g. 1x-3x shaft, 0.5-2 kHz,
    2-5 kHz resonance band); their sum over a full partition equals RMS^2 (Parseval).
    """
    a = _as2d(x)
    spec = _rfft(a)
    return np.stack([_band_power(spec, a.shape[1], fs, lo, hi) for lo, hi in bands], axis=1)


def _velocity_from_spec(spec: NDArray[np.complex128], n: int, fs: float, lo: float, hi: float) -> F64:
    k = np.arange(spec.shape[1])
    omega = 2.0 * np.pi * k * fs / n
    w = np.zeros_like(omega)
    w[1:] = (G_MM_S2 / omega[1:]) ** 2
    return np.sqrt(_band_power(spec, n, fs, lo, hi, weight=w))


def velocity_rms(x_g: ArrayLike, fs: float, lo: float = 10.0, hi: float = 1000.0) -> F64:
    """Velocity RMS in mm/s over [lo, hi) Hz from acceleration in g (frequency-domain integration).

    Integrating in the frequency domain (dividing each line by ω) avoids the drift a time-domain
    integrator accumulates, and the band limits are exact. A 1 g sine at 100 Hz gives
    9806.65 / (2π·100) / √2 = 11.04 mm/s.
    """
    a = _as2d(x_g)
    return _velocity_from_spec(_rfft(a), a.shape[1], fs, lo, hi)


def iso_zone(velocity_mm_s: ArrayLike, machine_class: MachineClass | str = "I") -> NDArray[np.int64]:
    """ISO 20816-1 / 10816-1 severity zone code (0=A, 1=B, 2=C, 3=D) per value, for a machine class."""
    if machine_class not in ISO_ZONE_LIMITS:
        raise ValueError(f"machine class must be one of I, II, III, IV, got {machine_class!r}")
    limits = np.asarray(ISO_ZONE_LIMITS[machine_class])
    v = np.asarray(velocity_mm_s, dtype=np.float64)
    return np.searchsorted(limits, v, side="right").astype(np.int64)


def default_envelope_band(fs: float) -> tuple[float, float]:
    """fs/8 .. 3fs/8: above the shaft harmonics, inside the accelerometer's useful range.

    1.5-4.5 kHz at 12 kHz (where the CWRU structural resonances sit), 3.2-9.6 kHz at 25.6 kHz.
    """
    return fs / 8.0, 3.0 * fs / 8.0


def _envelope_from_spec(spec: NDArray[np.complex128], n: int, fs: float,
                        band: tuple[float, float]) -> tuple[F64, float]:
    """Envelope signal (decimated) from the rfft of the raw signal.

    Band-pass and Hilbert transform in one step: keep only the rfft lines in the band (the analytic
    signal of the band-passed signal has exactly those lines, doubled), shift them to baseband and
    invert with a short complex FFT of m >= band-width lines. The magnitude of an analytic signal is
    unchanged by a frequency shift, so this gives the envelope sampled at fs*m/n: the same
    resolution, without an n-point inverse FFT. Returns (envelope (channels, m), its sample rate).
    """
    lo, hi = band
    if not 0 <= lo < hi <= fs / 2:
        raise ValueError(f"envelope band {band} must lie inside 0..fs/2 = {fs / 2}")
    k0 = max(1, int(np.ceil(lo * n / fs)))
    k1 = min(spec.shape[1], int(np.floor(hi * n / fs)) + 1)
    width = k1 - k0
    m = next_fast_len(2 * width)  # 2x: |z| has twice the bandwidth of z; no aliasing below fs*m/(2n)
    z = np.zeros((spec.shape[0], m), dtype=np.complex128 if spec.dtype == np.complex128 else np.complex64)
    z[:, :width] = spec[:, k0:k1]
    env = np.abs(np.fft.ifft(z, axis=1)) * (2.0 * m / n)
    return env, fs * m / n


def envelope_spectrum(x: ArrayLike, fs: float, band: tuple[float, float] | None = None) -> tuple[F64, F64]:
    """Envelope spectrum: (frequencies in Hz, amplitude per channel shaped (channels, lines)).

    Band-pass around a resonance, Hilbert envelope, mean removed, one-sided amplitude spectrum. A
    localized bearing defect modulates the resonance at its defect frequency, so lines appear at
    BPFO / BPFI / 2xBSF / FTF and their harmonics. Scaled so that a carrier in the band modulated
    as A(1 + m cos 2π fm t) shows a line of height A·m at fm.
    """
    a = _as2d(x)
    n = a.shape[1]
    band = band or default_envelope_band(fs)
    env, fs_env = _envelope_from_spec(_rfft(a), n, fs, band)
    return _env_spectrum(env, fs_env)


def _env_spectrum(env: F64, fs_env: float) -> tuple[F64, F64]:
    m = env.shape[1]
    e = env - env.mean(axis=1, keepdims=True)
    amp = np.abs(np.fft.rfft(e, axis=1)) * (2.0 / m)
    freqs = np.arange(amp.shape[1]) * fs_env / m
    return freqs, amp


def defect_amplitudes(freqs: F64, amp: ArrayLike, defect_hz: ArrayLike, *, harmonics: int = 3,
                      tol: float = 0.02, background_hz: float | None = None) -> F64:
    """Peak-to-background ratio of the envelope spectrum at each defect frequency.

    ``amp`` is (channels, lines); ``defect_hz`` is (channels, k) fundamentals (NaN = not
    applicable). For each harmonic h = 1..``harmonics`` the largest line within ±``tol`` (relative;
    bearings slip 1-2 %) and at least ±1 line of h·f is divided by the median envelope level within
    ±``background_hz`` of it (default 5x the tolerance window); the result is the **median** over
    the harmonics that fall inside the spectrum. The median, not the mean, because harmonics of
    different defects collide (3 x BPFO and 2 x BPFI of a 6205 are 0.7 % apart): one shared line
    must not make an outer-race fault look like an inner-race one too.
    Returns (channels, k); NaN where not applicable.
    """
    a = np.atleast_2d(np.asarray(amp, dtype=np.float64))
    fd = np.atleast_2d(np.asarray(defect_hz, dtype=np.float64))
    c, k = fd.shape
    df = float(freqs[1] - freqs[0]) if freqs.size > 1 else 1.0
    nl = a.shape[1]
    out: F64 = np.full((c, k), np.nan)
    h = np.arange(1, harmonics + 1, dtype=np.float64)
    targets = fd[:, :, None] * h[None, None, :]             # (c, k, H)
    half = np.maximum(1.0, np.ceil(targets * tol / df))      # lines either side
    bhalf = np.maximum(8.0, 5.0 * half) if background_hz is None else np.full_like(half, background_hz / df)
    centre = np.rint(targets / df)
    valid = np.isfinite(targets) & (centre + half < nl - 1) & (centre > half)
    ratios = np.full(targets.shape, np.nan)
    ci, ki, hi = np.nonzero(valid)
    for row, kk, hh in zip(ci, ki, hi, strict=True):  # c*k*H small lookups; the spectra are the heavy part
        ctr, hw, bw = int(centre[row, kk, hh]), int(half[row, kk, hh]), int(bhalf[row, kk, hh])
        peak = a[row, ctr - hw: ctr + hw + 1].max()
        bg = np.median(a[row, max(1, ctr - bw): min(nl, ctr + bw + 1)])
        ratios[row, kk, hh] = peak / bg if bg > 0 else 0.0
    has = np.isfinite(ratios).any(axis=2)
    out[has] = np.nanmedian(ratios[has], axis=1)
    return out


# --- the edge's one call -------------------------------------------------------------------------

def featurize(x: ArrayLike, fs: float, shaft_hz: float | ArrayLike,
              bearing: Bearing | Sequence[Bearing | None] | None = None, *,
              machine_class: MachineClass | str = "I",
              envelope_band: tuple[float, float] | None = None,
              harmonics: int = 3, extended: bool = False) -> dict[str, F64]:
    """All per-channel vibration features of a snapshot batch ``x`` (channels, samples) in g.

    Returns exactly ``FEATURE_NAMES`` (the ``VIB_FEATURES`` the edge publishes, less
    ``anomaly_score`` and ``health_index`` which the models add), each an array of one value per
    channel. ``env_bsf`` is evaluated at 2x the ball-spin frequency and its harmonics (where a ball
    defect shows). With ``extended=True`` it also returns shaft-order velocity amplitudes
    (``order_0.5x``, ``order_1x``, ``order_2x``, ``order_3x``, ``order_sub`` in mm/s peak, the
    evidence for imbalance / misalignment / looseness / belt faults) and the ``hf_ratio`` (share of mean-square above
    the envelope band's lower edge), used by the diagnosis.
    """
    a = _as2d(x)
    c, n = a.shape
    shaft = _per_channel(shaft_hz, c, "shaft_hz")
    out = time_features(a)
    spec = _rfft(a)
    vel = _velocity_from_spec(spec, n, fs, 10.0, min(1000.0, fs / 2))
    out["velocity_rms"] = vel
    out["iso_zone"] = iso_zone(vel, machine_class).astype(np.float64)
    band = envelope_band or default_envelope_band(fs)
    env, fs_env = _envelope_from_spec(spec, n, fs, band)
    freqs, amp = _env_spectrum(env, fs_env)
    fd = _defect_matrix(bearing, shaft)
    fd[:, 2] *= 2.0  # ball defects: 2 x BSF
    ratios = defect_amplitudes(freqs, amp, fd, harmonics=harmonics)
    for j, name in enumerate(DEFECTS):
        out[f"env_{name}"] = ratios[:, j]
    if extended:
        out.update(_order_features(spec, n, fs, shaft))
        total = np.maximum(out["rms_g"] ** 2, 1e-30)
        out["hf_ratio"] = _band_power(spec, n, fs, band[0], fs / 2) / total
    return out


def _order_features(spec: NDArray[np.complex128], n: int, fs: float, shaft: F64) -> dict[str, F64]:
    """Velocity peak amplitude (mm/s) at 0.5x, 1x, 2x, 3x shaft speed (largest line within ±2 %).

    ``order_sub`` is the largest line between 0.2x and 0.45x: the sub-synchronous region where a belt's
    pass frequency sits (a slipping, flapping belt shows there), clear of the 0.5x of looseness.
    """
    df = fs / n
    mag = np.abs(spec) * (2.0 / n)  # g peak per line
    out: dict[str, F64] = {}
    rows = np.arange(spec.shape[0])
    for order, name, rel in ((0.5, "order_0.5x", 0.02), (1.0, "order_1x", 0.02), (2.0, "order_2x", 0.02),
                             (3.0, "order_3x", 0.02), (0.325, "order_sub", 0.125 / 0.325)):
        f = shaft * order
        ctr = np.rint(f / df).astype(int)
        hw = np.maximum(1, np.ceil(rel * f / df)).astype(int)
        vals = np.zeros(spec.shape[0])
        for r in rows:
            lo, hi = max(1, ctr[r] - hw[r]), min(mag.shape[1], ctr[r] + hw[r] + 1)
            if lo < hi:
                j = lo + int(np.argmax(mag[r, lo:hi]))
                vals[r] = mag[r, j] * G_MM_S2 / (2.0 * np.pi * j * df)
        out[name] = vals
    return out


# --- process features ----------------------------------------------------------------------------

def process_features(*, breaks: ArrayLike | None = None, spindles: float | None = None, hours: float | None = None,
                     speed: ArrayLike | None = None, speed_setpoint: ArrayLike | None = None,
                     current_a: ArrayLike | None = None, output_kg_h: ArrayLike | None = None,
                     temp_c: ArrayLike | None = None, ambient_c: ArrayLike | None = None) -> dict[str, F64]:
    """Process-side health features (each returned only when its inputs are given).

    ``ends_down_rate``: breaks per 1,000 spindle-hours (the mill's own KPI; good 15-30, bad > 60).
    ``speed_deviation_pct``: (speed - setpoint) / setpoint x 100 (tape / belt slip shows as -1..-5 %).
    ``current_per_output``: motor current per kg/h of output (bearing and alignment losses raise it).
    ``temp_rise_c``: temperature above ambient (bearing temperature rises before it fails).
    """
    out: dict[str, F64] = {}
    if breaks is not None and spindles and hours:
        out["ends_down_rate"] = np.asarray(breaks, dtype=np.float64) / (spindles * hours) * 1000.0
    if speed is not None and speed_setpoint is not None:
        sp = np.asarray(speed_setpoint, dtype=np.float64)
        out["speed_deviation_pct"] = (np.asarray(speed, dtype=np.float64) - sp) / np.where(sp != 0, sp, np.nan) * 100
    if current_a is not None and output_kg_h is not None:
        o = np.asarray(output_kg_h, dtype=np.float64)
        out["current_per_output"] = np.asarray(current_a, dtype=np.float64) / np.where(o > 0, o, np.nan)
    if temp_c is not None and ambient_c is not None:
        out["temp_rise_c"] = np.asarray(temp_c, dtype=np.float64) - np.asarray(ambient_c, dtype=np.float64)
    return out
