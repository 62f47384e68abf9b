"""Health index 0-100 per asset and its rollup to machine, line and mill.

Rule (explainable by construction): each kind of evidence gives a **penalty** on a common 0-100
scale through a fixed piecewise-linear table, and the index is 100 minus the **largest** penalty.
The largest, not the sum, so the index always has one named driver a technician can check, and
two mild symptoms do not add up to an alarm that neither would raise.

=============================  ====  ====  ====  ====  ====  ====  ====
anomaly score (1 = alarm)       0.5   1     2     4     8     16    32
penalty                         0     30    45    60    75    90    100
velocity RMS / ISO zone         0     A/B   B/C   C/D   2x C/D
penalty                         0     10    35    65    95
=============================  ====  ====  ====  ====  ====  ====  ====

Past its alarm level the anomaly penalty grows by 15 per doubling of the score, so the index keeps
falling while a fault develops (and a trend, hence a remaining useful life, can be read from it)
instead of pinning at the bottom as soon as the alarm is raised.

So an index >= 80 reads "good" (zone A/B, score well below its alarm level), 60-80 "watch",
30-60 "plan maintenance" (zone C, or a confirmed anomaly), < 30 "act now" (zone D or a score
several times its threshold). ``STATUS_BANDS`` names these bands.

Rollup: a machine is as healthy as its worst asset, a line as its worst machine, a mill as its
worst line (**min**): a spinning line stops when one machine stops, and averaging would hide one
failing bearing among fifty good ones. Each level also reports the mean and which child drives
the minimum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from spinline.core.texts import Text
from spinline.health.features import ISO_ZONE_LIMITS

_SCORE_X = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
_SCORE_P = (0.0, 30.0, 45.0, 60.0, 75.0, 90.0, 100.0)
_ZONE_P = (0.0, 10.0, 35.0, 65.0, 95.0)

STATUS_BANDS: tuple[tuple[float, str], ...] = ((80.0, "good"), (60.0, "watch"), (30.0, "plan maintenance"),
                                               (0.0, "act now"))


def status(hi: float) -> str:
    for lo, name in STATUS_BANDS:
        if hi >= lo:
            return name
    return STATUS_BANDS[-1][1]


@dataclass(frozen=True, slots=True)
class HealthIndex:
    value: float
    driver: str
    penalties: dict[str, float] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return status(self.value)

    def text(self) -> Text:
        """``explain`` as a message key and parameters (the console shows it in the reader's language)."""
        parts = ", ".join(f"{k} -{v:.0f}" for k, v in sorted(self.penalties.items(), key=lambda kv: -kv[1]))
        params = {"value": f"{self.value:.0f}", "status": self.status, "driver": self.driver}
        if not parts:
            return Text("health.explain_no_penalties", params)
        return Text("health.explain", {**params, "penalties": parts})

    def explain(self) -> str:
        return self.text().en


def anomaly_penalty(score: float) -> float:
    if not math.isfinite(score):
        return 0.0
    return float(np.interp(score, _SCORE_X, _SCORE_P))


def vibration_penalty(velocity_mm_s: float, machine_class: str = "I") -> float:
    ab, bc, cd = ISO_ZONE_LIMITS[machine_class]
    if not math.isfinite(velocity_mm_s):
        return 0.0
    return float(np.interp(velocity_mm_s, (0.0, ab, bc, cd, 2 * cd), _ZONE_P))


def health_index(*, anomaly_score: float | None = None, velocity_rms: float | None = None,
                 machine_class: str = "I", extra: Mapping[str, float] | None = None) -> HealthIndex:
    """Health index of one asset from its anomaly score and vibration severity.

    ``extra`` adds named penalties (0-100) from other evidence, e.g. a process feature rule
    (``{"temp_rise": 40}``); they compete for the maximum like the built-in ones.
    """
    pen: dict[str, float] = {}
    if anomaly_score is not None:
        pen["anomaly_score"] = anomaly_penalty(float(anomaly_score))
    if velocity_rms is not None:
        pen["velocity_rms (ISO 20816)"] = vibration_penalty(float(velocity_rms), machine_class)
    for k, v in (extra or {}).items():
        pen[k] = float(min(max(v, 0.0), 100.0))
    if not pen:
        return HealthIndex(100.0, "no evidence", {})
    driver = max(pen, key=lambda k: pen[k])
    return HealthIndex(round(100.0 - pen[driver], 2), driver if pen[driver] > 0 else "none", pen)


@dataclass(frozen=True, slots=True)
class Rollup:
    id: str
    level: str
    value: float
    mean: float
    worst: str
    children: tuple[Rollup, ...] = ()

    def find(self, id_: str) -> Rollup | None:
        if self.id == id_:
            return self
        for c in self.children:
            f = c.find(id_)
            if f is not None:
                return f
        return None


def rollup(assets: Iterable[tuple[str, str, str, str, float]]) -> Rollup:
    """Roll asset indices up to machine, line and mill (min rule, see module docstring).

    ``assets``: (mill, line, machine, asset, hi) rows; one mill is expected (its rollup is returned).
    """
    tree: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for mill, line, machine, asset, hi in assets:
        tree.setdefault(mill, {}).setdefault(line, {}).setdefault(machine, {})[asset] = float(hi)
    if len(tree) != 1:
        raise ValueError(f"rollup expects the assets of exactly one mill, got {len(tree)}")

    def node(id_: str, level: str, kids: list[Rollup]) -> Rollup:
        vals = [k.value for k in kids]
        worst = min(kids, key=lambda k: k.value)
        return Rollup(id_, level, min(vals), round(float(np.mean(vals)), 2), worst.id, tuple(kids))

    (mill_id, lines), = tree.items()
    line_nodes = []
    for line_id, machines in lines.items():
        mnodes = []
        for mid, ass in machines.items():
            leaves = [Rollup(a, "asset", v, v, a) for a, v in ass.items()]
            mnodes.append(node(mid, "machine", leaves))
        line_nodes.append(node(line_id, "line", mnodes))
    return node(mill_id, "mill", line_nodes)
