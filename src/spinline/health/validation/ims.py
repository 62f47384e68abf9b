"""IMS (NASA / University of Cincinnati) bearing test 1: false-alarm behaviour on the healthy run-in.

``test1_first50`` holds the first 50 raw snapshots of test 1 (all four bearings healthy, running
in). The averaged test-2 run to failure is scored through the CLI by ``bench/health_byod.py``
(lead time before bearing 1's failure, docs/health-validation.md section 0).

Protocol: every one of the 8 channels gets its own ``AssetMonitor`` (Rexnord ZA-2115 geometry,
2000 rpm, 20 kHz). The first ``baseline_n`` snapshots (in time order) are its baseline; the rest
are scored. Reported: alarms raised, snapshots with an anomaly score above 1, and the health index
(min / median) on the held-out healthy snapshots. A healthy run-in should raise nothing.
"""

from __future__ import annotations

import gzip
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from spinline.core.site import Bearing
from spinline.health.features import bearing_frequencies, featurize
from spinline.health.monitor import AssetMonitor
from spinline.health.validation import DataMissing, data_dir

#: Rexnord ZA-2115 double-row bearing: 16 rollers per row, 0.331 in rollers, 2.815 in pitch, 15.17 deg.
ZA2115 = Bearing(name="za2115", model="Rexnord ZA-2115", n_balls=16, ball_diameter_mm=8.407,
                 pitch_diameter_mm=71.501, contact_angle_deg=15.17)
FS = 20000.0
SHAFT_HZ = 2000.0 / 60.0


def snapshot_files(root: Path | None = None) -> list[Path]:
    d = (root or data_dir()) / "ims" / "test1_first50"
    out = sorted(d.glob("*.gz"))
    if not out:
        raise DataMissing(f"no IMS snapshots under {d}")
    return out


def load_snapshot(path: Path) -> np.ndarray:
    """(8 channels, 20480 samples) acceleration in g."""
    with gzip.open(path, "rt") as fh:
        return np.loadtxt(fh, dtype=np.float64).T


def timestamp(path: Path) -> datetime:
    return datetime.strptime(path.name.removesuffix(".gz"), "%Y.%m.%d.%H.%M.%S")


def evaluate(*, baseline_n: int = 25, far: float = 0.001, root: Path | None = None) -> dict[str, Any]:
    paths = snapshot_files(root)
    fd = {k: float(v) for k, v in bearing_frequencies(ZA2115, SHAFT_HZ).items()}
    mons = [AssetMonitor(f"ims1/ch{c + 1}", machine_class="II", far=far, baseline_n=baseline_n, defect_hz=fd,
                         nominal_speed=None) for c in range(8)]
    his: list[float] = []
    over = alarms = scored = 0
    for p in paths:
        x = load_snapshot(p)
        feats = featurize(x, FS, SHAFT_HZ, ZA2115, machine_class="II", extended=True)
        for c, mon in enumerate(mons):
            row = {k: float(v[c]) for k, v in feats.items()}
            row["shaft_hz"] = SHAFT_HZ
            st = mon.update(timestamp(p), row)
            if st is None or st.learning:
                continue
            scored += 1
            over += st.anomaly_score > 1.0
            alarms += len(st.raised)
            his.append(st.health.value)
    return {"protocol": f"per channel: first {baseline_n} snapshots baseline, remaining scored; far={far}",
            "snapshots": len(paths), "channels": 8, "scored": scored, "alarms": alarms,
            "score_over_1": int(over), "score_over_1_share": round(over / max(scored, 1), 3),
            "hi_min": round(min(his), 1) if his else None,
            "hi_median": round(float(np.median(his)), 1) if his else None,
            "note": "test2_averaged (run to failure) is scored through the CLI in bench/health_byod.py"}
