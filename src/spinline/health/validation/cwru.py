"""CWRU bearing data: fault-type diagnosis with whole bearings held out.

Protocol (see docs/health-validation.md):

* Each record is cut into non-overlapping windows (default 1 s = 12,000 samples, 1 Hz resolution)
  and featurised with ``featurize(..., extended=True)`` using the SKF 6205 geometry and the
  record's shaft speed.
* **Split by fault size** (leave-one-size-out: 0.007, 0.014, 0.021, 0.028 in). Every fault of one
  size is a different physical bearing from those of the other sizes, and all four loads of a
  bearing fall on the same side, so no bearing is on both sides of a split. (A split by load
  would put the same bearing in train and test.)
* Classes: inner race, ball, outer race. Each window is predicted once, by a model that never saw
  its bearing; figures are per class and macro-averaged over the pooled predictions.
* "Multi-band stacked": the 8 multi-band rules' class evidence, combined by a logistic regression
  trained on the other sizes (``mb_stacked``): the nested alternative to voting over the rules.
* "Envelope alone": argmax of the three envelope ratios, no training. "Rules": ``diagnose`` with no
  baseline (may answer "unknown", counted as wrong). "Classifier": ``FaultClassifier`` trained on
  the other sizes.
* Detection: the one normal record (48 kHz, resampled to 12 kHz) is split in time; the first half
  is the baseline of the anomaly model, the second half plus every fault window are scored; AUROC
  and the detection rate at the configured false-alarm rate. (Only one healthy bearing exists in
  the set, so the healthy side of this figure cannot be bearing-disjoint; the doc says so.)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from spinline.core.site import Bearing
from spinline.health.anomaly import VIB_LOG_KEYS, vibration_detector
from spinline.health.checks import roc_auc
from spinline.health.diagnosis import FaultClassifier, diagnose, macro_f1
from spinline.health.features import (
    _defect_matrix,
    _env_spectrum,
    _envelope_from_spec,
    _rfft,
    bearing_frequencies,
    defect_amplitudes,
    featurize,
)
from spinline.health.validation import DataMissing, data_dir

SKF6205 = Bearing(name="de", model="SKF 6205-2RS", n_balls=9, ball_diameter_mm=7.94, pitch_diameter_mm=39.04)
FS = 12000.0
CLASSES = ("bearing_inner", "bearing_ball", "bearing_outer")
_LABEL = {"inner_race": "bearing_inner", "ball": "bearing_ball", "outer_race": "bearing_outer", "normal": "normal"}
CLASSIFIER_FEATURES = ("rms_g", "peak_g", "crest", "kurtosis", "skewness", "velocity_rms", "env_bpfo",
                       "env_bpfi", "env_bsf", "env_ftf", "hf_ratio")


@dataclass(frozen=True, slots=True)
class Record:
    file: str
    label: str
    size_in: float | None
    position: str
    load_hp: int
    rpm: float
    fs_hz: float


def records(root: Path | None = None) -> list[Record]:
    base = (root or data_dir()) / "cwru"
    man = base / "manifest.csv"
    if not man.is_file():
        raise DataMissing(f"{man} is missing")
    out = []
    with man.open() as fh:
        for row in csv.DictReader(fh):
            out.append(Record(row["file"], _LABEL[row["fault"]],
                              float(row["diameter_in"]) if row["diameter_in"] else None,
                              row["or_position_oclock"], int(row["load_hp"]), float(row["rpm"]),
                              float(row["fs_hz"])))
    return out


def load_signal(rec: Record, root: Path | None = None) -> np.ndarray:
    """Drive-end acceleration (g) at 12 kHz (the 48 kHz normal record is resampled, 4:1 polyphase)."""
    with np.load((root or data_dir()) / "cwru" / rec.file) as z:
        x = np.asarray(z["de"], dtype=np.float64).ravel()
    if rec.fs_hz != FS:
        up, down = int(FS), int(rec.fs_hz)
        g = int(np.gcd(up, down))
        x = resample_poly(x, up // g, down // g)
    return x


def windows(x: np.ndarray, n: int) -> np.ndarray:
    k = x.size // n
    return x[: k * n].reshape(k, n)


#: Candidate envelope bands (Hz) for the nested band selection: 1 and 2 kHz wide, 500 Hz steps.
BANDS: tuple[tuple[float, float], ...] = tuple((float(lo), float(lo + w)) for w in (1000, 2000)
                                               for lo in range(500, 6000 - w + 1, 500))


def _band_ratios(w: np.ndarray, shaft_hz: float) -> np.ndarray:
    """(windows, bands, 3) envelope ratios at BPFO, BPFI, 2xBSF for every candidate band."""
    spec = _rfft(w)
    fd = _defect_matrix(SKF6205, np.full(w.shape[0], shaft_hz))
    fd[:, 2] *= 2.0
    out = []
    for b in BANDS:
        env, fs_env = _envelope_from_spec(spec, w.shape[1], FS, b)
        fr, amp = _env_spectrum(env, fs_env)
        out.append(defect_amplitudes(fr, amp, fd)[:, :3])
    return np.stack(out, axis=1)


#: Bands of the multi-band envelope rules: kurtogram-like tiling, 375 Hz to 3 kHz wide, half-overlapping,
#: 250 Hz to 5.9 kHz (86 bands). Wide enough to choose from without knowing where a bearing rings.
MB_BANDS: tuple[tuple[float, float], ...] = tuple(
    (250.0 + i * w / 2, 250.0 + i * w / 2 + w) for w in (375.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0)
    for i in range(int((5900.0 - 250.0 - w) // (w / 2)) + 1))


def multiband_evidence(w: np.ndarray, shaft_hz: float) -> dict[str, np.ndarray]:
    """Per window and band: the spectral kurtosis of the band and the BPFO / BPFI / 2xBSF line ratios.

    ``sk`` (windows, bands) is E|z|^4 / (E|z|^2)^2 of the band's analytic signal z (2 for Gaussian
    noise, larger where the band carries impacts: the kurtogram's criterion, scipy/numpy only).
    ``env`` and ``sq`` (windows, bands, 3) are the ``defect_amplitudes`` ratios in the envelope and in
    the squared-envelope spectrum. No labels are used: the rules below pick or weigh bands per window.
    """
    spec = _rfft(w)
    fd = _defect_matrix(SKF6205, np.full(w.shape[0], shaft_hz))[:, :3]
    fd[:, 2] *= 2.0
    sk, env_r, sq_r = [], [], []
    for b in MB_BANDS:
        env, fs_env = _envelope_from_spec(spec, w.shape[1], FS, b)
        e2 = env * env
        sk.append((e2 * e2).mean(axis=1) / np.maximum(e2.mean(axis=1) ** 2, 1e-300))
        fr, amp = _env_spectrum(env, fs_env)
        env_r.append(defect_amplitudes(fr, amp, fd))
        fr, amp = _env_spectrum(e2, fs_env)
        sq_r.append(defect_amplitudes(fr, amp, fd))
    return {"sk": np.stack(sk, axis=1), "env": np.nan_to_num(np.stack(env_r, axis=1), nan=0.0),
            "sq": np.nan_to_num(np.stack(sq_r, axis=1), nan=0.0)}


def _rule_scores(ev: dict[str, np.ndarray], rule: str) -> np.ndarray:
    """(windows, 3) evidence for outer / inner / ball under one training-free multi-band rule."""
    spectrum, how = rule.split("_", 1)
    r = ev[spectrum]
    i = np.arange(r.shape[0])
    logr = np.log(np.maximum(r, 1e-3))
    if how == "kurtogram":  # the band of highest spectral kurtosis (Antoni's choice)
        return r[i, np.argmax(ev["sk"], axis=1)]  # type: ignore[no-any-return]
    if how == "most_diagnostic":  # the band where some defect line stands highest above its background
        return r[i, np.argmax(r.max(axis=2), axis=1)]  # type: ignore[no-any-return]
    if how == "sum_log":  # every band votes by its log line ratios
        return logr.sum(axis=1)  # type: ignore[no-any-return]
    if how == "sk_weighted":  # votes weighted by the band's excess kurtosis over Gaussian (2)
        wk = np.maximum(ev["sk"] - 2.0, 0.0)
        return (logr * wk[:, :, None]).sum(axis=1)  # type: ignore[no-any-return]
    raise ValueError(f"unknown multi-band rule {rule!r}")


#: The candidate rules; which one is used is chosen per fold on the training sizes only.
MB_RULES: tuple[str, ...] = tuple(f"{s}_{h}" for s in ("env", "sq")
                                  for h in ("kurtogram", "most_diagnostic", "sum_log", "sk_weighted"))


def _mb_pred(rows: list[dict[str, Any]], rule: str) -> list[str]:
    ev = {k: np.stack([r["mb"][k] for r in rows]) for k in ("sk", "env", "sq")}
    return [_BAND_ORDER[int(j)] for j in np.argmax(_rule_scores(ev, rule), axis=1)]


def mb_vote(rows: list[dict[str, Any]]) -> list[str]:
    """Every rule of ``MB_RULES`` votes for one class per window; the most votes win (ties: outer, inner,
    ball). No training and no choice among the rules, so nothing can leak across bearings."""
    ev = {k: np.stack([r["mb"][k] for r in rows]) for k in ("sk", "env", "sq")}
    votes = np.zeros((len(rows), 3))
    for rule in MB_RULES:
        votes[np.arange(len(rows)), np.argmax(_rule_scores(ev, rule), axis=1)] += 1
    return [_BAND_ORDER[int(j)] for j in np.argmax(votes, axis=1)]


def mb_stack_features(rows: list[dict[str, Any]]) -> np.ndarray:
    """Every multi-band rule's outer / inner / ball evidence, relative to its own mean: (windows, 24).

    Rules that read one band's ratio are put on a log scale like the others; subtracting each rule's
    mean over its three classes keeps only which fault it favours, not the window's overall level."""
    ev = {k: np.stack([r["mb"][k] for r in rows]) for k in ("sk", "env", "sq")}
    cols = []
    for rule in MB_RULES:
        sc = np.asarray(_rule_scores(ev, rule), dtype=np.float64)
        if rule.split("_", 1)[1] in ("kurtogram", "most_diagnostic"):
            sc = np.log(np.maximum(sc, 1e-3))
        cols.append(sc - sc.mean(axis=1, keepdims=True))
    return np.hstack(cols)


def mb_stacked(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> list[str]:
    """Stack the rules instead of picking one: a multinomial logistic regression (C = 1, balanced classes)
    on ``mb_stack_features``, standardised and trained on the *training* bearings only. Fixed before its
    first run (2026-12-04); nothing in it was changed after."""
    from sklearn.linear_model import LogisticRegression

    xtr, xte = mb_stack_features(train), mb_stack_features(test)
    mu, sd = xtr.mean(axis=0), xtr.std(axis=0) + 1e-9
    clf = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced").fit(
        (xtr - mu) / sd, [r["label"] for r in train])
    return [str(v) for v in clf.predict((xte - mu) / sd)]


def select_rule(train: list[dict[str, Any]]) -> str:
    """The multi-band rule with the best macro F1 on the *training* bearings (ties: first in MB_RULES)."""
    y = [r["label"] for r in train]
    scores = [macro_f1(y, _mb_pred(train, rule), CLASSES)[0] for rule in MB_RULES]
    return MB_RULES[int(np.argmax(scores))]


def featurise_all(window: int = 12000, root: Path | None = None, max_windows: int | None = None,
                  bands: bool = False, multiband: bool = False) -> list[dict[str, Any]]:
    """One row per window: extended features plus record metadata (plus per-band ratios if ``bands``)."""
    rows: list[dict[str, Any]] = []
    for rec in records(root):
        w = windows(load_signal(rec, root), window)
        if max_windows is not None:
            w = w[:max_windows]
        feats = featurize(w, FS, rec.rpm / 60.0, SKF6205, extended=True)
        br = _band_ratios(w, rec.rpm / 60.0) if bands else None
        mb = multiband_evidence(w, rec.rpm / 60.0) if multiband and rec.label != "normal" else None
        for i in range(w.shape[0]):
            row: dict[str, Any] = {k: float(v[i]) for k, v in feats.items()}
            if br is not None:
                row["band_ratios"] = br[i]
            if mb is not None:
                row["mb"] = {k: v[i] for k, v in mb.items()}
            row.update(label=rec.label, size=rec.size_in, load=rec.load_hp, file=rec.file, rpm=rec.rpm,
                       shaft_hz=rec.rpm / 60.0, window=i)
            rows.append(row)
    return rows


def envelope_only(row: dict[str, Any]) -> str:
    vals = {"bearing_outer": row["env_bpfo"], "bearing_inner": row["env_bpfi"], "bearing_ball": row["env_bsf"]}
    return max(vals, key=lambda k: vals[k])


_BAND_ORDER = ("bearing_outer", "bearing_inner", "bearing_ball")


def _band_pred(rows: list[dict[str, Any]], b: int) -> list[str]:
    return [_BAND_ORDER[int(np.argmax(r["band_ratios"][b]))] for r in rows]


def select_band(train: list[dict[str, Any]]) -> int:
    """Index of the envelope band whose argmax rule has the best macro F1 on the *training* bearings."""
    y = [r["label"] for r in train]
    scores = [macro_f1(y, _band_pred(train, b), CLASSES)[0] for b in range(len(BANDS))]
    return int(np.argmax(scores))


def evaluate(rows: list[dict[str, Any]], *, far: float = 0.01) -> dict[str, Any]:
    """Run the diagnosers under leave-one-size-out; return the figures."""
    faults = [r for r in rows if r["label"] != "normal"]
    sizes = sorted({r["size"] for r in faults})
    y_true: list[str] = []
    pred_env: list[str] = []
    pred_rule: list[str] = []
    pred_clf: list[str] = []
    pred_band: list[str] = []
    pred_mb: list[str] = []
    pred_vote: list[str] = []
    pred_stack: list[str] = []
    chosen: dict[str, list[float]] = {}
    rules_chosen: dict[str, str] = {}
    for s in sizes:
        test = [r for r in faults if r["size"] == s]
        train = [r for r in faults if r["size"] != s]
        clf = FaultClassifier(CLASSIFIER_FEATURES, log_keys=VIB_LOG_KEYS + ("hf_ratio",)).fit(
            train, [r["label"] for r in train])
        y_true += [r["label"] for r in test]
        pred_clf += clf.predict(test)
        pred_env += [envelope_only(r) for r in test]
        if "band_ratios" in test[0]:
            b = select_band(train)
            chosen[str(s)] = list(BANDS[b])
            pred_band += _band_pred(test, b)
        if "mb" in test[0]:
            rule = select_rule(train)
            rules_chosen[str(s)] = rule
            pred_mb += _mb_pred(test, rule)
            pred_vote += mb_vote(test)
            pred_stack += mb_stacked(train, test)
        for r in test:
            fd = {k: float(v) for k, v in bearing_frequencies(SKF6205, r["shaft_hz"]).items()}
            pred_rule.append(diagnose(r, None, defect_hz=fd, shaft_hz=r["shaft_hz"]).fault)
    out: dict[str, Any] = {"protocol": "leave-one-fault-size-out (0.007/0.014/0.021/0.028 in), 1 s windows",
                           "n_test_windows": len(y_true)}
    preds = [("envelope_only", pred_env), ("rules", pred_rule), ("classifier", pred_clf)]
    if pred_band:
        preds.append(("envelope_band_selected_on_train", pred_band))
        out["bands_chosen"] = chosen
    if pred_mb:
        preds.append(("envelope_multiband_rule_selected_on_train", pred_mb))
        preds.append(("envelope_multiband_vote", pred_vote))
        preds.append(("envelope_multiband_stacked_on_train", pred_stack))
        out["multiband_rules_chosen"] = rules_chosen
    for name, pred in preds:
        m, per = macro_f1(y_true, pred, CLASSES)
        acc = float(np.mean([a == b for a, b in zip(y_true, pred, strict=True)]))
        out[name] = {"macro_f1": round(m, 3), "per_class_f1": {k: round(v, 3) for k, v in per.items()},
                     "accuracy": round(acc, 3)}

    return out


def evaluate_detection(rows: list[dict[str, Any]], *, far: float = 0.01) -> dict[str, Any]:
    """Anomaly detector against the one healthy record: baseline = its first half (in time)."""
    out: dict[str, Any] = {}
    faults = [r for r in rows if r["label"] != "normal"]
    normal = [r for r in rows if r["label"] == "normal"]
    half = len(normal) // 2
    det = vibration_detector(far=far, speed_key=None, min_samples=min(24, max(4, half)))
    for r in normal[:half]:
        det.learn_one(r)
    s_norm = [det.score_one(r) for r in normal[half:]]
    s_fault = [det.score_one(r) for r in faults]
    per_class_auc = {c: round(roc_auc(s_norm, [det.score_one(r) for r in faults if r["label"] == c]), 3)
                     for c in CLASSES}
    out = {"auroc": round(roc_auc(s_norm, s_fault), 3), "per_class_auroc": per_class_auc,
                        "detected_share": round(float(np.mean(np.asarray(s_fault) > 1.0)), 3),
                        "false_alarm_share": round(float(np.mean(np.asarray(s_norm) > 1.0)), 3),
                        "n_normal_train": half, "n_normal_test": len(normal) - half, "far": far}
    return out
