"""Dependencies of the API routes: who is calling, what they may see, and the stores.

Use these in every route (the tenant-isolation tests enumerate the app's routes and check each one
against another mill's data, so a route that forgets its scoping fails the suite):

- ``CloudDep``, ``StoreDep``, ``MetaDep``, ``SettingsDep``: the per-app state (no globals).
- ``CurrentUser``: the ``Principal`` behind the bearer token or the browser session cookie (401
  without a valid one). A write (POST/PUT/PATCH/DELETE) authenticated by the cookie also needs the
  ``X-CSRF-Token`` header equal to the session's ``spinline_csrf`` cookie (403 ``csrf_missing`` /
  ``csrf_mismatch``); bearer-token clients are exempt (a browser never sends that header by itself).
- ``CallerDep``: the same, with the credential it came with (live streams re-check it).
- ``ReadableMill``: the ``{mill}`` path parameter resolved to a ``MillRecord`` the caller may read;
  404 when the mill is outside the caller's scope or unknown (never 403: a tenant learns nothing
  about other tenants' mills).
- ``WritableMill``: the same, plus the right to write events there (403 for a viewer).
- ``mill_with(permission)``: build such a dependency for any permission, e.g. in the maintenance
  routes ``MaintainableMill = Annotated[MillRecord, Depends(mill_with(Permission.MANAGE_MAINTENANCE))]``.
- ``require_permission(permission)``: a dependency for routes without a mill (403 without it).
- ``require_mill_access(mill, user, write=False, meta=None)``: the same check as a plain call, for a
  mill that comes from a body or from a looked-up record (an edge's or a point's mill).
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from spinline.cloud.api.errors import ApiError, keyed_error
from spinline.cloud.api.limits import ConcurrencyLimiter, Lane, ProcessLane, TokenBucket, WindowCounter
from spinline.cloud.api.timefmt import MAX_TIME, MIN_TIME, check_time
from spinline.cloud.auth.roles import Permission, Principal
from spinline.cloud.auth.service import Accounts, EdgeCredentials
from spinline.cloud.auth.tokens import hash_token
from spinline.cloud.ingest.service import IngestService
from spinline.cloud.kpis.service import KpiService
from spinline.cloud.meta.store import MetaStore, MillRecord
from spinline.cloud.settings import Settings
from spinline.cloud.storage.base import TimeSeriesStore
from spinline.core.errors import AuthError

if TYPE_CHECKING:
    from spinline.cloud.api.services.streams import LiveStreams
    from spinline.cloud.api.services.zone import ZoneOverview
    from spinline.cloud.evidence import EvidenceStore
    from spinline.cloud.maintenance.events import EdgeEvents
    from spinline.cloud.models.fedrun import FederatedRuns
    from spinline.cloud.models.registry import ModelRegistry

SESSION_COOKIE = "spinline_session"
CSRF_COOKIE = "spinline_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# Dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in the shared
# thread pool, and a hop there per dependency per request adds up when the pool is busy.


@dataclass
class Cloud:
    """Everything a request needs, built once per app in its lifespan (``app.state.cloud``)."""

    settings: Settings
    store: TimeSeriesStore
    meta: MetaStore
    accounts: Accounts
    edges: EdgeCredentials
    ingest: IngestService
    kpis: KpiService
    #: Open live streams per user (limit, and their end at logout).
    streams: LiveStreams
    #: The zone overview and the cross-mill alarm and work-order queries.
    zone: ZoneOverview
    #: Receives alarm events from the edges (set in the app's lifespan, with the health pipeline).
    edge_events: EdgeEvents | None = None
    #: Whether the MQTT ingest is connected to its broker (None: no MQTT ingest in this process).
    broker_connected: Callable[[], bool] | None = None
    #: Requests of one user running at once (``Settings.max_requests_per_user``).
    user_slots: ConcurrencyLimiter = field(default_factory=lambda: ConcurrencyLimiter(4))
    #: Failed logins per client address (any user name) in the login window.
    client_failures: WindowCounter = field(default_factory=lambda: WindowCounter(300.0))
    #: Login attempts of everyone together.
    login_bucket: TokenBucket = field(default_factory=lambda: TokenBucket(5.0, 10.0))
    #: Password checks at once (the login route waits here, in the event loop, not in a thread).
    login_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    #: Expensive queries at once in the process (``HeavyWork``).
    heavy_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    #: Low-priority threads of the password checks and of the expensive queries (``limits.Lane``).
    login_lane: Lane = field(default_factory=lambda: Lane("login", 1))
    heavy_lane: Lane = field(default_factory=lambda: Lane("heavy", 2))
    #: Worker processes of the KPI arithmetic (``KpiService.executor``; ``limits.ProcessLane``).
    kpi_lane: ProcessLane = field(default_factory=lambda: ProcessLane("kpi", 2))
    #: The model registry and its TUF repository (set in the app's lifespan).
    models: ModelRegistry | None = None
    #: Raw evidence snapshots and requests (set in the app's lifespan).
    evidence: EvidenceStore | None = None
    #: Publishes pending snapshot requests to a mill's edges over MQTT (set by the MQTT ingest worker).
    publish_requests: Callable[[str, list[str]], int] | None = None
    #: Federated runs: the Flower server per run and the edges' join requests (set in the app's lifespan).
    federated: FederatedRuns | None = None


async def get_cloud(request: Request) -> Cloud:
    cloud: Cloud | None = getattr(request.app.state, "cloud", None)
    if cloud is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the service is starting")
    return cloud


CloudDep = Annotated[Cloud, Depends(get_cloud)]


async def get_store(cloud: CloudDep) -> TimeSeriesStore:
    return cloud.store


async def get_meta(cloud: CloudDep) -> MetaStore:
    return cloud.meta


async def get_settings(cloud: CloudDep) -> Settings:
    return cloud.settings


StoreDep = Annotated[TimeSeriesStore, Depends(get_store)]
MetaDep = Annotated[MetaStore, Depends(get_meta)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

bearer = HTTPBearer(auto_error=False, description="a token from POST /api/v1/auth/login (API clients)")
session_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, scheme_name="SessionCookie",
                              description="the HttpOnly cookie set by POST /api/v1/auth/session (browsers); "
                                          f"writes also need the {CSRF_HEADER} header equal to the "
                                          f"{CSRF_COOKIE} cookie")


def unauthorised(detail: str = "not authenticated", code: str = "not_authenticated") -> HTTPException:
    return ApiError(status.HTTP_401_UNAUTHORIZED, code, detail, headers={"WWW-Authenticate": "Bearer"})


async def get_token(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise unauthorised()
    return creds.credentials


TokenDep = Annotated[str, Depends(get_token)]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, and by which credential: a bearer token or a browser session (by its hash)."""

    principal: Principal
    kind: str            # bearer | session
    credential: str      # sha256 of the token or of the session cookie


def get_caller(request: Request, cloud: CloudDep,
               creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
               cookie: Annotated[str | None, Depends(session_cookie)]) -> Caller:
    """A bearer token when the request has one, else the session cookie (with the CSRF check on writes)."""
    if creds is not None or request.headers.get("Authorization"):
        if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
            raise unauthorised()
        try:
            return Caller(cloud.accounts.authenticate(creds.credentials), "bearer", hash_token(creds.credentials))
        except AuthError as exc:
            raise unauthorised(str(exc), "token_invalid") from None
    if not cookie:
        raise unauthorised()
    digest = hash_token(cookie)
    try:
        user, rec = cloud.accounts.session(digest)
    except AuthError as exc:
        raise unauthorised(str(exc), "session_expired") from None
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER)
        if not sent:
            raise ApiError(status.HTTP_403_FORBIDDEN, "csrf_missing",
                           f"a write with the session cookie needs the {CSRF_HEADER} header "
                           f"(the value of the {CSRF_COOKIE} cookie)")
        mine = request.cookies.get(CSRF_COOKIE, "")
        if not (hmac.compare_digest(sent.encode(), mine.encode())
                and hmac.compare_digest(hash_token(sent), rec.csrf_hash)):
            raise ApiError(status.HTTP_403_FORBIDDEN, "csrf_mismatch",
                           f"the {CSRF_HEADER} header is not this session's CSRF token")
    return Caller(user, "session", digest)


CallerDep = Annotated[Caller, Depends(get_caller)]


def _streams(request: Request) -> bool:
    route = request.scope.get("route")
    endpoint = getattr(route, "endpoint", None)
    return endpoint is not None and inspect.isasyncgenfunction(endpoint)


async def get_current_user(request: Request, cloud: CloudDep, caller: CallerDep) -> AsyncIterator[Principal]:
    """The caller, holding one of their ``max_requests_per_user`` slots until the request ends (429 past it).

    Live streams (async-generator routes) do not take a slot: they last as long as the page is open.
    """
    user = caller.principal
    if _streams(request):
        yield user
        return
    if not cloud.user_slots.try_acquire(user.user_id):
        raise keyed_error(status.HTTP_429_TOO_MANY_REQUESTS, "too_many_concurrent_requests",
                          {"limit": cloud.user_slots.per_key}, headers={"Retry-After": "1"})
    try:
        yield user
    finally:
        cloud.user_slots.release(user.user_id)


CurrentUser = Annotated[Principal, Depends(get_current_user)]


async def slot(sem: asyncio.Semaphore, wait_s: float, code: str, detail: str) -> None:
    """Take one of ``sem``'s slots, waiting at most ``wait_s`` (then 503 ``code`` with Retry-After)."""
    try:
        await asyncio.wait_for(sem.acquire(), wait_s)
    except TimeoutError:
        raise ApiError(status.HTTP_503_SERVICE_UNAVAILABLE, code, detail, headers={"Retry-After": "2"}) from None


async def heavy_work(cloud: CloudDep) -> AsyncIterator[None]:
    """One of the process's ``max_heavy_requests`` slots for an expensive query, held until it ends."""
    st = cloud.settings
    await slot(cloud.heavy_slots, st.heavy_wait_s, "busy",
               f"the server is busy with other expensive queries; no slot within {st.heavy_wait_s:g} s")
    try:
        yield
    finally:
        cloud.heavy_slots.release()


#: Put on a route whose work is expensive (``dependencies=[HeavyWork]``): bounded process-wide.
HeavyWork = Depends(heavy_work)


def not_found(kind: str, ident: str | None = None, *, machine: str | None = None) -> ApiError:
    """404 "<kind> [<id>] [of machine <machine>] not found", keyed (``error.not_found*``) for the console.

    ``ident`` and ``machine`` as the detail shows them (the caller quotes with ``repr`` where it always did);
    ``kind`` is one of the names the console's ``server.kind`` catalogue translates.
    """
    params = {"kind": kind} | ({"id": ident} if ident is not None else {}) | \
        ({"machine": machine} if machine is not None else {})
    key = "error.not_found" + ("" if ident is not None else "_kind") + ("_of_machine" if machine is not None else "")
    return keyed_error(status.HTTP_404_NOT_FOUND, "not_found", params, key=key)


def forbidden(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail)


def require_mill_access(mill: str, user: Principal, write: bool = False, *, meta: MetaStore | None = None,
                        permission: Permission | None = None) -> MillRecord | None:
    """Refuse unless ``user`` may read (``write``: write events in; ``permission``: hold it for) ``mill``.

    404 when the mill is outside the user's scope (or, given ``meta``, does not exist); 403 when it is
    in scope but the role lacks the right. Returns the mill's record when ``meta`` is given.
    """
    if not user.sees(mill):
        raise not_found("mill", repr(mill))
    record = None
    if meta is not None:
        record = meta.mill(mill)
        if record is None:
            raise not_found("mill", repr(mill))
    needed = permission or (Permission.WRITE_EVENTS if write else Permission.READ)
    if not user.has(needed):
        raise forbidden(f"a {user.role.value} may not {needed.value.replace('_', ' ')}")
    return record


MillPath = Annotated[str, Path(description="mill id", examples=["mill-a"])]


def mill_with(permission: Permission) -> Callable[..., MillRecord]:
    """A dependency resolving the ``{mill}`` path parameter for a caller holding ``permission`` there."""

    def dependency(mill: MillPath, user: CurrentUser, meta: MetaDep) -> MillRecord:
        record = require_mill_access(mill, user, meta=meta, permission=permission)
        assert record is not None
        return record

    dependency.__name__ = f"mill_with_{permission.value}"
    return dependency


ReadableMill = Annotated[MillRecord, Depends(mill_with(Permission.READ))]
WritableMill = Annotated[MillRecord, Depends(mill_with(Permission.WRITE_EVENTS))]
EdgeManagedMill = Annotated[MillRecord, Depends(mill_with(Permission.MANAGE_EDGES))]


def require_permission(permission: Permission) -> Callable[..., Principal]:
    """A dependency for routes without a mill: the caller, who must hold ``permission`` (else 403)."""

    def dependency(user: CurrentUser) -> Principal:
        if not user.has(permission):
            raise forbidden(f"a {user.role.value} may not {permission.value.replace('_', ' ')}")
        return user

    dependency.__name__ = f"require_{permission.value}"
    return dependency


UserManager = Annotated[Principal, Depends(require_permission(Permission.MANAGE_USERS))]
EdgeManager = Annotated[Principal, Depends(require_permission(Permission.MANAGE_EDGES))]


async def client_address(request: Request) -> str:
    """The caller's address for the login rate limit (an IP address: ``api.guards`` refused anything else)."""
    return request.client.host[:64] if request.client is not None else "unknown"


ClientAddress = Annotated[str, Depends(client_address)]


async def gone_check(request: Request) -> Callable[[], bool]:
    """True once nobody waits for this request's answer (client gone or deadline passed; ``api.guards``)."""
    event = request.scope.get("spinline.gone")
    return event.is_set if event is not None else (lambda: False)


#: Pass to long work so it stops between steps when its answer would go nowhere.
Gone = Annotated[Callable[[], bool], Depends(gone_check)]


@dataclass(frozen=True, slots=True)
class TimeRange:
    start_ns: int
    end_ns: int


def _ns(t: datetime, name: str) -> int:
    t = check_time(t, name)
    return int(t.timestamp() * 1e6) * 1000


def span_limited(max_days: Callable[[Settings], float], what: str) -> Callable[..., TimeRange]:
    """A ``TimeRange`` dependency whose span may be at most ``max_days(settings)`` days (422 ``span_too_large``)."""

    def time_range(
        cloud: CloudDep,
        start: Annotated[datetime | None, Query(description="ISO 8601 (UTC unless an offset is given); "
                                                            "default: 24 h before the end; "
                                                            f"{MIN_TIME:%Y-%m-%d} .. {MAX_TIME:%Y-%m-%d}")] = None,
        end: Annotated[datetime | None, Query(description="ISO 8601, exclusive; default: now")] = None,
    ) -> TimeRange:
        end_ns = _ns(end, "end") if end is not None else time.time_ns()
        start_ns = _ns(start, "start") if start is not None else end_ns - 24 * 3600 * 10**9
        if end_ns <= start_ns:
            raise keyed_error(status.HTTP_422_UNPROCESSABLE_CONTENT, "empty_span", {})
        limit = max_days(cloud.settings)
        days = (end_ns - start_ns) / 86400e9
        if days > limit:
            raise keyed_error(status.HTTP_422_UNPROCESSABLE_CONTENT, "span_too_large",
                              {"days": f"{days:.1f}", "what": what, "limit": f"{limit:g}"})
        return TimeRange(start_ns, end_ns)

    time_range.__name__ = f"time_range_{what.replace(' ', '_')}"
    return time_range


TimeRangeDep = Annotated[TimeRange, Depends(span_limited(lambda s: s.max_span_days, "queries"))]
KpiRangeDep = Annotated[TimeRange, Depends(span_limited(lambda s: s.max_kpi_span_days, "KPIs"))]



def report_language(request: Request, lang: Annotated[
        Literal["zh-CN", "en"] | None,
        Query(description="language of the report (PDF and HTML); default: the first zh or en of the "
                          "Accept-Language header, else zh-CN (Chinese uses the built-in STSong-Light CID font "
                          "in the PDF)")] = None) -> str:
    """``lang`` when given, else the reader's language from ``Accept-Language`` (its order), else zh-CN."""
    if lang:
        return lang
    for part in request.headers.get("Accept-Language", "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return "zh-CN"


ReportLang = Annotated[str, Depends(report_language)]
