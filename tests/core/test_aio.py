"""wait_event: a cancel that arrives as the event is set still stops the waiting loop."""

from __future__ import annotations

import asyncio

from spinline.core.aio import wait_event


async def test_a_cancel_in_the_turn_the_event_is_set_stops_the_loop() -> None:
    """On 3.11 ``asyncio.wait_for(ev.wait(), t)`` returned here instead of raising, and the loop ran on
    (the forwarder's send loop hung a test's session that way)."""
    ev = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            await wait_event(ev, 0.2)
            ev.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)            # the loop waits on the event
    ev.set()
    task.cancel()                        # same turn: the inner wait completes first
    done, _ = await asyncio.wait({task}, timeout=2.0)
    assert task in done and task.cancelled(), f"the loop went on after its cancel ({rounds} rounds)"


async def test_timeout_and_set() -> None:
    ev = asyncio.Event()
    assert await wait_event(ev, 0.01) is False
    assert await wait_event(ev, -1.0) is False       # a deadline already past does not wait
    ev.set()
    assert await wait_event(ev, 0.01) is True
