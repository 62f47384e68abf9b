"""A second opinion from one raw waveform: the bearing diagnosis with the envelope band searched.

The edge diagnoses from features of one fixed envelope band (``features.default_envelope_band``: fs/8 to
3fs/8, where the usual accelerometer-mount resonances sit). A bearing defect only shows in the envelope
spectrum when the band holds the structural resonance its impacts ring; a machine whose resonance lies
elsewhere gives the edge a weak or no line, and an uncertain diagnosis. With the raw waveform of such an
alarm (an ``uncertain`` snapshot) the cloud tries several bands (``envelope_bands``: overlapping octaves
from 500 Hz to 0.45 fs, and the edge's own) with more harmonics (5, the edge uses 3), keeps the band whose
strongest defect line (BPFO, BPFI, 2xBSF) stands highest over its background, and diagnoses its features
with the same rules as the edge (``diagnosis.diagnose``), from the bearing geometry of the site and the
shaft speed measured with the snapshot. No FFT is written here: every spectrum is ``features.featurize``'s.

What it does not do: judge shaft faults (imbalance, misalignment, looseness, belt). Those need the asset's
healthy baseline, which the edge has and the cloud does not; without it ``diagnose`` judges bearing lines
only, so such a waveform comes back ``unknown``. The frequency resolution is the snapshot's (1/T: 1 Hz for
a 1 s snapshot), the same as the edge's features of that waveform.

Checked on simulated outer-race waveforms (``sim.vibration.synthesize``) with the resonance at 1.2, 1.8
and 3.6 kHz (25.6 kHz, 1480 rpm, SKF 6316): healthy ones stay below the line threshold in every band
(strongest 2.3-2.6x against 4x), faulty ones are ``bearing_outer`` at confidence >= 0.99
(tests/health/test_raw_diagnosis.py). Eight ``featurize`` calls a snapshot at 25.6 kHz: tens of
milliseconds, for the rare uncertain alarm (not benchmarked).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from spinline.core.site import Bearing

from .diagnosis import Diagnosis, diagnose
from .features import bearing_frequencies, default_envelope_band, featurize

#: Envelope lines the band search compares (the bearing defects ``diagnose`` judges).
LINES = ("env_bpfo", "env_bpfi", "env_bsf")
#: Harmonics each defect line is judged on (the edge's features use 3).
HARMONICS = 5


@dataclass(frozen=True, slots=True)
class RawDiagnosis:
    diagnosis: Diagnosis
    #: The envelope band (Hz) whose features gave it.
    band: tuple[float, float]
    #: That band's features (``featurize(..., extended=True)``) of the waveform.
    features: dict[str, float] = field(default_factory=dict)


def envelope_bands(fs: float, lowest: float = 500.0) -> list[tuple[float, float]]:
    """The edge's band, then octaves and octaves shifted by half an octave from ``lowest`` to 0.45 fs."""
    top = 0.45 * fs
    out = [default_envelope_band(fs)]
    lo = lowest
    while 2 * lo <= top:
        out.append((lo, 2 * lo))
        if 3 * lo <= top:
            out.append((1.5 * lo, 3 * lo))
        lo *= 2
    return out


def diagnose_raw(x: ArrayLike, fs: float, shaft_hz: float, bearing: Bearing | None, *,
                 machine_class: str = "I", bands: list[tuple[float, float]] | None = None) -> RawDiagnosis:
    """The diagnosis of one channel's raw waveform ``x`` (g) at the band where the bearing lines stand out.

    Without a bearing there are no defect lines to look for: ``unknown`` from the default band."""
    a = np.asarray(x, dtype=np.float64)[None, :]
    defect = {k: float(v) for k, v in bearing_frequencies(bearing, shaft_hz).items()} if bearing else {}
    best: tuple[float, tuple[float, float], dict[str, float]] | None = None
    for band in (bands or envelope_bands(fs)) if bearing is not None else [default_envelope_band(fs)]:
        f = {k: float(v[0]) for k, v in featurize(a, fs, shaft_hz, bearing, machine_class=machine_class,
                                                   envelope_band=band, harmonics=HARMONICS,
                                                   extended=True).items()}
        strength = max((v for k in LINES if np.isfinite(v := f.get(k, np.nan))), default=0.0)
        if best is None or strength > best[0]:
            best = (strength, band, f)
    assert best is not None
    _, band, feats = best
    return RawDiagnosis(diagnose(feats, None, defect_hz=defect, shaft_hz=shaft_hz), band, feats)
