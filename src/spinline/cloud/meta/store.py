"""The metadata store: mills, users, login tokens, browser sessions and failures, edges, events.

Synchronous (SQLAlchemy Core); FastAPI runs the sync routes that call it in its thread pool.
The constructor connects to nothing (``create_engine`` is lazy); ``migrate()`` creates the tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from spinline.cloud.meta import tables as t
from spinline.core.errors import StorageError
from spinline.core.site import Mill


class ConflictError(StorageError):
    """A record with this id already exists."""


@dataclass(frozen=True, slots=True)
class MillRecord:
    id: str
    zone: str
    name: str
    timezone: str
    config: Mill


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    username: str
    full_name: str
    role: str
    password_hash: str
    disabled: bool
    mills: frozenset[str]
    created_ns: int


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A browser session (by the hash of its cookie): its user, CSRF token hash and expiries."""

    token_hash: str
    user_id: int
    csrf_hash: str
    created_ns: int
    seen_ns: int
    expires_ns: int


@dataclass(frozen=True, slots=True)
class EdgeRecord:
    id: str
    mill: str
    description: str
    secret_sealed: str
    created_ns: int
    created_by: str
    revoked_ns: int | None

    @property
    def active(self) -> bool:
        return self.revoked_ns is None


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    mill: str
    ts_ns: int
    machine: str | None
    kind: str
    severity: str
    message: str
    source: str


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        eng = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(eng, "connect")
        def _pragmas(dbapi_con: Any, _record: Any) -> None:
            cur = dbapi_con.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return eng
    return sa.create_engine(url, pool_pre_ping=True)


class MetaStore:
    """Users, tenants (mills), edges and events in SQLite (embedded) or PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)

    def migrate(self) -> None:
        if self.url.startswith("sqlite:///"):
            from pathlib import Path

            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            t.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot create the metadata tables: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()

    # --- mills -----------------------------------------------------------------------------------

    def upsert_mill(self, mill: Mill, *, zone: str, now_ns: int) -> None:
        row = {"zone": zone, "name": mill.name, "timezone": mill.timezone, "config": mill.model_dump_json(),
               "updated_ns": now_ns}
        with self.engine.begin() as con:
            n = con.execute(sa.update(t.mills).where(t.mills.c.id == mill.id).values(**row)).rowcount
            if not n:
                con.execute(sa.insert(t.mills).values(id=mill.id, **row))

    def mills(self, ids: Iterable[str] | None = None) -> list[MillRecord]:
        q = sa.select(t.mills).order_by(t.mills.c.id)
        if ids is not None:
            q = q.where(t.mills.c.id.in_(list(ids)))
        with self.engine.connect() as con:
            return [_mill(r) for r in con.execute(q).mappings()]

    def mill(self, mill_id: str) -> MillRecord | None:
        with self.engine.connect() as con:
            r = con.execute(sa.select(t.mills).where(t.mills.c.id == mill_id)).mappings().first()
        return None if r is None else _mill(r)

    def set_point_display(self, mill: str, rows: dict[str, dict[str, Any]]) -> None:
        """Replace the display metadata of a mill's points (tag -> {description, states, min, max})."""
        with self.engine.begin() as con:
            con.execute(sa.delete(t.point_display).where(t.point_display.c.mill == mill))
            if rows:
                con.execute(sa.insert(t.point_display), [{"tag": tag, "mill": mill, "display": json.dumps(d)}
                                                         for tag, d in rows.items()])

    def point_display(self, mill: str) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as con:
            rows = con.execute(sa.select(t.point_display.c.tag, t.point_display.c.display)
                               .where(t.point_display.c.mill == mill))
            return {str(tag): json.loads(d) for tag, d in rows}

    # --- users -----------------------------------------------------------------------------------

    def create_user(self, *, username: str, password_hash: str, role: str, mills: Iterable[str],
                    full_name: str, now_ns: int) -> UserRecord:
        try:
            with self.engine.begin() as con:
                uid = con.execute(sa.insert(t.users).values(
                    username=username, full_name=full_name, role=role, password_hash=password_hash,
                    disabled=False, created_ns=now_ns).returning(t.users.c.id)).scalar_one()
                _set_mills(con, uid, mills)
        except IntegrityError as exc:
            raise ConflictError(f"user {username!r} already exists") from exc
        user = self.user(uid)
        assert user is not None
        return user

    def user(self, user_id: int) -> UserRecord | None:
        return self._one_user(t.users.c.id == user_id)

    def user_by_name(self, username: str) -> UserRecord | None:
        return self._one_user(t.users.c.username == username)

    def users(self) -> list[UserRecord]:
        with self.engine.connect() as con:
            rows = list(con.execute(sa.select(t.users).order_by(t.users.c.id)).mappings())
            mills = _mills_of(con, [r["id"] for r in rows])
        return [_user(r, mills.get(r["id"], frozenset())) for r in rows]

    def update_user(self, user_id: int, *, role: str | None = None, mills: Iterable[str] | None = None,
                    password_hash: str | None = None, disabled: bool | None = None,
                    full_name: str | None = None) -> UserRecord | None:
        values = {k: v for k, v in {"role": role, "password_hash": password_hash, "disabled": disabled,
                                    "full_name": full_name}.items() if v is not None}
        with self.engine.begin() as con:
            if values:
                con.execute(sa.update(t.users).where(t.users.c.id == user_id).values(**values))
            if mills is not None:
                _set_mills(con, user_id, mills)
            if ends_sessions(password_hash=password_hash, disabled=disabled, role=role, mills=mills):
                # A changed password, role or scope ends every session of the user.
                con.execute(sa.delete(t.tokens).where(t.tokens.c.user_id == user_id))
                con.execute(sa.delete(t.browser_sessions).where(t.browser_sessions.c.user_id == user_id))
        return self.user(user_id)

    def delete_user(self, user_id: int) -> bool:
        with self.engine.begin() as con:
            con.execute(sa.delete(t.tokens).where(t.tokens.c.user_id == user_id))
            con.execute(sa.delete(t.browser_sessions).where(t.browser_sessions.c.user_id == user_id))
            con.execute(sa.delete(t.user_prefs).where(t.user_prefs.c.user_id == user_id))
            con.execute(sa.delete(t.user_mills).where(t.user_mills.c.user_id == user_id))
            return bool(con.execute(sa.delete(t.users).where(t.users.c.id == user_id)).rowcount)

    def _one_user(self, cond: Any) -> UserRecord | None:
        with self.engine.connect() as con:
            r = con.execute(sa.select(t.users).where(cond)).mappings().first()
            if r is None:
                return None
            return _user(r, _mills_of(con, [r["id"]]).get(r["id"], frozenset()))

    # --- tokens ----------------------------------------------------------------------------------

    def add_token(self, token_hash: str, user_id: int, *, created_ns: int, expires_ns: int) -> None:
        with self.engine.begin() as con:
            con.execute(sa.delete(t.tokens).where(t.tokens.c.expires_ns <= created_ns))
            con.execute(sa.insert(t.tokens).values(token_hash=token_hash, user_id=user_id, created_ns=created_ns,
                                                   expires_ns=expires_ns))

    def token_user(self, token_hash: str, now_ns: int) -> tuple[UserRecord, int] | None:
        """The user of an unexpired token, and the token's expiry."""
        with self.engine.connect() as con:
            r = con.execute(sa.select(t.tokens.c.user_id, t.tokens.c.expires_ns).where(
                t.tokens.c.token_hash == token_hash, t.tokens.c.expires_ns > now_ns)).first()
        if r is None:
            return None
        user = self.user(int(r[0]))
        return None if user is None else (user, int(r[1]))

    def delete_token(self, token_hash: str) -> None:
        with self.engine.begin() as con:
            con.execute(sa.delete(t.tokens).where(t.tokens.c.token_hash == token_hash))

    # --- browser sessions ------------------------------------------------------------------------

    def add_session(self, rec: SessionRecord) -> None:
        """Store a new session (and forget the expired ones)."""
        c = t.browser_sessions.c
        with self.engine.begin() as con:
            con.execute(sa.delete(t.browser_sessions).where(c.expires_ns <= rec.created_ns))
            con.execute(sa.insert(t.browser_sessions).values(
                token_hash=rec.token_hash, user_id=rec.user_id, csrf_hash=rec.csrf_hash, created_ns=rec.created_ns,
                seen_ns=rec.seen_ns, expires_ns=rec.expires_ns))

    def session(self, token_hash: str) -> SessionRecord | None:
        with self.engine.connect() as con:
            r = con.execute(sa.select(t.browser_sessions).where(
                t.browser_sessions.c.token_hash == token_hash)).mappings().first()
        return None if r is None else SessionRecord(**{k: r[k] for k in SessionRecord.__slots__})

    def touch_session(self, token_hash: str, now_ns: int) -> None:
        with self.engine.begin() as con:
            con.execute(sa.update(t.browser_sessions).where(t.browser_sessions.c.token_hash == token_hash)
                        .values(seen_ns=now_ns))

    def delete_session(self, token_hash: str) -> None:
        with self.engine.begin() as con:
            con.execute(sa.delete(t.browser_sessions).where(t.browser_sessions.c.token_hash == token_hash))

    # --- preferences -----------------------------------------------------------------------------

    def language(self, user_id: int) -> str | None:
        with self.engine.connect() as con:
            v = con.execute(sa.select(t.user_prefs.c.language).where(t.user_prefs.c.user_id == user_id)).scalar()
        return None if v is None else str(v)

    def set_language(self, user_id: int, language: str | None) -> None:
        with self.engine.begin() as con:
            n = con.execute(sa.update(t.user_prefs).where(t.user_prefs.c.user_id == user_id)
                            .values(language=language)).rowcount
            if not n:
                con.execute(sa.insert(t.user_prefs).values(user_id=user_id, language=language))

    # --- login failures --------------------------------------------------------------------------

    def record_login_failure(self, username: str, client: str, ts_ns: int) -> None:
        with self.engine.begin() as con:
            con.execute(sa.insert(t.login_failures).values(username=username, client=client, ts_ns=ts_ns))

    def login_failures(self, username: str, client: str, since_ns: int) -> list[int]:
        """Times of the failures of this user from this client since ``since_ns``, oldest first."""
        c = t.login_failures.c
        with self.engine.begin() as con:
            con.execute(sa.delete(t.login_failures).where(c.ts_ns < since_ns))
            return [int(x) for x in con.execute(sa.select(c.ts_ns).where(
                c.username == username, c.client == client, c.ts_ns >= since_ns).order_by(c.ts_ns)).scalars()]

    def clear_login_failures(self, username: str, client: str) -> None:
        c = t.login_failures.c
        with self.engine.begin() as con:
            con.execute(sa.delete(t.login_failures).where(c.username == username, c.client == client))

    # --- edges -----------------------------------------------------------------------------------

    def create_edge(self, *, edge_id: str, mill: str, description: str, secret_sealed: str, created_ns: int,
                    created_by: str) -> EdgeRecord:
        try:
            with self.engine.begin() as con:
                con.execute(sa.insert(t.edges).values(id=edge_id, mill=mill, description=description,
                                                      secret_sealed=secret_sealed, created_ns=created_ns,
                                                      created_by=created_by, revoked_ns=None))
        except IntegrityError as exc:
            raise ConflictError(f"edge {edge_id!r} already exists (a revoked id is not reused)") from exc
        edge = self.edge(edge_id)
        assert edge is not None
        return edge

    def edge(self, edge_id: str) -> EdgeRecord | None:
        with self.engine.connect() as con:
            r = con.execute(sa.select(t.edges).where(t.edges.c.id == edge_id)).mappings().first()
        return None if r is None else EdgeRecord(**dict(r))

    def edges(self, mills: Iterable[str] | None = None) -> list[EdgeRecord]:
        q = sa.select(t.edges).order_by(t.edges.c.mill, t.edges.c.id)
        if mills is not None:
            q = q.where(t.edges.c.mill.in_(list(mills)))
        with self.engine.connect() as con:
            return [EdgeRecord(**dict(r)) for r in con.execute(q).mappings()]

    def edges_revision(self) -> tuple[int, int]:
        """(number of edges, latest revocation time): changes whenever an edge is created or revoked,
        by this process or another (the CLI), so a credential cache knows when to forget."""
        with self.engine.connect() as con:
            row = con.execute(sa.select(sa.func.count(), sa.func.max(t.edges.c.revoked_ns))
                              .select_from(t.edges)).one()
        return int(row[0] or 0), int(row[1] or 0)

    def revoke_edge(self, edge_id: str, now_ns: int) -> bool:
        """Revoke an active edge; False when there is none of that id or it is already revoked."""
        with self.engine.begin() as con:
            return bool(con.execute(sa.update(t.edges).where(t.edges.c.id == edge_id, t.edges.c.revoked_ns.is_(None))
                                    .values(revoked_ns=now_ns)).rowcount)

    # --- events ----------------------------------------------------------------------------------

    def add_event(self, *, mill: str, ts_ns: int, kind: str, severity: str = "info", message: str = "",
                  machine: str | None = None, source: str = "") -> EventRecord:
        with self.engine.begin() as con:
            eid = con.execute(sa.insert(t.events).values(
                mill=mill, ts_ns=ts_ns, machine=machine, kind=kind, severity=severity, message=message,
                source=source).returning(t.events.c.id)).scalar_one()
        return EventRecord(id=int(eid), mill=mill, ts_ns=ts_ns, machine=machine, kind=kind, severity=severity,
                           message=message, source=source)

    def events(self, mill: str, *, start_ns: int | None = None, end_ns: int | None = None,
               kinds: Sequence[str] | None = None, machine: str | None = None, limit: int = 1000) -> list[EventRecord]:
        """Events of one mill, newest first."""
        c = t.events.c
        q = sa.select(t.events).where(c.mill == mill)
        if start_ns is not None:
            q = q.where(c.ts_ns >= start_ns)
        if end_ns is not None:
            q = q.where(c.ts_ns < end_ns)
        if kinds:
            q = q.where(c.kind.in_(list(kinds)))
        if machine is not None:
            q = q.where(c.machine == machine)
        q = q.order_by(c.ts_ns.desc(), c.id.desc()).limit(limit)
        with self.engine.connect() as con:
            return [EventRecord(**dict(r)) for r in con.execute(q).mappings()]


def ends_sessions(*, password_hash: str | None, disabled: bool | None, role: str | None,
                  mills: Iterable[str] | None) -> bool:
    """Whether a user update ends the user's sessions (a new password, disabling, a new role or scope)."""
    return password_hash is not None or bool(disabled) or role is not None or mills is not None


def _mill(r: Any) -> MillRecord:
    return MillRecord(id=r["id"], zone=r["zone"], name=r["name"], timezone=r["timezone"],
                      config=Mill.model_validate_json(r["config"]))


def _user(r: Any, mills: frozenset[str]) -> UserRecord:
    return UserRecord(id=int(r["id"]), username=r["username"], full_name=r["full_name"], role=r["role"],
                      password_hash=r["password_hash"], disabled=bool(r["disabled"]), mills=mills,
                      created_ns=int(r["created_ns"]))


def _mills_of(con: sa.Connection, user_ids: Sequence[int]) -> dict[int, frozenset[str]]:
    out: dict[int, set[str]] = {}
    if user_ids:
        q = sa.select(t.user_mills.c.user_id, t.user_mills.c.mill).where(t.user_mills.c.user_id.in_(list(user_ids)))
        for uid, mill in con.execute(q):
            out.setdefault(int(uid), set()).add(str(mill))
    return {k: frozenset(v) for k, v in out.items()}


def _set_mills(con: sa.Connection, user_id: int, mills: Iterable[str]) -> None:
    con.execute(sa.delete(t.user_mills).where(t.user_mills.c.user_id == user_id))
    rows = [{"user_id": user_id, "mill": m} for m in sorted(set(mills))]
    if rows:
        con.execute(sa.insert(t.user_mills), rows)
