"""Waiting on an event with a deadline, without losing a cancel.

On Python 3.11 ``asyncio.wait_for(event.wait(), t)`` swallows a cancellation that arrives in the
same loop turn as the event is set (it returns the inner result instead of raising; CPython
gh-86296, fixed in 3.12). A ``while True`` loop that waits that way can then never be stopped: the
forwarder's send loop did exactly that once in a few dozen test runs, and the session's ``gather``
waited for it forever. ``asyncio.timeout`` tells its own deadline from a cancel from outside.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` passes; True when it was set. A cancel propagates."""
    try:
        async with asyncio.timeout(max(0.0, timeout_s)):
            await event.wait()
    except TimeoutError:
        return False
    return True
