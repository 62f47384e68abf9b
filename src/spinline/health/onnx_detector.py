"""A learned anomaly model that travels as ONNX: trained in the cloud (scikit-learn), run by onnxruntime.

Why ONNX and not a pickle: a pickle from the network is code; an ONNX file is a graph of standard
operators that onnxruntime evaluates, so a model file can be wrong but cannot run anything. Why a
learned model at all: an isolation forest catches combinations of features the per-feature and
covariance detectors miss, at the price of a bigger artefact (hundreds of KB) and no speed conditioning.

``OnnxDetector`` speaks the detectors' vocabulary (``score_one``, ``score_many``, ``explain_one``,
``to_dict``/``BaselineDetector.from_dict``, kind ``"onnx"``), so the edge's ``AssetMonitor`` runs it
like the JSON detectors. It is frozen: it never learns at the edge (``learn_one`` refuses).

Calibration (``fit_isolation_forest``): the forest learns half of the healthy rows; on the other half
its raw anomaly scores (``-score_samples``) give the median ``center`` and the ``1 - far`` quantile
``threshold``; ``score_one`` returns ``(raw - center) / (threshold - center)``, so **above 1 is an
alarm**, with probability about ``far`` on healthy data, like the other detectors.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from spinline.health.anomaly import F64, BaselineDetector

_LOG_EPS = 1e-9


class OnnxDetector(BaselineDetector):
    kind: ClassVar[str] = "onnx"

    def __init__(self, *, model: bytes, features: Sequence[str], log_keys: Sequence[str] = (), center: float = 0.0,
                 threshold: float = 1.0, medians: Mapping[str, float] | None = None,
                 scales: Mapping[str, float] | None = None, far: float = 0.01, seed: int = 0) -> None:
        super().__init__(far=far, features=features, log_keys=log_keys, min_samples=4, seed=seed)
        if not threshold > center:
            raise ValueError("threshold must be above center")
        import onnxruntime as ort

        self.model = bytes(model)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(self.model, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
            raise ValueError(f"not a loadable ONNX model: {exc}") from None
        self._input = self._session.get_inputs()[0].name
        outs = [o.name for o in self._session.get_outputs()]
        self._output = "scores" if "scores" in outs else outs[-1]
        self.center, self.raw_threshold = float(center), float(threshold)
        #: Healthy medians in the model's input space (log for ``log_keys``): imputation and explanations.
        self.medians = {k: float(v) for k, v in (medians or {}).items()}
        self.scales = {k: float(v) for k, v in (scales or {}).items()}

    def learn_one(self, x: Mapping[str, Any]) -> None:
        raise ValueError("an ONNX model is trained in the cloud; it does not learn at the edge")

    def _ready(self) -> bool:
        return True

    def _fit(self, z: F64) -> None:
        raise ValueError("an ONNX model is fitted in the cloud (fit_isolation_forest)")

    def _distance(self, z: F64) -> F64:
        raise ValueError("an ONNX model scores through onnxruntime (score_many)")

    @property
    def threshold(self) -> float:
        return self.raw_threshold

    def _x(self, xs: F64) -> np.ndarray:
        assert self.features is not None
        y = np.array(xs, dtype=np.float64, copy=True)
        for j, k in enumerate(self.features):
            if k in self.log_keys:
                y[:, j] = np.log(np.maximum(y[:, j], _LOG_EPS))   # NaN stays NaN
            col = y[:, j]
            col[~np.isfinite(col)] = self.medians.get(k, 0.0)   # a missing feature sits at the (log) median
        return y.astype(np.float32)

    def score_many(self, x: F64, speed: F64 | None = None) -> F64:
        raw = -np.asarray(self._session.run([self._output], {self._input: self._x(x)})[0], dtype=np.float64).ravel()
        return (raw - self.center) / (self.raw_threshold - self.center)

    def score_one(self, x: Mapping[str, Any]) -> float:
        return float(self.score_many(self._matrix([x]))[0])

    def explain_one(self, x: Mapping[str, Any]) -> dict[str, float]:
        """Per feature: how far it sits from the healthy median, in robust scales (the forest itself says
        which combination was odd, not which feature; this is what a fitter can check)."""
        assert self.features is not None
        row = self._x(self._matrix([x]))[0]
        return {k: float((v - self.medians.get(k, 0.0)) / (self.scales.get(k) or 1.0))
                for k, v in zip(self.features, row, strict=True)}

    def clone(self) -> BaselineDetector:
        return self   # frozen: nothing to reset

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model_b64": base64.b64encode(self.model).decode("ascii"),
                "params": {"features": list(self.features or ()), "log_keys": list(self.log_keys),
                           "center": self.center, "threshold": self.raw_threshold, "medians": self.medians,
                           "scales": self.scales, "far": self.far, "seed": self.seed}}

    @classmethod
    def load(cls, d: Mapping[str, Any]) -> OnnxDetector:
        try:
            model = base64.b64decode(str(d["model_b64"]), validate=True)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"ONNX model bytes are missing or not base64: {exc}") from None
        p = d["params"]
        return cls(model=model, features=list(p["features"]), log_keys=list(p.get("log_keys", ())),
                   center=float(p["center"]), threshold=float(p["threshold"]), medians=p.get("medians"),
                   scales=p.get("scales"), far=float(p.get("far", 0.01)), seed=int(p.get("seed", 0)))


def fit_isolation_forest(healthy: Sequence[Mapping[str, float]], features: Sequence[str],
                         log_keys: Sequence[str] = (), *, far: float = 0.001, seed: int = 0,
                         n_estimators: int = 50) -> OnnxDetector:
    """Train a scikit-learn isolation forest on healthy rows, export it with skl2onnx, calibrate it."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import IsolationForest

    feats = list(features)
    if len(healthy) < 16:
        raise ValueError("an isolation forest needs at least 16 healthy rows")
    x = np.array([[float(r.get(k, math.nan)) for k in feats] for r in healthy])
    for j, k in enumerate(feats):
        if k in log_keys:
            x[:, j] = np.log(np.maximum(x[:, j], _LOG_EPS))
    med = np.nanmedian(x, axis=0)
    x = np.where(np.isfinite(x), x, med)
    order = np.random.default_rng(seed).permutation(len(x))
    fit, cal = x[order[: len(x) // 2]], x[order[len(x) // 2:]]
    forest = IsolationForest(n_estimators=n_estimators, random_state=seed).fit(fit.astype(np.float32))
    onx = to_onnx(forest, fit[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3})
    mad = np.nanmedian(np.abs(x - med), axis=0) * 1.4826
    log_medians = {k: float(m) for k, m in zip(feats, med, strict=True)}
    det = OnnxDetector(model=onx.SerializeToString(), features=feats, log_keys=log_keys, center=0.0,
                       threshold=1.0, medians=log_medians,
                       scales={k: float(s) or 1.0 for k, s in zip(feats, mad, strict=True)}, far=far, seed=seed)
    raw = -np.asarray(det._session.run([det._output], {det._input: cal.astype(np.float32)})[0]).ravel()  # noqa: SLF001
    center = float(np.median(raw))
    q = float(np.quantile(raw, 1.0 - far)) if len(raw) * far >= 1 else float(raw.max() + (raw.max() - center))
    det.center, det.raw_threshold = center, max(q, center + 1e-6)
    return det
