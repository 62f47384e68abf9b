"""A health model for a table of one or many assets: per-asset baselines, a fleet prior, a chosen detector.

What ``spinline health fit`` builds from the rows a user says were normal, and why each step:

* **Per-asset baselines.** Each asset (``--asset-column``) is centred on its own median and scaled
  by its own robust spread: machines of one kind run at different levels, and a threshold pooled
  over a fleet is set by its few noisiest members (degradation on a quiet machine then hides
  inside the noisy ones' spread).
* **Fleet prior for short baselines.** An asset's scale is shrunk, on a log scale, toward the
  fleet's typical scale with weight ``n / (n + N_PRIOR)`` (``n`` its own normal rows): a machine
  with 20 normal rows borrows from its siblings, one with 2,000 is its own. Levels are never
  shrunk (they genuinely differ between machines); only the noise scale is. The *shape* of normal
  (covariance, principal subspace, isolation forest) is learned once from every asset's
  standardised rows: one shape, many more rows than any single asset has.
* **Speed.** With a speed column, one ridge-shrunk line on log speed for the fleet and, on top of
  it, each asset's centre and scale per 5 % band of speed (``speed_bands.py``, since 2026-12-05).
* **Held-back calibration.** Each asset's normal rows are split in time: the first 75 % fit, the
  last 25 % are held back. The alarm threshold is the split-conformal quantile of the held-back
  distances at the requested false-alarm rate (exchangeable with future healthy rows because the
  model never saw them, and *later* than every row it saw, as future rows are: drift within the
  baseline shows in the threshold); per asset where it has enough held-back rows (``2 / far``),
  else pooled over the fleet. When even the fleet has too few held-back rows for the rate asked
  (a few dozen rows at 1 %), the threshold is a log-normal *predictive* quantile, which carries
  the uncertainty of a spread estimated from ``n`` rows (a plug-in quantile would not, and lets
  2.5-3.4 % through at 1 %). The achieved rate is measured by two-fold cross-calibration on the
  held-back rows and printed. *Tried and not kept (2026-12-05):* cross-fitted calibration (the
  model fitted on every normal row, thresholds from out-of-fold distances of 4 blocks in time).
  Interior blocks are scored by models that saw rows on both sides of them, which is optimistic
  when healthy rows drift (SKAB: false-alarm rate 2.1 % -> 14.1 % on the raw score), and a block
  can hold an asset's only rows at one speed, which then inflates the threshold (the three-regime
  fleet fell from 0.852 to 0.744 AUROC). Nor a refit of the centres and scales alone on every
  normal row after calibrating (thresholds kept): within +-0.01 AUROC of the kept model on the
  fleets (the seed-to-seed spread), raw-score F1 on SKAB 0.742 -> 0.715, and the thresholds would
  no longer belong to the model they were calibrated with.
* **Model choice on normal rows only.** Robust z, Mahalanobis, PCA T²+Q and an IsolationForest
  are fitted on the fitting rows. Each is judged on the held-back normal rows against synthetic
  departures made *from those same normal rows* (one feature shifted by 4 robust sigmas, every
  feature shifted by 2, one feature swapped with another row's value: a broken relationship) by
  AUROC, and for stability (rank agreement of two fits on alternate halves of the fitting rows).
  By default (``rule="consensus"``) the stable ones are kept together (``consensus.py``: the mean
  of their scores, each in units of its own normal tail), because the synthetic departures ranked
  the candidates wrongly on SKAB, whose healthy rows drift (they put the forest first; it finds the
  fewest real faults there). With ``rule="best"`` the most separating stable detector wins; within
  0.01 AUROC the simpler one; the forest, whose score is bounded (it cannot say how far beyond
  normal a row is, which the health index and the remaining life need), only with a margin of 0.02.
  Abnormal rows are never looked at for any choice. The share of departures detected at the
  calibrated threshold is reported beside it.

Size: fitting, choosing and calibrating share the per-asset split and the standardised rows; apart,
each step would have to recompute or pass them around (the baselines themselves are in ``baselines.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from spinline.health import speed_bands as sb
from spinline.health.anomaly import BATCH_DETECTORS, BaselineDetector
from spinline.health.baselines import FLEET, N_PRIOR, AssetBaseline, Standardiser
from spinline.health.checks import roc_auc
from spinline.health.consensus import ConsensusDetector

F64 = NDArray[np.float64]

#: Candidates in order of simplicity (ties go to the earlier).
CANDIDATES: tuple[str, ...] = ("robust_z", "mahalanobis", "pca_t2q", "iforest")
#: The default model: the mean of the stable candidates (``consensus.py``; module docstring).
CONSENSUS = "consensus"
#: ``--kind best``: the single candidate that separates synthetic departures best (the rule before 2026-12-04).
BEST = "best"
#: Share of each asset's normal rows (the latest ones) held back for calibration and model choice.
HOLDOUT = 0.25
#: AUROC margin the IsolationForest must win by (its score is bounded; see ``fit_fleet``).
IFOREST_MARGIN = 0.02


def _detector(kind: str, far: float, seed: int, shape: dict[str, Any] | None = None,
              members: Sequence[str] | None = None) -> BaselineDetector:
    """A batch detector by kind; the consensus keeps its members in its shape (``members.<name>`` keys)."""
    if kind == CONSENSUS:
        names = members if members is not None else (
            [m for m in CANDIDATES if shape is None or f"{m}.scale" in shape])
        det: BaselineDetector = ConsensusDetector(far=far, seed=seed, members=tuple(names))
    else:
        det = BATCH_DETECTORS[kind](far=far, seed=seed)
    if shape is not None:
        det.load_standardised(shape)
    return det


def _split(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fitting rows (earliest 75 %) and held-back rows (latest 25 %) of one asset's normal rows."""
    n = idx.size
    n_cal = int(math.floor(HOLDOUT * n)) if n >= 8 else 0
    return idx[: n - n_cal], idx[n - n_cal:]


def calibrate(d_cal: F64, far: float) -> tuple[float, str]:
    """Alarm threshold on distances so that a new healthy row crosses it with probability ``far``.

    Split-conformal quantile when there are enough held-back rows for the rate; otherwise the
    log-normal predictive quantile (module docstring)."""
    d = np.sort(d_cal[np.isfinite(d_cal)])
    n = d.size
    if n == 0:
        raise ValueError("no held-back rows to calibrate on")
    level = math.ceil((1.0 - far) * (n + 1))
    if level <= n:
        return float(d[level - 1]), f"conformal quantile of {n} held-back rows"
    logd = np.log(np.maximum(d, 1e-300))
    sd = float(np.std(logd, ddof=1)) if n > 1 else 1.0
    q = float(np.mean(logd)) + float(stats.t.ppf(1.0 - far, max(n - 1, 1))) * sd * math.sqrt(1.0 + 1.0 / n)
    return max(math.exp(q), float(d[-1])), (f"log-normal predictive quantile from {n} held-back rows (too few for "
                                            "the rate: conservative)")


class FleetModel:
    """Fitted state; build with ``fit_fleet``, round-trip with ``to_dict`` / ``from_dict`` (plain JSON)."""

    def __init__(self, *, kind: str, features: Sequence[str], far: float, seed: int, shape: dict[str, Any],
                 assets: dict[str, AssetBaseline], slope: F64, speed_key: str | None,
                 selection: dict[str, Any], calibration: dict[str, Any], band_origin: float | None = None) -> None:
        self.kind = kind
        self.band_origin = band_origin
        self.features = list(features)
        self.far = far
        self.seed = seed
        self.shape = shape
        self.assets = assets
        self.slope = slope
        self.speed_key = speed_key
        self.selection = selection
        self.calibration = calibration
        self._det: BaselineDetector = _detector(kind, far, seed, shape)

    def baseline(self, asset: str) -> tuple[AssetBaseline, bool]:
        """The asset's baseline, or the fleet's (and ``False``) for an asset never seen in fit."""
        if asset in self.assets:
            return self.assets[asset], True
        return self.assets[FLEET], False

    def standardise(self, x: F64, speed: F64 | None, base: AssetBaseline) -> F64:
        r = x
        bands = np.full(x.shape[0], -1, dtype=np.int64)
        if speed is not None and self.speed_key:
            s = np.log(np.where(np.isfinite(speed) & (speed > 0), speed, np.nan))
            ds = np.where(np.isfinite(s), s - base.s_ref, 0.0)
            r = x - ds[:, None] * self.slope[None, :]
            bands = sb.band_index(s, self.band_origin)
        return sb.standardise(r, bands, base.centre, base.scale, base.bands)  # a missing value sits at the centre

    def score(self, x: F64, speed: F64 | None, assets: Sequence[str] | np.ndarray) -> tuple[F64, F64, list[str]]:
        """(calibrated scores: distance / threshold, > 1 = over; standardised z; assets scored on the fleet)."""
        a = np.asarray(assets, dtype=object)
        scores = np.zeros(x.shape[0])
        z_all = np.zeros_like(x)
        unseen: list[str] = []
        for name in dict.fromkeys(a.tolist()):
            rows = np.flatnonzero(a == name)
            base, known = self.baseline(str(name))
            if not known:
                unseen.append(str(name))
            z = self.standardise(x[rows], None if speed is None else speed[rows], base)
            z_all[rows] = z
            scores[rows] = self._det.distance(z) / base.threshold
        return scores, z_all, unseen

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "features": self.features, "far": self.far, "seed": self.seed,
                "shape": self.shape, "assets": {k: v.to_dict() for k, v in self.assets.items()},
                "slope": self.slope.tolist(), "speed_key": self.speed_key, "selection": self.selection,
                "calibration": self.calibration, "speed_band_origin": self.band_origin}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> FleetModel:
        return FleetModel(kind=d["kind"], features=d["features"], far=float(d["far"]), seed=int(d["seed"]),
                          shape=d["shape"], assets={k: AssetBaseline.from_dict(v) for k, v in d["assets"].items()},
                          slope=np.asarray(d["slope"], dtype=np.float64), speed_key=d.get("speed_key"),
                          selection=d["selection"], calibration=d["calibration"],
                          band_origin=d.get("speed_band_origin"))


def synthetic_departures(z: F64, rng: np.random.Generator) -> dict[str, F64]:
    """Departures from normal made from normal rows only, by kind.

    Sizes are in units of the spread the held-back rows actually show (at least the fitting rows'
    spread): when healthy rows drift beyond the fitting period, "4 sigma" must mean 4 sigma of
    that real healthy variation, or a detector that merely saturates on drift looks good.
    """
    n, p = z.shape
    med = np.median(z, axis=0)
    spread = np.maximum(1.4826 * np.median(np.abs(z - med), axis=0), 1.0)
    out: dict[str, F64] = {}
    j = rng.integers(0, p, n)
    sign = rng.choice([-1.0, 1.0], n)
    one = z.copy()
    one[np.arange(n), j] += 4.0 * sign * spread[j]
    out["one feature +-4 sigma"] = one
    out["all features +-2 sigma"] = z + 2.0 * rng.choice([-1.0, 1.0], (n, p)) * spread[None, :]
    if p >= 2:
        swap = z.copy()
        other = rng.permutation(n)
        swap[np.arange(n), j] = z[other, j] + 2.0 * sign * spread[j]
        out["one feature swapped with another row's, +-2 sigma"] = swap
    return out


def _spearman(a: F64, b: F64) -> float:
    r = stats.spearmanr(a, b).statistic
    return float(r) if np.isfinite(r) else 0.0


def fit_fleet(x: F64, assets: Sequence[str] | np.ndarray, normal: np.ndarray, *, features: Sequence[str],
              floors: Sequence[float], far: float, kinds: Sequence[str] = CANDIDATES, seed: int = 0,
              speed: F64 | None = None, speed_key: str | None = None, rule: str = CONSENSUS) -> FleetModel:
    """Fit per-asset baselines, choose the detector on normal rows only, calibrate the thresholds.

    With several ``kinds``, ``rule`` says what is kept: ``"consensus"`` (default) the mean of the
    stable candidates, ``"best"`` the single one that separates synthetic departures best."""
    if not 0.0 < far < 1.0:
        raise ValueError(f"far must be in (0, 1), got {far}")
    if rule not in (CONSENSUS, BEST):
        raise ValueError(f"rule must be {CONSENSUS!r} or {BEST!r}, got {rule!r}")
    a = np.asarray(assets, dtype=object)
    names = [str(n) for n in dict.fromkeys(a[normal].tolist())]
    norm_idx = {n: np.flatnonzero(normal & (a == n)) for n in names}
    fit_idx: dict[str, np.ndarray] = {}
    cal_idx: dict[str, np.ndarray] = {}
    for name in names:
        fit_idx[name], cal_idx[name] = _split(norm_idx[name])
    floor = np.asarray(floors, dtype=np.float64)
    logs = np.log(np.where(np.isfinite(speed) & (speed > 0), speed, np.nan)) if speed is not None else None
    std_fit = Standardiser.fit(x, logs, fit_idx, floor, {n: cal_idx[n].size for n in names})

    def z_of(rows_by: dict[str, np.ndarray]) -> tuple[F64, np.ndarray]:
        return std_fit.z(x, logs, rows_by)

    z_fit, _ = z_of(fit_idx)
    z_cal, who_cal = z_of(cal_idx)
    no_holdout = z_cal.shape[0] < 4
    z_val = z_fit if no_holdout else z_cal
    rng = np.random.default_rng(seed)
    synth = synthetic_departures(z_val, rng)

    # Model choice on normal rows only.
    report: dict[str, Any] = {}
    shapes: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        det = BATCH_DETECTORS[kind](far=far, seed=seed)
        shapes[kind] = det.fit_standardised(z_fit)
        d_val = det.distance(z_val)
        d_syn = {k: det.distance(v) for k, v in synth.items()}
        aucs = {k: round(roc_auc(d_val, d), 4) for k, d in d_syn.items()}
        thr_val, _ = calibrate(d_val, far)
        tprs = {k: round(float(np.mean(d > thr_val)), 4) for k, d in d_syn.items()}
        half_a, half_b = BATCH_DETECTORS[kind](far=far, seed=seed), BATCH_DETECTORS[kind](far=far, seed=seed + 1)
        if z_fit.shape[0] >= 8:
            half_a.fit_standardised(z_fit[0::2])
            half_b.fit_standardised(z_fit[1::2])
            probe = np.vstack([z_val, *synth.values()])
            stab = _spearman(half_a.distance(probe), half_b.distance(probe))
        else:
            stab = 1.0
        report[kind] = {"auroc_synthetic": aucs, "mean_auroc": round(float(np.mean(list(aucs.values()))), 4),
                        "detected_at_threshold": tprs, "mean_detected": round(float(np.mean(list(tprs.values()))), 4),
                        "stability": round(stab, 4)}
    stable = [k for k in kinds if report[k]["stability"] >= 0.8] or list(kinds)
    # The forest's score is bounded (a 20-sigma departure scores barely above its threshold), so the
    # health index and the remaining life read from it say little about severity: it must beat the
    # best unbounded detector by a clear margin to be chosen.
    def merit(k: str) -> float:
        return float(report[k]["mean_auroc"]) - (IFOREST_MARGIN if k == "iforest" else 0.0)

    best = max(merit(k) for k in stable)
    chosen = next(k for k in stable if merit(k) >= best - 0.01)
    why = (f"{chosen}: best separation of synthetic departures from held-back normal rows among stable candidates "
           f"(mean AUROC {report[chosen]['mean_auroc']:.3f}, stability {report[chosen]['stability']:.2f}"
           + (", simplest within 0.01 of the best" if merit(chosen) < best else "")
           + (f", ahead by more than the {IFOREST_MARGIN} asked of a bounded score" if chosen == "iforest" else "")
           + ")")
    if rule == CONSENSUS and len(kinds) > 1:
        members = [k for k in CANDIDATES if k in stable]
        det_c = _detector(CONSENSUS, far, seed, members=members)
        shapes[CONSENSUS] = det_c.fit_standardised(z_fit)
        d_val = det_c.distance(z_val)
        aucs = {k: round(roc_auc(d_val, det_c.distance(v)), 4) for k, v in synth.items()}
        report[CONSENSUS] = {"auroc_synthetic": aucs, "mean_auroc": round(float(np.mean(list(aucs.values()))), 4),
                             "members": members}
        why = (f"consensus of {', '.join(members)} (the stable candidates): mean of their scores, each in units of "
               f"its own normal tail (synthetic departures: AUROC {report[CONSENSUS]['mean_auroc']:.3f}; the best "
               f"single candidate would be {why}); a consensus needs no choice, and synthetic departures "
               "ranked the candidates wrongly on real data whose healthy rows drift (docs/health-validation.md)")
        chosen = CONSENSUS
    selection = {"candidates": report, "chosen": chosen, "why": why, "judged_on": "held-back normal rows"
                 if not no_holdout else "fitting rows (no hold-out possible)", "n_val": int(z_val.shape[0])}

    # Calibrate the chosen detector on the held-back rows (the model kept is the one fitted on the
    # earliest 75 %: its thresholds belong to it; see the module docstring).
    baselines = std_fit.baselines
    det = _detector(chosen, far, seed, shapes[chosen])
    d_fit = det.distance(z_fit)
    d_cal = det.distance(z_cal) if not no_holdout else d_fit
    who = who_cal if not no_holdout else z_of(fit_idx)[1]
    pooled_thr, pooled_how = calibrate(d_cal, far)
    if no_holdout:
        pooled_how += " (in-sample: optimistic)"
    own_min = math.ceil(2.0 / far)
    for n in names:
        mine = d_cal[who == n]
        if mine.size >= own_min:
            baselines[n].threshold, baselines[n].threshold_from = calibrate(mine, far)
            baselines[n].threshold_from += " of this asset"
        else:
            baselines[n].threshold, baselines[n].threshold_from = pooled_thr, pooled_how + " of the fleet"
        baselines[n].threshold = max(baselines[n].threshold, 1e-12)
    baselines[FLEET].threshold, baselines[FLEET].threshold_from = max(pooled_thr, 1e-12), pooled_how
    # Achieved false-alarm rate: two-fold cross-calibration on the held-back rows.
    achieved: float | None = None
    if not no_holdout and d_cal.size >= 8:
        idx = np.arange(d_cal.size)
        ra = []
        for fold in (0, 1):
            t, _ = calibrate(d_cal[idx % 2 == fold], far)
            ra.append(float(np.mean(d_cal[idx % 2 != fold] > t)))
        achieved = float(np.mean(ra))
    calibration = {"far_asked": far, "far_achieved_held_back": achieved, "n_held_back": int(d_cal.size),
                   "how": pooled_how,
                   "assets_own_threshold": [n for n in names if "this asset" in baselines[n].threshold_from],
                   "fleet_prior_rows": N_PRIOR}
    # No refit on every normal row afterwards: the thresholds belong to the model they were
    # calibrated with (a refit moved the distances of an IsolationForest enough to cost a quarter of
    # its detections on SKAB, so the guarantee is kept instead of the extra 25 % of rows). Cross-fitted
    # calibration on every row was tried on 2026-12-05 and not kept (module docstring).
    return FleetModel(kind=chosen, features=features, far=far, seed=seed, shape=shapes[chosen], assets=baselines,
                      slope=std_fit.slope, speed_key=speed_key, selection=selection, calibration=calibration,
                      band_origin=std_fit.origin)


def rising_floors(x: np.ndarray, assets: np.ndarray, normal: np.ndarray, columns: Sequence[int]
                  ) -> dict[str, list[float]]:
    """Per asset, the median of each "rising" column over its normal rows (``"*"``: over all assets).

    A rising column is one where only an increase means trouble (a vibration amplitude, a bearing
    temperature): a bearing that runs in and gets quieter is not failing. ``clip_rising`` lifts
    values below this floor to it, so any detector sees a drop as "at the centre" and stays two-sided
    on the other columns. The floor is the normal rows' median, the same for fit and score.
    """
    out: dict[str, list[float]] = {"*": [float(np.nanmedian(x[normal, j])) for j in columns]}
    for a in dict.fromkeys(assets.tolist()):
        sel = normal & (assets == a)
        if sel.any():
            out[str(a)] = [float(np.nanmedian(x[sel, j])) for j in columns]
    return out


def clip_rising(x: np.ndarray, assets: np.ndarray, columns: Sequence[int],
                floors: dict[str, list[float]]) -> np.ndarray:
    """``x`` with each rising column raised to its asset's floor (assets not in ``floors``: the ``"*"`` one)."""
    if not columns:
        return x
    y = np.array(x, dtype=np.float64, copy=True)
    fleet = np.asarray(floors["*"], dtype=np.float64)
    for a in dict.fromkeys(assets.tolist()):
        sel = assets == a
        f = np.asarray(floors.get(str(a), fleet), dtype=np.float64)
        y[np.ix_(sel, list(columns))] = np.maximum(y[np.ix_(sel, list(columns))], f)  # NaN stays NaN
    return y
