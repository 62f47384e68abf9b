"""The cloud's second opinion on a raw waveform (``health.raw_diagnosis``): the envelope band is searched, so a
bearing fault ringing a resonance outside the edge's fixed band is still found, and healthy waveforms are not
called faulty in any band. Waveforms from the simulator (``sim.vibration.synthesize``), rf01's motor bearing
(SKF 6316, 8 balls) at 1480 rpm, 25.6 kHz."""

from __future__ import annotations

import numpy as np
import pytest

from spinline.core.site import Bearing
from spinline.health.diagnosis import diagnose
from spinline.health.features import bearing_frequencies, default_envelope_band, featurize
from spinline.health.raw_diagnosis import LINES, diagnose_raw, envelope_bands
from spinline.sim.vibration import synthesize

BEARING = Bearing(name="motor_de", n_balls=8, ball_diameter_mm=34.0, pitch_diameter_mm=125.0)
FS, SHAFT = 25600.0, 1480.0 / 60


def _wave(levels: dict[str, float], resonance_hz: float, seed: int) -> np.ndarray:
    return synthesize(FS, 1.0, SHAFT * 60, BEARING, levels, np.random.default_rng(seed), resonance_hz=resonance_hz)


def test_bands_cover_the_spectrum_and_start_with_the_edges() -> None:
    bands = envelope_bands(FS)
    assert bands[0] == default_envelope_band(FS)
    assert min(lo for lo, _ in bands) == 500.0 and max(hi for _, hi in bands) <= 0.45 * FS
    assert all(0 < lo < hi for lo, hi in bands)


@pytest.mark.parametrize("seed", range(4))
def test_healthy_waveforms_stay_unknown_in_every_band(seed: int) -> None:
    for res in (1200.0, 3600.0):
        got = diagnose_raw(_wave({}, res, seed), FS, SHAFT, BEARING)
        assert got.diagnosis.fault == "unknown", (res, got.band, got.features)
        assert max(got.features[k] for k in LINES) < 4.0


@pytest.mark.parametrize("resonance_hz", [1200.0, 1800.0, 3600.0])
def test_an_outer_race_fault_is_found_whatever_its_resonance(resonance_hz: float) -> None:
    x = _wave({"bearing_outer": 0.6}, resonance_hz, 11)
    got = diagnose_raw(x, FS, SHAFT, BEARING)
    assert got.diagnosis.fault == "bearing_outer" and got.diagnosis.confidence >= 0.9, got
    assert got.band[0] <= resonance_hz <= got.band[1]
    bpfo = float(bearing_frequencies(BEARING, SHAFT)["bpfo"])
    assert any(e.frequency_hz == pytest.approx(bpfo) for e in got.diagnosis.evidence)


def test_the_edges_fixed_band_misses_what_the_search_finds() -> None:
    """The reason the cloud is asked: at a 1.2 kHz resonance the edge's band shows no clear BPFO line."""
    x = _wave({"bearing_outer": 0.6}, 1200.0, 11)
    f = {k: float(v[0]) for k, v in featurize(x[None, :], FS, SHAFT, BEARING, extended=True).items()}
    assert diagnose(f, None).fault == "unknown"
    assert diagnose_raw(x, FS, SHAFT, BEARING).diagnosis.fault == "bearing_outer"


def test_inner_race_and_ball_faults_and_no_bearing() -> None:
    assert diagnose_raw(_wave({"bearing_inner": 1.0}, 3600.0, 2), FS, SHAFT, BEARING).diagnosis.fault \
        == "bearing_inner"
    assert diagnose_raw(_wave({"bearing_ball": 1.0}, 3600.0, 2), FS, SHAFT, BEARING).diagnosis.fault \
        == "bearing_ball"
    # shaft faults need the asset's baseline, which the cloud does not have: unknown, not a guess
    assert diagnose_raw(_wave({"imbalance": 1.0}, 3600.0, 2), FS, SHAFT, BEARING).diagnosis.fault == "unknown"
    got = diagnose_raw(_wave({"bearing_outer": 1.0}, 3600.0, 2), FS, SHAFT, None)
    assert got.diagnosis.fault == "unknown" and got.band == default_envelope_band(FS)
