"""Browser sessions: cookies, CSRF on writes, expiry, own password and language, and live streams that
end with their session (over a real uvicorn on loopback, since the ASGI test transport buffers a
streamed response)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from .conftest import PASSWORD, Api


def _set_cookies(r: httpx.Response) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in r.headers.get_list("set-cookie")}


async def test_session_login_sets_strict_http_only_cookies_and_returns_the_user(api: Api) -> None:
    r = await api.client.post("/api/v1/auth/session", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["username"], body["role"], body["mills"], body["language"], body["auth"]) == \
        ("alice", "mill_manager", ["mill-a"], None, "session")
    assert "manage_maintenance" in body["permissions"] and body["idle_timeout_s"] > 0 and body["expires_at"]
    cookies = _set_cookies(r)
    session, csrf = cookies["spinline_session"].lower(), cookies["spinline_csrf"].lower()
    for c in (session, csrf):
        assert "samesite=strict" in c and "path=/" in c and "secure" not in c   # plain http here
    assert "httponly" in session and "httponly" not in csrf
    # the token is in no body and the session table holds only its hash
    token = r.cookies["spinline_session"]
    assert token not in r.text
    assert api.cloud.meta.session(token) is None
    # over https the cookies are Secure
    https = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="https://test")
    async with https:
        r = await https.post("/api/v1/auth/session", json={"username": "alice", "password": PASSWORD})
        assert all("; secure" in c.lower() for c in _set_cookies(r).values())
    # wrong password: 401 with a code, no cookie
    r = await api.client.post("/api/v1/auth/session", json={"username": "alice", "password": "nope-nope"})
    assert r.status_code == 401 and r.json()["code"] == "login_failed" and "set-cookie" not in r.headers


async def test_zone_operator_session_lists_every_mill(api: Api) -> None:
    b = await api.browser("zone")
    me = (await b.get("/api/v1/auth/me")).json()
    assert me["all_mills"] and me["mills"] == ["mill-a", "mill-b", "mill-c"]


async def test_writes_with_the_cookie_need_the_csrf_header(api: Api) -> None:
    b = await api.browser("alice", csrf=False)
    # reads need no header
    assert (await b.get("/api/v1/mills/mill-a")).status_code == 200
    event = {"kind": "note", "message": "from the console"}
    r = await b.post("/api/v1/mills/mill-a/events", json=event)
    assert (r.status_code, r.json()["code"]) == (403, "csrf_missing")
    r = await b.post("/api/v1/mills/mill-a/events", json=event, headers={"X-CSRF-Token": "guessed"})
    assert (r.status_code, r.json()["code"]) == (403, "csrf_mismatch")
    # another session's CSRF token (a cookie planted by another page) does not fit this session
    other = await api.browser("alice")
    r = await b.post("/api/v1/mills/mill-a/events", json=event,
                     headers={"X-CSRF-Token": other.cookies["spinline_csrf"]})
    assert (r.status_code, r.json()["code"]) == (403, "csrf_mismatch")
    assert api.cloud.meta.events("mill-a") == []
    r = await b.post("/api/v1/mills/mill-a/events", json=event, headers={"X-CSRF-Token": b.cookies["spinline_csrf"]})
    assert r.status_code == 201 and r.json()["source"] == "alice"
    # an alarm step and a work-order transition are writes like any other
    r = await b.post("/api/v1/mills/mill-a/maintenance/work-orders", json={"asset": "rf01/main_motor", "title": "x"})
    assert r.json()["code"] == "csrf_missing"
    # API clients with a bearer token are exempt
    h = await api.login("alice")
    assert (await api.client.post("/api/v1/mills/mill-a/events", headers=h, json=event)).status_code == 201


async def test_logout_ends_the_session_and_clears_the_cookies(api: Api) -> None:
    b = await api.browser("alice")
    assert (await b.get("/api/v1/auth/me")).status_code == 200
    token = b.cookies["spinline_session"]
    r = await b.delete("/api/v1/auth/session")
    assert r.status_code == 204
    assert all("max-age=0" in c.lower() or "expires=" in c.lower() for c in _set_cookies(r).values())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://test",
                                 cookies={"spinline_session": token}) as replay:
        r = await replay.get("/api/v1/auth/me")
    assert (r.status_code, r.json()["code"]) == (401, "session_expired")


async def test_idle_and_absolute_expiry(api: Api) -> None:
    acc = api.cloud.accounts
    b = await api.browser("alice")
    real = acc.clock
    acc.clock = lambda: real() + acc.session_idle_ns - 10**9      # active just before the idle limit
    assert (await b.get("/api/v1/auth/me")).status_code == 200
    acc.clock = lambda: real() + 2 * acc.session_idle_ns - 2 * 10**9   # the request above kept it alive
    assert (await b.get("/api/v1/auth/me")).status_code == 200
    acc.clock = lambda: real() + 3 * acc.session_idle_ns + 10**9       # then idle too long
    r = await b.get("/api/v1/auth/me")
    assert (r.status_code, r.json()["code"]) == (401, "session_expired")
    # absolute expiry, however active
    acc.clock = real
    b = await api.browser("alice")
    acc.clock = lambda: real() + acc.session_max_ns + 10**9
    assert (await b.get("/api/v1/auth/me")).status_code == 401
    acc.clock = real


async def test_disabling_a_user_ends_the_session(api: Api) -> None:
    b = await api.browser("vera")
    zone = await api.login("zone")
    r = await api.client.patch(f"/api/v1/users/{api.user_ids['vera']}", headers=zone, json={"disabled": True})
    assert r.status_code == 200
    assert (await b.get("/api/v1/auth/me")).status_code == 401


async def test_change_own_password(api: Api) -> None:
    b = await api.browser("vera")
    h = await api.login("vera")
    r = await b.put("/api/v1/auth/me/password", json={"current_password": "not-it-at-all", "new_password": "n3w-pass"})
    assert (r.status_code, r.json()["code"]) == (403, "wrong_password")
    # guessing the current password is counted like failed logins
    for _ in range(4):
        await b.put("/api/v1/auth/me/password", json={"current_password": "guess-guess", "new_password": "n3w-pass"})
    r = await b.put("/api/v1/auth/me/password", json={"current_password": "guess-guess", "new_password": "n3w-pass"})
    assert (r.status_code, r.json()["code"]) == (429, "login_rate_limited")
    api.cloud.meta.clear_login_failures("vera", "127.0.0.1")
    r = await b.put("/api/v1/auth/me/password", json={"current_password": PASSWORD, "new_password": "short"})
    assert r.status_code == 422
    r = await b.put("/api/v1/auth/me/password", json={"current_password": PASSWORD, "new_password": "a-new-password"})
    assert r.status_code == 204
    # every session and token of vera ended, this one included
    assert (await b.get("/api/v1/auth/me")).status_code == 401
    assert (await api.client.get("/api/v1/auth/me", headers=h)).status_code == 401
    assert (await api.browser("vera", "a-new-password")) is not None


async def test_language(api: Api) -> None:
    b = await api.browser("erin")
    r = await b.put("/api/v1/auth/me/language", json={"language": "zh-CN"})
    assert r.status_code == 200 and r.json()["language"] == "zh-CN"
    assert (await b.get("/api/v1/auth/me")).json()["language"] == "zh-CN"
    assert (await b.put("/api/v1/auth/me/language", json={"language": "fr"})).status_code == 422
    r = await b.put("/api/v1/auth/me/language", json={"language": None})
    assert r.json()["language"] is None
    # the session login answers with the remembered language
    await b.put("/api/v1/auth/me/language", json={"language": "en"})
    r = await api.client.post("/api/v1/auth/session", json={"username": "erin", "password": PASSWORD})
    assert r.json()["language"] == "en"


# --- live streams ------------------------------------------------------------------------------------

@pytest.fixture()
async def served(api: Api) -> AsyncIterator[str]:
    """The fixture's app on a real uvicorn on a free loopback port (its lifespan already runs)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api.app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        sock.close()


async def _open_stream(c: httpx.AsyncClient, **kw: object) -> tuple[httpx.Response, AsyncIterator[str]]:
    req = c.build_request("GET", "/api/v1/mills/mill-a/stream", **kw)  # type: ignore[arg-type]
    resp = await c.send(req, stream=True)
    return resp, resp.aiter_lines()


async def _until_closed(lines: AsyncIterator[str], within_s: float) -> float:
    """Seconds until the stream ends (fails past ``within_s``)."""
    t0 = time.monotonic()

    async def drain() -> None:
        async for _ in lines:
            pass

    await asyncio.wait_for(drain(), within_s)
    return time.monotonic() - t0


async def _first_event(lines: AsyncIterator[str]) -> None:
    async for line in lines:
        if line.startswith("event: latest"):
            return


@contextlib.asynccontextmanager
async def _browser_at(base: str, username: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:
        r = await c.post("/api/v1/auth/session", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        c.headers["X-CSRF-Token"] = c.cookies["spinline_csrf"]
        yield c


def _slow_polls(api: Api) -> None:
    """Polls far apart: a stream that ends within a second was ended by its session's end, not by a poll."""
    api.cloud.settings = api.cloud.settings.model_copy(update={"stream_interval_s": 5.0})


async def test_the_stream_works_with_the_cookie_and_ends_at_logout(api: Api, served: str) -> None:
    _slow_polls(api)
    async with _browser_at(served, "alice") as b:
        resp, lines = await _open_stream(b)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        await asyncio.wait_for(_first_event(lines), 5)
        assert api.cloud.streams.count(api.user_ids["alice"]) == 1
        t_logout = asyncio.create_task(b.delete("/api/v1/auth/session"))
        took = await _until_closed(lines, 3.0)
        assert (await t_logout).status_code == 204
        assert took < 1.0, took
        await resp.aclose()
        for _ in range(100):
            if api.cloud.streams.count() == 0:
                break
            await asyncio.sleep(0.01)
        assert api.cloud.streams.count() == 0            # the slot is given back
        # reconnecting (what EventSource does) is refused
        resp, _ = await _open_stream(b)
        assert resp.status_code == 401
        await resp.aclose()


async def test_disabling_the_user_and_revoking_a_token_end_their_streams(api: Api, served: str) -> None:
    _slow_polls(api)
    zone = await api.login("zone")
    async with _browser_at(served, "vera") as b, httpx.AsyncClient(base_url=served, timeout=10) as c:
        resp, lines = await _open_stream(b)
        await asyncio.wait_for(_first_event(lines), 5)
        r = await api.client.patch(f"/api/v1/users/{api.user_ids['vera']}", headers=zone, json={"disabled": True})
        assert r.status_code == 200
        assert await _until_closed(lines, 3.0) < 1.0
        await resp.aclose()
        # a bearer token's stream ends when the token is logged out
        h = await api.login("erin")
        resp, lines = await _open_stream(c, headers=h)
        await asyncio.wait_for(_first_event(lines), 5)
        assert (await api.client.post("/api/v1/auth/logout", headers=h)).status_code == 204
        assert await _until_closed(lines, 3.0) < 1.0
        await resp.aclose()


async def test_too_many_streams_per_user_is_429(api: Api, served: str) -> None:
    limit = api.cloud.streams.max_per_user
    async with _browser_at(served, "alice") as b:
        opened = []
        for _ in range(limit):
            resp, lines = await _open_stream(b)
            assert resp.status_code == 200
            await asyncio.wait_for(_first_event(lines), 5)
            opened.append((resp, lines))     # (a dropped line iterator would close its stream)
        assert api.cloud.streams.count(api.user_ids["alice"]) == limit
        resp, _ = await _open_stream(b)
        assert resp.status_code == 429 and (await resp.aread()) and resp.json()["code"] == "too_many_streams"
        # another user is not affected
        async with _browser_at(served, "vera") as v:
            other, lines = await _open_stream(v)
            assert other.status_code == 200
            await other.aclose()
        for r, _ in opened:
            await r.aclose()
