"""SKAB (Skoltech Anomaly Benchmark): outlier detection with the current leaderboard's protocol.

Protocol (from the data README and the SKAB repository): in every experiment file the first 400
rows are training data (assumed normal) and the rest is test; a detector is fitted per file on
its training rows; point-wise F1, false-alarm rate FAR = FP / (FP + TN) and missed-alarm rate
MAR = FN / (FN + TP) are computed over **all test rows of all files pooled**. The anomaly-free
run is not scored (it has no labels). Nothing is tuned on the test rows: the configuration (model,
false-alarm rate) is fixed before scoring, and every variant computed is reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spinline.health.anomaly import DETECTORS, BaselineDetector
from spinline.health.validation import DataMissing, data_dir

FEATURES = ("Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature", "Thermocouple",
            "Voltage", "Volume Flow RateRMS")
N_TRAIN = 400

#: The current leaderboard (outlier detection, F1 / FAR % / MAR %), as quoted in the data README.
LEADERBOARD: dict[str, tuple[float, float, float]] = {
    "Conv-AE": (0.78, 13.55, 28.02), "MSET": (0.78, 39.73, 14.13), "T-squared+Q (PCA)": (0.76, 26.62, 24.92),
    "LSTM-AE": (0.74, 29.96, 25.92), "T-squared": (0.66, 19.21, 42.6), "Isolation forest": (0.29, 2.56, 82.89),
}


def files(root: Path | None = None) -> list[Path]:
    base = (root or data_dir()) / "skab"
    out = sorted(p for sub in ("valve1", "valve2", "other") for p in (base / sub).glob("*.csv"))
    if not out:
        raise DataMissing(f"no SKAB experiment files under {base}")
    return out


def load(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep=";", index_col="datetime", parse_dates=True)


def score_file(df: pd.DataFrame, model: BaselineDetector) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) of the test rows of one experiment, the model fitted on its first 400 rows."""
    m = model.clone()
    for row in df.iloc[:N_TRAIN][list(FEATURES)].to_dict("records"):
        m.learn_one(row)
    test = df.iloc[N_TRAIN:]
    assert m.features is not None
    x = test[list(m.features)].to_numpy(dtype=np.float64)
    return m.score_many(x), test["anomaly"].to_numpy(dtype=int)


def metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {"f1": round(f1, 3), "far_pct": round(100 * fp / max(fp + tn, 1), 2),
            "mar_pct": round(100 * fn / max(fn + tp, 1), 2), "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def evaluate(*, kinds: tuple[str, ...] = ("mahalanobis", "pca_t2q", "robust_z"), far: float = 0.01,
             root: Path | None = None, max_files: int | None = None) -> dict[str, Any]:
    """Every detector kind under the leaderboard protocol; ``primary`` is the configuration fixed in advance."""
    paths = files(root)[:max_files]
    dfs = [load(p) for p in paths]
    out: dict[str, Any] = {"protocol": "first 400 rows of each file train, rest test; point-wise, pooled",
                           "n_files": len(dfs), "far_setting": far, "primary": "mahalanobis",
                           "leaderboard": LEADERBOARD}
    for kind in kinds:
        model = DETECTORS[kind](far=far, features=FEATURES, min_samples=50, seed=0)
        scores, labels = zip(*(score_file(df, model) for df in dfs), strict=True)
        s = np.concatenate(scores)
        y = np.concatenate(labels)
        out[kind] = metrics(s > 1.0, y)
    return out
