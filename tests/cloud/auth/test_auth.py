"""Passwords (argon2id), tokens with expiry, login rate limit, sealed edge secrets, the server key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from spinline.cloud.auth.passwords import Passwords
from spinline.cloud.auth.roles import ROLE_PERMISSIONS, Permission, Role
from spinline.cloud.auth.sealing import SecretBox
from spinline.cloud.auth.service import Accounts, EdgeCredentials, InvalidRequest, LoginRateLimited
from spinline.cloud.meta.store import MetaStore
from spinline.cloud.settings import Settings
from spinline.core.errors import AuthError
from spinline.core.site import Line, Machine, MachineType, Mill, Workshop

S = 10**9
PW = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000 * S

    def __call__(self) -> int:
        return self.now


@pytest.fixture()
def meta(tmp_path: Path) -> MetaStore:
    m = MetaStore(f"sqlite:///{tmp_path / 'meta.sqlite'}")
    m.migrate()
    for mid in ("mill-a", "mill-b"):
        m.upsert_mill(Mill(id=mid, workshops=[Workshop(id="w", lines=[Line(id="l", machines=[
            Machine(id="c1", type=MachineType.CARD)])])]), zone="z", now_ns=0)
    yield m
    m.close()


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def accounts(meta: MetaStore, clock: Clock) -> Accounts:
    return Accounts(meta, Passwords(time_cost=1, memory_kib=64, parallelism=1), token_ttl_s=3600, max_failures=5,
                    window_s=300, clock=clock)


def test_passwords_are_argon2id() -> None:
    p = Passwords(time_cost=1, memory_kib=64, parallelism=1)
    h = p.hash(PW)
    assert h.startswith("$argon2id$") and PW not in h
    assert p.verify(h, PW) and not p.verify(h, PW + "x") and not p.verify("not a hash", PW)
    with pytest.raises(ValueError):
        p.hash("short")


def test_token_expires(accounts: Accounts, clock: Clock) -> None:
    accounts.create_user(username="alice", password=PW, role=Role.MILL_MANAGER, mills=["mill-a"])
    s = accounts.login("alice", PW, "10.0.0.1")
    assert accounts.authenticate(s.token).mills == frozenset({"mill-a"})
    assert s.expires_ns == clock.now + 3600 * S
    clock.now += 3599 * S
    accounts.authenticate(s.token)
    clock.now += 2 * S
    with pytest.raises(AuthError):
        accounts.authenticate(s.token)


def test_tokens_are_stored_hashed(accounts: Accounts, meta: MetaStore) -> None:
    accounts.create_user(username="alice", password=PW, role=Role.VIEWER, mills=["mill-a"])
    s = accounts.login("alice", PW, "c")
    import sqlalchemy as sa

    with meta.engine.connect() as con:
        stored = [r[0] for r in con.execute(sa.text("SELECT token_hash FROM meta_tokens"))]
    assert stored and s.token not in stored


def test_login_rate_limit_per_user_and_client(accounts: Accounts, clock: Clock) -> None:
    accounts.create_user(username="alice", password=PW, role=Role.VIEWER, mills=["mill-a"])
    for _ in range(5):
        with pytest.raises(AuthError) as e:
            accounts.login("alice", "wrong password", "10.0.0.1")
        assert not isinstance(e.value, LoginRateLimited)
        clock.now += 10 * S
    # the 6th attempt is refused even with the right password, until the oldest failure leaves the window
    with pytest.raises(LoginRateLimited) as limited:
        accounts.login("alice", PW, "10.0.0.1")
    assert limited.value.retry_after_s == pytest.approx(300 - 50)
    # another client is not locked out by someone guessing from 10.0.0.1
    accounts.login("alice", PW, "10.0.0.2")
    clock.now += 251 * S
    assert accounts.login("alice", PW, "10.0.0.1").token


def test_unknown_user_and_disabled_user_are_refused(accounts: Accounts) -> None:
    u = accounts.create_user(username="alice", password=PW, role=Role.VIEWER, mills=["mill-a"])
    with pytest.raises(AuthError):
        accounts.login("nobody", PW, "c")
    s = accounts.login("alice", PW, "c")
    accounts.update_user(u.id, disabled=True)
    with pytest.raises(AuthError):
        accounts.authenticate(s.token)
    with pytest.raises(AuthError):
        accounts.login("alice", PW, "c")


def test_role_change_ends_sessions(accounts: Accounts) -> None:
    u = accounts.create_user(username="alice", password=PW, role=Role.MILL_MANAGER, mills=["mill-a"])
    s = accounts.login("alice", PW, "c")
    accounts.update_user(u.id, mills=["mill-b"])
    with pytest.raises(AuthError):
        accounts.authenticate(s.token)
    assert accounts.authenticate(accounts.login("alice", PW, "c").token).mills == frozenset({"mill-b"})


def test_users_need_known_mills(accounts: Accounts) -> None:
    with pytest.raises(InvalidRequest, match="unknown mill"):
        accounts.create_user(username="x", password=PW, role=Role.VIEWER, mills=["mill-z"])
    with pytest.raises(InvalidRequest, match="at least one mill"):
        accounts.create_user(username="x", password=PW, role=Role.VIEWER, mills=[])
    assert accounts.create_user(username="ops", password=PW, role=Role.ZONE_OPERATOR).mills == frozenset()


def test_roles() -> None:
    assert ROLE_PERMISSIONS[Role.VIEWER] == {Permission.READ}
    assert Permission.MANAGE_MAINTENANCE not in ROLE_PERMISSIONS[Role.ENERGY_OFFICER]
    assert Permission.MANAGE_ENERGY not in ROLE_PERMISSIONS[Role.MAINTENANCE_ENGINEER]
    assert Permission.MANAGE_USERS not in ROLE_PERMISSIONS[Role.MILL_MANAGER]


def test_sealed_edge_secrets(meta: MetaStore) -> None:
    box = SecretBox(b"k" * 32)
    sealed = box.seal("edge-a", "s3cret-value")
    assert "s3cret" not in sealed and box.open("edge-a", sealed) == "s3cret-value"
    with pytest.raises(AuthError):
        box.open("edge-b", sealed)                 # bound to its edge id
    with pytest.raises(AuthError):
        SecretBox(b"x" * 32).open("edge-a", sealed)  # and to the server key
    edges = EdgeCredentials(meta, box)
    rec, secret = edges.create(edge_id="edge-a", mill="mill-a")
    assert edges.key("edge-a") == secret.encode() and edges.mill_of("edge-a") == "mill-a"
    assert edges.revoke("edge-a") and not edges.revoke("edge-a")
    assert edges.key("edge-a") is None and edges.mill_of("edge-a") is None
    with pytest.raises(InvalidRequest):
        edges.create(edge_id="edge-x", mill="mill-z")


def test_server_key_is_generated_private(tmp_path: Path) -> None:
    s = Settings(db=f"embedded:{tmp_path / 'd'}")
    key = s.load_secret_key()
    f = tmp_path / "d" / "secret.key"
    assert len(key) == 32 and stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert s.load_secret_key() == key
    with pytest.raises(ValueError):
        Settings(secret_key="dG9vIHNob3J0").load_secret_key()


def test_settings_from_env(tmp_path: Path) -> None:
    s = Settings.from_env({"SPINLINE_DB": "postgresql://u:p@h/db", "SPINLINE_TOKEN_TTL_S": "60"})
    assert s.token_ttl_s == 60 and not s.embedded
    assert s.meta_url() == "postgresql+psycopg://u:p@h/db" and s.store_url() == "postgresql://u:p@h/db"
    e = Settings.from_env({}, db=f"embedded:{tmp_path}")
    assert e.meta_url() == f"sqlite:///{tmp_path}/meta.sqlite"
    with pytest.raises(ValueError):
        Settings(db="mysql://x")


def test_edge_credentials_are_cached_and_a_revoked_edge_is_refused_at_once(meta: MetaStore) -> None:
    """The ingest path asks three times per payload: answered from a bounded cache, never past a revocation."""
    box = SecretBox(os.urandom(32))
    mono = [0.0]
    edges = EdgeCredentials(meta, box, ttl_s=60.0, recheck_s=1.0, monotonic=lambda: mono[0])
    _, secret = edges.create(edge_id="edge-a", mill="mill-a")
    for _ in range(30):
        assert edges.key("edge-a") == secret.encode() and edges.mill_of("edge-a") == "mill-a"
    assert (edges.misses, edges.hits) == (1, 59)
    assert edges.key("edge-nope") is None and edges.key("edge-nope") is None and edges.misses == 2
    # revoked through this object: refused from the next lookup, not after the TTL
    assert edges.revoke("edge-a")
    assert edges.key("edge-a") is None and edges.mill_of("edge-a") is None
    # revoked by another process (the CLI, on the same database): seen within recheck_s
    other = EdgeCredentials(meta, box)
    _, secret_b = other.create(edge_id="edge-b", mill="mill-b")
    mono[0] += 1.0
    assert edges.key("edge-b") == secret_b.encode()           # a creation elsewhere is seen too
    assert other.revoke("edge-b")
    assert edges.key("edge-b") == secret_b.encode()           # within the recheck window ...
    mono[0] += 1.0
    assert edges.key("edge-b") is None                        # ... then refused
    # ... or at once after ``sync()``, which the ingest calls per request and per group of payloads
    _, secret_c = other.create(edge_id="edge-c", mill="mill-a")
    assert edges.key("edge-c") == secret_c.encode()
    assert other.revoke("edge-c")
    edges.sync()
    assert edges.key("edge-c") is None
    # the TTL bounds an entry even when nothing changed
    misses = edges.misses
    mono[0] += 61.0
    edges.key("edge-nope")
    mono[0] += 0.5
    edges.key("edge-nope")
    assert edges.misses == misses + 1
