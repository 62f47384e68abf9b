"""The maths of a federated Mahalanobis round: what a mill computes on its own rows, and what the cloud
makes of the mills' aggregates. Pure numpy, so the Flower processes (their own virtualenv, see
``docs/models.md``) and the registry compute exactly the same thing.

Round 1 (**moments**): each training mill sends ``n``, the mean and the second moment ``E[z z^T]`` of its
healthy rows (log-transformed where ``log_keys`` say so). Weighted by ``n`` (FedAvg's weighting) they are
exactly the pooled moments: centre = mean, scale = standard deviation (floored like
``BaselineDetector``'s robust scale), shape = the precision of the shrunk correlation matrix.

Round 2 (**calibration**): each training mill sends a histogram of its healthy rows' distances on fixed
bins; their sum gives the alarm threshold at the false-alarm rate ``far`` (the same exponential-tail
extrapolation as the detectors when there are too few rows for that rate).

Evaluation: each mill scores its own rows and sends counts only (faults, healthy, detected, false alarms,
and its within-mill AUC as pair wins / pairs).

A mill with fewer than ``MIN_ROWS`` healthy rows sends nothing: with one row the mean *is* the row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
MIN_ROWS = 20
LOG_EPS = 1e-9
MIN_LOG_SCALE = 0.05
#: Fixed distance bins (upper edges) shared by every mill: 0.01 .. 1000, log-spaced.
EDGES = np.concatenate([[0.0], np.logspace(-2, 3, 501)])


def transform(rows: Sequence[Sequence[float]], features: Sequence[str], log_keys: Sequence[str]) -> F64:
    """Rows (n, d) in feature order, log where the detector logs; missing values at the column mean."""
    x = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(features))
    for j, k in enumerate(features):
        if k in log_keys:
            x[:, j] = np.log(np.maximum(x[:, j], LOG_EPS))
    ok = np.isfinite(x)
    col = np.array([x[ok[:, j], j].mean() if ok[:, j].any() else 0.0 for j in range(x.shape[1])])
    return np.where(ok, x, col[None, :])


def moments(z: F64) -> tuple[int, F64, F64]:
    """What a mill sends in round 1: n, mean, second moment (nothing if n < MIN_ROWS)."""
    n, d = z.shape
    if n < MIN_ROWS:
        return 0, np.zeros(d), np.zeros((d, d))
    return n, z.mean(axis=0), (z.T @ z) / n


def pool(parts: Sequence[tuple[int, F64, F64]], features: Sequence[str], log_keys: Sequence[str], *,
         shrinkage: float = 0.1) -> tuple[int, F64, F64, F64]:
    """Weighted pooled moments -> (n, centre, scale, precision of the shrunk correlation)."""
    n = sum(p[0] for p in parts)
    if n == 0:
        raise ValueError("no mill sent enough healthy rows to learn from")
    mean: F64 = np.sum([p[0] * np.asarray(p[1]) for p in parts], axis=0) / n
    second: F64 = np.sum([p[0] * np.asarray(p[2]) for p in parts], axis=0) / n
    cov = second - np.outer(mean, mean)
    std = np.sqrt(np.maximum(np.diag(cov), 0.0))
    floor = np.array([MIN_LOG_SCALE if k in log_keys else 1e-6 * max(abs(c), 1.0)
                      for k, c in zip(features, mean, strict=True)])
    scale = np.maximum(std, floor)
    corr = cov / np.outer(scale, scale)
    d = len(features)
    corr = (1 - shrinkage) * corr + shrinkage * np.eye(d) * max(float(np.trace(corr)) / d, 1e-6)
    return n, mean, scale, np.asarray(np.linalg.pinv(corr), dtype=np.float64)


def distances(z: F64, centre: F64, scale: F64, prec: F64) -> F64:
    """Mahalanobis distance of transformed rows under the pooled shape."""
    s = (z - centre) / scale
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", s, prec, s), 0.0))


def histogram(d: F64) -> F64:
    """What a mill sends in round 2: counts of its healthy distances on the shared bins."""
    if d.size < MIN_ROWS:
        return np.zeros(len(EDGES) - 1)
    return np.histogram(np.clip(d, 0.0, EDGES[-1]), bins=EDGES)[0].astype(np.float64)


def threshold(counts: F64, far: float) -> float:
    """Alarm distance at false-alarm rate ``far`` from the summed histograms (upper bin edge; exponential
    tail on the squared distances when there are too few rows for that rate)."""
    n = int(counts.sum())
    if n == 0:
        raise ValueError("no calibration rows")
    cum = np.cumsum(counts)
    top = float(EDGES[1:][counts > 0][-1])
    level = math.ceil((1.0 - far) * (n + 1))
    if level <= n:
        return float(EDGES[1:][np.searchsorted(cum, level)])
    mid2 = ((EDGES[:-1] + EDGES[1:]) / 2) ** 2
    m = float(mid2[np.searchsorted(cum, n / 2)])
    above = mid2 > m
    beta = float((counts[above] * (mid2[above] - m)).sum() / counts[above].sum()) if counts[above].any() else m
    return max(math.sqrt(m + max(beta, 1e-9) * math.log(0.5 / far)), top)


def evaluate(scores: F64, labels: Sequence[int]) -> dict[str, Any]:
    """Counts a mill sends after the last round (scores are distance / threshold; > 1 = alarm)."""
    y = np.asarray(labels, dtype=int)
    pos, neg = scores[y == 1], scores[y == 0]
    wins = float((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
    return {"n_fault": int(pos.size), "n_healthy": int(neg.size), "detected": int((pos > 1).sum()),
            "false_alarms": int((neg > 1).sum()), "auc_wins": wins, "auc_pairs": float(pos.size * neg.size)}


def combine(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Held-out metrics from the mills' counts (AUC: within-mill pairs; no mill's scores leave it)."""
    tot = {k: sum(float(p.get(k, 0)) for p in parts) for k in
           ("n_fault", "n_healthy", "detected", "false_alarms", "auc_wins", "auc_pairs")}
    return {"auc": round(tot["auc_wins"] / tot["auc_pairs"], 6) if tot["auc_pairs"] else math.nan,
            "n_fault": int(tot["n_fault"]), "n_healthy": int(tot["n_healthy"]),
            "detection_rate": round(tot["detected"] / tot["n_fault"], 4) if tot["n_fault"] else None,
            "false_alarm_rate": round(tot["false_alarms"] / tot["n_healthy"], 4) if tot["n_healthy"] else None}
