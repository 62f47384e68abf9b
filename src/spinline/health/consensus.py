"""A consensus of the simple detectors: the mean of their scores, each in units of its own normal tail.

Why a consensus rather than the one detector that separates synthetic departures best: the
synthetic departures (``fleet.synthetic_departures``) are a weak proxy for real faults when the
healthy rows drift. On SKAB that criterion picked the IsolationForest, the detector that finds the
fewest real anomalies there (and the one the SKAB leaderboard ranks last). Averaging robust z,
Mahalanobis, PCA T²+Q and the forest needs no choice at all: a fault one member misses still moves
the mean through the others, and no member's units dominate because each is first divided by its
own ``1 - far`` quantile on the fitting rows (so every member reads about 1 at its own tail).

The consensus is itself calibrated afterwards like any detector (``fleet.calibrate`` on held-back
rows), so a score over 1 keeps its meaning: the false-alarm rate asked for, on data like the
held-back healthy rows.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from spinline.health.anomaly import BATCH_DETECTORS, F64, BaselineDetector

#: The members, in the fleet's order of simplicity.
MEMBERS: tuple[str, ...] = ("robust_z", "mahalanobis", "pca_t2q", "iforest")


class ConsensusDetector(BaselineDetector):
    """Mean of the member detectors' distances, each divided by its ``1 - far`` quantile on the fitting rows.

    Batch only (the forest is a member; see ``IsolationForestDetector``). The state holds each
    member's own state under ``"<member>.<key>"`` and its scale under ``"<member>.scale"``; it
    round-trips through plain JSON like every other detector's.
    """

    kind: ClassVar[str] = "consensus"

    def __init__(self, *, members: tuple[str, ...] = MEMBERS, **kw: Any) -> None:
        super().__init__(**kw)
        unknown = [m for m in members if m not in BATCH_DETECTORS]
        if not members or unknown:
            raise ValueError(f"consensus members must be among {', '.join(BATCH_DETECTORS)}; got {members}")
        self.members = tuple(members)
        self._dets: dict[str, BaselineDetector] = {}

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "members": self.members}

    def _member(self, name: str) -> BaselineDetector:
        det = self._dets.get(name)
        if det is None:
            det = BATCH_DETECTORS[name](far=self.far, features=self.features, seed=self.seed)
            self._dets[name] = det
        return det

    def _fit(self, z: F64) -> None:
        assert self._state is not None
        self._dets = {}
        for name in self.members:
            det = self._member(name)
            shape = det.fit_standardised(z)
            d = det.distance(z)
            d = d[np.isfinite(d)]
            scale = float(np.quantile(d, 1.0 - self.far)) if d.size else 1.0
            for k, v in shape.items():
                self._state[f"{name}.{k}"] = np.asarray(v, dtype=np.float64) if isinstance(v, list) else v
            self._state[f"{name}.scale"] = max(scale, 1e-12)

    def _loaded(self, name: str) -> BaselineDetector:
        assert self._state is not None
        det = self._dets.get(name)
        if det is None or det._state is None:
            det = self._member(name)
            prefix = f"{name}."
            det.load_standardised({k[len(prefix):]: (v.tolist() if isinstance(v, np.ndarray) else v)
                                   for k, v in self._state.items()
                                   if k.startswith(prefix) and k != f"{name}.scale"})
        return det

    def _distance(self, z: F64) -> F64:
        assert self._state is not None
        parts = [self._loaded(n).distance(z) / float(self._state[f"{n}.scale"]) for n in self.members]
        return np.asarray(np.mean(parts, axis=0), dtype=np.float64)

    def load_standardised(self, state: Any) -> None:
        super().load_standardised(state)
        self._dets = {}
