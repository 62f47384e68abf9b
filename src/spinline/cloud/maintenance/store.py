"""Persistence of alarms and work orders with SQLAlchemy Core (SQLite and PostgreSQL alike).

Four tables: ``health_alarms`` and ``health_work_orders`` hold the current state of each record;
``health_alarm_steps`` and ``health_work_order_steps`` hold every lifecycle step (who, when,
comment) in order. Saving a record rewrites its steps in one transaction, so a reader never sees
a state without the step that led to it. Times are stored as timezone-naive UTC.

A record belongs to one mill for good: saving a record whose id exists under another mill raises
``RecordConflict`` and changes nothing (ids are unique across mills, so this is a forged or reused id).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from spinline.core.errors import StorageError
from spinline.health.alarms import Alarm, AlarmState, Severity, Step
from spinline.health.workorders import Priority, Resolution, WorkOrder, WOState

metadata = sa.MetaData()


class RecordConflict(StorageError):
    """The id of a record being saved already belongs to another mill's record."""

    def __init__(self, ident: str) -> None:
        super().__init__(f"{ident} already exists")
        self.ident = ident

alarms_t = sa.Table(
    "health_alarms", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("mill", sa.String(64), nullable=False, index=True),
    sa.Column("asset", sa.String(255), nullable=False, index=True),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("raised_at", sa.DateTime, nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),
)
alarm_steps_t = sa.Table(
    "health_alarm_steps", metadata,
    sa.Column("alarm_id", sa.String(64), sa.ForeignKey("health_alarms.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("by", sa.String(128), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
)
orders_t = sa.Table(
    "health_work_orders", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("mill", sa.String(64), nullable=False, index=True),
    sa.Column("asset", sa.String(255), nullable=False, index=True),
    sa.Column("title", sa.String(255), nullable=False),
    sa.Column("fault", sa.String(64), nullable=False),
    sa.Column("priority", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("due_at", sa.DateTime),
    sa.Column("assignee", sa.String(128)),
    sa.Column("alarm_id", sa.String(64)),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("hi_at_open", sa.Float),
    sa.Column("hi_at_verify", sa.Float),
    sa.Column("resolution", sa.String(32)),
)
order_steps_t = sa.Table(
    "health_work_order_steps", metadata,
    sa.Column("order_id", sa.String(64), sa.ForeignKey("health_work_orders.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("by", sa.String(128), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
)


def _url(url: str) -> str:
    # A plain postgresql:// URL means the psycopg (v3) driver, the one spinline installs.
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


class HealthStore:
    """Alarms and work orders of any number of mills, in one database."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        self.engine = url_or_engine if isinstance(url_or_engine, Engine) else sa.create_engine(_url(url_or_engine))

    def create_schema(self) -> None:
        try:
            metadata.create_all(self.engine)
            self._add_missing_columns()
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"cannot create the health tables: {exc}") from exc

    def _add_missing_columns(self) -> None:
        """Columns added after a database was created (``create_all`` leaves existing tables alone):
        nullable ones, added in place so an existing zone keeps its records."""
        have = {c["name"] for c in sa.inspect(self.engine).get_columns(orders_t.name)}
        if "resolution" not in have:
            with self.engine.begin() as c:
                c.execute(sa.text(f"ALTER TABLE {orders_t.name} ADD COLUMN resolution VARCHAR(32)"))

    # --- alarms ------------------------------------------------------------------------------

    def save_alarm(self, mill: str, alarm: Alarm) -> None:
        row = {"id": alarm.id, "mill": mill, "asset": alarm.asset, "rule": alarm.rule,
               "severity": alarm.severity.value, "state": alarm.state.value, "message": alarm.message,
               "value": alarm.value, "count": alarm.count, "raised_at": alarm.raised_at,
               "evidence": json.dumps(alarm.evidence, default=str)}
        self._upsert(alarms_t, alarm_steps_t, "alarm_id", row, alarm.history)

    def get_alarm(self, alarm_id: str) -> tuple[str, Alarm] | None:
        with self.engine.connect() as c:
            r = c.execute(sa.select(alarms_t).where(alarms_t.c.id == alarm_id)).mappings().first()
            if r is None:
                return None
            steps = self._steps(c, alarm_steps_t, "alarm_id", alarm_id)
        return r["mill"], self._alarm(r, steps)

    def list_alarms(self, mill: str, *, state: str | None = None, asset: str | None = None) -> list[Alarm]:
        q = sa.select(alarms_t).where(alarms_t.c.mill == mill).order_by(alarms_t.c.raised_at, alarms_t.c.id)
        if state is not None:
            q = q.where(alarms_t.c.state == state)
        if asset is not None:
            q = q.where(alarms_t.c.asset == asset)
        with self.engine.connect() as c:
            rows = list(c.execute(q).mappings())
            return [self._alarm(r, self._steps(c, alarm_steps_t, "alarm_id", r["id"])) for r in rows]

    @staticmethod
    def _alarm(r: Any, steps: list[Step]) -> Alarm:
        return Alarm(asset=r["asset"], rule=r["rule"], severity=Severity(r["severity"]), message=r["message"],
                     raised_at=r["raised_at"], value=r["value"], id=r["id"], state=AlarmState(r["state"]),
                     count=r["count"], evidence=json.loads(r["evidence"]), history=steps)

    # --- work orders ---------------------------------------------------------------------------

    def save_work_order(self, mill: str, wo: WorkOrder) -> None:
        row = {"id": wo.id, "mill": mill, "asset": wo.asset, "title": wo.title, "fault": wo.fault,
               "priority": wo.priority.value, "state": wo.state.value, "created_at": wo.created_at,
               "created_by": wo.created_by, "due_at": wo.due_at, "assignee": wo.assignee, "alarm_id": wo.alarm_id,
               "description": wo.description, "hi_at_open": wo.hi_at_open, "hi_at_verify": wo.hi_at_verify,
               "resolution": wo.resolution.value if wo.resolution is not None else None}
        self._upsert(orders_t, order_steps_t, "order_id", row, wo.history)

    def get_work_order(self, order_id: str) -> tuple[str, WorkOrder] | None:
        with self.engine.connect() as c:
            r = c.execute(sa.select(orders_t).where(orders_t.c.id == order_id)).mappings().first()
            if r is None:
                return None
            steps = self._steps(c, order_steps_t, "order_id", order_id)
        return r["mill"], self._order(r, steps)

    def list_work_orders(self, mill: str, *, states: Sequence[str] | None = None,
                         asset: str | None = None) -> list[WorkOrder]:
        q = sa.select(orders_t).where(orders_t.c.mill == mill).order_by(orders_t.c.created_at, orders_t.c.id)
        if states:
            q = q.where(orders_t.c.state.in_(list(states)))
        if asset is not None:
            q = q.where(orders_t.c.asset == asset)
        with self.engine.connect() as c:
            rows = list(c.execute(q).mappings())
            return [self._order(r, self._steps(c, order_steps_t, "order_id", r["id"])) for r in rows]

    @staticmethod
    def _order(r: Any, steps: list[Step]) -> WorkOrder:
        return WorkOrder(asset=r["asset"], title=r["title"], created_at=r["created_at"], created_by=r["created_by"],
                         priority=Priority(r["priority"]), fault=r["fault"], due_at=r["due_at"],
                         alarm_id=r["alarm_id"], description=r["description"], id=r["id"], state=WOState(r["state"]),
                         assignee=r["assignee"], hi_at_open=r["hi_at_open"], hi_at_verify=r["hi_at_verify"],
                         resolution=Resolution(r["resolution"]) if r["resolution"] else None, history=steps)

    # --- shared ---------------------------------------------------------------------------------

    def _upsert(self, table: sa.Table, steps_t: sa.Table, fk: str, row: dict[str, Any], history: list[Step]) -> None:
        try:
            with self.engine.begin() as c:
                owner = c.execute(sa.select(table.c.mill).where(table.c.id == row["id"])).scalar()
                if owner is not None and owner != row["mill"]:
                    raise RecordConflict(str(row["id"]))
                # Only this mill's record (and its steps) is replaced; another mill's is never touched.
                c.execute(steps_t.delete().where(steps_t.c[fk] == row["id"]))
                c.execute(table.delete().where(table.c.id == row["id"], table.c.mill == row["mill"]))
                c.execute(table.insert().values(**row))
                if history:
                    c.execute(steps_t.insert(), [{fk: row["id"], "seq": i, "state": s.state, "at": s.at, "by": s.by,
                                                  "comment": s.comment} for i, s in enumerate(history)])
        except sa.exc.IntegrityError as exc:
            # The same id inserted at the same moment (under this or another mill): nothing was changed.
            raise RecordConflict(str(row["id"])) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"cannot save {row['id']}: {exc}") from exc

    @staticmethod
    def _steps(c: sa.Connection, t: sa.Table, fk: str, ident: str) -> list[Step]:
        rows = c.execute(sa.select(t).where(t.c[fk] == ident).order_by(t.c.seq)).mappings()
        return [Step(r["state"], _naive(r["at"]), r["by"], r["comment"]) for r in rows]


def _naive(d: datetime) -> datetime:
    return d.replace(tzinfo=None) if d.tzinfo is not None else d


# --- queries across mills: filters, paging, totals (the console's lists and the zone overview) -------

#: States of an order that is finished or waiting for verification: not overdue any more.
_SETTLED = ("resolved", "verified", "closed")


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a filtered list: ``total`` matches, ``items`` as (mill, record), newest first."""

    total: int
    items: list[tuple[str, Any]]


def _in(col: Any, values: Sequence[str] | None) -> Any:
    return col.in_(list(values)) if values else sa.true()


def _machine(col: Any, machine: str | None) -> Any:
    """An asset of ``machine`` ("rf01" or "rf01/main_motor"): the machine itself or one of its channels."""
    if machine is None:
        return sa.true()
    return sa.or_(col == machine, col.like(machine.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                                           + "/%", escape="\\"))


class HealthQueries:
    """Read-only queries over ``HealthStore``'s tables, for many mills at once (one SQL statement each)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def alarms(self, mills: Sequence[str], *, machine: str | None = None, states: Sequence[str] | None = None,
               severities: Sequence[str] | None = None, start: datetime | None = None, end: datetime | None = None,
               offset: int = 0, limit: int = 50) -> Page:
        c = alarms_t.c
        cond = sa.and_(c.mill.in_(list(mills)), _machine(c.asset, machine), _in(c.state, states),
                       _in(c.severity, severities), c.raised_at >= start if start else sa.true(),
                       c.raised_at < end if end else sa.true())
        with self.engine.connect() as con:
            total = con.execute(sa.select(sa.func.count()).select_from(alarms_t).where(cond)).scalar_one()
            rows = list(con.execute(sa.select(alarms_t).where(cond).order_by(c.raised_at.desc(), c.id.desc())
                                    .offset(offset).limit(limit)).mappings())
            steps = _steps_of(con, alarm_steps_t, "alarm_id", [r["id"] for r in rows])
        return Page(int(total), [(r["mill"], HealthStore._alarm(r, steps.get(r["id"], []))) for r in rows])

    def work_orders(self, mills: Sequence[str], now: datetime, *, machine: str | None = None,
                    states: Sequence[str] | None = None, priorities: Sequence[str] | None = None,
                    overdue: bool | None = None, start: datetime | None = None, end: datetime | None = None,
                    offset: int = 0, limit: int = 50) -> Page:
        c = orders_t.c
        late = sa.and_(c.due_at.is_not(None), c.due_at < now, c.state.not_in(_SETTLED))
        cond = sa.and_(c.mill.in_(list(mills)), _machine(c.asset, machine), _in(c.state, states),
                       _in(c.priority, priorities), c.created_at >= start if start else sa.true(),
                       c.created_at < end if end else sa.true(),
                       sa.true() if overdue is None else (late if overdue else sa.not_(late)))
        with self.engine.connect() as con:
            total = con.execute(sa.select(sa.func.count()).select_from(orders_t).where(cond)).scalar_one()
            rows = list(con.execute(sa.select(orders_t).where(cond).order_by(c.created_at.desc(), c.id.desc())
                                    .offset(offset).limit(limit)).mappings())
            steps = _steps_of(con, order_steps_t, "order_id", [r["id"] for r in rows])
        return Page(int(total), [(r["mill"], HealthStore._order(r, steps.get(r["id"], []))) for r in rows])

    def open_alarm_counts(self, mills: Sequence[str]) -> dict[str, dict[str, int]]:
        """Alarms not cleared, per mill and severity."""
        c = alarms_t.c
        q = sa.select(c.mill, c.severity, sa.func.count()).where(c.mill.in_(list(mills)), c.state != "cleared") \
            .group_by(c.mill, c.severity)
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as con:
            for mill, sev, n in con.execute(q):
                out.setdefault(mill, {})[sev] = int(n)
        return out

    def no_fault_found(self, version: str, mills: Sequence[str]) -> int:
        """Alarms raised by model ``version`` (at an edge of ``mills``) whose work order was closed as no
        fault found: the canary judge's false-alarm evidence (``canary.Counts.nff``)."""
        o, a = orders_t.c, alarms_t.c
        q = sa.select(a.evidence).join(orders_t, o.alarm_id == a.id).where(
            o.mill.in_(list(mills)), a.mill == o.mill, o.resolution == Resolution.NO_FAULT_FOUND.value)
        with self.engine.connect() as con:
            return sum(1 for (ev,) in con.execute(q) if _model_of(ev) == version)

    def order_counts(self, mills: Sequence[str], now: datetime) -> dict[str, tuple[int, int]]:
        """(open, overdue) work orders per mill: open = not verified or closed; overdue as ``WorkOrder.is_overdue``."""
        c = orders_t.c
        late = sa.and_(c.due_at.is_not(None), c.due_at < now, c.state.not_in(_SETTLED))
        q = sa.select(c.mill, sa.func.count(), sa.func.sum(sa.case((late, 1), else_=0))) \
            .where(c.mill.in_(list(mills)), c.state.not_in(("verified", "closed"))).group_by(c.mill)
        with self.engine.connect() as con:
            return {m: (int(n), int(k or 0)) for m, n, k in con.execute(q)}


def _model_of(evidence: str) -> str | None:
    try:
        v = json.loads(evidence).get("model_version")
    except (ValueError, AttributeError):
        return None
    return str(v) if v is not None else None


def _steps_of(c: sa.Connection, t: sa.Table, fk: str, ids: Sequence[str]) -> dict[str, list[Step]]:
    out: dict[str, list[Step]] = {}
    if ids:
        rows = c.execute(sa.select(t).where(t.c[fk].in_(list(ids))).order_by(t.c[fk], t.c.seq)).mappings()
        for r in rows:
            out.setdefault(r[fk], []).append(Step(r["state"], _naive(r["at"]), r["by"], r["comment"]))
    return out
