"""The pure parts of the registry: the canary judge, the worked examples in the docstrings."""

from __future__ import annotations

import doctest
import importlib

import pytest

from spinline.cloud.models.canary import Counts, Policy, judge
from spinline.cloud.models.registry import in_share


@pytest.mark.parametrize("name", ["spinline.cloud.models.canary", "spinline.cloud.models.training"])
def test_doctests(name: str) -> None:
    res = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0 and res.attempted > 0


def test_the_judge_rolls_back_on_each_kind_of_evidence() -> None:
    base = Counts(scored=1000, alarms=5, errors=0, latency_s_sum=1000 * 0.001)
    assert judge(Counts(scored=50, alarms=10), base).decision == "rollback"
    v = judge(Counts(scored=100, errors=5, latency_s_sum=0.1), base)
    assert v.decision == "rollback" and v.reasons[0].startswith("scoring errors")
    v = judge(Counts(scored=100, latency_s_sum=100 * 0.02), base)
    assert v.decision == "rollback" and v.reasons[0].startswith("inference latency")
    v = judge(Counts(scored=100, alarms=2, nff=2, latency_s_sum=0.1), base)
    assert v.decision == "rollback" and "no fault found" in v.reasons[0]
    # few alarms on a quiet fleet are not a reason (the floor), a healthy canary waits then is promoted
    assert judge(Counts(scored=100, alarms=2, latency_s_sum=0.1), Counts(scored=1000)).decision == "wait"
    assert judge(Counts(scored=250, alarms=2, latency_s_sum=0.25), base).decision == "promote"
    assert judge(Counts(scored=10), base, Policy(promote_after=10)).decision == "promote"


def test_canary_share_is_stable_and_roughly_the_share() -> None:
    assets = [f"m/rf{i:03d}/main_motor" for i in range(1000)]
    chosen = [a for a in assets if in_share(a, "v3-abc", 0.25)]
    assert 180 < len(chosen) < 320
    assert chosen == [a for a in assets if in_share(a, "v3-abc", 0.25)]
    assert all(in_share(a, "v3-abc", 1.0) for a in assets)
