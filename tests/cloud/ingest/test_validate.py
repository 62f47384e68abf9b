"""The row checks, on their own (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from spinline.cloud.ingest.validate import MAX_FUTURE_NS, PointRules, Retry, screen, validate
from spinline.cloud.storage.base import PointInfo
from spinline.core.batch import Batch, Quality
from spinline.core.errors import PayloadError
from spinline.core.wire import REASONS, Envelope

NOW = 1_767_225_600 * 10**9
INFOS = [PointInfo(1, "m/a/g", "m", "a", "g", "kW", "gauge", 1.0),
         PointInfo(2, "m/a/s", "m", "a", "s", "", "state", 1.0),
         PointInfo(3, "m/a/c", "m", "a", "c", "kWh", "counter", 1.0)]
RULES = PointRules.build([1, 2, 3], INFOS)


def env(point: list[int], value: list[float], ts: int = NOW - 10**9, quality: int = Quality.GOOD) -> Envelope:
    return Envelope("e", "m", 1, Batch.of(point, ts, value, quality), NOW)


def test_good_rows_pass_unchanged() -> None:
    e = env([1, 2, 3], [1.5, 3.0, 10.0])
    assert validate(e, RULES, NOW).equals(e.batch)
    bad_reading = env([1], [float("nan")], quality=Quality.BAD)      # a failed read may say NaN
    assert len(validate(bad_reading, RULES, NOW)) == 1


@pytest.mark.parametrize(("e", "reason"), [
    (env([1, 99], [1.0, 1.0]), "unknown_point"),
    (env([1], [1.0], ts=NOW + MAX_FUTURE_NS + 10**9), "future_timestamp"),
    (env([1], [1.0], ts=10**9), "clock_skew"),
    (env([1], [float("nan")]), "non_finite"),
    (env([1], [float("inf")], quality=Quality.BAD), "non_finite"),
    (env([2], [1.5]), "wrong_type"),
    (env([3], [-1.0]), "wrong_type"),
])
def test_each_rule_refuses_the_whole_batch(e: Envelope, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        validate(e, RULES, NOW)
    assert info.value.reason == reason and info.value.detail


def test_empty_rules_refuse_every_point() -> None:
    with pytest.raises(PayloadError, match="unknown_point"):
        validate(env([1], [1.0]), PointRules.build([]), NOW)
    assert len(validate(Envelope("e", "m", 1, Batch.empty(), NOW), PointRules.build([]), NOW)) == 0
    assert np.array_equal(RULES.keys, [1, 2, 3])


def test_rows_older_than_the_raw_retention_are_too_old() -> None:
    day = 86400 * 10**9
    assert "too_old" in REASONS
    fresh = env([1, 3], [1.0, 2.0], ts=NOW - 89 * day)
    assert len(validate(fresh, RULES, NOW, max_age_ns=90 * day)) == 2
    assert len(validate(env([1], [1.0], ts=NOW - 400 * day), RULES, NOW)) == 1      # no limit by default
    with pytest.raises(PayloadError) as info:
        validate(env([1], [1.0], ts=NOW - 91 * day), RULES, NOW, max_age_ns=90 * day)
    assert info.value.reason == "too_old" and "90.0 days" in info.value.detail


def test_screen_refuses_only_the_offending_rows_and_names_the_cloud_state_ones() -> None:
    """One bad row must not cost the good rows flushed with it; cloud-state refusals say which rows to re-send."""
    day = 86400 * 10**9
    ts = np.array([NOW - 10**9, NOW - 10**9, NOW + MAX_FUTURE_NS + 5 * 10**9, NOW - 10**9, NOW - 100 * day,
                   NOW - 10**9, NOW - 10**9])
    b = Batch.of([1, 2, 1, 99, 3, 2, 3], ts, [1.5, 2.5, 1.0, 1.0, 4.0, 3.0, -2.0], Quality.GOOD)
    s = screen(Envelope("e", "m", 1, b, NOW), RULES, NOW, max_age_ns=90 * day)
    assert s.refused == {"unknown_point": 1, "future_timestamp": 1, "too_old": 1, "wrong_type": 2}
    assert s.batch.point.tolist() == [1, 2] and s.batch.value.tolist() == [1.5, 3.0]
    assert s.retry == Retry(points=(99,), after_ns=NOW + MAX_FUTURE_NS, before_ns=NOW - 90 * day)
    assert s.retry.as_json() == {"points": [99], "after_ns": NOW + MAX_FUTURE_NS, "before_ns": NOW - 90 * day}
    edge_fault_only = screen(env([1, 2], [1.0, 0.5]), RULES, NOW)
    assert edge_fault_only.refused == {"wrong_type": 1} and edge_fault_only.retry is None
    clean = screen(env([1, 2], [1.0, 2.0]), RULES, NOW)
    assert clean.refused == {} and clean.batch.equals(clean.batch) and len(clean.batch) == 2
