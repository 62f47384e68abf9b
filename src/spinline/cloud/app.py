"""The cloud API's composition root: ``create_app(settings)`` builds a FastAPI app.

Nothing connects at import or in ``create_app``: the stores open in the app's lifespan (or are
handed in already open, as tests do), and everything a request needs hangs off ``app.state.cloud``
(``api.deps.Cloud``). Routes live under ``/api/v1``; the OpenAPI document is ``/api/v1/openapi.json``
and the interactive docs ``/api/docs``.

Size: the one composition root of the cloud process: the stores, the services, the background jobs
(rollups, retention, health, zone refresh, model jobs) and the request guards are wired here and
nowhere else, so a reader finds every moving part of the running cloud in one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from spinline import __version__
from spinline.cloud import console
from spinline.cloud.api import errors, openapi
from spinline.cloud.api.deps import Cloud
from spinline.cloud.api.errors import error_response
from spinline.cloud.api.guards import RequestGuard
from spinline.cloud.api.limits import ConcurrencyLimiter, Lane, ProcessLane, TokenBucket, WindowCounter
from spinline.cloud.api.routes import (
    auth,
    carbon,
    edges,
    events,
    health,
    ingest,
    kpis,
    maintenance,
    mills,
    models,
    points,
    series,
    stream,
    tuf,
    users,
    zone,
)
from spinline.cloud.api.routes import evidence as evidence_routes
from spinline.cloud.api.routes import federated as federated_routes
from spinline.cloud.api.services.site import register_site
from spinline.cloud.api.services.streams import LiveStreams
from spinline.cloud.api.services.zone import ZoneOverview
from spinline.cloud.auth.passwords import Passwords
from spinline.cloud.auth.sealing import SecretBox
from spinline.cloud.auth.service import Accounts, EdgeCredentials, InvalidRequest
from spinline.cloud.evidence import EvidenceStore, diagnoses_t
from spinline.cloud.evidence_answers import SecondOpinion
from spinline.cloud.ingest.rejections import BoundedRejections
from spinline.cloud.ingest.service import IngestService
from spinline.cloud.kpis.service import Cancelled, KpiService
from spinline.cloud.maintenance import pipeline as health_pipeline
from spinline.cloud.maintenance.events import EdgeEvents
from spinline.cloud.maintenance.store import HealthQueries, HealthStore
from spinline.cloud.meta.store import ConflictError, MetaStore
from spinline.cloud.models.fedrun import FederatedRuns
from spinline.cloud.models.registry import ModelRegistry
from spinline.cloud.models.tuf_repo import TufRepository
from spinline.cloud.settings import Settings
from spinline.cloud.storage.base import TimeSeriesStore
from spinline.cloud.storage.factory import open_store
from spinline.core import wire
from spinline.core.errors import StorageError
from spinline.core.site import Machine, Mill, Site, iter_machines, load_site

logger = logging.getLogger(__name__)

API_PREFIX = wire.API_PREFIX
#: Routers in the order the OpenAPI document lists them. Adding a router here puts its routes under
#: the tenant-isolation suite (tests/cloud/api/test_tenant_isolation.py), which must then pass.
ROUTERS = (auth.router, users.router, mills.router, points.router, kpis.router, events.router, edges.router,
           stream.router, ingest.router, carbon.router, maintenance.router, health.router, zone.router,
           series.router, federated_routes.router, models.router, tuf.router, evidence_routes.router)


def _unique_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


class _AllowedPoints:
    """Point keys per mill for the ingest service, re-read from the store at most every ``ttl_s``."""

    def __init__(self, store: TimeSeriesStore, ttl_s: float = 10.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, frozenset[int]]] = {}
        self._lock = threading.Lock()

    def __call__(self, mill: str) -> frozenset[int]:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(mill)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        keys = frozenset(p.key for p in self.store.points(mill))
        with self._lock:
            self._cache[mill] = (now, keys)
        return keys


def build_cloud(settings: Settings, store: TimeSeriesStore, meta: MetaStore) -> Cloud:
    """Wire the use cases over already-open stores (the CLI uses this too).

    The store is wrapped so that refusals nobody proved they sent are counted in memory, never
    stored row by row (``ingest.rejections``).
    """
    store = BoundedRejections(store)
    passwords = Passwords(time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib,
                          parallelism=settings.argon2_parallelism, max_concurrent=settings.argon2_max_concurrent,
                          wait_s=settings.argon2_wait_s)
    accounts = Accounts(meta, passwords, token_ttl_s=settings.token_ttl_s, max_failures=settings.login_max_failures,
                        window_s=settings.login_window_s, max_user_failures=settings.login_name_failures,
                        session_idle_s=settings.session_idle_s, session_max_s=settings.session_max_s)
    edge_creds = EdgeCredentials(meta, SecretBox(settings.load_secret_key()))
    ingest_svc = IngestService(store, edge_creds.key, edge_creds.mill_of, _AllowedPoints(store),
                               max_bytes=settings.max_ingest_bytes, sync_credentials=edge_creds.sync)
    streams = LiveStreams(settings.max_streams_per_user)
    accounts.on_sessions_ended(streams.end)
    # KPI arithmetic in worker processes: it holds the GIL, and the charts must not wait for it.
    kpi_lane = ProcessLane("kpi", settings.max_heavy_requests)
    kpis_svc = KpiService(store, kpi_lane)
    return Cloud(settings=settings, store=store, meta=meta, accounts=accounts, edges=edge_creds, ingest=ingest_svc,
                 kpis=kpis_svc, streams=streams, zone=ZoneOverview(store, kpis_svc, HealthQueries(meta.engine),
                                   kpi_max_age_s=max(60.0, 3 * settings.zone_refresh_s)),
                 user_slots=ConcurrencyLimiter(settings.max_requests_per_user),
                 client_failures=WindowCounter(settings.login_window_s),
                 login_bucket=TokenBucket(settings.login_global_rate, settings.login_global_burst),
                 login_slots=asyncio.Semaphore(settings.argon2_max_concurrent),
                 heavy_slots=asyncio.Semaphore(settings.max_heavy_requests),
                 login_lane=Lane("login", settings.argon2_max_concurrent),
                 heavy_lane=Lane("heavy", settings.max_heavy_requests), kpi_lane=kpi_lane)


def open_stores(settings: Settings, *, site: Site | None = None) -> tuple[TimeSeriesStore, MetaStore]:
    """Open and migrate both stores and register the site (``settings.site`` unless given)."""
    if settings.embedded:
        settings.folder.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.store_url())
    meta = MetaStore(settings.meta_url())
    try:
        store.migrate()
        meta.migrate()
        site = site or (load_site(settings.site) if settings.site is not None else None)
        if site is not None:
            register_site(site, store, meta)
    except BaseException:
        store.close()
        meta.close()
        raise
    return store, meta


#: Waits between attempts to reach PostgreSQL at start: doubling from the first to the last.
START_BACKOFF_S = (0.5, 30.0)


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says a server (PostgreSQL) cannot be reached, as opposed to a real fault
    (a bad schema, a wrong password is also "operational" but retrying it costs nothing but time)."""
    import psycopg
    import sqlalchemy.exc

    if isinstance(exc, StorageError):
        return "cannot connect" in str(exc) or isinstance(exc.__cause__, psycopg.OperationalError)
    return isinstance(exc, psycopg.OperationalError | sqlalchemy.exc.OperationalError | ConnectionError)


async def open_stores_waiting(settings: Settings, *, site: Site | None = None,
                              backoff_s: tuple[float, float] = START_BACKOFF_S) -> tuple[TimeSeriesStore, MetaStore]:
    """``open_stores``, waiting for PostgreSQL while it cannot be reached (saying so, with backoff).

    A cloud started before its database (a host reboot, a compose file without health checks) comes
    up by itself when the database does, instead of exiting; any other failure is raised at once.
    """
    delay, attempt = backoff_s[0], 0
    while True:
        try:
            opened = await run_in_threadpool(open_stores, settings, site=site)
        except Exception as exc:  # only "cannot reach" is retried; anything else ends the start
            if not unreachable(exc):
                raise
            attempt += 1
            logger.warning("database %s cannot be reached (%s); retrying in %.1f s (attempt %d)",
                           _redacted(settings.db), _first_line(exc), delay, attempt)
            await asyncio.sleep(delay)
            delay = min(delay * 2, backoff_s[1])
            continue
        if attempt:
            logger.info("database %s reached after %d failed attempt(s)", _redacted(settings.db), attempt)
        return opened


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _redacted(url: str) -> str:
    from urllib.parse import urlsplit

    p = urlsplit(url)
    return url.replace(f":{p.password}@", ":***@") if p.password else url


async def _every(what: str, every_s: float, job: Callable[[], object]) -> None:
    """Run ``job`` in a worker thread every ``every_s``; log a failure once and its recovery once."""
    failing = False
    while True:
        await asyncio.sleep(every_s)
        try:
            await run_in_threadpool(job)
            if failing:
                logger.info("%s recovered", what)
            failing = False
        except Exception:  # any failure: the task must outlive it (asyncio.CancelledError is no Exception)
            if not failing:
                logger.exception("%s failed", what)
            failing = True


async def _finish_in_thread(fn: Callable[..., object], *args: object) -> None:
    """Run ``fn`` in a worker thread; a cancel waits for it to finish (a short job), so that at shutdown the
    stores are not closed under a thread still using them."""
    job = asyncio.ensure_future(run_in_threadpool(fn, *args))
    try:
        await asyncio.shield(job)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await job
        raise


def _freeze_startup_heap() -> None:
    """Move what start-up built (site models of every mill, schemas, routes, factor library, caches) out of
    the cyclic collector's reach: it lives as long as the process, and each full collection walked all of
    it while a request waited — on a 20-mill zone a zone-overview call took ~135 ms instead of ~23 ms
    about once every 13 calls (bench/zone_overview.py: p95 138 -> 31 ms). Unfrozen at shutdown, so an app
    built and dropped leaves no uncollectable cycles behind."""
    gc.collect()
    gc.freeze()


async def _refresh_zone(cloud: Cloud, every_s: float) -> None:
    """Recompute each mill's KPIs of today for the zone overview, one mill at a time spread over ``every_s``
    (from start-up on): the work never holds the interpreter for long, so requests are not kept waiting."""
    failing = False
    while True:
        try:
            mills = await run_in_threadpool(cloud.meta.mills)
        except Exception:  # the metadata store is down: try again next round
            mills = []
        pause = every_s / max(1, len(mills))
        for m in mills:
            try:
                await _finish_in_thread(cloud.zone.refresh, [m], cloud.settings.standard_ne)
                if failing:
                    logger.info("zone overview refresh recovered")
                failing = False
            except Exception:  # any failure: the task must outlive it (asyncio.CancelledError is no Exception)
                if not failing:
                    logger.exception("zone overview refresh failed")
                failing = True
            await asyncio.sleep(pause)
        if not mills:
            await asyncio.sleep(every_s)


def build_models(settings: Settings, meta: MetaStore) -> ModelRegistry:
    """The model registry over the metadata database, with its TUF repository (tables created here)."""

    def mill_config(mill: str) -> Mill | None:
        rec = meta.mill(mill)
        return rec.config if rec is not None else None

    repo = TufRepository(meta.engine, SecretBox(settings.load_secret_key()))
    reg = ModelRegistry(meta.engine, repo, mills=mill_config,
                        edges_of=lambda mill: [e.id for e in meta.edges([mill]) if e.active])
    reg.create_schema()
    # Alarms closed as no fault found, per model version: the canary judge's false-alarm evidence.
    HealthStore(meta.engine).create_schema()
    reg.nff = HealthQueries(meta.engine).no_fault_found
    return reg


def build_opinion(settings: Settings, meta: MetaStore, orders: HealthStore) -> SecondOpinion:
    """The cloud model answering uncertain snapshots, with the site's bearings and the mills' work orders."""

    def machine_of(mill: str, machine: str) -> Machine | None:
        rec = meta.mill(mill)
        return next((m for _, _, m in iter_machines(rec.config) if m.id == machine), None) if rec else None

    return SecondOpinion(diagnoses_t, machine_of, orders=orders, confident_at=settings.evidence_confident_at)


def build_federated(settings: Settings, meta: MetaStore, reg: ModelRegistry,
                    publish: Callable[[str, list[str]], object] | None = None) -> FederatedRuns:
    """Federated runs over the metadata database (tables created here); servers work in ``federated/``."""
    orders = HealthStore(meta.engine)
    runs = FederatedRuns(meta.engine, reg, mills=lambda: {r.id: r.config for r in meta.mills()},
                         edges_of=lambda mill: [e.id for e in meta.edges([mill]) if e.active],
                         orders_of=lambda mill: orders.list_work_orders(mill), workdir=settings.folder / "federated",
                         bind_host=settings.federated_bind, advertise_host=settings.federated_advertise,
                         publish=publish)
    runs.create_schema()
    return runs


def _model_jobs(reg: ModelRegistry) -> None:
    if reg.repo is not None:
        reg.repo.refresh_expiring()
    reg.evaluate_canaries()


async def _refresh_rollups(store: TimeSeriesStore, every_s: float) -> None:
    await _every("rollup refresh", every_s, store.refresh_rollups)


async def _apply_retention(store: TimeSeriesStore, every_s: float) -> None:
    """Drop data past each resolution's retention (PostgreSQL: whole daily partitions of raw rows)."""
    await _every("retention", every_s, lambda: store.apply_retention(time.time_ns()))


def create_app(settings: Settings, *, store: TimeSeriesStore | None = None, meta: MetaStore | None = None,
               site: Site | None = None,
               on_ready: Callable[[Cloud], Callable[[], None] | None] | None = None) -> FastAPI:
    """The API app. Stores handed in are used as they are (and not closed); others open in the lifespan.

    ``on_ready(cloud)`` runs once the stores are open (the CLI starts MQTT ingest workers there); the
    callable it may return runs at shutdown, before the stores close.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = store is None or meta is None
        if owned:
            st, mt = await open_stores_waiting(settings, site=site)
        else:
            assert store is not None and meta is not None
            st, mt = store, meta
            if site is not None:
                await run_in_threadpool(register_site, site, st, mt)
        cloud = await run_in_threadpool(build_cloud, settings, st, mt)
        pipeline = await run_in_threadpool(health_pipeline.build, settings, st, mt.engine)
        cloud.edge_events = EdgeEvents(pipeline.health, cloud.store, cloud.edges.key, cloud.edges.mill_of,
                                       order_severity=pipeline.order_severity)
        await run_in_threadpool(cloud.edge_events.create_schema)
        app.state.health_store, app.state.health_pipeline = pipeline.health, pipeline
        app.state.edge_events = cloud.edge_events
        cloud.evidence = app.state.evidence = EvidenceStore(mt.engine, st, cloud.edges.key, cloud.edges.mill_of,
                                                           keep_per_channel=settings.evidence_keep_per_channel,
                                                           opinion=build_opinion(settings, mt, pipeline.health))
        await run_in_threadpool(cloud.evidence.create_schema)
        cloud.models = await run_in_threadpool(build_models, settings, mt)

        def publish(mill: str, edges: list[str]) -> object:   # MQTT edges now (set once MQTT ingest runs)
            return cloud.publish_requests(mill, edges) if cloud.publish_requests is not None else 0

        cloud.federated = await run_in_threadpool(build_federated, settings, mt, cloud.models, publish)
        app.state.cloud = cloud
        stop = await run_in_threadpool(on_ready, cloud) if on_ready is not None else None
        tasks = []
        if settings.health_pipeline_s > 0:
            tasks.append(asyncio.create_task(health_pipeline.run_periodically(pipeline, settings.health_pipeline_s)))
        if settings.rollup_refresh_s > 0:
            tasks.append(asyncio.create_task(_refresh_rollups(st, settings.rollup_refresh_s)))
        if settings.zone_refresh_s > 0:
            tasks.append(asyncio.create_task(_refresh_zone(cloud, settings.zone_refresh_s)))
        if settings.models_every_s > 0:
            reg = cloud.models
            tasks.append(asyncio.create_task(_every("model jobs", settings.models_every_s, lambda: _model_jobs(reg))))
        if settings.retention_every_s > 0:
            tasks.append(asyncio.create_task(_apply_retention(st, settings.retention_every_s)))
        if settings.freeze_startup_heap:
            _freeze_startup_heap()
        try:
            yield
        finally:
            if settings.freeze_startup_heap:
                gc.unfreeze()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if stop is not None:
                await run_in_threadpool(stop)
            app.state.cloud = None
            cloud.login_lane.close()
            cloud.heavy_lane.close()
            cloud.kpi_lane.close()
            if owned:
                st.close()
                mt.close()

    app = FastAPI(title="spinline cloud API", version=__version__, lifespan=lifespan,
                  openapi_url=f"{API_PREFIX}/openapi.json", docs_url=None, redoc_url=None,
                  generate_unique_id_function=_unique_id,
                  description="Mills, points, values, KPIs, events, edges and ingest of the spinline platform. "
                              "Every query is scoped to the caller's mills.")
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])

    @app.get("/healthz", tags=["health"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers. Touches nothing else, so it stays cheap during any outage."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["health"], include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: the stores answer within a second or two, and the MQTT ingest (if any) is connected."""
        cloud: Cloud | None = getattr(request.app.state, "cloud", None)
        if cloud is None:
            return JSONResponse({"status": "starting"}, status_code=503, headers={"Retry-After": "5"})
        checks = await readiness(cloud)
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks},
                            status_code=200 if ok else 503, headers=None if ok else {"Retry-After": "5"})

    errors.install(app)

    # Last: the console's catch-all route must come after every API route (it never answers /api/...).
    console.install(app, openapi_url=f"{API_PREFIX}/openapi.json")

    @app.exception_handler(InvalidRequest)
    async def _invalid(_: Request, exc: InvalidRequest) -> JSONResponse:
        return error_response(422, str(exc), "invalid_request")

    @app.exception_handler(Cancelled)
    async def _cancelled(_: Request, exc: Cancelled) -> JSONResponse:
        # Work stopped because nobody waits for it (api.guards): this answer goes nowhere.
        return error_response(503, str(exc), "cancelled")

    @app.exception_handler(ConflictError)
    async def _conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return error_response(409, str(exc), "conflict")

    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes, deadline_s=settings.request_deadline_s,
                       exempt_prefixes=(f"{API_PREFIX}/ingest", f"{API_PREFIX}/edge-status", wire.EVENTS_PATH,
                                        wire.SNAPSHOTS_PATH))
    openapi.install(app)
    return app


async def _probe(what: str, fn: Callable[[], object], timeout_s: float) -> str:
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(run_in_threadpool(fn))), timeout_s)
        return "ok"
    except TimeoutError:
        return f"{what} did not answer within {timeout_s:g} s"
    except Exception as exc:  # any failure is the answer: not ready, and why
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        return f"{what} failed: {first[:200]}"


async def readiness(cloud: Cloud, timeout_s: float = 2.0) -> dict[str, str]:
    """``{"store": "ok" | why not, "meta": ..., "broker": ...}`` (the broker only with MQTT ingest)."""
    meta = cloud.meta

    def ping_meta() -> None:
        with meta.engine.connect() as con:
            con.exec_driver_sql("SELECT 1")

    store, meta_state = await asyncio.gather(
        _probe("the time-series store", lambda: cloud.store.points("-readyz-"), timeout_s),
        _probe("the metadata database", ping_meta, timeout_s))
    checks = {"store": store, "meta": meta_state}
    if cloud.broker_connected is not None:
        checks["broker"] = "ok" if cloud.broker_connected() else "the MQTT broker is not connected"
    return checks
