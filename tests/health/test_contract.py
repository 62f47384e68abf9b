"""One contract suite over every streaming health model (river/checks style)."""

from __future__ import annotations

from typing import Any

import pytest

from spinline.health import anomaly, checks

MODELS: list[Any] = [cls(**cls._unit_test_params()) for cls in anomaly.DETECTORS.values()]
# The edge's preset, on the contract's generic feature names (its log transform and speed key included).
MODELS.append(anomaly.Mahalanobis(far=0.05, speed_key="shaft_hz", log_keys=("f0", "f1"), seed=7))


def _cases() -> list[Any]:
    out = []
    for m in MODELS:
        for check in checks.yield_checks(m):
            out.append(pytest.param(m, check, id=f"{type(m).__name__}-{check.__name__}"))
    return out


@pytest.mark.parametrize(("model", "check"), _cases())
def test_contract(model: Any, check: Any) -> None:
    check(model)


def test_every_detector_is_covered() -> None:
    assert {type(m) for m in MODELS} >= set(anomaly.DETECTORS.values())
