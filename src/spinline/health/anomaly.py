"""Per-asset anomaly detection against the asset's own healthy baseline (river vocabulary).

Every detector here learns one sample at a time (``learn_one(x: dict)``) during a healthy period
and then scores new samples (``score_one(x) -> float``; high means anomalous). What they share,
and why:

* **Robust standardisation.** Features are centred on the baseline median and scaled by its MAD,
  so a few odd samples in the "healthy" period (a door slammed, a sensor glitch) do not set the
  scale. Positive, skewed features (RMS, envelope ratios) can be log-transformed (``log_keys``).
* **Speed conditioning.** A spinning mill changes speed with the count it spins; vibration rises
  with speed without anything being wrong. With ``speed_key`` set, each feature is regressed on
  log(speed) over the baseline and the model sees only what speed does not explain. The slope is
  ridge-shrunk: a baseline covering well under 1 % of speed range gives a slope near zero rather
  than a noisy guess.
* **Calibrated scores.** The baseline is split (seeded) into a fitting half and a calibration
  half. The threshold is the split-conformal quantile of the calibration distances at the user's
  false-alarm rate ``far`` (extrapolated with an exponential tail when the baseline is too short
  for that rate), and ``score_one`` returns distance / threshold: **a score above 1 is an alarm**,
  and on data like the baseline that happens with probability about ``far``.
  ``p_value_one`` gives the conformal p-value itself.
* **Sensors come and go.** The feature set is fixed by the first sample learned; a feature missing
  later is imputed at the baseline centre (it contributes nothing), a new one is ignored.
* **No pickles.** ``to_dict`` / ``from_dict`` round-trip through plain JSON.

Size: the detectors share one streaming contract and one calibration; side by side they are checked
by the same contract tests.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

_LOG_EPS = 1e-9


class BaselineDetector(ABC):
    """Shared machinery: buffer, transform, speed conditioning, robust scaling, conformal threshold.

    Parameters
    ----------
    far
        False-alarm rate the user accepts on healthy data (0 < far < 1), e.g. 0.01.
    features
        Feature names to use, in order; ``None`` takes the keys of the first sample learned.
    speed_key
        Name of the operating-speed input (rpm or Hz) to condition on; it is not itself a feature.
    log_keys
        Features to log-transform (positive, right-skewed amplitudes).
    min_samples
        Baseline samples needed before the model scores (it returns 0.0 until then).
    max_samples
        Baseline buffer size; beyond it, reservoir sampling keeps a uniform sample of the history.
    min_log_scale
        Smallest robust scale of a log-transformed feature (0.05 = 5 %): vibration amplitudes do not
        repeat better than a few per cent across operating states, so a very steady baseline must
        not turn a 3 % change into a 20-sigma event.
    seed
        Seeds the calibration split and the reservoir.
    """

    kind: ClassVar[str] = "base"

    def __init__(self, *, far: float = 0.01, features: Sequence[str] | None = None, speed_key: str | None = None,
                 log_keys: Sequence[str] = (), min_samples: int = 20, max_samples: int = 5000,
                 min_log_scale: float = 0.05, seed: int = 0) -> None:
        if not 0.0 < far < 1.0:
            raise ValueError(f"far (false-alarm rate) must be in (0, 1), got {far}")
        if min_samples < 4:
            raise ValueError("min_samples must be at least 4 (half of them calibrate the threshold)")
        self.far = far
        self.features = tuple(features) if features is not None else None
        self.speed_key = speed_key
        self.log_keys = tuple(log_keys)
        self.min_samples = min_samples
        self.max_samples = max_samples
        self.min_log_scale = min_log_scale
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._rows: list[list[float]] = []
        self._speeds: list[float] = []
        self._seen = 0
        self._dirty = True
        self._state: dict[str, Any] | None = None

    # --- river API -------------------------------------------------------------------------

    def learn_one(self, x: Mapping[str, Any]) -> None:
        """Add one healthy sample to the baseline (does not modify ``x``)."""
        if self.features is None:
            self.features = tuple(k for k in x if k != self.speed_key)
        row = self._row(x)
        spd = self._speed(x)
        self._seen += 1
        if len(self._rows) < self.max_samples:
            self._rows.append(row)
            self._speeds.append(spd)
        else:
            j = int(self._rng.integers(0, self._seen))
            if j < self.max_samples:
                self._rows[j], self._speeds[j] = row, spd
        self._dirty = True

    def score_one(self, x: Mapping[str, Any]) -> float:
        """Calibrated anomaly score: distance / threshold (> 1 = alarm at the chosen false-alarm rate)."""
        if not self._ready():
            return 0.0
        return float(self.score_many(self._matrix([x]), np.array([self._speed(x)]))[0])

    def p_value_one(self, x: Mapping[str, Any]) -> float:
        """Conformal p-value: the share of calibration samples at least as far out as ``x``."""
        if not self._ready():
            return 1.0
        assert self._state is not None
        d = self._distance(self._standardise(self._matrix([x]), np.array([self._speed(x)])))[0]
        cal = np.asarray(self._state["cal"])
        return float((1 + np.sum(cal >= d)) / (cal.size + 1))

    def explain_one(self, x: Mapping[str, Any]) -> dict[str, float]:
        """Robust z-score of every feature after speed conditioning: which feature moved, and how far."""
        if not self._ready():
            return {}
        z = self._standardise(self._matrix([x]), np.array([self._speed(x)]))[0]
        assert self.features is not None
        return {k: float(v) for k, v in zip(self.features, z, strict=True)}

    # --- batch extension (optional, like river's learn_many) ------------------------------

    def learn_many(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for r in rows:
            self.learn_one(r)

    def score_many(self, x: F64, speed: F64 | None = None) -> F64:
        """Scores of a matrix (n, features) in ``self.features`` order (NaN = missing)."""
        if not self._ready():
            return np.zeros(x.shape[0])
        assert self._state is not None
        if speed is None:
            speed = np.full(x.shape[0], np.nan)
        return self._distance(self._standardise(x, speed)) / float(self._state["threshold"])

    @property
    def threshold(self) -> float:
        """Raw-distance alarm threshold (NaN until fitted)."""
        return float(self._state["threshold"]) if self._ready() and self._state else math.nan

    @property
    def n_baseline(self) -> int:
        return len(self._rows)

    # --- internals -------------------------------------------------------------------------

    def _speed(self, x: Mapping[str, Any]) -> float:
        if self.speed_key is None:
            return math.nan
        v = x.get(self.speed_key)
        return float(v) if v is not None and np.isfinite(v) and v > 0 else math.nan

    def _row(self, x: Mapping[str, Any]) -> list[float]:
        assert self.features is not None
        out = []
        for k in self.features:
            v = x.get(k)
            try:
                f = float(v) if v is not None else math.nan
            except (TypeError, ValueError):
                f = math.nan
            out.append(f)
        return out

    def _matrix(self, xs: Sequence[Mapping[str, Any]]) -> F64:
        return np.array([self._row(x) for x in xs], dtype=np.float64)

    def _transform(self, x: F64) -> F64:
        assert self.features is not None
        y = x.copy()
        for j, k in enumerate(self.features):
            if k in self.log_keys:
                y[:, j] = np.log(np.maximum(y[:, j], _LOG_EPS))
        return y

    def _ready(self) -> bool:
        if self._dirty:
            self._fit_all()
        return self._state is not None

    def _fit_all(self) -> None:
        self._dirty = False
        n = len(self._rows)
        if n < self.min_samples or self.features is None:
            self._state = None
            return
        x = self._transform(np.asarray(self._rows, dtype=np.float64))
        s = np.log(np.asarray(self._speeds, dtype=np.float64))
        # Impute missing training values at the column median so one dropped sample does not cost a row.
        ok = np.isfinite(x)
        med0 = np.array([np.median(col[m]) if m.any() else 0.0 for col, m in zip(x.T, ok.T, strict=True)])
        x = np.where(ok, x, med0)
        s_ok = np.isfinite(s)
        s_ref = float(np.median(s[s_ok])) if s_ok.any() else 0.0
        slope = np.zeros(x.shape[1])
        if s_ok.sum() >= 8:
            # Ridge-shrunk slope: a baseline whose speed spread is well under 1 % gives ~0, not noise.
            ds = s[s_ok] - s_ref
            xc = x[s_ok] - np.median(x[s_ok], axis=0)
            slope = (ds @ xc) / (float(ds @ ds) + s_ok.sum() * 0.01**2)
        ds_all = np.where(s_ok, s - s_ref, 0.0)
        r = x - ds_all[:, None] * slope[None, :]
        centre = np.median(r, axis=0)
        mad = 1.4826 * np.median(np.abs(r - centre), axis=0)
        std = r.std(axis=0)
        floor = np.array([self.min_log_scale if k in self.log_keys else 1e-6 * max(abs(c), 1.0)
                          for k, c in zip(self.features, centre, strict=True)])
        scale = np.maximum.reduce([mad, 0.1 * std, floor])
        self._state = {"centre": centre, "scale": scale, "slope": slope, "s_ref": s_ref,
                       "med0": med0}
        z = (r - centre) / scale
        perm = np.random.default_rng(self.seed).permutation(n)
        n_fit = n // 2
        fit_idx, cal_idx = np.sort(perm[:n_fit]), np.sort(perm[n_fit:])
        self._fit(z[fit_idx])
        cal = np.sort(self._distance(z[cal_idx]))
        level = math.ceil((1.0 - self.far) * (cal.size + 1))
        if level <= cal.size:
            thr = float(cal[level - 1])
        else:
            # Too few calibration samples for this false-alarm rate (the conformal quantile would be
            # "above the largest one seen"): extrapolate with an exponential tail fitted to the squared
            # distances above their median, P(D^2 > m + u) = 0.5 exp(-u / beta). Squared, because the
            # square of a Gaussian-like distance has an exponential-like tail (chi-square).
            d2 = cal**2
            m = float(np.median(d2))
            beta = float(np.mean(d2[d2 > m] - m)) if np.any(d2 > m) else max(m, 1e-9)
            thr = max(math.sqrt(m + beta * math.log(0.5 / self.far)), float(cal[-1]))
        self._state["cal"] = cal
        self._state["threshold"] = thr if thr > 0 else 1e-9

    def _standardise(self, x: F64, speed: F64) -> F64:
        assert self._state is not None
        st = self._state
        y = self._transform(x)
        s = np.log(np.where(np.isfinite(speed) & (speed > 0), speed, np.nan))
        ds = np.where(np.isfinite(s), s - st["s_ref"], 0.0)
        r = y - ds[:, None] * st["slope"][None, :]
        z = (r - st["centre"]) / st["scale"]
        return np.where(np.isfinite(z), z, 0.0)  # a missing feature sits at the centre

    def fit_standardised(self, z: F64) -> dict[str, Any]:
        """Learn only the model's shape (covariance, subspace, forest) from already standardised rows.

        For callers that standardise themselves, e.g. the fleet model, which centres and scales
        each asset on its own baseline and then learns one shape from every asset's rows. Returns
        the JSON-ready state that ``distance`` needs (pass it back via ``load_standardised``).
        """
        self._state = {}
        self._fit(np.asarray(z, dtype=np.float64))
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self._state.items()}

    def load_standardised(self, state: Mapping[str, Any]) -> None:
        """Restore a shape learned by ``fit_standardised`` (from its JSON form)."""
        self._state = {k: (np.asarray(v, dtype=np.float64) if isinstance(v, list) else v) for k, v in state.items()}
        self._dirty = False

    def distance(self, z: F64) -> F64:
        """Raw anomaly distance of standardised rows under the learned shape (larger = more unusual)."""
        return self._distance(np.asarray(z, dtype=np.float64))

    @abstractmethod
    def _fit(self, z: F64) -> None:
        """Learn the model's own state from standardised baseline samples (stored in ``self._state``)."""

    @abstractmethod
    def _distance(self, z: F64) -> F64:
        """Raw anomaly distance of standardised samples (n,) (larger = more unusual)."""

    # --- plumbing: repr, clone, JSON ---------------------------------------------------------

    def _params(self) -> dict[str, Any]:
        return {"far": self.far, "features": list(self.features) if self.features is not None else None,
                "speed_key": self.speed_key, "log_keys": list(self.log_keys), "min_samples": self.min_samples,
                "max_samples": self.max_samples, "min_log_scale": self.min_log_scale, "seed": self.seed}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    def clone(self) -> BaselineDetector:
        """A fresh, unfitted copy with the same parameters."""
        p = self._params()
        return type(self)(**p)

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"far": 0.05, "min_samples": 20, "seed": 42}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: parameters, baseline buffer and fitted state."""
        self._ready()
        state = None
        if self._state is not None:
            state = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self._state.items()}
        return {"kind": self.kind, "params": self._params(), "rows": self._rows,
                "speeds": [None if math.isnan(s) else s for s in self._speeds], "seen": self._seen, "state": state}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> BaselineDetector:
        if d["kind"] == "onnx":   # a learned model (onnxruntime, loaded only when one is used)
            from spinline.health.onnx_detector import OnnxDetector

            return OnnxDetector.load(d)
        cls = BATCH_DETECTORS[d["kind"]]
        m = cls(**d["params"])
        m._rows = [list(map(float, r)) for r in d["rows"]]
        m._speeds = [math.nan if s is None else float(s) for s in d["speeds"]]
        m._seen = int(d["seen"])
        m._rng = np.random.default_rng([m.seed, m._seen])
        if d["state"] is not None:
            m._state = {k: (np.asarray(v, dtype=np.float64) if isinstance(v, list) else v)
                        for k, v in d["state"].items()}
            m._dirty = False
        return m


class RobustZScore(BaselineDetector):
    """Largest robust |z| over the features: the simplest explainable detector (one feature moved)."""

    kind = "robust_z"

    def _fit(self, z: F64) -> None:
        pass

    def _distance(self, z: F64) -> F64:
        return np.abs(z).max(axis=1)  # type: ignore[no-any-return]


class Mahalanobis(BaselineDetector):
    """Robust Mahalanobis distance (Hotelling T²) on the standardised features.

    Covariance by a few concentration steps (keep the 75 % most central fit samples, re-estimate,
    as in the MCD estimator) with shrinkage towards the identity (``shrinkage``), so a short
    baseline with more features than it can support still gives a well-conditioned inverse.
    Catches changes in the *relationship* between features (RMS up while kurtosis stays) that a
    per-feature z-score misses.
    """

    kind = "mahalanobis"

    def __init__(self, *, shrinkage: float = 0.1, **kw: Any) -> None:
        super().__init__(**kw)
        if not 0.0 <= shrinkage <= 1.0:
            raise ValueError("shrinkage must be in [0, 1]")
        self.shrinkage = shrinkage

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "shrinkage": self.shrinkage}

    def _fit(self, z: F64) -> None:
        assert self._state is not None
        sub = z
        mu = np.median(z, axis=0)
        prec = np.eye(z.shape[1])
        for _ in range(3):
            mu = sub.mean(axis=0)
            cov = np.cov(sub, rowvar=False).reshape(z.shape[1], z.shape[1])
            cov = (1 - self.shrinkage) * cov + self.shrinkage * np.eye(z.shape[1]) * max(np.trace(cov) / z.shape[1],
                                                                                       1e-6)
            prec = np.linalg.pinv(cov)
            d = np.einsum("ij,jk,ik->i", z - mu, prec, z - mu)
            keep = d <= np.quantile(d, 0.75)
            if keep.sum() > z.shape[1] + 2:
                sub = z[keep]
        self._state["mu"] = mu
        self._state["prec"] = prec

    def _distance(self, z: F64) -> F64:
        assert self._state is not None
        dz = z - self._state["mu"]
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", dz, self._state["prec"], dz), 0.0))


class PCAT2Q(BaselineDetector):
    """PCA monitoring: Hotelling T² in the principal subspace plus Q (squared prediction error).

    The classic process-monitoring pair (the SKAB leaderboard's "T-squared+Q"): T² flags samples
    that are extreme *along* the usual directions of variation, Q flags samples that break the
    usual correlation structure. Each is divided by its median on the fitting half, and the two
    are added, so neither dominates by units alone.
    """

    kind = "pca_t2q"

    def __init__(self, *, variance: float = 0.9, **kw: Any) -> None:
        super().__init__(**kw)
        if not 0.0 < variance <= 1.0:
            raise ValueError("variance must be in (0, 1]")
        self.variance = variance

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "variance": self.variance}

    def _fit(self, z: F64) -> None:
        assert self._state is not None
        mu = z.mean(axis=0)
        _, s, vt = np.linalg.svd(z - mu, full_matrices=False)
        ev = s**2 / max(z.shape[0] - 1, 1)
        frac = np.cumsum(ev) / max(ev.sum(), 1e-12)
        k = int(np.searchsorted(frac, self.variance) + 1)
        k = min(k, vt.shape[0])
        self._state.update(mu=mu, p=vt[:k].T, ev=np.maximum(ev[:k], 1e-9))
        t2, q = self._t2q(z)
        self._state["t2_med"] = max(float(np.median(t2)), 1e-9)
        self._state["q_med"] = max(float(np.median(q)), 1e-9)

    def _t2q(self, z: F64) -> tuple[F64, F64]:
        assert self._state is not None
        dz = z - self._state["mu"]
        t = dz @ self._state["p"]
        t2 = (t**2 / self._state["ev"]).sum(axis=1)
        resid = dz - t @ self._state["p"].T
        return t2, (resid**2).sum(axis=1)

    def _distance(self, z: F64) -> F64:
        assert self._state is not None
        t2, q = self._t2q(z)
        return t2 / float(self._state["t2_med"]) + q / float(self._state["q_med"])


class IsolationForestDetector(BaselineDetector):
    """scikit-learn's IsolationForest on the standardised features (Liu, Ting and Zhou 2008).

    No assumption about the shape of normal (several operating clusters, non-linear relations),
    at the price of a coarser score. The distance is ``-score_samples`` (0.5 is "average", values
    towards 1 are isolated quickly). The forest is not stored as a pickle: the state keeps the
    standardised rows it was grown on (at most ``max_fit`` of them) and the seed, and the forest
    is regrown from them, identically, when a model file is read.

    Batch only (``BATCH_DETECTORS``, used by the fleet model behind ``spinline health``), not in
    the streaming registry ``DETECTORS``: scoring one row through scikit-learn costs ~25 ms and a
    ``learn_one`` regrows the forest, which the edge's per-sample loop cannot afford. Axis-aligned
    splits also separate a shift along correlated features less sharply than a covariance does
    (AUROC 0.89 on the contract suite's 3.3-sigma single-feature shift, below its 0.9 bar).
    """

    kind = "iforest"
    max_fit: ClassVar[int] = 4096

    def __init__(self, *, n_estimators: int = 200, **kw: Any) -> None:
        super().__init__(**kw)
        self.n_estimators = n_estimators
        self._forest: Any = None

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "n_estimators": self.n_estimators}

    def _cols(self, z: F64) -> F64:
        """Columns in feature-name order: the forest's random feature picks must not depend on key order."""
        if self.features is None or len(self.features) != z.shape[1]:
            return z
        return z[:, np.argsort(np.asarray(self.features, dtype=str), kind="stable")]

    def _fit(self, z: F64) -> None:
        assert self._state is not None
        z = self._cols(z)
        if z.shape[0] > self.max_fit:
            z = z[np.random.default_rng(self.seed).choice(z.shape[0], self.max_fit, replace=False)]
        self._state["z_fit"] = np.asarray(z, dtype=np.float64)
        self._forest = None

    def _grow(self) -> Any:
        from sklearn.ensemble import IsolationForest

        assert self._state is not None
        zf = np.asarray(self._state["z_fit"], dtype=np.float64)
        return IsolationForest(n_estimators=self.n_estimators, max_samples=min(256, zf.shape[0]),
                               random_state=self.seed).fit(zf)

    def _distance(self, z: F64) -> F64:
        if self._forest is None:
            self._forest = self._grow()
        return -np.asarray(self._forest.score_samples(self._cols(z)), dtype=np.float64)


DETECTORS: dict[str, type[BaselineDetector]] = {c.kind: c for c in (RobustZScore, Mahalanobis, PCAT2Q)}
#: Every detector, including those only fit for batch scoring (the fleet model of ``spinline health``).
BATCH_DETECTORS: dict[str, type[BaselineDetector]] = {**DETECTORS, "iforest": IsolationForestDetector}
#: Every kind ``BaselineDetector.from_dict`` loads: the detectors above, trained in place, and ``onnx``
#: (``health.onnx_detector``: learned in the cloud, run with onnxruntime, never trained at the edge).
MODEL_KINDS: tuple[str, ...] = (*DETECTORS, "onnx")

#: Vibration features worth a log transform (positive amplitudes spanning decades).
VIB_LOG_KEYS: tuple[str, ...] = ("rms_g", "peak_g", "velocity_rms", "env_bpfo", "env_bpfi", "env_bsf", "env_ftf",
                                 "kurtosis", "crest")
#: The vibration features the per-asset model watches (iso_zone is a coarse copy of velocity_rms).
VIB_MODEL_KEYS: tuple[str, ...] = ("rms_g", "peak_g", "crest", "kurtosis", "skewness", "velocity_rms",
                                   "env_bpfo", "env_bpfi", "env_bsf", "env_ftf")


def vibration_detector(*, far: float = 0.001, speed_key: str | None = "shaft_hz", seed: int = 0,
                       min_samples: int = 24) -> BaselineDetector:
    """The detector the edge runs per vibration channel: robust Mahalanobis on log features."""
    return Mahalanobis(far=far, features=VIB_MODEL_KEYS, speed_key=speed_key, log_keys=VIB_LOG_KEYS,
                       min_samples=min_samples, seed=seed)
