"""The one backoff (``core.backoff``) and the connectors' shared reconnect loop."""

from __future__ import annotations

import asyncio

import pytest

from spinline.connectors.base import reconnect_forever
from spinline.core.backoff import Backoff
from spinline.core.errors import ConnectorError


def test_steps_double_up_to_the_cap_without_jitter() -> None:
    b = Backoff(base_s=0.5, cap_s=15.0, jitter=False)
    assert [b.fail() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    b.reset()
    assert b.fail() == 0.5


def test_jitter_stays_within_half_to_full_step_and_is_seeded() -> None:
    a, b = Backoff(base_s=1, cap_s=8, seed=3), Backoff(base_s=1, cap_s=8, seed=3)
    xs = [a.fail() for _ in range(6)]
    assert xs == [b.fail() for _ in range(6)]
    for x, step in zip(xs, [1, 2, 4, 8, 8, 8], strict=True):
        assert 0.5 * step <= x <= step


def test_a_link_down_for_days_never_overflows() -> None:
    b = Backoff(base_s=0.5, cap_s=30.0, jitter=False)
    b.failures = 100_000  # 2.0 ** 100_000 would raise OverflowError
    assert b.fail() == 30.0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="base_s"):
        Backoff(base_s=2.0, cap_s=1.0)


async def test_reconnect_loop_backs_off_and_resets_after_a_working_session() -> None:
    sessions = 0
    calls: list[str] = []
    failures: list[tuple[str, bool]] = []
    backoff = Backoff(base_s=0.001, cap_s=0.004, jitter=False)
    seen_failures: list[int] = []

    async def session() -> None:
        nonlocal sessions
        seen_failures.append(backoff.failures)
        n = len(calls)
        calls.append("s")
        if n in (0, 1):
            raise ConnectorError("refused")          # never came up: backs off
        if n == 2:
            sessions += 1                             # came up, then dropped: resets
            raise ConnectorError("lost")
        if n == 3:
            raise RuntimeError("library bug")        # unexpected: reported as such, loop goes on
        await asyncio.Event().wait()

    task = asyncio.create_task(reconnect_forever(
        session, backoff, on_failure=lambda e, ok: failures.append((str(e), ok)), sessions=lambda: sessions))
    for _ in range(200):
        await asyncio.sleep(0.005)
        if len(calls) >= 5:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert failures == [("refused", True), ("refused", True), ("lost", True), ("library bug", False)]
    assert seen_failures == [0, 1, 2, 1, 2]   # the working third session reset the count
