"""Alarm and work-order ids never collide across mills, processes or restarts, and saving a record
never touches another mill's record with the same id."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from spinline.cloud.maintenance.store import HealthStore, RecordConflict
from spinline.health import alarms as alarms_mod
from spinline.health import workorders as workorders_mod
from spinline.health.alarms import Alarm, Severity
from spinline.health.workorders import WorkOrder

T0 = datetime(2026, 1, 1)


def _alarm(msg: str, **kw: object) -> Alarm:
    return Alarm(asset="rf01/main_motor", rule="r", severity=Severity.WARNING, message=msg, raised_at=T0, value=1.0,
                 **kw)  # type: ignore[arg-type]


def test_ids_do_not_repeat_after_a_restart() -> None:
    """Two processes (or one before and after a restart) with the same time make different ids."""
    first = _alarm("a").id, WorkOrder(asset="x", title="t", created_at=T0, created_by="u").id
    # what a restart or a second worker process amounts to: module state from scratch
    for mod in (alarms_mod, workorders_mod):
        if hasattr(mod, "_ids"):
            import itertools

            mod._ids = itertools.count(1)  # type: ignore[attr-defined]
    second = _alarm("b").id, WorkOrder(asset="x", title="t", created_at=T0, created_by="u").id
    assert first[0] != second[0] and first[1] != second[1]
    assert first[0].startswith("AL-20260101000000-") and first[1].startswith("WO-20260101000000-")
    assert len({_alarm(str(i)).id for i in range(500)}) == 500
    assert all(len(i) <= 64 for i in (*first, *second))


@pytest.fixture()
def hs(tmp_path: Path) -> HealthStore:
    s = HealthStore(f"sqlite:///{tmp_path / 'h.sqlite'}")
    s.create_schema()
    return s


def test_save_never_overwrites_another_mills_alarm(hs: HealthStore) -> None:
    victim = _alarm("victim alarm", id="AL-20260101000000-00001")
    hs.save_alarm("mill-a", victim)
    victim.acknowledge("ann", T0, "seen")
    hs.save_alarm("mill-a", victim)                                     # the same mill: updated in place
    intruder = _alarm("bob's alarm", id=victim.id)
    with pytest.raises(RecordConflict):
        hs.save_alarm("mill-b", intruder)
    got = hs.get_alarm(victim.id)
    assert got is not None and got[0] == "mill-a" and got[1].message == "victim alarm"
    assert [s.state for s in got[1].history] == ["active", "acknowledged"]
    assert [a.id for a in hs.list_alarms("mill-a")] == [victim.id] and hs.list_alarms("mill-b") == []


def test_save_never_overwrites_another_mills_work_order(hs: HealthStore) -> None:
    wo = WorkOrder(asset="x", title="mill a's order", created_at=T0, created_by="ann", id="WO-1")
    hs.save_work_order("mill-a", wo)
    with pytest.raises(RecordConflict):
        hs.save_work_order("mill-b", WorkOrder(asset="y", title="other", created_at=T0, created_by="bob", id="WO-1"))
    got = hs.get_work_order("WO-1")
    assert got is not None and got[0] == "mill-a" and got[1].title == "mill a's order" and len(got[1].history) == 1
