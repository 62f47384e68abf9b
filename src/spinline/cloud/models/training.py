"""Learning from the closed loop: verified work orders are labels; a fleet model per machine type is
trained on some mills and judged on others; a candidate is proposed only when it beats the active model.

**Labels.** A work order a technician verified (state ``verified`` or ``closed`` after verification)
says what the fault really was (``fault``, possibly corrected with ``update_fault``). Its asset's
feature rows from ``label_lead_s`` before the order was opened until it was resolved are **fault**
rows (label 1); rows of assets and times outside every verified fault window are **healthy** rows
(label 0). Orders cancelled or never verified say nothing and are not used; an order closed as no fault
found (``Resolution.NO_FAULT_FOUND``) is no fault label either (its rows count as healthy).

**Mill-wise evaluation.** Rows of one mill are correlated (same sensors, same yarn, same fitters), so
a test on rows of a mill the model was trained on flatters it. ``split_mills`` puts every mill on one
side only: the model learns the healthy rows of the training mills and is scored on all rows of the
held-out mills. Metrics on the held-out mills: ROC AUC of the anomaly score (fault vs healthy rows),
detection rate (fault rows scoring above 1, the alarm level) and false-alarm rate (healthy rows above 1).

**Proposal.** The active model is scored on the same held-out rows; the candidate is proposed only when
its AUC is higher by ``min_gain`` and its false-alarm rate is not worse by more than ``far_slack``. The
comparison (both models' metrics, the held-out and training mills, row counts) is stored with the
candidate, so whoever promotes it sees why it was proposed.

The maths (``split_mills``, ``fit_params``, ``evaluate``, ``decide``) is pure; ``load_rows`` reads the
time-series store and the work orders.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from spinline.cloud.storage.base import TimeSeriesStore
from spinline.core.site import Mill, iter_machines
from spinline.health.anomaly import DETECTORS, VIB_LOG_KEYS, VIB_MODEL_KEYS, BaselineDetector
from spinline.health.workorders import WorkOrder, WOState

Row = dict[str, float]
log = logging.getLogger(__name__)


@dataclass
class MillRows:
    """Labelled feature rows of one mill: ``rows[i]`` with ``labels[i]`` (1 = a verified fault)."""

    rows: list[Row] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def add(self, row: Row, label: int) -> None:
        self.rows.append(row)
        self.labels.append(label)


@dataclass(frozen=True, slots=True)
class TrainResult:
    params: dict[str, Any]
    metrics: dict[str, Any]
    comparison: dict[str, Any]
    propose: bool
    train_mills: list[str]
    test_mills: list[str]


def split_mills(mills: Sequence[str], *, test_share: float = 0.34, seed: int = 0) -> tuple[list[str], list[str]]:
    """Train and held-out mills, disjoint, at least one each (needs two mills or more).

    >>> split_mills(["a", "b", "c"])
    (['a', 'b'], ['c'])
    """
    ms = sorted(set(mills))
    if len(ms) < 2:
        raise ValueError("mill-wise evaluation needs at least two mills with data")
    n_test = min(len(ms) - 1, max(1, round(len(ms) * test_share)))
    order = np.random.default_rng(seed).permutation(len(ms))
    test = sorted(ms[i] for i in order[:n_test])
    return [m for m in ms if m not in test], test


def fit_params(healthy: Sequence[Row], *, kind: str = "mahalanobis", far: float = 0.001,
               seed: int = 0) -> dict[str, Any]:
    """A fleet model from healthy rows: the detector (JSON) and the baseline medians the edge scores with."""
    if kind not in DETECTORS:
        raise ValueError(f"unknown detector {kind!r}")
    feats = [k for k in VIB_MODEL_KEYS if any(k in r for r in healthy)]
    det = DETECTORS[kind](far=far, features=feats, log_keys=[k for k in VIB_LOG_KEYS if k in feats],
                          min_samples=max(8, min(24, len(healthy))), seed=seed, max_samples=20000)
    for r in healthy:
        det.learn_one(r)
    if not healthy:
        raise ValueError("no healthy rows to learn from")
    det.score_one(healthy[0])   # fits
    base = {k: float(np.median([r[k] for r in healthy if k in r])) for k in feats}
    return {"detector": det.to_dict(), "baseline": base, "commissioning_n": len(healthy), "iso_class": "I"}


def auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """ROC AUC by ranks (ties count half): the chance a fault row scores above a healthy one.

    >>> auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=int)
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return round(float(greater) / (len(pos) * len(neg)), 6)


def evaluate(params: Mapping[str, Any], data: Mapping[str, MillRows]) -> dict[str, Any]:
    """Score the model on every row of ``data``: AUC, detection rate and false-alarm rate at score 1."""
    det = BaselineDetector.from_dict(params["detector"])
    scores: list[float] = []
    labels: list[int] = []
    for m in sorted(data):
        for r, y in zip(data[m].rows, data[m].labels, strict=True):
            scores.append(det.score_one(r))
            labels.append(y)
    sa_ = np.asarray(scores, dtype=float)
    ya = np.asarray(labels, dtype=int)
    n_pos, n_neg = int(np.sum(ya == 1)), int(np.sum(ya == 0))
    return {"auc": auc(scores, labels), "n_fault": n_pos, "n_healthy": n_neg,
            "detection_rate": round(float(np.mean(sa_[ya == 1] > 1)), 4) if n_pos else None,
            "false_alarm_rate": round(float(np.mean(sa_[ya == 0] > 1)), 4) if n_neg else None}


def decide(candidate: Mapping[str, Any], active: Mapping[str, Any] | None, *, min_gain: float = 0.01,
           far_slack: float = 0.01) -> tuple[bool, str]:
    """Does the candidate beat the active model on the held-out mills? (and why, in words)."""
    c_auc = candidate.get("auc")
    if c_auc is None or (isinstance(c_auc, float) and math.isnan(c_auc)):
        return False, "no verified fault on the held-out mills: nothing to judge the candidate on"
    if active is None:
        return True, f"no active model; candidate AUC {c_auc:.3f} on the held-out mills"
    a_auc = active.get("auc") or 0.0
    c_far, a_far = candidate.get("false_alarm_rate") or 0.0, active.get("false_alarm_rate") or 0.0
    if c_auc < a_auc + min_gain:
        return False, f"candidate AUC {c_auc:.3f} does not beat the active model's {a_auc:.3f} by {min_gain}"
    if c_far > a_far + far_slack:
        return False, f"candidate false-alarm rate {c_far:.3f} is worse than the active model's {a_far:.3f}"
    return True, f"candidate AUC {c_auc:.3f} > active {a_auc:.3f}; false alarms {c_far:.3f} vs {a_far:.3f}"


def train(data: Mapping[str, MillRows], *, active_params: Mapping[str, Any] | None = None,
          kind: str = "mahalanobis", far: float = 0.001, test_share: float = 0.34, seed: int = 0) -> TrainResult:
    """Split mill-wise, fit on the training mills' healthy rows, evaluate both models on the held-out mills."""
    train_m, test_m = split_mills([m for m, r in data.items() if r.rows], test_share=test_share, seed=seed)
    healthy = [r for m in train_m for r, y in zip(data[m].rows, data[m].labels, strict=True) if y == 0]
    params = fit_params(healthy, kind=kind, far=far, seed=seed)
    held = {m: data[m] for m in test_m}
    cand = evaluate(params, held)
    act = evaluate(active_params, held) if active_params is not None else None
    propose, why = decide(cand, act)
    comparison = {"held_out_mills": test_m, "train_mills": train_m, "candidate": cand, "active": act,
                  "proposed": propose, "why": why,
                  "train_rows": len(healthy), "train_faults_seen": sum(sum(data[m].labels) for m in train_m)}
    return TrainResult(params, cand, comparison, propose, train_m, test_m)


# --- labels from the maintenance loop --------------------------------------------------------------------

def verified(orders: Iterable[WorkOrder]) -> list[WorkOrder]:
    """Orders a technician verified (the fault confirmed or corrected): the only ones that are labels."""
    return [o for o in orders if o.state in (WOState.VERIFIED, WOState.CLOSED) and o.time_of(WOState.VERIFIED)
            is not None and o.fault not in ("", "unknown") and not o.no_fault_found]


def fault_windows(orders: Iterable[WorkOrder], *, lead: timedelta = timedelta(days=3)) -> dict[str, list[tuple[int,
                                                                                                               int]]]:
    """Per asset (``machine/channel``): [start_ns, end_ns) windows in which it had a verified fault."""
    out: dict[str, list[tuple[int, int]]] = {}
    for o in verified(orders):
        end = o.time_of(WOState.RESOLVED) or o.time_of(WOState.VERIFIED)
        assert end is not None
        out.setdefault(o.asset, []).append((int((o.created_at - lead).timestamp() * 1e9),
                                            int(end.timestamp() * 1e9)))
    return out


def label_of(asset: str, ts_ns: int, windows: Mapping[str, list[tuple[int, int]]]) -> int:
    return int(any(a <= ts_ns < b for a, b in windows.get(asset, ())))


def load_rows(store: TimeSeriesStore, orders_of: Callable[[str], Sequence[WorkOrder]], mills: Mapping[str, Mill],
              machine_type: str, start_ns: int, end_ns: int, *,
              lead: timedelta = timedelta(days=3)) -> dict[str, MillRows]:
    """Feature rows of every ``machine_type`` asset of ``mills`` in [start, end), labelled by verified orders.
    A federated mill (``Mill.federated``) is skipped: the cloud does not train on its rows."""
    from spinline.cloud.maintenance.pipeline import assets_of

    out: dict[str, MillRows] = {}
    for mill, cfg in sorted(mills.items()):
        if cfg.federated:   # its rows are not the cloud's to train on (and should not be in the store at all)
            log.warning("training %s: mill %s is federated, its rows are not read", machine_type, mill)
            continue
        types = {m.id: m.type.value for _ws, _line, m in iter_machines(cfg)}
        windows = fault_windows(orders_of(mill), lead=lead)
        rows = MillRows()
        for a in assets_of(store.points(mill), mill):
            if types.get(a.machine) != machine_type:
                continue
            by_ts: dict[int, Row] = {}
            for feat, key in a.points.items():
                if feat not in VIB_MODEL_KEYS:
                    continue
                s = store.range(key, start_ns, end_ns, resolution="raw")
                for ts, v in zip(s.ts_ns.tolist(), s.value.tolist(), strict=True):
                    if math.isfinite(v):
                        by_ts.setdefault(int(ts), {})[feat] = float(v)
            for ts, r in sorted(by_ts.items()):
                if len(r) >= len(VIB_MODEL_KEYS) // 2:
                    rows.add(r, label_of(a.id, ts, windows))
        out[mill] = rows
    return out
