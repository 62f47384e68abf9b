"""Request and response bodies, one Create/Update/Public family per resource.

A ``...Public`` model is what leaves the API: ``UserPublic`` has no password hash and
``EdgePublic`` no secret (only ``EdgeCreated``, answered once by ``POST /edges``, carries it).
Point keys are strings (64-bit); times are ISO 8601 UTC; series are columns (``ts_ms`` + ``value``)
so a chart reads them directly.

Size: this file is the whole public contract the OpenAPI document and the console's types are read
from; the shared field types (ids, UTC times, point keys, names by language) are used by nearly every
family, so split by resource the families would import each other for them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field

from spinline.cloud.api.errors import ErrorPublic  # noqa: F401 (re-exported: routes say s.ErrorPublic)
from spinline.cloud.api.timefmt import InDatetime, UtcDatetime
from spinline.cloud.auth.roles import Role


@overload
def ts(ns: int) -> datetime: ...
@overload
def ts(ns: None) -> None: ...
@overload
def ts(ns: int | None) -> datetime | None: ...
def ts(ns: int | None) -> datetime | None:
    """Nanoseconds since the epoch -> an aware UTC datetime (microsecond precision)."""
    return None if ns is None else datetime.fromtimestamp(ns / 1e9, UTC)


#: A mill id as a person or an edge writes it (the site file's ids are at most 64 characters).
MillId = Annotated[str, Field(min_length=1, max_length=64)]


#: A 64-bit point key travels as a decimal string: JavaScript's numbers lose integers above 2^53.
PointKey = Annotated[str, Field(description="the 64-bit point key as a decimal string (JSON numbers lose "
                                            "integers above 2^53 in JavaScript); the tag names the point too",
                                pattern=r"^-?[0-9]{1,20}$")]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- auth ----------------------------------------------------------------------------------------

class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenPublic(_Out):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the OAuth2 token type, not a secret)
    expires_at: UtcDatetime


class Message(_Out):
    message: str


class SessionLogin(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


Language = Literal["zh-CN", "en"]


class MePublic(_Out):
    """The caller, as the console needs it: who, which role and mills, what they may do, their language."""

    id: int
    username: str
    full_name: str
    role: Role
    mills: list[str] = Field(description="the mills in the caller's scope (every mill for a zone operator)")
    all_mills: bool = Field(description="true for a zone operator: every mill, including ones added later")
    permissions: list[str]
    language: Language | None = Field(description="the chosen language; null: follow the browser")
    auth: Literal["bearer", "session"] = Field(description="how this request was authenticated")


class SessionPublic(MePublic):
    expires_at: UtcDatetime = Field(description="the session's absolute expiry (UTC)")
    idle_timeout_s: float = Field(description="the session ends after this long without a request")


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


class LanguageChange(BaseModel):
    language: Language | None = Field(description="zh-CN or en; null: follow the browser")


# --- users ---------------------------------------------------------------------------------------

class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=1024)
    role: Role
    mills: list[MillId] = Field(default_factory=list, max_length=1000,
                                description="mills in scope (all for zone_operator)")
    full_name: str = Field(default="", max_length=200)


class UserUpdate(BaseModel):
    role: Role | None = None
    mills: list[MillId] | None = Field(default=None, max_length=1000)
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    disabled: bool | None = None
    full_name: str | None = Field(default=None, max_length=200)


class UserPublic(_Out):
    id: int
    username: str
    full_name: str
    role: Role
    mills: list[str]
    disabled: bool
    created_at: UtcDatetime


# --- mills and the tree --------------------------------------------------------------------------

#: The name in other languages, by language tag (the site file's ``names``; the console picks its own).
#: Fields default to ``{}``: pydantic copies a mutable default per instance.
LocalNames = Annotated[dict[str, str], Field(description="the name in other languages, by language tag (site file)")]


class ShiftPublic(_Out):
    name: str
    start: str
    hours: float


class MillPublic(_Out):
    id: str
    name: str
    names: LocalNames = {}
    zone: str
    timezone: str
    province: str
    shifts: list[ShiftPublic]
    machines: int
    spindles: int


class PointPublic(_Out):
    key: PointKey
    tag: str
    name: str
    unit: str
    kind: str
    interval_s: float


class MachineNode(_Out):
    id: str
    name: str
    names: LocalNames = {}
    type: str
    spindles: int | None
    rated_kw: float | None
    points: list[PointPublic]


class LineNode(_Out):
    id: str
    name: str
    names: LocalNames = {}
    count_ne: float | None
    machines: list[MachineNode]


class WorkshopNode(_Out):
    id: str
    name: str
    names: LocalNames = {}
    lines: list[LineNode]


class MillTree(_Out):
    zone: str
    id: str
    name: str
    names: LocalNames = {}
    workshops: list[WorkshopNode]


# --- values --------------------------------------------------------------------------------------

class LatestValue(_Out):
    tag: str
    key: PointKey
    ts: UtcDatetime
    value: float | None
    quality: int


class SeriesPublic(_Out):
    tag: str
    key: PointKey
    unit: str
    resolution: str
    reduced: bool
    ts_ms: list[int]
    value: list[float | None]


class RollupPublic(_Out):
    tag: str
    key: PointKey
    unit: str
    kind: str
    resolution: Literal["1m", "1h"]
    bucket_ms: list[int]
    min: list[float | None]
    max: list[float | None]
    mean: list[float | None]
    last: list[float | None]
    count: list[int]
    delta: list[float | None]


# --- KPIs ----------------------------------------------------------------------------------------

class KpiPublic(_Out):
    group: Literal["machine", "line", "mill", "shift"]
    id: str
    name: str
    mill: str
    line: str | None = None
    machine_type: str | None = None
    start: UtcDatetime
    end: UtcDatetime
    hours: float
    machines: int
    spindles: int
    run_h: float | None
    output_kg: float | None
    std_output_kg: float | None = Field(description="output converted to the standard count")
    count_ne: float | None = Field(description="output-weighted mean count (Ne)")
    efficiency_pct: float | None = Field(
        description="production efficiency %, the figure mills quote: actual kg ÷ kg at 100 % at the speed run "
                    "over the whole planned (calendar) time, so doffing, stops and ends down all lower it "
                    "(typically 90-96 %); ring frames only (docs/kpis.md)")
    running_efficiency_pct: float | None = Field(
        description="running efficiency %: actual kg ÷ kg at 100 % for the run time only (doffs and stops "
                    "left out; they are in OEE availability)")
    spindle_utilisation_pct: float | None
    availability_pct: float | None
    performance_pct: float | None
    quality_pct: float | None
    oee_pct: float | None
    ends_down_per_1000_spindle_h: float | None
    worst5_break_share_pct: float | None
    gps_g: float | None = Field(description="grams per spindle per 8 h shift")
    std_gps_g: float | None = Field(description="GPS at the standard count")
    energy_kwh: float | None
    sec_kwh_per_kg: float | None


class KpiReport(_Out):
    standard_ne: float
    start: UtcDatetime
    end: UtcDatetime
    by: str
    rows: list[KpiPublic]


# --- events --------------------------------------------------------------------------------------

Severity = Literal["info", "warning", "alarm", "critical"]


class EventCreate(BaseModel):
    kind: str = Field(min_length=1, max_length=64, description="e.g. note, doff, maintenance, alarm")
    message: str = Field(default="", max_length=4000)
    severity: Severity = "info"
    machine: str | None = Field(default=None, max_length=64)
    ts: InDatetime | None = Field(default=None, description="when it happened (default: now)")


class EventPublic(_Out):
    id: int
    mill: str
    ts: UtcDatetime
    machine: str | None
    kind: str
    severity: str
    message: str
    source: str


# --- edges ---------------------------------------------------------------------------------------

class EdgeCreate(BaseModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,62}$")
    mill: MillId
    description: str = Field(default="", max_length=200)


class EdgePublic(_Out):
    id: str
    mill: str
    description: str
    active: bool
    created_at: UtcDatetime
    created_by: str
    revoked_at: UtcDatetime | None
    last_seen: UtcDatetime | None = Field(description="when its last status message arrived")
    buffer_rows: int | None = None
    buffer_bytes: int | None = None
    lag_s: float | None = None
    uplink_state: str | None = None
    versions: dict[str, str] = Field(default_factory=dict,
                                     description="the agent's version and the model version running per asset")
    alarms: list[str] = Field(default_factory=list)
    rejected: dict[str, int] = Field(default_factory=dict, description="refused batches per reason")
    models: dict[str, Any] = Field(default_factory=dict, description="per asset the desired model version beside "
                                   "the running one; the model updates the edge refused, per reason")
    status: dict[str, Any] = Field(default_factory=dict, description="the last status message as sent")


class EdgeCreated(EdgePublic):
    secret: str = Field(description="the HMAC secret: shown this once, store it on the edge")


class RejectionPublic(_Out):
    edge: str
    reason: str
    detail: str
    ts: UtcDatetime


# --- ingest --------------------------------------------------------------------------------------

class IngestAck(_Out):
    seq: int | None
    status: Literal["stored", "duplicate"]
    stored: int
    reason: str | None = None
    edge: str | None = Field(default=None, description="the edge the ack is for")
    inc: str | None = Field(default=None, description="the incarnation (edge buffer) of the batch")
    refused: dict[str, int] | None = Field(default=None, description="rows refused per reason (the rest stored)")
    retry: dict[str, Any] | None = Field(default=None, description="which refused rows the edge may re-send "
                                         "later: points (unknown keys), after_ns, before_ns")
    sig: str | None = Field(default=None, description="hex HMAC-SHA256 of the ack with the edge's secret "
                                                      "(spinline.core.wire.sign_ack)")


class IngestRefusal(_Out):
    """A refused edge payload: ``reason`` (the edge protocol's word) and the same ``code`` as every API error."""

    reason: str
    detail: str
    code: str = ""


# --- zone overview -----------------------------------------------------------------------------------

class ZoneHealthPublic(_Out):
    value: float = Field(description="the mill's health index (0-100): the minimum over its assets")
    status: str
    worst_asset: str = Field(description="machine/channel of the lowest index")
    worst_machine: str
    driver: str = Field(description="what drove the worst asset's index down")
    assets: int = Field(description="assets with health data")


class AlarmCounts(_Out):
    info: int
    warning: int
    critical: int
    total: int


class EdgeCounts(_Out):
    online: int = Field(description="active edges whose last status is recent (edge_online_within_s)")
    total: int = Field(description="active (not revoked) edges")
    max_lag_s: float | None = Field(description="the largest lag among the online edges")
    last_seen: UtcDatetime | None


class MillOverviewPublic(_Out):
    id: str
    name: str
    names: LocalNames = {}
    zone: str
    timezone: str
    status: Literal["running", "degraded", "offline"] = Field(description="from the edges' last status messages")
    status_reason: str
    day_start: UtcDatetime = Field(description="local midnight of today in the mill's time zone (UTC)")
    kpis_at: UtcDatetime = Field(description="when today's KPIs were computed from the rollups (refreshed in the "
                                          "background every zone_refresh_s)")
    output_today_kg: float
    std_output_today_kg: float | None = Field(description="today's output converted to the standard count")
    count_ne: float | None = Field(description="output-weighted mean count spun today (Ne)")
    spindles: int = Field(description="installed ring spindles")
    std_gps_g: float | None = Field(description="grams per spindle per 8 h shift today, at the standard count")
    efficiency_pct: float | None
    ends_down_per_1000_spindle_h: float | None
    energy_today_kwh: float
    kwh_per_kg: float | None = Field(description="today's specific energy, kWh per kg of yarn")
    kgco2e_per_kg_today: float | None = Field(description="TODAY's electricity carbon intensity: kwh_per_kg x the "
                                                          "location-based grid factor (Scope 2 electricity only)")
    carbon_factor: str | None = Field(description="id of the grid emission factor used")
    health: ZoneHealthPublic | None = Field(description="null: no asset has health data yet")
    alarms_open: AlarmCounts = Field(description="alarms not cleared, by severity")
    work_orders_open: int = Field(description="work orders not verified or closed")
    work_orders_overdue: int
    edges: EdgeCounts


class ZoneOverviewPublic(_Out):
    generated_at: UtcDatetime
    standard_ne: float
    carbon_basis: str = Field(description="what kgco2e_per_kg_today covers")
    edge_online_within_s: float
    mills: list[MillOverviewPublic]

