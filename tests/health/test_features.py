"""Every feature against an analytic signal whose answer is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from spinline.core.site import VIB_FEATURES, Bearing
from spinline.health import features as F

FS = 25600.0
N = 25600
T = np.arange(N) / FS
SKF6205 = Bearing(name="de", model="SKF 6205", n_balls=9, ball_diameter_mm=7.94, pitch_diameter_mm=39.04)


def sine(amp: float, f: float, phase: float = 0.0) -> np.ndarray:
    return amp * np.sin(2 * np.pi * f * T + phase)


def test_bearing_frequencies_match_cwru_published_multiples() -> None:
    fr = F.bearing_frequencies(SKF6205, 1.0)
    assert float(fr["bpfi"]) == pytest.approx(5.4152, rel=2e-3)
    assert float(fr["bpfo"]) == pytest.approx(3.5848, rel=2e-3)
    assert float(fr["bsf"]) == pytest.approx(2.357, rel=2e-3)
    assert float(fr["ftf"]) == pytest.approx(0.39828, rel=2e-3)
    # linear in shaft speed, vectorised
    arr = F.bearing_frequencies(SKF6205, np.array([10.0, 30.0]))
    assert arr["bpfo"] == pytest.approx([35.848, 107.544], rel=2e-3)


def test_contact_angle_lowers_outer_and_raises_nothing_else_wrongly() -> None:
    b = Bearing(name="b", n_balls=16, ball_diameter_mm=8.4, pitch_diameter_mm=71.5, contact_angle_deg=15.17)
    fr = F.bearing_frequencies(b, 2000 / 60)
    assert float(fr["bpfo"] + fr["bpfi"]) == pytest.approx(16 * 2000 / 60)  # BPFO + BPFI = n * f


def test_time_features_of_a_sine() -> None:
    x = np.stack([sine(2.0, 100.0), sine(0.5, 37.0) + 3.0])  # second has a DC offset to be removed
    tf = F.time_features(x)
    assert tf["rms_g"] == pytest.approx([2 / np.sqrt(2), 0.5 / np.sqrt(2)], rel=1e-4)
    assert tf["peak_g"] == pytest.approx([2.0, 0.5], rel=1e-3)
    assert tf["crest"] == pytest.approx([np.sqrt(2)] * 2, rel=1e-3)
    assert tf["kurtosis"] == pytest.approx([1.5, 1.5], rel=1e-3)  # sine kurtosis is 3/2
    assert tf["skewness"] == pytest.approx([0.0, 0.0], abs=1e-6)


def test_time_features_gaussian_and_impulses() -> None:
    rng = np.random.default_rng(1)
    g = rng.standard_normal(N)
    imp = g.copy()
    imp[::1000] += 25.0
    tf = F.time_features(np.stack([g, imp, np.zeros(N)]))
    assert tf["kurtosis"][0] == pytest.approx(3.0, abs=0.1)
    assert tf["kurtosis"][1] > 10
    assert tf["skewness"][1] > 1
    assert tf["rms_g"][2] == 0 and tf["crest"][2] == 0 and tf["kurtosis"][2] == 0


def test_band_energies_parseval() -> None:
    x = sine(1.0, 50.0) + sine(2.0, 3000.0)
    e = F.band_energies(x, FS, [(0, 1000), (1000, 5000), (5000, FS / 2)])
    assert e[0] == pytest.approx([0.5, 2.0, 0.0], abs=1e-9)
    assert e.sum() == pytest.approx(F.time_features(x)["rms_g"][0] ** 2, rel=1e-9)


def test_velocity_rms_of_a_sine_and_band_limits() -> None:
    x = np.stack([sine(1.0, 100.0), sine(1.0, 5.0), sine(1.0, 2000.0)])
    v = F.velocity_rms(x, FS)
    assert v[0] == pytest.approx(F.G_MM_S2 / (2 * np.pi * 100) / np.sqrt(2), rel=1e-6)  # 11.04 mm/s
    assert v[1] == pytest.approx(0.0, abs=1e-9) and v[2] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(("cls", "v", "zone"), [
    ("I", 0.5, 0), ("I", 0.71, 1), ("I", 1.0, 1), ("I", 2.0, 2), ("I", 4.5, 3),
    ("II", 1.0, 0), ("II", 2.0, 1), ("II", 5.0, 2), ("II", 8.0, 3),
    ("III", 1.7, 0), ("III", 4.0, 1), ("III", 10.0, 2), ("III", 12.0, 3),
    ("IV", 2.7, 0), ("IV", 7.0, 1), ("IV", 17.0, 2), ("IV", 18.5, 3),
])
def test_iso_zone_boundaries(cls: str, v: float, zone: int) -> None:
    assert int(F.iso_zone(v, cls)) == zone


def test_iso_zone_refuses_unknown_class() -> None:
    with pytest.raises(ValueError, match="machine class"):
        F.iso_zone(1.0, "V")


def test_envelope_spectrum_recovers_modulation() -> None:
    fc, fm, a, m = 5000.0, 87.0, 1.5, 0.4
    x = a * (1 + m * np.cos(2 * np.pi * fm * T)) * np.cos(2 * np.pi * fc * T)
    freqs, amp = F.envelope_spectrum(x, FS, (3000.0, 8000.0))
    k = int(np.argmax(amp[0]))
    assert freqs[k] == pytest.approx(fm, abs=1.0)
    assert amp[0, k] == pytest.approx(a * m, rel=0.02)


def outer_race_fault(shaft_hz: float, bpfo: float, *, seed: int = 0, noise: float = 0.3) -> np.ndarray:
    """Impacts at BPFO exciting a 6 kHz resonance, plus shaft 1x and broadband noise."""
    rng = np.random.default_rng(seed)
    x = np.zeros(N)
    period = FS / bpfo
    t_imp = np.arange(0, N - 200, period) + rng.normal(0, 0.01 * period, int(np.ceil((N - 200) / period)))
    ring = np.exp(-np.arange(200) / 25.0) * np.sin(2 * np.pi * 6000 * np.arange(200) / FS)
    for t0 in t_imp.astype(int):
        x[t0:t0 + 200] += 3.0 * ring
    return x + 0.2 * np.sin(2 * np.pi * shaft_hz * T) + noise * rng.standard_normal(N)


def test_synthetic_outer_race_fault_peaks_at_bpfo() -> None:
    shaft = 29.95
    bpfo = float(F.bearing_frequencies(SKF6205, shaft)["bpfo"])
    x = np.stack([outer_race_fault(shaft, bpfo), 0.3 * np.random.default_rng(5).standard_normal(N)])
    freqs, amp = F.envelope_spectrum(x, FS)
    lo = freqs > 20
    assert freqs[lo][np.argmax(amp[0, lo])] == pytest.approx(bpfo, abs=1.5)
    feats = F.featurize(x, FS, shaft, SKF6205)
    assert feats["env_bpfo"][0] > 5 * max(feats["env_bpfi"][0], feats["env_bsf"][0])
    assert feats["env_bpfo"][0] > 5
    assert feats["env_bpfo"][1] < 3  # noise alone has no defect line


def test_featurize_emits_exactly_the_edge_feature_names() -> None:
    x = np.random.default_rng(0).standard_normal((4, 4096)).astype(np.float32)
    feats = F.featurize(x, 12000.0, [25.0, 25.0, 30.0, 30.0], [SKF6205, SKF6205, None, SKF6205],
                        machine_class="II")
    expected = {n for n, _ in VIB_FEATURES} - {"anomaly_score", "health_index"}
    assert set(feats) == expected == set(F.FEATURE_NAMES)
    assert all(v.shape == (4,) for v in feats.values())
    assert np.isnan(feats["env_bpfo"][2]) and np.isfinite(feats["env_bpfo"][3])
    ext = F.featurize(x, 12000.0, 25.0, SKF6205, extended=True)
    assert {"order_1x", "order_2x", "order_0.5x", "order_3x", "hf_ratio"} <= set(ext)


def test_featurize_channels_are_independent() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 8192))
    all_at_once = F.featurize(x, FS, 25.0, SKF6205, extended=True)
    one = F.featurize(x[1], FS, 25.0, SKF6205, extended=True)
    for k in all_at_once:
        assert all_at_once[k][1] == pytest.approx(one[k][0], rel=1e-9, nan_ok=True)


def test_order_features_measure_shaft_velocity() -> None:
    shaft = 25.0
    x = sine(0.2, shaft) + sine(0.05, 2 * shaft)
    f = F.featurize(x, FS, shaft, None, extended=True)
    assert f["order_1x"][0] == pytest.approx(0.2 * F.G_MM_S2 / (2 * np.pi * shaft), rel=1e-3)
    assert f["order_2x"][0] == pytest.approx(0.05 * F.G_MM_S2 / (4 * np.pi * shaft), rel=1e-3)
    assert f["order_3x"][0] < 1e-6 * f["order_1x"][0]


def test_bad_shapes_refused() -> None:
    with pytest.raises(ValueError, match="channels, samples"):
        F.time_features(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="one per channel"):
        F.featurize(np.zeros((3, 1024)), FS, [1.0, 2.0], None)
    with pytest.raises(ValueError, match="envelope band"):
        F.envelope_spectrum(np.zeros(1024), FS, (1000.0, 20000.0))


def test_process_features() -> None:
    p = F.process_features(breaks=[30.0], spindles=1200, hours=1.0, speed=[17640.0], speed_setpoint=[18000.0],
                           current_a=[100.0], output_kg_h=[50.0], temp_c=[55.0], ambient_c=[30.0])
    assert p["ends_down_rate"] == pytest.approx([25.0])
    assert p["speed_deviation_pct"] == pytest.approx([-2.0])
    assert p["current_per_output"] == pytest.approx([2.0])
    assert p["temp_rise_c"] == pytest.approx([25.0])
    assert F.process_features() == {}


def test_next_fast_len_is_scipys_for_complex_transforms() -> None:
    """The envelope's inverse-FFT length: numpy does not expose scipy's next_fast_len, ours must agree."""
    import scipy.fft

    from spinline.health.features import next_fast_len

    assert [next_fast_len(t) for t in range(1, 5000)] == [scipy.fft.next_fast_len(t) for t in range(1, 5000)]


def test_the_edge_featurises_without_loading_scipy() -> None:
    """~18 MB resident an edge with vibration channels is spared (issue 12 item 12: RSS of a large mill)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; from spinline.health import features as f; "
            "x = np.random.default_rng(0).standard_normal((2, 25600)).astype(np.float32); "
            "f.band_energies(x, 25600.0, [(0, 1000), (1000, 12800)]); f.envelope_spectrum(x, 25600.0); "
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in (['scipy', 'fft'], ['scipy', 'stats'], "
            "['scipy', 'signal'], ['scipy', 'linalg'])))")   # the bare package is imported by pint: small
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
