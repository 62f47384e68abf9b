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
    #: Most points a range query returns.
    max_range_points: int = Field(default=20000, gt=0)
    #: Seconds between pushes of the live stream.
    stream_interval_s: float = Field(default=1.0, gt=0)
    #: Seconds between rollup refreshes run by the app (0: someone else refreshes them).
    rollup_refresh_s: float = Field(default=30.0, ge=0)
    #: Seconds between background recomputations of each mill's KPIs of today for the zone overview (0: off,
    #: computed in the request when older than a minute).
    zone_refresh_s: float = Field(default=20.0, ge=0)
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
        return f"embedded:{self.folder / 'spinline.duckdb'}" if self.embedded else self.db

    def meta_url(self) -> str:
        """SQLAlchemy URL of the metadata database (users, edges, sessions, events)."""
        if self.embedded:
            return f"sqlite:///{self.folder / 'meta.sqlite'}"
        rest = self.db.partition("://")[2]
        return f"postgresql+psycopg://{rest}"

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


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.encode() + b"=" * (-len(text) % 4))
    except ValueError as exc:
        raise ValueError(f"{where}: the secret key must be base64 of 32 bytes") from exc
    if len(key) != 32:
        raise ValueError(f"{where}: the secret key must be 32 bytes, got {len(key)}")
    return key
