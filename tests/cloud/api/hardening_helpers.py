"""An API over real stores with chosen settings (the limits under test), and raw ASGI calls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

from spinline.cloud.api.deps import Cloud
from spinline.cloud.app import create_app, open_stores
from spinline.core.site import Site

from .conftest import USERS, Api, make_settings


@asynccontextmanager
async def api_with(tmp_path: Path, site: Site, client: tuple[str, int] = ("127.0.0.1", 50000),
                   **settings: Any) -> AsyncIterator[Api]:
    s = make_settings(tmp_path, **settings)
    store, meta = open_stores(s, site=site)
    app = create_app(s, store=store, meta=meta)
    try:
        async with app.router.lifespan_context(app):
            cloud: Cloud = app.state.cloud
            transport = httpx.ASGITransport(app=app, client=client)
            a = Api(app, httpx.AsyncClient(transport=transport, base_url="http://test"), cloud)
            for name, role, mills in USERS:
                a.user_ids[name] = cloud.accounts.create_user(username=name, password="correct horse battery",
                                                              role=role, mills=mills).id
            for edge, mill in (("edge-a", "mill-a"), ("edge-b", "mill-b")):
                a.secrets[edge] = cloud.edges.create(edge_id=edge, mill=mill, created_by="test")[1]
            async with a.client:
                yield a
    finally:
        store.close()
        meta.close()


async def asgi_call(app: Any, method: str, path: str, *, query: str = "", headers: dict[str, str] | None = None,
                    body: bytes = b"", disconnect_after_s: float | None = None,
                    client: tuple[str, int] = ("127.0.0.1", 50000)) -> dict[str, Any]:
    """Call the ASGI app as a server would; the client hangs up after ``disconnect_after_s`` if given.

    Returns ``{"status", "body", "returned_after_s"}`` (status None when no answer was sent).
    """
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
             + [(b"host", b"test"), (b"content-length", str(len(body)).encode())],
             "client": client, "server": ("test", 80)}
    sent = {"request": False}
    out: dict[str, Any] = {"status": None, "body": b""}

    async def receive() -> dict[str, Any]:
        if not sent["request"]:
            sent["request"] = True
            return {"type": "http.request", "body": body, "more_body": False}
        if disconnect_after_s is None:
            await asyncio.Event().wait()
        await asyncio.sleep(disconnect_after_s)
        return {"type": "http.disconnect"}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
        elif msg["type"] == "http.response.body":
            out["body"] += msg.get("body", b"")

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await app(scope, receive, send)
    out["returned_after_s"] = loop.time() - t0
    if out["body"]:
        with suppress(ValueError):
            out["json"] = json.loads(out["body"])
    return out
