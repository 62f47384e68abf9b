"""Login as a denial of service (issue 13, item 3): limits per client and overall, bounded argon2,
and no lock-out anyone can cause for the real user."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx

from spinline.core.site import Site

from .hardening_helpers import api_with

LOGIN = "/api/v1/auth/login"
PASSWORD = "correct horse battery"


def _client(api_app: object, host: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api_app, client=(host, 40000)),  # type: ignore[arg-type]
                             base_url="http://test")


async def test_random_user_names_from_one_client_are_limited(tmp_path: Path, zone_site: Site) -> None:
    async with api_with(tmp_path, zone_site, login_client_failures=10, login_global_burst=1000) as api:
        codes = []
        for _ in range(15):
            r = await api.client.post(LOGIN, json={"username": uuid.uuid4().hex[:12], "password": "guess guess"})
            codes.append(r.status_code)
        assert codes[:10] == [401] * 10 and codes[10:] == [429] * 5, codes
        assert r.json()["code"] == "rate_limited" and int(r.headers["Retry-After"]) > 0
        checks = api.cloud.accounts.passwords.peak_concurrent
        async with _client(api.app, "10.9.9.9") as other:         # another address is not affected
            assert (await other.post(LOGIN, json={"username": "alice", "password": PASSWORD})).status_code == 200
        assert checks >= 1


async def test_all_clients_together_are_limited(tmp_path: Path, zone_site: Site) -> None:
    async with api_with(tmp_path, zone_site, login_global_rate=1, login_global_burst=5) as api:
        codes = []
        for i in range(8):
            async with _client(api.app, f"10.1.0.{i}") as c:
                codes.append((await c.post(LOGIN, json={"username": f"u{i}", "password": "guess guess"})).status_code)
        assert codes.count(401) == 5 and codes.count(429) == 3, codes


async def test_concurrent_password_checks_are_bounded(tmp_path: Path, zone_site: Site) -> None:
    # Real argon2 at a cost that takes a few ms per check; 16 logins at once from 16 addresses.
    async with api_with(tmp_path, zone_site, argon2_max_concurrent=2, argon2_memory_kib=8192,
                        argon2_time_cost=2, login_global_burst=1000) as api:
        pw = api.cloud.accounts.passwords
        pw.peak_concurrent = 0

        async def one(i: int) -> int:
            async with _client(api.app, f"10.2.0.{i}") as c:
                return (await c.post(LOGIN, json={"username": "alice", "password": f"wrong {i:04d}"})).status_code

        codes = await asyncio.gather(*(one(i) for i in range(16)))
        assert set(codes) == {401}
        assert pw.peak_concurrent == 2                    # never more than the bound, and it was reached


async def test_lock_out_is_not_a_weapon(tmp_path: Path, zone_site: Site) -> None:
    async with api_with(tmp_path, zone_site, login_name_failures=15, login_name_max_delay_s=2,
                        login_global_burst=1000) as api:
        # An attacker fails on "alice" 5 times from each of 3 addresses (15 failures of the name).
        for i in range(3):
            async with _client(api.app, f"10.3.0.{i}") as c:
                for _ in range(5):
                    r = await c.post(LOGIN, json={"username": "alice", "password": "not her password"})
                    assert r.status_code == 401
                if i == 0:
                    r = await c.post(LOGIN, json={"username": "alice", "password": PASSWORD})
                    assert r.status_code == 429 and r.json()["code"] == "login_rate_limited"   # that address only
        # The real alice, from her own address: slowed down, not refused.
        t0 = time.perf_counter()
        r = await api.client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
        waited = time.perf_counter() - t0
        assert r.status_code == 200, r.text
        assert 1.0 <= waited < 3.0                         # the name's delay (1 s at the threshold)
        # another user is not slowed at all
        t0 = time.perf_counter()
        assert (await api.client.post(LOGIN, json={"username": "bob", "password": PASSWORD})).status_code == 200
        assert time.perf_counter() - t0 < 1.0
