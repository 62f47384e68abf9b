"""The login limit holds under parallel attempts; failures across clients are counted but lock nobody out."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from spinline.cloud.auth.passwords import Passwords
from spinline.cloud.auth.roles import Role
from spinline.cloud.auth.service import Accounts, LoginRateLimited
from spinline.cloud.meta.store import MetaStore
from spinline.core.errors import AuthError
from spinline.core.site import Line, Machine, MachineType, Mill, Workshop

PW = "correct horse battery"


class SlowPasswords(Passwords):
    """A password check as slow as a real argon2 one, counting how many ran."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_kib=64, parallelism=1)
        self.checks = 0
        self._lock = threading.Lock()

    def verify(self, password_hash: str, password: str) -> bool:
        with self._lock:
            self.checks += 1
        time.sleep(0.3)
        return super().verify(password_hash, password)


@pytest.fixture()
def meta(tmp_path: Path) -> MetaStore:
    m = MetaStore(f"sqlite:///{tmp_path / 'meta.sqlite'}")
    m.migrate()
    m.upsert_mill(Mill(id="mill-a", workshops=[Workshop(id="w", lines=[Line(id="l", machines=[
        Machine(id="c1", type=MachineType.CARD)])])]), zone="z", now_ns=0)
    yield m
    m.close()


def test_parallel_attempts_cannot_exceed_the_limit(meta: MetaStore) -> None:
    pw = SlowPasswords()
    accounts = Accounts(meta, pw, max_failures=5, window_s=300)
    accounts.create_user(username="alice", password=PW, role=Role.VIEWER, mills=["mill-a"])
    pw.checks = 0
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def attempt() -> None:
        start.wait()
        try:
            accounts.login("alice", "wrong password", "10.0.0.1")
            res = "ok"
        except LoginRateLimited:
            res = "limited"
        except AuthError:
            res = "wrong"
        with lock:
            outcomes.append(res)

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(outcomes) == 20
    assert pw.checks == 5                                   # only 5 guesses reached the password check
    assert outcomes.count("wrong") == 5 and outcomes.count("limited") == 15


def test_failures_across_clients_never_lock_the_real_user_out(meta: MetaStore) -> None:
    """Guesses on a name from many addresses are counted (the route slows the name down), but the owner,
    from an address that did not guess, still logs in: a lock-out anyone can cause would be a weapon."""
    now = [1_700_000_000 * 10**9]
    accounts = Accounts(meta, Passwords(time_cost=1, memory_kib=64, parallelism=1), max_failures=5, window_s=300,
                        max_user_failures=20, clock=lambda: now[0])
    accounts.create_user(username="alice", password=PW, role=Role.VIEWER, mills=["mill-a"])
    for i in range(25):                                     # one guess each from 25 addresses
        with pytest.raises(AuthError) as e:
            accounts.login("Alice", "wrong password", f"10.0.1.{i}")
        assert not isinstance(e.value, LoginRateLimited)
        now[0] += 10**9
    assert accounts.name_failures("alice") == 25
    assert accounts.login("alice", PW, "10.0.2.1").token    # a fresh address, the right password: in
    now[0] += 301 * 10**9                                   # the window passes: the count is gone
    assert accounts.name_failures("alice") == 0
