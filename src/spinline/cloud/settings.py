"""Typed settings of the cloud process, read once at the entry point (``Settings.from_env``).

Nothing here is a module-level singleton: ``create_app(settings)`` takes an instance, so a test
builds as many isolated apps as it likes.

Environment variables (all optional) are the field names upper-cased with a ``SPINLINE_`` prefix,
e.g. ``SPINLINE_DB=postgresql://...``, ``SPINLINE_DATA_DIR=/var/lib/spinline``,
``SPINLINE_SECRET_KEY=<base64 of 32 bytes>``, ``SPINLINE_TOKEN_TTL_S=28800``.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from spinline.core.wire import MAX_PAYLOAD_BYTES

_PG_PREFIXES = ("postgresql://", "postgres://", "postgresql+psycopg://")
SECRET_KEY_FILE = "secret.key"  # noqa: S105 (a file name, not a secret)


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: ``embedded`` (DuckDB + SQLite in ``data_dir``), ``embedded:/folder`` or ``postgresql://...``.
    db: str = "embedded"
    #: Folder of the embedded files and of the generated secret key.
    data_dir: Path = Path("spinline-data")
    #: Site file whose mills and points are registered at start-up (optional).
    site: Path | None = None
    #: Key that encrypts edge secrets at rest (base64 of 32 bytes). Absent: read or create
    #: ``data_dir/secret.key`` (mode 0600).
    secret_key: SecretStr | None = None
    #: Lifetime of a login token.
    token_ttl_s: int = Field(default=8 * 3600, gt=0)
    #: A browser session ends after this long without a request ...
    session_idle_s: float = Field(default=3600.0, gt=0)
    #: ... and this long after login in any case.
    session_max_s: float = Field(default=12 * 3600.0, gt=0)
    #: Secure flag of the session cookies: ``auto`` sets it when the request came over https.
    cookie_secure: Literal["auto", "always", "never"] = "auto"
    #: Live (SSE) streams one user may hold open at once (429 beyond).
    max_streams_per_user: int = Field(default=4, ge=1)
    #: Failed logins per user and client within ``login_window_s`` before logins are refused (429).
    login_max_failures: int = Field(default=5, ge=1)
    login_window_s: float = Field(default=300.0, gt=0)
    #: argon2id cost (RFC 9106 "second recommended option" is t=3, m=64 MiB, p=4).
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)
    #: Largest ingest body accepted over HTTP.
    max_ingest_bytes: int = Field(default=MAX_PAYLOAD_BYTES, gt=0)
    #: Raw evidence snapshots kept per vibration channel (the newest; older ones are deleted on arrival).
    evidence_keep_per_channel: int = Field(default=20, ge=1)
    #: The cloud model's diagnosis of an uncertain snapshot at or above this confidence, naming another fault
    #: than the work order's, updates the order's fault (``cloud.evidence_answers``); below it, a comment only.
    evidence_confident_at: float = Field(default=0.8, ge=0.0, le=1.0)
    #: Where a federated run's Flower server listens (``0.0.0.0`` for edges on other hosts) ...
    federated_bind: str = "127.0.0.1"
    #: ... and the host the edges are told to connect to (default: the bind address).
    federated_advertise: str | None = None
    #: Most points a range query returns.
    max_range_points: int = Field(default=20000, gt=0)
    #: Seconds between pushes of the live stream.
    stream_interval_s: float = Field(default=1.0, gt=0)
    #: Seconds between rollup refreshes run by the app (0: someone else refreshes them).
    rollup_refresh_s: float = Field(default=30.0, ge=0)
    #: Seconds between background recomputations of each mill's KPIs of today for the zone overview (0: off,
    #: computed in the request when older than a minute).
    zone_refresh_s: float = Field(default=20.0, ge=0)
    #: Freeze what start-up built out of the cyclic garbage collector's reach (``gc.freeze``; see
    #: ``app._freeze_startup_heap``). Off only where many apps are built in one process (the tests).
    freeze_startup_heap: bool = True
    #: Seconds between retention runs by the app (drops data past each resolution's retention; 0: off).
    retention_every_s: float = Field(default=3600.0, ge=0)
    #: Seconds between runs of the health pipeline (alarms and work orders from vibration features; 0: off).
    health_pipeline_s: float = Field(default=60.0, ge=0)
    #: How far back the health pipeline reads an asset it has never evaluated.
    health_lookback_s: float = Field(default=86400.0, gt=0)
    #: Newest seconds the health pipeline leaves for the next run (the features of a snapshot arrive together).
    health_settle_s: float = Field(default=5.0, ge=0)
    #: Least severity of a pipeline alarm that opens a work order by itself.
    health_order_severity: Literal["warning", "critical"] = "critical"
    #: Seconds between runs of the model jobs: re-sign TUF metadata past half its life, judge canaries (0: off).
    models_every_s: float = Field(default=60.0, ge=0)
    #: Standard count for the zone comparison (SITRA 40s; Chinese practice 21s).
    standard_ne: float = Field(default=40.0, gt=0)
    #: Largest JSON body accepted (413 past it, refused before the rest is read; ingest has its own limit).
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    #: Seconds a request may take before it is answered 503 ``timeout`` and abandoned (0: no deadline).
    request_deadline_s: float = Field(default=20.0, ge=0)
    #: Requests of one user running at once (429 past it); live streams are not counted.
    max_requests_per_user: int = Field(default=4, ge=1)
    #: Longest span of one range, rollup or event query, in days.
    max_span_days: float = Field(default=400.0, gt=0)
    #: Longest span of raw values (``resolution=raw``) and of 1 min rollups, in days.
    max_raw_span_days: float = Field(default=7.0, gt=0)
    max_minute_span_days: float = Field(default=31.0, gt=0)
    #: Longest span of one KPI request, in days (by shift: ``max_shift_kpi_span_days``).
    max_kpi_span_days: float = Field(default=93.0, gt=0)
    max_shift_kpi_span_days: float = Field(default=31.0, gt=0)
    #: Failed logins from one client address (any user names) within ``login_window_s`` before 429.
    login_client_failures: int = Field(default=20, ge=1)
    #: Login attempts per second of everyone together (token bucket with this burst) before 429.
    login_global_rate: float = Field(default=5.0, gt=0)
    login_global_burst: float = Field(default=10.0, ge=1)
    #: Failed logins of one user name from all clients before its logins are delayed (never refused).
    login_name_failures: int = Field(default=20, ge=1)
    login_name_max_delay_s: float = Field(default=10.0, ge=0)
    #: Password checks (argon2) running at once; waiting longer than ``argon2_wait_s`` answers 503. One
    #: check already keeps ``argon2_parallelism`` cores busy; waiting logins hold no thread.
    argon2_max_concurrent: int = Field(default=1, ge=1)
    argon2_wait_s: float = Field(default=5.0, gt=0)
    #: Expensive queries (KPIs, carbon, maintenance reports) running at once in the whole process, so
    #: that a few of them cannot take every core from cheap requests; waiting past ``heavy_wait_s``
    #: answers 503 ``busy``. Waiting requests hold no thread. Also the number of KPI worker processes
    #: (``api.limits.ProcessLane``).
    max_heavy_requests: int = Field(default=2, ge=1)
    heavy_wait_s: float = Field(default=10.0, gt=0)
    #: PostgreSQL: seconds to establish a connection, and longest statement (server side), in seconds.
    db_connect_timeout_s: float = Field(default=5.0, gt=0)
    db_statement_timeout_s: float = Field(default=30.0, gt=0)
    #: Estimated share of a period's kWh above which carbon figures are flagged as resting on estimates.
    carbon_estimated_limit: float = Field(default=0.10, ge=0, le=1)
    #: Origins allowed to call the API from a browser (CORS); empty: same-origin only.
    cors_origins: list[str] = Field(default_factory=list)

    @field_validator("db")
    @classmethod
    def _db_known(cls, v: str) -> str:
        if v == "embedded" or v.startswith("embedded:") or v.startswith(_PG_PREFIXES):
            return v
        raise ValueError(f"unknown db {v!r}: use 'embedded', 'embedded:/folder' or 'postgresql://...'")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``SPINLINE_*`` variables, with keyword overrides (the CLI's options) on top."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(f"SPINLINE_{name.upper()}")
            if raw is None:
                continue
            if name == "cors_origins":
                values[name] = [o.strip() for o in raw.split(",") if o.strip()]
            else:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

    # --- derived ---------------------------------------------------------------------------------

    @property
    def embedded(self) -> bool:
        return not self.db.startswith(_PG_PREFIXES)

    @property
    def folder(self) -> Path:
        """Where the embedded files and the generated key live."""
        if self.db.startswith("embedded:"):
            return Path(self.db.partition(":")[2])
        return self.data_dir

    def store_url(self) -> str:
        """The time-series store for ``spinline.cloud.storage.factory.open_store``."""
        return f"embedded:{self.folder / 'spinline.duckdb'}" if self.embedded else self._pg_url(self.db)

    def meta_url(self) -> str:
        """SQLAlchemy URL of the metadata database (users, edges, sessions, events)."""
        if self.embedded:
            return f"sqlite:///{self.folder / 'meta.sqlite'}"
        rest = self._pg_url(self.db).partition("://")[2]
        return f"postgresql+psycopg://{rest}"

    def _pg_url(self, url: str) -> str:
        """``url`` with the connect and statement timeouts (libpq parameters; ones already in it win)."""
        return with_timeouts(url, connect_timeout_s=self.db_connect_timeout_s,
                             statement_timeout_s=self.db_statement_timeout_s)

    def load_secret_key(self) -> bytes:
        """The 32-byte key sealing edge secrets: from settings, else ``folder/secret.key`` (created 0600)."""
        if self.secret_key is not None:
            return _decode_key(self.secret_key.get_secret_value(), "SPINLINE_SECRET_KEY")
        path = self.folder / SECRET_KEY_FILE
        if path.exists():
            return _decode_key(path.read_text(encoding="ascii").strip(), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(key + "\n")
        return _decode_key(key, str(path))


def with_timeouts(url: str, *, connect_timeout_s: float, statement_timeout_s: float) -> str:
    """A libpq URL with ``connect_timeout`` and ``-c statement_timeout`` added (kept where already given).

    >>> with_timeouts("postgresql://u@h/db?options=-csearch_path%3Dx", connect_timeout_s=5, statement_timeout_s=30)
    'postgresql://u@h/db?options=-csearch_path%3Dx%20-c%20statement_timeout%3D30000&connect_timeout=5'
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = {k for k, _ in query}
    options = next((v for k, v in query if k == "options"), "")
    if "statement_timeout" not in options:
        options = (options + " " if options else "") + f"-c statement_timeout={int(statement_timeout_s * 1000)}"
    query = [(k, options if k == "options" else v) for k, v in query]
    if "options" not in names:
        query.append(("options", options))
    if "connect_timeout" not in names:
        query.append(("connect_timeout", str(max(1, round(connect_timeout_s)))))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))  # libpq reads '+' as '+'


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.encode() + b"=" * (-len(text) % 4))
    except ValueError as exc:
        raise ValueError(f"{where}: the secret key must be base64 of 32 bytes") from exc
    if len(key) != 32:
        raise ValueError(f"{where}: the secret key must be 32 bytes, got {len(key)}")
    return key
