"""Injected bearing faults raise the envelope spectrum at their physical defect frequency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.signal import butter, hilbert, sosfiltfilt

from spinline.core.site import Fault, FaultType, load_site
from spinline.sim.mill import MillSim
from spinline.sim.physics import bearing_frequencies


def envelope_spectrum(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    sos = butter(4, [2000.0, 5000.0], btype="bandpass", fs=fs, output="sos")
    env = np.abs(hilbert(sosfiltfilt(sos, x.astype(float))))
    env -= env.mean()
    spec = np.abs(np.fft.rfft(env * np.hanning(len(env))))
    return np.fft.rfftfreq(len(env), 1.0 / fs), spec


def peak_near(freqs: np.ndarray, spec: np.ndarray, f0: float, tol: float = 2.0) -> float:
    band = (freqs > f0 - tol) & (freqs < f0 + tol)
    return float(spec[band].max())


def snapshot(mill_yaml: Path, fault: FaultType | None, t_s: float = 7200.0) -> tuple[np.ndarray, float, float]:
    site = load_site(mill_yaml)
    faults = [Fault(machine="rf01", type=fault, start_s=0.0, ramp_s=3600.0, severity=1.0)] if fault else []
    sim = MillSim(site, "mill-a", faults=faults)
    sim.advance(int(t_s / 60), 60.0)
    while sim.value("rf01", "state") != 0:    # wait for the frame to run (not doffing or stopped)
        sim.step(60.0)
    samples, fs, rpm = sim.vibration_snapshot("rf01", "main_motor")
    assert samples.dtype == np.float32 and len(samples) == int(fs) and fs == 25600.0
    assert rpm > 1000
    return samples, fs, rpm


@pytest.mark.parametrize(("fault", "key"), [(FaultType.BEARING_OUTER, "bpfo"), (FaultType.BEARING_INNER, "bpfi"),
                                            (FaultType.BEARING_BALL, "bsf")])
def test_bearing_fault_peaks_at_defect_frequency(mill_yaml: Path, fault: FaultType, key: str) -> None:
    x, fs, rpm = snapshot(mill_yaml, fault)
    f = bearing_frequencies(8, 34.0, 125.0, 0.0, rpm)
    target = float(f[key]) * (2.0 if key == "bsf" else 1.0)
    freqs, spec = envelope_spectrum(x, fs)
    others = [float(v) * (2.0 if k == "bsf" else 1.0) for k, v in f.items() if k not in (key, "ftf")]
    at = peak_near(freqs, spec, target)
    floor = np.median(spec[(freqs > 20) & (freqs < 500)])
    assert at > 8 * floor
    for o in others:
        if abs(o - target) > 5 and all(abs(o - h * target) > 5 for h in (2, 3)):
            assert at > 2 * peak_near(freqs, spec, o), (fault, o)


def test_healthy_and_growing_fault(mill_yaml: Path) -> None:
    healthy, fs, rpm = snapshot(mill_yaml, None)
    bpfo = float(bearing_frequencies(8, 34.0, 125.0, 0.0, rpm)["bpfo"])
    freqs, spec_h = envelope_spectrum(healthy, fs)
    floor = np.median(spec_h[(freqs > 20) & (freqs < 500)])
    assert peak_near(freqs, spec_h, bpfo) < 5 * floor
    early, _, _ = snapshot(mill_yaml, FaultType.BEARING_OUTER, t_s=1200.0)
    late, _, _ = snapshot(mill_yaml, FaultType.BEARING_OUTER, t_s=7200.0)
    assert np.sqrt(np.mean(late.astype(float) ** 2)) > np.sqrt(np.mean(early.astype(float) ** 2))


def test_imbalance_and_misalignment_harmonics(mill_yaml: Path) -> None:
    site = load_site(mill_yaml)
    res = {}
    for ft in (FaultType.IMBALANCE, FaultType.MISALIGNMENT):
        sim = MillSim(site, "mill-a", faults=[Fault(machine="ac01", type=ft, start_s=0.0)])
        sim.step(60.0)
        x, fs, rpm = sim.vibration_snapshot("ac01", "motor")
        spec = np.abs(np.fft.rfft(x.astype(float))) / len(x) * 2
        freqs = np.fft.rfftfreq(len(x), 1 / fs)
        res[ft] = (peak_near(freqs, spec, rpm / 60), peak_near(freqs, spec, 2 * rpm / 60))
    assert res[FaultType.IMBALANCE][0] > 2 * res[FaultType.IMBALANCE][1]
    assert res[FaultType.MISALIGNMENT][1] > res[FaultType.MISALIGNMENT][0]


@pytest.mark.parametrize("rpm", [980.0, 1480.0, 2970.0])
def test_a_healthy_machine_vibrates_in_zone_a_at_any_shaft_speed(rpm: float) -> None:
    """Healthy running-speed vibration is a velocity, not an acceleration: with 0.05 g at 1x whatever the
    speed, the example mills' 980 rpm supply fans read 3.5 mm/s (ISO 20816 zone C for class II) and every
    healthy asset of the demo read "watch"."""
    from spinline.health.features import featurize
    from spinline.sim.vibration import synthesize

    x = synthesize(25600.0, 1.0, rpm, None, {}, np.random.default_rng(7))
    f = featurize(x, 25600.0, rpm / 60.0, None, machine_class="II")
    velocity = float(np.ravel(f["velocity_rms"])[0])
    assert 0.7 < velocity < 1.12, velocity            # zone A of class II ends at 1.12 mm/s
    assert float(np.ravel(f["iso_zone"])[0]) == 0.0


def test_imbalance_still_lifts_a_slow_shaft_out_of_zone_a() -> None:
    from spinline.health.features import featurize
    from spinline.sim.vibration import synthesize

    x = synthesize(25600.0, 1.0, 980.0, None, {"imbalance": 0.5}, np.random.default_rng(7))
    f = featurize(x, 25600.0, 980.0 / 60.0, None, machine_class="II")
    assert float(np.ravel(f["velocity_rms"])[0]) > 2.8    # past B/C: the fault shows as it did before
