"""``AlarmEngine.export_state`` / ``restore_state``: the public, versioned format of alarm state.

The edge persists it in a file and the cloud pipeline in its state table; both cross a process
restart, so a restored engine must go on exactly as the one that never stopped.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from spinline.health.alarms import (
    ALARM_STATE_VERSION,
    Alarm,
    AlarmEngine,
    AlarmStateError,
    AnomalyRule,
    RateRule,
    Severity,
    ThresholdRule,
    state_from_counters,
)

T0 = datetime(2026, 3, 2, 8, 0)
ASSET = "rf01/main_motor"


def rules() -> list:
    return [ThresholdRule("hot", "x", high=10.0, hysteresis=1.0, on_delay=2, off_delay=2),
            RateRule("fast", "x", max_per_h=30.0, window_s=3600), AnomalyRule()]


def feed(e: AlarmEngine, xs: list[float], start: int) -> list[list[str]]:
    out = []
    for i, x in enumerate(xs, start):
        out.append([a.rule for a in e.evaluate(ASSET, T0 + timedelta(minutes=i), {"x": x, "anomaly_score": x / 10})])
    return out


def test_round_trip_through_json_goes_on_as_if_never_stopped() -> None:
    xs = [5, 11, 12, 12.5, 13, 9.5, 12, 8, 8, 8, 12, 12, 5, 5]
    whole = AlarmEngine(rules(), rearm_s=120)
    feed(whole, xs, 0)
    first = AlarmEngine(rules(), rearm_s=120)
    feed(first, xs[:5], 0)
    state = first.export_state(ASSET)
    assert state["version"] == ALARM_STATE_VERSION and state["asset"] == ASSET
    assert state["rules"]["hot"]["alarm"]["state"] == "active"
    text = json.dumps(state, allow_nan=False)  # JSON-safe: no NaN, no datetime objects
    second = AlarmEngine(rules(), rearm_s=120)
    second.restore_state(json.loads(text))
    assert second.export_state(ASSET) == state
    assert sorted(a.id for a in second.open_alarms(ASSET)) == sorted(a.id for a in first.open_alarms(ASSET))
    rest_second = feed(second, xs[5:], 5)
    rest_first = feed(first, xs[5:], 5)
    assert rest_second == rest_first
    assert second.export_state(ASSET) == first.export_state(ASSET)
    assert without_ids(first.export_state(ASSET)) == without_ids(whole.export_state(ASSET))


def without_ids(state: dict) -> dict:
    for v in state["rules"].values():
        if v["alarm"] is not None:
            v["alarm"].pop("id")
    return state


def test_nan_value_travels_as_null() -> None:
    e = AlarmEngine([AnomalyRule()])
    for i in range(5):
        e.evaluate(ASSET, T0 + timedelta(minutes=i), {"anomaly_score": 5.0})
    e.alarms[0].value = float("nan")
    state = e.export_state(ASSET)
    assert state["rules"]["anomaly"]["alarm"]["value"] is None
    json.dumps(state, allow_nan=False)
    f = AlarmEngine([AnomalyRule()])
    f.restore_state(state)
    assert f.open_alarms(ASSET)[0].value != f.open_alarms(ASSET)[0].value  # NaN again


def test_unknown_version_refused_with_a_clear_error() -> None:
    e = AlarmEngine(rules())
    state = {"version": 99, "asset": ASSET, "rules": {}}
    with pytest.raises(AlarmStateError, match="version 99 is not known"):
        e.restore_state(state)
    with pytest.raises(AlarmStateError, match="version None"):
        e.restore_state({"asset": ASSET, "rules": {}})
    with pytest.raises(ValueError, match="malformed"):  # an AlarmStateError is a ValueError
        e.restore_state({"version": ALARM_STATE_VERSION, "asset": ASSET, "rules": {"hot": {"cleared_at": "soon"}}})
    assert e.export_state(ASSET)["rules"] == {}  # nothing half-restored


def test_version_1_edge_file_is_migrated() -> None:
    """The edge's file before the contract: clear time and open alarm, no counters."""
    v1 = {"version": 1, "asset": ASSET, "rules": {
        "hot": {"cleared_at": None, "alarm": {"id": "AL-1", "severity": "warning", "message": "hot", "value": 12.0,
                                             "raised_at": T0.isoformat(), "state": "acknowledged", "count": 3}},
        "fast": {"cleared_at": (T0 - timedelta(minutes=1)).isoformat(), "alarm": None},
        "gone": {"cleared_at": None, "alarm": None}}}
    e = AlarmEngine(rules(), rearm_s=600)
    e.restore_state(v1)
    (a,) = e.open_alarms(ASSET)
    assert (a.id, a.count, a.state.value) == ("AL-1", 3, "acknowledged")
    s = e.export_state(ASSET)
    assert s["version"] == ALARM_STATE_VERSION and "gone" not in s["rules"]
    assert s["rules"]["hot"]["on"] == 2  # the rule's on_delay: the condition held when it was raised
    assert s["rules"]["fast"]["cleared_at"] == (T0 - timedelta(minutes=1)).isoformat()
    # still open: the condition holding again only counts; the re-arm delay of "fast" goes on
    e.evaluate(ASSET, T0 + timedelta(minutes=1), {"x": 13.0})
    assert a.count == 4 and len(e.alarms) == 1


def test_store_of_record_overrides_and_cloud_counters_are_converted() -> None:
    """The cloud keeps alarms in its store: it passes them in, with the clear times, over counters."""
    saved = state_from_counters(ASSET, {"hot": {"on": 1, "off": 0, "history": [[T0.isoformat(), 11.0]]}})
    stored = Alarm(asset=ASSET, rule="hot", severity=Severity.WARNING, message="m", raised_at=T0, value=11.0,
                   id="AL-store")
    e = AlarmEngine(rules())
    e.restore_state(saved, open_alarms=[stored], cleared_at={"fast": T0})
    s = e.export_state(ASSET)
    assert s["rules"]["hot"]["on"] == 1 and s["rules"]["hot"]["alarm"]["id"] == "AL-store"
    assert s["rules"]["fast"]["cleared_at"] == T0.isoformat()
    assert e.open_alarms(ASSET) == [stored]
