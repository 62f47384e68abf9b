"""A real app over real stores (DuckDB + SQLite in tmp_path), driven through httpx's ASGI transport.

Users: ``zone`` (zone operator), ``alice`` (mill manager, mill-a), ``bob`` (mill manager, mill-b),
``vera`` (viewer, mill-a), ``erin`` (energy officer, mill-a). Edges: ``edge-a`` (mill-a),
``edge-b`` (mill-b), with their secrets.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from spinline.cloud.api.deps import Cloud
from spinline.cloud.app import create_app, open_stores
from spinline.cloud.auth.roles import Role
from spinline.cloud.settings import Settings
from spinline.core.batch import Batch
from spinline.core.site import Site, load_site, point_key
from spinline.core.wire import Envelope, encode

PASSWORD = "correct horse battery"
FAST: dict[str, Any] = {"argon2_time_cost": 1, "argon2_memory_kib": 64, "argon2_parallelism": 1,
                        "rollup_refresh_s": 0, "stream_interval_s": 0.05, "zone_refresh_s": 0,
                        "freeze_startup_heap": False,
                        "secret_key": base64.urlsafe_b64encode(b"k" * 32).decode()}
USERS = [("zone", Role.ZONE_OPERATOR, []), ("alice", Role.MILL_MANAGER, ["mill-a"]),
         ("bob", Role.MILL_MANAGER, ["mill-b"]), ("vera", Role.VIEWER, ["mill-a"]),
         ("erin", Role.ENERGY_OFFICER, ["mill-a"])]


def signed(edge: str, mill: str, seq: int, secret: str, values: dict[str, float], ts_ns: int | None = None) -> bytes:
    """A wire payload of ``values`` (tag -> value) signed with ``secret``."""
    ts = ts_ns or time.time_ns() - 10**9
    tags = list(values)
    batch = Batch.of([point_key(t) for t in tags], ts, [values[t] for t in tags])
    return encode(Envelope(edge=edge, mill=mill, seq=seq, batch=batch, created_ns=ts), key=secret.encode())


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    cloud: Cloud
    secrets: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)
    browsers: list[httpx.AsyncClient] = field(default_factory=list)

    async def login(self, username: str, password: str = PASSWORD) -> dict[str, str]:
        r = await self.client.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    async def browser(self, username: str, password: str = PASSWORD, *, csrf: bool = True) -> httpx.AsyncClient:
        """A client of its own (its own cookie jar) logged in with a browser session; with ``csrf`` it sends
        the ``X-CSRF-Token`` header on every request, as the console does."""
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://test")
        self.browsers.append(c)
        r = await c.post("/api/v1/auth/session", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        if csrf:
            c.headers["X-CSRF-Token"] = c.cookies["spinline_csrf"]
        return c

    async def ingest(self, payload: bytes) -> httpx.Response:
        return await self.client.post("/api/v1/ingest", content=payload,
                                      headers={"Content-Type": "application/x-spinline-batch"})


@pytest.fixture(scope="session")
def zone_site(zone_yaml: Path) -> Site:
    return load_site(zone_yaml)


def make_settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(db=f"embedded:{tmp_path / 'cloud'}", **(FAST | kw))


@pytest.fixture()
async def api(tmp_path: Path, zone_site: Site) -> AsyncIterator[Api]:
    settings = make_settings(tmp_path)
    store, meta = open_stores(settings, site=zone_site)
    app = create_app(settings, store=store, meta=meta)
    try:
        async with app.router.lifespan_context(app):
            cloud: Cloud = app.state.cloud
            a = Api(app, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test"), cloud)
            for name, role, mills in USERS:
                a.user_ids[name] = cloud.accounts.create_user(username=name, password=PASSWORD, role=role,
                                                              mills=mills).id
            for edge, mill in (("edge-a", "mill-a"), ("edge-b", "mill-b")):
                a.secrets[edge] = cloud.edges.create(edge_id=edge, mill=mill, created_by="test")[1]
            async with a.client:
                yield a
            for c in a.browsers:
                await c.aclose()
    finally:
        store.close()
        meta.close()
