"""``cloud.maintenance.service.Maintenance``: the use cases without HTTP (the console's door too)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from spinline.cloud.maintenance.service import Maintenance, MissingInput, RecordNotFound
from spinline.cloud.maintenance.store import HealthStore
from spinline.health.alarms import AlarmState, InvalidTransition, Severity
from spinline.health.workorders import WOState

T0 = datetime(2026, 11, 2, 8, 0)


def test_alarm_to_verified_order_scoped_to_its_mill(tmp_path: Path) -> None:
    hs = HealthStore(f"sqlite:///{tmp_path / 'h.db'}")
    hs.create_schema()
    m = Maintenance(hs)
    a = m.record_alarm("m1", asset="rf01/main_motor", rule="anomaly", severity=Severity.CRITICAL, message="hot",
                       raised_at=T0, value=3.2, evidence={})
    with pytest.raises(RecordNotFound):           # another mill's id is not found, not confirmed
        m.alarm("m2", a.id)
    m.step_alarm("m1", a.id, "acknowledge", by="ann", at=T0 + timedelta(minutes=1))
    with pytest.raises(InvalidTransition):
        m.step_alarm("m1", a.id, "acknowledge", by="ann", at=T0 + timedelta(minutes=2))
    assert m.alarms("m1", state=AlarmState.ACKNOWLEDGED)[0].id == a.id
    w = m.create_order("m1", by="ann", at=T0, alarm_id=a.id)
    with pytest.raises(MissingInput, match="assignee"):
        m.step_order("m1", w.id, "assign", by="ann", at=T0)
    for action, kw in (("assign", {"assignee": "bo"}), ("start", {}), ("resolve", {})):
        m.step_order("m1", w.id, action, by="ann", at=T0 + timedelta(hours=1), **kw)  # type: ignore[arg-type]
    with pytest.raises(MissingInput, match="health_index"):   # no store, no index given: cannot verify
        m.step_order("m1", w.id, "verify", by="ann", at=T0 + timedelta(hours=2))
    m.step_order("m1", w.id, "verify", by="ann", at=T0 + timedelta(hours=2), health_index=95.0)
    assert m.order("m1", w.id).state == WOState.VERIFIED
    with pytest.raises(MissingInput, match="asset and title"):
        m.create_order("m1", by="ann", at=T0)
    assert m.monthly_report("m1", datetime(2026, 11, 1)).orders_verified == 1
