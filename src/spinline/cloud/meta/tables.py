"""Tables of the metadata database: mills, users and their mills, login tokens, browser sessions,
user preferences, login failures, edges and events.

SQLAlchemy Core on a SQLite file (embedded) or the same PostgreSQL database as the time series.
Every table is prefixed ``meta_`` so it never clashes with the time-series store's tables when both
share one schema. Times are integers: nanoseconds since the Unix epoch (UTC), like the data.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

mills = Table(
    "meta_mills", metadata,
    Column("id", String(64), primary_key=True),
    Column("zone", String(64), nullable=False, default=""),
    Column("name", String(200), nullable=False, default=""),
    Column("timezone", String(64), nullable=False, default="UTC"),
    #: The mill's site model (``spinline.core.site.Mill``) as JSON: lines, machines, counts, shifts.
    Column("config", Text, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
)

users = Table(
    "meta_users", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("full_name", String(200), nullable=False, default=""),
    Column("role", String(32), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_ns", BigInteger, nullable=False),
)

user_mills = Table(
    "meta_user_mills", metadata,
    Column("user_id", Integer, ForeignKey("meta_users.id", ondelete="CASCADE"), primary_key=True),
    Column("mill", String(64), primary_key=True),
)

tokens = Table(
    "meta_tokens", metadata,
    #: sha256 of the bearer token (hex): a leaked table does not give working tokens.
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("meta_users.id", ondelete="CASCADE"), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("expires_ns", BigInteger, nullable=False),
)

browser_sessions = Table(
    "meta_sessions", metadata,
    #: sha256 of the session cookie's value (hex), like the bearer tokens: a leaked table opens nothing.
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("meta_users.id", ondelete="CASCADE"), nullable=False, index=True),
    #: sha256 of the session's CSRF token: the ``X-CSRF-Token`` of a write must be this session's.
    Column("csrf_hash", String(64), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    #: Last request seen (idle expiry), updated at most once a minute.
    Column("seen_ns", BigInteger, nullable=False),
    #: Absolute expiry, whatever the activity.
    Column("expires_ns", BigInteger, nullable=False),
)

#: Per-user settings a person changes for themselves (a table of its own: ``meta_users`` of an
#: existing database gains no column without a migration).
user_prefs = Table(
    "meta_user_prefs", metadata,
    Column("user_id", Integer, ForeignKey("meta_users.id", ondelete="CASCADE"), primary_key=True),
    Column("language", String(16), nullable=True),
)

#: How to show each point (from the site file's templates, which the time-series store does not keep):
#: description, state labels, expected range. Replaced per mill when the site is registered.
point_display = Table(
    "meta_point_display", metadata,
    Column("tag", String(255), primary_key=True),
    Column("mill", String(64), nullable=False, index=True),
    #: JSON: {"description", "states": {code: label}, "min", "max"}
    Column("display", Text, nullable=False),
)

login_failures = Table(
    "meta_login_failures", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False),
    Column("client", String(64), nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Index("ix_meta_login_failures_key", "username", "client", "ts_ns"),
)

edges = Table(
    "meta_edges", metadata,
    Column("id", String(64), primary_key=True),
    Column("mill", String(64), nullable=False, index=True),
    Column("description", String(200), nullable=False, default=""),
    #: The HMAC secret, sealed with the server key (AES-256-GCM, the edge id as associated data).
    Column("secret_sealed", Text, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("created_by", String(64), nullable=False, default=""),
    Column("revoked_ns", BigInteger, nullable=True),
)

events = Table(
    "meta_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("mill", String(64), nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Column("machine", String(64), nullable=True),
    Column("kind", String(64), nullable=False),
    Column("severity", String(16), nullable=False, default="info"),
    Column("message", Text, nullable=False, default=""),
    Column("source", String(64), nullable=False, default=""),
    Index("ix_meta_events_mill_ts", "mill", "ts_ns"),
)
