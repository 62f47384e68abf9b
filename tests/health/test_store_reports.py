"""Persistence of alarms / work orders (SQLite and PostgreSQL) and the maintenance reports."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from spinline.cloud.maintenance.store import HealthStore
from spinline.core.errors import StorageError
from spinline.health.alarms import Alarm, Severity
from spinline.health.reports import UNPLANNED_DOWNTIME_H, monthly_report, weekly_plan
from spinline.health.rul import RulEstimate
from spinline.health.workorders import Priority, WorkOrder, WOState

T0 = datetime(2026, 3, 2, 8, 0)


def _lifecycle(store: HealthStore) -> None:
    store.create_schema()
    al = Alarm(asset="card1/cyl", rule="anomaly", severity=Severity.WARNING, message="m", raised_at=T0, value=2.5,
               evidence={"fault": "bearing_outer", "moved": {"env_bpfo": 9.1}})
    store.save_alarm("mill1", al)
    al.acknowledge("ann", T0 + timedelta(minutes=3), "seen")
    store.save_alarm("mill1", al)
    got = store.get_alarm(al.id)
    assert got is not None
    mill, back = got
    assert mill == "mill1" and back.state == al.state and back.evidence == al.evidence
    assert [(s.state, s.by, s.comment) for s in back.history] == [("active", "system", "m"),
                                                                  ("acknowledged", "ann", "seen")]
    wo = WorkOrder.from_alarm(al, at=T0 + timedelta(minutes=5), hi=45.0)
    wo.assign("fitter", by="ann", at=T0 + timedelta(hours=1))
    store.save_work_order("mill1", wo)
    store.save_work_order("mill2", WorkOrder(asset="x", title="other mill", created_at=T0, created_by="bob"))
    got_wo = store.get_work_order(wo.id)
    assert got_wo is not None
    assert got_wo[1].state == WOState.ASSIGNED and got_wo[1].assignee == "fitter" and got_wo[1].hi_at_open == 45.0
    assert got_wo[1].due_at == wo.due_at and len(got_wo[1].history) == 2
    assert [w.id for w in store.list_work_orders("mill1", states=["assigned"])] == [wo.id]
    assert store.list_work_orders("mill1", states=["open"]) == []
    assert len(store.list_work_orders("mill2")) == 1
    assert [a.id for a in store.list_alarms("mill1", state="acknowledged")] == [al.id]
    assert store.get_alarm("nope") is None and store.get_work_order("nope") is None


def test_store_sqlite(tmp_path: Path) -> None:
    _lifecycle(HealthStore(f"sqlite:///{tmp_path / 'h.db'}"))


@pytest.mark.postgres
def test_store_postgres(postgres_url: str) -> None:
    _lifecycle(HealthStore(postgres_url))


def test_store_errors_are_storage_errors(tmp_path: Path) -> None:
    s = HealthStore(f"sqlite:///{tmp_path / 'h.db'}")  # schema not created
    with pytest.raises(StorageError):
        s.save_work_order("m", WorkOrder(asset="x", title="t", created_at=T0, created_by="a"))


def _done(asset: str, fault: str, created: datetime, fix_h: float, repair_h: float) -> WorkOrder:
    w = WorkOrder(asset=asset, title=fault, created_at=created, created_by="sys", fault=fault, priority=Priority.HIGH)
    w.assign("fitter", by="lead", at=created + timedelta(hours=1))
    w.start(by="fitter", at=created + timedelta(hours=fix_h - repair_h))
    w.resolve(by="fitter", at=created + timedelta(hours=fix_h))
    w.verify(92.0, by="lead", at=created + timedelta(hours=fix_h + 2))
    return w


def test_monthly_report() -> None:
    m = datetime(2026, 3, 1)
    orders = [
        _done("a", "bearing_outer", m + timedelta(days=2), fix_h=10, repair_h=3),
        _done("b", "imbalance", m + timedelta(days=5), fix_h=30, repair_h=2),
        WorkOrder(asset="c", title="t", created_at=m + timedelta(days=20), created_by="x", fault="looseness",
                  priority=Priority.URGENT),  # due in 24 h, never resolved -> overdue
        _done("d", "misalignment", m - timedelta(days=40), fix_h=5, repair_h=1),  # last month's, not counted
    ]
    r = monthly_report(orders, m)
    assert r.month == "2026-03" and r.orders_created == 3
    assert r.faults_found == {"bearing_outer": 1, "imbalance": 1, "looseness": 1}
    assert (r.orders_resolved, r.orders_verified, r.overdue) == (2, 2, 1)
    assert r.time_to_fix_h_median == pytest.approx(20.0) and r.time_to_fix_h_mean == pytest.approx(20.0)
    expected = (UNPLANNED_DOWNTIME_H["bearing_outer"] - 3) + (UNPLANNED_DOWNTIME_H["imbalance"] - 2)
    assert r.downtime_avoided_h == pytest.approx(expected)
    text = "\n".join(r.lines())
    assert "downtime avoided" in text and "bearing_outer 24 h" in text


def test_weekly_plan_orders_overdue_first_and_adds_predictions() -> None:
    week = datetime(2026, 3, 9)
    late = WorkOrder(asset="a", title="late", created_at=week - timedelta(days=10), created_by="x",
                     priority=Priority.HIGH)
    due = WorkOrder(asset="b", title="due", created_at=week, created_by="x", priority=Priority.HIGH)
    later = WorkOrder(asset="c", title="later", created_at=week, created_by="x", priority=Priority.LOW)
    done = _done("d", "imbalance", week - timedelta(days=1), 5, 1)
    rul = {"e": RulEstimate(5 * 86400.0, 3 * 86400.0, 8 * 86400.0, "linear", -5.0, 10, "trend"),
           "a": RulEstimate(1.0, 1.0, 1.0, "linear", -5.0, 10, "has an order already"),
           "f": RulEstimate(float("inf"), float("inf"), float("inf"), "none", 0.0, 3, "no trend")}
    plan = weekly_plan([due, later, done, late], week, rul=rul)
    assert [(p.asset, p.overdue) for p in plan] == [("a", True), ("b", False), ("e", False)]
    assert plan[2].work_order is None and plan[2].state == "predicted"


def test_a_no_fault_found_resolution_is_stored_recorded_and_no_fault_label(tmp_path: Path) -> None:
    """What the technician found travels with the order: stored, a history step, and an order closed as
    no fault found is no label for training. An older database without the column gets it in place."""
    import sqlalchemy as sa

    from spinline.cloud.models.training import verified
    from spinline.health.workorders import Resolution

    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    old = sa.create_engine(url)
    with old.begin() as c:   # a database created before the resolution column existed
        c.execute(sa.text("CREATE TABLE health_work_orders (id VARCHAR(64) PRIMARY KEY, mill VARCHAR(64) NOT NULL, "
                          "asset VARCHAR(255) NOT NULL, title VARCHAR(255) NOT NULL, fault VARCHAR(64) NOT NULL, "
                          "priority VARCHAR(16) NOT NULL, state VARCHAR(16) NOT NULL, created_at DATETIME NOT NULL, "
                          "created_by VARCHAR(128) NOT NULL, due_at DATETIME, assignee VARCHAR(128), "
                          "alarm_id VARCHAR(64), description TEXT NOT NULL, hi_at_open FLOAT, hi_at_verify FLOAT)"))
    old.dispose()
    hs = HealthStore(url)
    hs.create_schema()
    hs.create_schema()   # idempotent
    t0 = datetime(2026, 11, 2)
    orders = []
    for res in (Resolution.NO_FAULT_FOUND, Resolution.REPAIRED):
        wo = WorkOrder(asset="rf01/main_motor", title="t", created_at=t0, created_by="x", fault="bearing_outer")
        wo.assign("tech", by="m", at=t0)
        wo.start(by="tech", at=t0)
        wo.resolve(by="tech", at=t0 + timedelta(hours=1), resolution=res)
        wo.verify(95.0, by="m", at=t0 + timedelta(hours=2))
        hs.save_work_order("m1", wo)
        orders.append(wo)
    nff = hs.get_work_order(orders[0].id)
    assert nff is not None and nff[1].resolution == Resolution.NO_FAULT_FOUND and nff[1].no_fault_found
    assert [s.comment for s in nff[1].history if s.comment.startswith("resolution")] == ["resolution: no_fault_found"]
    # changed at close: recorded with what it was
    w = nff[1]
    w.close(by="m", at=t0 + timedelta(hours=3), resolution=Resolution.REPAIRED)
    assert w.history[-1].comment == "resolution: repaired (was no_fault_found)" and not w.no_fault_found
    assert [o.id for o in verified(hs.list_work_orders("m1"))] == [orders[1].id]
    assert hs.get_work_order(orders[1].id)[1].resolution == Resolution.REPAIRED  # type: ignore[index]
