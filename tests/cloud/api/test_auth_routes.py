"""Login, logout, rate limit and user management over HTTP."""

from __future__ import annotations

from .conftest import PASSWORD, Api


async def test_login_logout(api: Api) -> None:
    r = await api.client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 200 and r.json()["token_type"] == "bearer" and r.json()["expires_at"]
    h = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert (await api.client.get("/api/v1/mills", headers=h)).status_code == 200
    assert (await api.client.post("/api/v1/auth/logout", headers=h)).status_code == 204
    assert (await api.client.get("/api/v1/mills", headers=h)).status_code == 401
    assert (await api.client.get("/api/v1/mills")).status_code == 401


async def test_login_rate_limited_after_five_failures(api: Api) -> None:
    for _ in range(5):
        r = await api.client.post("/api/v1/auth/login", json={"username": "alice", "password": "wrong-password"})
        assert r.status_code == 401
    r = await api.client.post("/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 200
    # other users are not affected
    assert (await api.client.post("/api/v1/auth/login", json={"username": "bob", "password": PASSWORD})).status_code \
        == 200


async def test_zone_operator_manages_users(api: Api) -> None:
    h = await api.login("zone")
    r = await api.client.post("/api/v1/users", headers=h, json={
        "username": "mia", "password": "maintenance1", "role": "maintenance_engineer", "mills": ["mill-c"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["mills"] == ["mill-c"] and "password" not in r.text and "argon2" not in r.text
    dup = await api.client.post("/api/v1/users", headers=h, json={
        "username": "mia", "password": "maintenance1", "role": "viewer", "mills": ["mill-c"]})
    assert dup.status_code == 409
    bad = await api.client.post("/api/v1/users", headers=h, json={
        "username": "zed", "password": "maintenance1", "role": "viewer", "mills": ["mill-x"]})
    assert bad.status_code == 422
    listing = (await api.client.get("/api/v1/users", headers=h)).text
    assert "mia" in listing and "$argon2" not in listing
    mia = await api.login("mia", "maintenance1")
    assert [m["id"] for m in (await api.client.get("/api/v1/mills", headers=mia)).json()] == ["mill-c"]
    r = await api.client.patch(f"/api/v1/users/{body['id']}", headers=h, json={"password": "a-new-password"})
    assert r.status_code == 200
    assert (await api.client.get("/api/v1/mills", headers=mia)).status_code == 401   # sessions ended
    assert (await api.client.delete(f"/api/v1/users/{body['id']}", headers=h)).status_code == 204
    assert (await api.client.get(f"/api/v1/users/{body['id']}", headers=h)).status_code == 404
