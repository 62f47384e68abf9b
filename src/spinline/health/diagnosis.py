"""Fault diagnosis: the likely fault type with the evidence a vibration analyst would cite.

Two diagnosers, for two situations:

* ``diagnose`` — **rules, no training data needed**: the textbook signatures. A bearing defect
  shows as a line in the envelope spectrum at its defect frequency (outer race BPFO, inner race
  BPFI, ball 2xBSF); imbalance as a dominant 1x shaft-speed component; misalignment as a strong 2x
  (relative to 1x); mechanical looseness as many harmonics and a 0.5x sub-harmonic. Each verdict
  carries the feature, its value, the frequency and the baseline it is compared with, so the
  technician can check it on the spectrum. Order components are judged by their growth over the
  asset's own healthy baseline (a new machine can have a large 1x that is simply its normal).
* ``FaultClassifier`` — **supervised**, for a site that has labelled faults of its own: a
  multinomial logistic regression (numpy, L2) on log features. It is what the CWRU validation
  trains on some bearings and tests on others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spinline.core.texts import render

F64 = NDArray[np.float64]

#: Diagnosis labels (a subset of ``spinline.core.site.FaultType`` values, plus "unknown").
LABELS: tuple[str, ...] = ("bearing_outer", "bearing_inner", "bearing_ball", "imbalance", "misalignment",
                           "looseness", "belt_slip", "unknown")

_ENV = {"bearing_outer": ("env_bpfo", "BPFO"), "bearing_inner": ("env_bpfi", "BPFI"),
        "bearing_ball": ("env_bsf", "2xBSF")}


@dataclass(frozen=True, slots=True)
class Evidence:
    feature: str
    value: float
    reference: float
    frequency_hz: float | None
    text: str


@dataclass(frozen=True, slots=True)
class Diagnosis:
    fault: str
    confidence: float
    evidence: tuple[Evidence, ...] = field(default_factory=tuple)

    def explain(self) -> str:
        lines = [render("diag.fault_confidence", {"fault": self.fault, "confidence": f"{self.confidence:.2f}"})]
        lines += [f"  - {e.text}" for e in self.evidence]
        return "\n".join(lines)


def _get(x: Mapping[str, Any], k: str, default: float = math.nan) -> float:
    v = x.get(k)
    try:
        f = float(v) if v is not None else default
    except (TypeError, ValueError):
        return default
    return f if math.isfinite(f) else default


def diagnose(x: Mapping[str, Any], baseline: Mapping[str, Any] | None = None, *,
             defect_hz: Mapping[str, float] | None = None, shaft_hz: float | None = None,
             env_threshold: float = 4.0, growth_threshold: float = 2.0) -> Diagnosis:
    """Most likely fault type of one channel from its (extended) features.

    ``x`` holds ``featurize(..., extended=True)`` values for one channel; ``baseline`` the same
    features' medians over the healthy period (optional; without it, order components cannot be
    judged and only bearing faults are diagnosed). ``defect_hz`` (BPFO/BPFI/BSF/FTF) and
    ``shaft_hz`` only label the evidence with frequencies.

    Bearing verdict: the largest envelope ratio among BPFO/BPFI/2xBSF must reach ``env_threshold``
    (a line 4x above the local background) and, with a baseline, have grown ``growth_threshold``
    times. Shaft verdicts: the 1x, 2x, 3x and 0.5x velocity components' growth over baseline;
    misalignment when 2x grew most (or 2x >= 1x and grew), looseness when 3x or 0.5x did,
    imbalance when 1x did, belt slip when the sub-synchronous (belt) region did or the shaft runs
    more than 1 % below nominal (``speed_deviation_pct``). With both kinds of evidence the
    stronger (in multiples of its own threshold) wins and the other is kept as secondary evidence.
    """
    base = baseline or {}
    fd = defect_hz or {}
    cands: list[tuple[float, str, list[Evidence]]] = []

    # Bearing evidence: envelope ratios.
    best: tuple[float, str] | None = None
    for label, (feat, _name) in _ENV.items():
        v = _get(x, feat, 0.0)
        b = _get(base, feat, 1.0)
        strength = v / env_threshold
        if baseline is not None:
            strength = min(strength, (v / max(b, 1e-9)) / growth_threshold)
        if best is None or strength > best[0]:
            best = (strength, label)
    if best is not None and best[0] >= 1.0:
        label = best[1]
        feat, name = _ENV[label]
        v, b = _get(x, feat, 0.0), _get(base, feat, 1.0)
        key = {"bearing_outer": "bpfo", "bearing_inner": "bpfi", "bearing_ball": "bsf"}[label]
        f = fd.get(key)
        f = 2 * f if f is not None and label == "bearing_ball" else f
        others = sorted((_get(x, o, 0.0), n) for lab, (o, n) in _ENV.items() if lab != label)
        params = {"line": name, "ratio": f"{v:.1f}", "next": others[-1][1], "next_ratio": f"{others[-1][0]:.1f}"}
        if f:
            params["hz"] = f"{f:.1f}"
        if baseline is not None:
            params["baseline"] = f"{b:.1f}"
        tkey = "diag.ev.envelope" + ("_hz" if f else "") + ("_baseline" if baseline is not None else "")
        ev = [Evidence(feat, v, b, f, render(tkey, params))]
        kurt = _get(x, "kurtosis")
        if math.isfinite(kurt):
            ev.append(Evidence("kurtosis", kurt, _get(base, "kurtosis", 3.0), None,
                               render("diag.ev.kurtosis", {"kurtosis": f"{kurt:.1f}"})))
        cands.append((best[0], label, ev))

    # Shaft-order evidence: growth over the asset's own baseline.
    if baseline is not None:
        g: dict[str, float] = {}
        for k in ("order_0.5x", "order_1x", "order_2x", "order_3x", "order_sub"):
            v, b = _get(x, k, 0.0), _get(base, k, math.nan)
            floor = 0.05 * max(_get(base, "velocity_rms", 0.0), 1e-3)  # ignore growth of a negligible line
            g[k] = v / max(b, floor) if math.isfinite(b) else 0.0
        one, two = _get(x, "order_1x", 0.0), _get(x, "order_2x", 0.0)
        hz = shaft_hz
        ev_of = {k: Evidence(k, _get(x, k, 0.0), _get(base, k, math.nan),
                             None if hz is None or k == "order_sub" else hz * float(k.split("_")[1].rstrip("x")),
                             render("diag.ev.shaft_component",
                                    {"order": k.split("_")[1], "value": f"{_get(x, k, 0.0):.2f}",
                                     "growth": f"{g[k]:.1f}", "baseline": f"{_get(base, k, math.nan):.2f}"}))
                 for k in g}
        loose = max(g["order_3x"], g["order_0.5x"])
        belt = g["order_sub"]
        dev = _get(x, "speed_deviation_pct", 0.0)
        belt_ev = [ev_of["order_sub"]]
        if dev <= -1.0:  # the driven shaft turns slower than its drive: the belt slips
            belt = max(belt, growth_threshold * (-dev / 1.0))
            belt_ev.insert(0, Evidence("speed_deviation_pct", dev, 0.0, hz,
                                       render("diag.ev.shaft_slower", {"pct": f"{-dev:.1f}"})))
        shaft_cands = [
            (belt / growth_threshold if belt >= max(g["order_1x"], g["order_2x"]) else 0.0, "belt_slip", belt_ev),
            (g["order_1x"] / growth_threshold if g["order_1x"] >= max(g["order_2x"], loose) else 0.0,
             "imbalance", [ev_of["order_1x"]]),
            (g["order_2x"] / growth_threshold if (g["order_2x"] >= max(g["order_1x"], loose)
                                                   or (two >= one and g["order_2x"] >= growth_threshold)) else 0.0,
             "misalignment", [ev_of["order_2x"], ev_of["order_1x"]]),
            (loose / growth_threshold if loose > max(g["order_1x"], g["order_2x"]) else 0.0,
             "looseness", [ev_of["order_3x"], ev_of["order_0.5x"]]),
        ]
        for s, lab, ev in shaft_cands:
            if s >= 1.0:
                cands.append((s, lab, ev))

    if not cands:
        return Diagnosis("unknown", 0.0, (Evidence("none", 0.0, 0.0, None,
                                                   render("diag.ev.none", {})),))
    cands.sort(key=lambda c: -c[0])
    s, label, ev = cands[0]
    extra = [e for _, _, es in cands[1:] for e in es[:1]]
    conf = float(1.0 - math.exp(-(s - 1.0) - 0.7))  # 0.5 at the threshold, -> 1 as evidence grows
    if len(cands) > 1:
        conf *= s / (s + cands[1][0])
    return Diagnosis(label, round(conf, 3), tuple(ev + extra))


class FaultClassifier:
    """Multinomial logistic regression on log-transformed features (numpy, full-batch L-BFGS-free GD).

    Small, deterministic and explainable (``coef`` per class and feature); good enough to show what
    supervised training adds over the rules when a site has labelled data, and cheap to refit.
    """

    def __init__(self, features: Sequence[str], *, l2: float = 1e-2, iters: int = 500, lr: float = 0.5,
                 log_keys: Sequence[str] = ()) -> None:
        self.features = tuple(features)
        self.l2, self.iters, self.lr = l2, iters, lr
        self.log_keys = tuple(log_keys)
        self.classes: tuple[str, ...] = ()
        self.mu: F64 = np.zeros(0)
        self.sd: F64 = np.zeros(0)
        self.coef: F64 = np.zeros((0, 0))

    def _x(self, rows: Sequence[Mapping[str, Any]]) -> F64:
        x = np.array([[_get(r, k, 0.0) for k in self.features] for r in rows], dtype=np.float64)
        for j, k in enumerate(self.features):
            if k in self.log_keys:
                x[:, j] = np.log(np.maximum(x[:, j], 1e-9))
        return x

    def fit(self, rows: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> FaultClassifier:
        x = self._x(rows)
        self.classes = tuple(sorted(set(labels)))
        y = np.array([self.classes.index(lab) for lab in labels])
        self.mu, self.sd = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)
        xs = np.hstack([(x - self.mu) / self.sd, np.ones((x.shape[0], 1))])
        onehot = np.eye(len(self.classes))[y]
        # Class-balanced weights: each class counts equally whatever its number of windows.
        w = (1.0 / np.bincount(y, minlength=len(self.classes)))[y]
        w = w / w.sum()
        coef = np.zeros((xs.shape[1], len(self.classes)))
        for _ in range(self.iters):
            p = _softmax(xs @ coef)
            grad = xs.T @ ((p - onehot) * w[:, None]) + self.l2 * np.vstack([coef[:-1], np.zeros((1, coef.shape[1]))])
            coef -= self.lr * grad
        self.coef = coef
        return self

    def predict_proba(self, rows: Sequence[Mapping[str, Any]]) -> F64:
        x = self._x(rows)
        xs = np.hstack([(x - self.mu) / self.sd, np.ones((x.shape[0], 1))])
        return _softmax(xs @ self.coef)

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(rows).argmax(axis=1)]


def _softmax(z: F64) -> F64:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str],
             labels: Sequence[str] | None = None) -> tuple[float, dict[str, float]]:
    """Macro-averaged F1 and the per-class F1 (classes from ``labels`` or those in y_true)."""
    labs = list(labels) if labels is not None else sorted(set(y_true))
    per: dict[str, float] = {}
    for c in labs:
        tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == c and p != c)
        per[c] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return float(np.mean(list(per.values()))) if per else 0.0, per
