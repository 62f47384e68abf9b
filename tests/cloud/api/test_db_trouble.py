"""The cloud through its database's trouble (issue 13, item 2), against a real PostgreSQL reached
through a loopback TCP proxy the test controls: hung (accepts, then stalls), stopped (closed port),
back again; and a statement blocked by a lock.

During the trouble data routes answer 503 with ``Retry-After`` within the deadline (never 500, never
the whole hang), ``/healthz`` stays instant, ``/readyz`` says what is wrong; after it the first
request succeeds (pre-ping)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from spinline.cloud.app import create_app
from spinline.cloud.auth.roles import Role
from spinline.core.site import Site

from ..pg_proxy import StallingProxy
from .conftest import FAST, PASSWORD

pytestmark = pytest.mark.postgres


async def _timed(c: httpx.AsyncClient, path: str, **kw: object) -> tuple[httpx.Response, float]:
    t0 = time.perf_counter()
    r = await c.get(path, **kw)  # type: ignore[arg-type]
    return r, time.perf_counter() - t0


async def test_hung_stopped_and_recovered_postgres(postgres_url: str, tmp_path: Path, zone_site: Site) -> None:
    proxy = StallingProxy(("127.0.0.1", 5432))
    await proxy.start()
    url = proxy.url(postgres_url)
    from spinline.cloud.settings import Settings

    settings = Settings(db=url, data_dir=tmp_path, **(FAST | {
        "db_connect_timeout_s": 2, "db_statement_timeout_s": 3, "request_deadline_s": 4,
        "health_pipeline_s": 0, "retention_every_s": 0}))
    app = create_app(settings, site=zone_site)
    async with app.router.lifespan_context(app):
        cloud = app.state.cloud
        await asyncio.to_thread(cloud.accounts.create_user, username="alice", password=PASSWORD,
                                role=Role.MILL_MANAGER, mills=["mill-a"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            r = await c.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
            h = {"Authorization": f"Bearer {r.json()['access_token']}"}
            tree = "/api/v1/mills/mill-a/tree"
            assert (await c.get(tree, headers=h)).status_code == 200
            assert (await c.get("/readyz")).status_code == 200

            # --- hung: every byte held -------------------------------------------------------
            proxy.stall()
            r, took = await _timed(c, tree, headers=h)
            assert r.status_code == 503 and "Retry-After" in r.headers, r.text
            assert took < 6                                   # the deadline, not the whole hang
            r, took = await _timed(c, "/healthz")
            assert r.status_code == 200 and took < 0.5        # liveness touches nothing
            r, took = await _timed(c, "/readyz")
            assert r.status_code == 503 and took < 4 and r.json()["checks"]["meta"] != "ok", r.text
            proxy.resume()
            for _ in range(40):                               # the held bytes flow again
                if (await c.get(tree, headers=h)).status_code == 200:
                    break
                await asyncio.sleep(0.25)
            assert (await c.get(tree, headers=h)).status_code == 200

            # --- stopped: a closed port ----------------------------------------------------------
            await proxy.stop()
            r, took = await _timed(c, tree, headers=h)
            assert r.status_code == 503 and r.json()["code"] == "storage_unavailable", r.text
            assert r.headers["Retry-After"] and took < 4
            assert (await c.get("/readyz")).status_code == 503

            # --- back: the first request succeeds (no stale connection is used) ----------------
            await proxy.start()
            r = await c.get(tree, headers=h)
            assert r.status_code == 200, r.text
            assert (await c.get("/readyz")).status_code == 200
    await proxy.stop()


async def test_a_statement_blocked_by_a_lock_times_out_as_503(postgres_url: str, tmp_path: Path,
                                                              zone_site: Site) -> None:
    from spinline.cloud.settings import Settings

    settings = Settings(db=postgres_url, data_dir=tmp_path, **(FAST | {
        "db_statement_timeout_s": 2, "request_deadline_s": 10, "health_pipeline_s": 0, "retention_every_s": 0}))
    app = create_app(settings, site=zone_site)
    async with app.router.lifespan_context(app):
        cloud = app.state.cloud
        await asyncio.to_thread(cloud.accounts.create_user, username="alice", password=PASSWORD,
                                role=Role.MILL_MANAGER, mills=["mill-a"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            r = await c.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
            h = {"Authorization": f"Bearer {r.json()['access_token']}"}
            locked, release = threading.Event(), threading.Event()

            def hold_lock() -> None:
                with psycopg.connect(postgres_url) as conn:
                    conn.execute("LOCK TABLE points IN ACCESS EXCLUSIVE MODE")
                    locked.set()
                    release.wait(20)

            holder = threading.Thread(target=hold_lock)
            holder.start()
            try:
                assert await asyncio.to_thread(locked.wait, 10)
                r, took = await _timed(c, "/api/v1/mills/mill-a/tree", headers=h)
                assert r.status_code == 503 and r.json()["code"] == "storage_unavailable", r.text
                assert 1.5 < took < 5 and r.headers["Retry-After"]
            finally:
                release.set()
                holder.join(10)
            assert (await c.get("/api/v1/mills/mill-a/tree", headers=h)).status_code == 200


async def test_nul_in_names_an_edge_claims_is_a_refusal_not_a_500(postgres_url: str, tmp_path: Path,
                                                                  zone_site: Site) -> None:
    """The ingest routes read their own bodies (not behind the request guard): the claims inside a
    payload or a header reach the edge lookup, which must not hand PostgreSQL a NUL."""
    from spinline.cloud.settings import Settings
    from spinline.core.batch import Batch
    from spinline.core.site import point_key
    from spinline.core.wire import Envelope, encode

    settings = Settings(db=postgres_url, data_dir=tmp_path, **(FAST | {"health_pipeline_s": 0,
                                                                      "retention_every_s": 0}))
    app = create_app(settings, site=zone_site)
    async with app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        b = Batch.of([point_key("mill-a/rf01/spindle_speed")], time.time_ns(), [1.0])
        payload = encode(Envelope("edge\x00a", "mill-a", 1, b, time.time_ns()), key=b"k" * 32)
        r = await c.post("/api/v1/ingest", content=payload, headers={"Content-Type": "application/x-spinline-batch"})
        assert r.status_code == 401 and r.json()["reason"] == "unauthorised", r.text
        r = await c.post("/api/v1/edge-status", content=b"{}",
                         headers={"X-Spinline-Edge": b"edge-\xe9\x7f", "X-Spinline-Mill": "mill-a"})
        assert r.status_code == 401, r.text
