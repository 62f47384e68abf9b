"""Contract checks every streaming health model must pass (after ``river.checks``).

``yield_checks(model)`` yields check functions; the test suite runs each against every model, so a
new model gets the whole contract for free. A model supplies cheap parameters through the
classmethod ``_unit_test_params()``. Each check raises ``AssertionError`` with a reason.
"""

from __future__ import annotations

import copy
import inspect
import json
import random
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np


class StreamingModel(Protocol):
    seed: int

    def learn_one(self, x: dict[str, Any]) -> None: ...

    def score_one(self, x: dict[str, Any]) -> float: ...

    def clone(self) -> Any: ...


_NAMES: list[str] = ["f0", "f1", "f2", "f3"]


def _stream(seed: int, n: int = 200, d: int = 4) -> list[dict[str, float]]:
    """Correlated Gaussian samples keyed f0..f3 (positive, so log-transformed features work too)."""
    rng = np.random.default_rng(seed)
    cov = np.eye(d) + 0.5
    xs = rng.multivariate_normal(np.zeros(d), cov, size=n)
    return [{_NAMES[j]: float(v) + 10.0 for j, v in enumerate(row)} for row in xs]


def check_learn_one_is_pure(model: Any) -> None:
    m = model.clone()
    for x in _stream(1, 50):
        xx = copy.deepcopy(x)
        m.learn_one(x)
        assert x == xx, "learn_one modified its input"
        m.score_one(x)
        assert x == xx, "score_one modified its input"


def check_learn_one_returns_none(model: Any) -> None:
    assert model.clone().learn_one(_stream(2, 1)[0]) is None, "learn_one must return None (river >= 0.19)"


def check_repr(model: Any) -> None:
    r = repr(model)
    assert r.startswith(type(model).__name__ + "("), f"repr should read as a constructor call, got {r!r}"


def check_clone_is_idempotent(model: Any) -> None:
    assert repr(model.clone()) == repr(model.clone().clone()), "clone changed the parameters"


def check_init_default_params_are_not_mutable(model: Any) -> None:
    for cls in type(model).__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            assert not isinstance(p.default, list | dict | set | np.ndarray), \
                f"{cls.__name__}.__init__ has a mutable default for {p.name!r}"


def _fit_scores(model: Any, seed: int = 3) -> list[float]:
    m = model.clone()
    data = _stream(seed, 200)
    for x in data[:150]:
        m.learn_one(x)
    return [m.score_one(x) for x in data[150:]]


def check_seeding_is_idempotent(model: Any) -> None:
    assert _fit_scores(model) == _fit_scores(model), "same seed, same data gave different scores"


def check_shuffle_features_no_impact(model: Any) -> None:
    data = _stream(4, 200)
    rnd = random.Random(0)
    shuffled = []
    for x in data:
        keys = list(x)
        rnd.shuffle(keys)
        shuffled.append({k: x[k] for k in keys})
    a, b = model.clone(), model.clone()
    for x, y in zip(data[:150], shuffled[:150], strict=True):
        a.learn_one(x)
        b.learn_one(y)
    sa = [a.score_one(x) for x in data[150:]]
    sb = [b.score_one(y) for y in shuffled[150:]]
    assert np.allclose(sa, sb), "the order of the keys in x changed the scores"


def check_emerging_features(model: Any) -> None:
    m = model.clone()
    data = _stream(5, 200)
    for x in data[:150]:
        m.learn_one(x)
    for x in data[150:]:
        s = m.score_one({**x, "new_sensor": 123.0})
        assert np.isfinite(s), "a feature unseen in training broke scoring"
        m.learn_one({**x, "new_sensor": 1.0})


def check_disappearing_features(model: Any) -> None:
    m = model.clone()
    data = _stream(6, 200)
    for x in data[:150]:
        m.learn_one(x)
    for x in data[150:]:
        y = dict(x)
        y.pop("f1")
        assert np.isfinite(m.score_one(y)), "a missing feature broke scoring"
        m.learn_one(y)


def check_roc_auc(model: Any) -> None:
    """Shifted samples must rank above healthy ones (AUROC >= 0.9 on an easy problem)."""
    m = model.clone()
    data = _stream(7, 300)
    for x in data[:200]:
        m.learn_one(x)
    normal = [m.score_one(x) for x in data[200:]]
    anomalous = [m.score_one({k: v + (4.0 if k == "f2" else 0.0) for k, v in x.items()}) for x in data[200:]]
    assert roc_auc(normal, anomalous) >= 0.9, "could not separate a 4-sigma shift"


def check_calibrated_false_alarm_rate(model: Any) -> None:
    """On fresh healthy data the share of scores > 1 stays near the chosen far (loosely: <= 3 far + 2 %)."""
    m = model.clone()
    data = _stream(8, 2200)
    for x in data[:1000]:
        m.learn_one(x)
    rate = float(np.mean([m.score_one(x) > 1.0 for x in data[1000:]]))
    far = float(getattr(m, "far", 0.05))
    assert rate <= 3 * far + 0.02, f"false-alarm rate {rate:.3f} far above the configured {far}"


def check_json_round_trip(model: Any) -> None:
    m = model.clone()
    data = _stream(9, 200)
    for x in data[:150]:
        m.learn_one(x)
    if not hasattr(m, "to_dict"):
        return
    m2 = type(m).from_dict(json.loads(json.dumps(m.to_dict())))
    assert np.allclose([m.score_one(x) for x in data[150:]], [m2.score_one(x) for x in data[150:]]), \
        "a JSON round trip changed the scores"


def roc_auc(normal: list[float] | np.ndarray, anomalous: list[float] | np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted half)."""
    a = np.asarray(normal, dtype=np.float64)
    b = np.asarray(anomalous, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return float("nan")
    allv = np.concatenate([a, b])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty_like(allv)
    sorted_v = allv[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    u = ranks[a.size:].sum() - b.size * (b.size + 1) / 2.0
    return float(u / (a.size * b.size))


def yield_checks(model: Any) -> Iterator[Callable[[Any], None]]:
    """Every contract check that applies to ``model``."""
    yield check_learn_one_is_pure
    yield check_learn_one_returns_none
    yield check_repr
    yield check_clone_is_idempotent
    yield check_init_default_params_are_not_mutable
    yield check_seeding_is_idempotent
    yield check_shuffle_features_no_impact
    yield check_emerging_features
    yield check_disappearing_features
    yield check_roc_auc
    yield check_calibrated_false_alarm_rate
    yield check_json_round_trip
