"""The web console and the API docs, served by the cloud process itself (no second server, no CDN).

The console is a single-page app built from ``web/`` (``scripts/setup`` runs ``npm ci && vite
build``) into ``web/dist``. This module serves that folder at ``/``:

- ``/assets/*`` are Vite's content-hashed files: cached for a year, ``immutable``;
- a file the build precompressed (``x.js.br``, ``x.js.gz`` beside ``x.js``; ``vite.config.ts`` writes
  them) is sent as it is to a browser that accepts that encoding (brotli first), with
  ``Vary: Accept-Encoding``: no compression work per request, about a quarter of the bytes;
- any other path that is a file of the build (favicon, ...) is served as it is;
- every other path that is not under ``/api`` gets ``index.html`` (the client router's URLs, so a
  reload or a pasted link to ``/mills/mill-a/machines/rf01`` opens that view); ``/api/...`` is never
  shadowed: an unknown API path stays a JSON 404;
- without a build, ``/`` answers a page that says how to build it (503), not a bare 404.

Swagger UI's JavaScript and CSS come from the ``swagger-ui-bundle-v2`` package, served under
``/api/docs/assets``, so ``/api/docs`` works on a mill LAN with no internet.
"""

from __future__ import annotations

import html
import mimetypes
import os
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

#: Environment variable naming the folder of a built console (default: the first of ``_candidates()``).
DIST_ENV = "SPINLINE_WEB_DIST"
_IMMUTABLE = "public, max-age=31536000, immutable"
_NO_CACHE = "no-cache"
#: Precompressed siblings, best first: (Accept-Encoding token, file suffix).
_ENCODINGS = (("br", ".br"), ("gzip", ".gz"))


def _candidates() -> list[Path]:
    """Where a build may be: packaged beside this module (a wheel), or ``web/dist`` of a checkout."""
    here = Path(__file__).resolve()
    return [here.parent / "web_dist", here.parents[3] / "web" / "dist"]


def find_dist() -> Path | None:
    """The folder of the built console, or None when there is none (``index.html`` decides)."""
    env = os.environ.get(DIST_ENV)
    for folder in ([Path(env)] if env else _candidates()):
        if (folder / "index.html").is_file():
            return folder.resolve()
    return None


def swagger_assets() -> Path | None:
    """The folder holding ``swagger-ui-bundle.js`` and ``swagger-ui.css``, or None if not installed."""
    try:
        import swagger_ui_bundle  # type: ignore[import-untyped]
    except ImportError:
        return None
    folder = Path(swagger_ui_bundle.swagger_ui_path)
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


_MISSING = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>spinline console not built</title>
<style>body{{font-family:system-ui,sans-serif;max-width:42rem;margin:4rem auto;line-height:1.5;color:#222}}
code{{background:#f3f3f3;padding:.1rem .3rem}}</style></head><body>
<h1>The web console is not built</h1>
<p>The cloud API is running (<a href="/api/docs">API docs</a>), but the console's files were not found
{where}.</p>
<p>Build them once from the checkout with <code>scripts/setup</code> (it runs <code>npm ci</code> and
<code>vite build</code> in <code>web/</code>), or point <code>{env}</code> at a built <code>dist</code>
folder, then reload this page.</p>
<p lang="zh-CN">网页控制台尚未构建：请在代码目录运行 <code>scripts/setup</code> 后刷新本页。</p>
</body></html>"""


def _inside(root: Path, rel: str) -> Path | None:
    """``root/rel`` if it is a file inside ``root`` (no ``..`` escapes), else None."""
    try:
        target = (root / rel).resolve()
    except (OSError, ValueError):
        return None
    if root not in target.parents or not target.is_file():
        return None
    return target


def _accepts(header: str, token: str) -> bool:
    """Whether an Accept-Encoding header takes ``token`` (not with ``q=0``)."""
    for part in header.lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() == token:
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def send_file(target: Path, cache: str, accept_encoding: str) -> FileResponse:
    """``target`` with ``cache``; its precompressed sibling where the browser accepts that encoding."""
    headers = {"Cache-Control": cache, "Vary": "Accept-Encoding"}
    for token, suffix in _ENCODINGS:
        packed = target.with_name(target.name + suffix)
        if _accepts(accept_encoding, token) and packed.is_file():
            media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"  # what it unpacks to
            return FileResponse(packed, media_type=media_type, headers=headers | {"Content-Encoding": token})
    return FileResponse(target, headers=headers)


def install(app: FastAPI, *, openapi_url: str, dist: Path | None = None, docs_url: str = "/api/docs") -> None:
    """Add the local Swagger UI and the console routes to ``app`` (call after the API routers)."""
    assets = swagger_assets()

    @app.get(docs_url, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        if assets is None:
            return HTMLResponse(f"<p>Swagger UI is not installed (pip install swagger-ui-bundle-v2); the "
                                f"OpenAPI document is at <a href='{openapi_url}'>{openapi_url}</a>.</p>")
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} - docs",
                                   swagger_js_url=f"{docs_url}/assets/swagger-ui-bundle.js",
                                   swagger_css_url=f"{docs_url}/assets/swagger-ui.css",
                                   swagger_favicon_url=f"{docs_url}/assets/favicon-32x32.png")

    @app.get(docs_url + "/assets/{name}", include_in_schema=False)
    def swagger_asset(name: str) -> FileResponse:
        target = _inside(assets, name) if assets is not None else None
        if target is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"docs asset {name!r} not found")
        return FileResponse(target, headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/{path:path}", include_in_schema=False)
    def console(path: str, request: Request) -> Response:
        if path == "api" or path.startswith("api/"):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "Not Found")  # as FastAPI answers an unknown route
        root = dist if dist is not None else find_dist()
        if root is None:
            where = " (looked in " + ", ".join(html.escape(str(p)) for p in _candidates()) + ")"
            return HTMLResponse(_MISSING.format(where=where, env=DIST_ENV), status_code=503)
        if path:
            target = _inside(root, path)
            if target is not None:
                cache = _IMMUTABLE if path.startswith("assets/") else _NO_CACHE
                return send_file(target, cache, request.headers.get("accept-encoding", ""))
            if path.startswith("assets/"):
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"asset {path!r} not found")
        return send_file(root / "index.html", _NO_CACHE, request.headers.get("accept-encoding", ""))
