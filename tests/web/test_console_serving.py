"""The cloud serves the console at / (SPA fallback, cache headers), never shadows /api, and Swagger UI offline."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from spinline.cloud import console
from spinline.cloud.app import create_app
from spinline.cloud.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def dist(tmp_path: Path) -> Path:
    d = tmp_path / "dist"
    (d / "assets").mkdir(parents=True)
    (d / "index.html").write_text("<!doctype html><div id=app></div>")
    (d / "assets" / "index-abc123.js").write_text("console.log(1)")
    (d / "favicon.svg").write_text("<svg/>")
    return d


async def _client(tmp_path: Path) -> httpx.AsyncClient:
    app = create_app(Settings(db=f"embedded:{tmp_path / 'cloud'}"))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_console_routes(tmp_path: Path, dist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(console.DIST_ENV, str(dist))
    async with await _client(tmp_path) as c:
        for path in ("/", "/zone", "/mills/mill-a/machines/rf01?range=30d"):
            r = await c.get(path)
            assert r.status_code == 200 and "id=app" in r.text, path
            assert r.headers["cache-control"] == "no-cache"
        r = await c.get("/assets/index-abc123.js")
        assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
        assert (await c.get("/assets/missing.js")).status_code == 404
        assert (await c.get("/favicon.svg")).status_code == 200
        # /api is never the console: an unknown API route stays a JSON 404
        r = await c.get("/api/v1/no-such-route")
        assert r.status_code == 404 and r.json()["code"] == "not_found"   # the API's one error body, never the console
        # no escape from the build folder
        assert "root:" not in (await c.get("/..%2f..%2f..%2fetc/passwd")).text


async def test_missing_build_says_how_to_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(console.DIST_ENV, str(tmp_path / "nowhere"))
    async with await _client(tmp_path) as c:
        r = await c.get("/")
    assert r.status_code == 503
    assert "scripts/setup" in r.text and "vite build" in r.text


async def test_swagger_ui_is_served_locally(tmp_path: Path) -> None:
    async with await _client(tmp_path) as c:
        page = (await c.get("/api/docs")).text
        assert "/api/docs/assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            r = await c.get(f"/api/docs/assets/{asset}")
            assert r.status_code == 200 and len(r.content) > 10_000, asset


def _keys(d: dict[str, object], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in d.items():
        out |= _keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
    return out


def test_catalogues_complete_in_both_languages() -> None:
    """Every key in zh-CN exists in English and back, none empty (the vitest suite checks the same in node)."""
    folder = ROOT / "web" / "src" / "i18n" / "locales"
    zh = json.loads((folder / "zh-CN.json").read_text(encoding="utf-8"))
    en = json.loads((folder / "en.json").read_text(encoding="utf-8"))
    assert sorted(_keys(zh) - _keys(en)) == [] and sorted(_keys(en) - _keys(zh)) == []
    assert zh["stage"]["ring_frame"] == "细纱机" and zh["zone"]["endsDown"] == "千锭时断头"


async def test_precompressed_assets_by_accept_encoding(tmp_path: Path, dist: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    js = dist / "assets" / "index-abc123.js"
    (dist / "assets" / "index-abc123.js.gz").write_bytes(gzip.compress(js.read_bytes()))
    (dist / "assets" / "index-abc123.js.br").write_bytes(b"brotli bytes as the build wrote them")
    monkeypatch.setenv(console.DIST_ENV, str(dist))

    async def raw(enc: str) -> tuple[httpx.Headers, bytes]:
        async with c.stream("GET", "/assets/index-abc123.js", headers={"Accept-Encoding": enc}) as r:
            assert r.status_code == 200
            return r.headers, b"".join([x async for x in r.aiter_raw()])

    async with await _client(tmp_path) as c:
        h, body = await raw("gzip, deflate, br")                     # brotli first
        assert h["content-encoding"] == "br" and body == b"brotli bytes as the build wrote them"
        assert h["content-type"].startswith("text/javascript") and "immutable" in h["cache-control"]
        assert h["vary"] == "Accept-Encoding"
        h, body = await raw("gzip")
        assert h["content-encoding"] == "gzip" and gzip.decompress(body) == b"console.log(1)"
        h, body = await raw("br;q=0, identity")                      # refused: the file as it is
        assert "content-encoding" not in h and body == b"console.log(1)"
        # a file without a precompressed sibling (the SPA's index.html) is sent as it is
        r = await c.get("/zone", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in r.headers and "id=app" in r.text
