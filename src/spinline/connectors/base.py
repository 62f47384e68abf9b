"""The one small interface every device connector implements.

Two shapes, because devices deliver data in two ways:

* a **polled** link (Modbus) is an async context manager with ``read(points) -> Batch``; the
  edge scheduler decides when to call it;
* a **push** link (OPC UA subscriptions, MQTT) is an async context manager whose ``run(sink)``
  delivers batches to ``sink`` as they arrive and only returns when cancelled; it reconnects
  and re-subscribes on its own, never ending for good on a protocol error.

Every link keeps a ``LinkHealth`` (state, error count, latency) that the agent turns into the
``link_state`` / ``link_errors`` / ``link_latency_ms`` points of the machine, so link health is
data like any other. Errors crossing this boundary are ``spinline.core.errors.ConnectorError``.

Bad input from a device that is otherwise reachable (a payload that does not parse, a field that
is not a number, a snapshot with NaN samples, a Modbus exception code, an OPC UA Bad status, a
re-sent timestamp, a value outside the point's plausible range, ...) is counted per cause with
``LinkHealth.rejected``: the count shows in the status JSON (``devices.<id>.bad_input``) and in
the machine's ``link_errors`` point (transport errors + bad input), and the first occurrence of
each cause is logged once per device, naming the problem; the link state is left alone (the link
works, the data is bad) and everything else of the same message is still collected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from types import TracebackType
from typing import Literal, Protocol, Self, runtime_checkable

from spinline.core.backoff import Backoff
from spinline.core.batch import Batch
from spinline.core.errors import ConnectorError, DecodeError
from spinline.core.site import PointRef


class LinkState(IntEnum):
    """Values of the ``link_state`` point (see ``spinline.core.site.LINK_STATES``)."""

    UP = 0
    DEGRADED = 1
    DOWN = 2


@dataclass(slots=True)
class LinkHealth:
    """Health of one device link; logs a failure once when it starts and once when it recovers."""

    name: str
    state: LinkState = LinkState.DOWN
    errors: int = 0
    latency_ms: float = float("nan")
    last_error: str | None = None
    since_ns: int = field(default_factory=time.time_ns)
    #: Bad input from this device per cause (see the module docstring for the cause names).
    bad_input: dict[str, int] = field(default_factory=dict)
    last_bad_input: str | None = None
    _failing: bool = False
    _logged: set[str] = field(default_factory=set)

    def ok(self, latency_ms: float | None = None, *, degraded: bool = False,
           logger: logging.Logger | None = None) -> None:
        if latency_ms is not None:
            self.latency_ms = latency_ms
        new = LinkState.DEGRADED if degraded else LinkState.UP
        if self._failing:
            self._failing = False
            if logger is not None:
                logger.info("link %s recovered after %d error(s)", self.name, self.errors)
        if new != self.state:
            self.since_ns = time.time_ns()
        self.state = new

    def failed(self, exc: BaseException | str, *, logger: logging.Logger | None = None,
               down: bool = True) -> None:
        self.errors += 1
        self.last_error = str(exc) or type(exc).__name__
        if not self._failing:
            self._failing = True
            if logger is not None:
                logger.warning("link %s failed: %s", self.name, self.last_error)
        new = LinkState.DOWN if down else LinkState.DEGRADED
        if new != self.state:
            self.since_ns = time.time_ns()
        self.state = new

    def rejected(self, cause: str, detail: str, *, logger: logging.Logger | None = None,
                 log_key: str | None = None, n: int = 1) -> None:
        """Count ``n`` pieces of bad input under ``cause``; log the first one of each ``log_key`` (default: cause)."""
        self.bad_input[cause] = self.bad_input.get(cause, 0) + n
        self.last_bad_input = f"{cause}: {detail}"
        key = log_key or cause
        if key not in self._logged and len(self._logged) < 64:
            self._logged.add(key)
            if logger is not None:
                logger.warning("%s: bad input (%s): %s [counted in bad_input.%s; logged once]",
                               self.name, cause, detail, cause)

    @property
    def failing(self) -> bool:
        return self._failing

    @property
    def bad_input_total(self) -> int:
        return sum(self.bad_input.values())

    @property
    def link_errors(self) -> int:
        """The ``link_errors`` point: transport errors plus bad input."""
        return self.errors + self.bad_input_total

    def snapshot(self) -> dict[str, object]:
        return {"state": self.state.name.lower(), "errors": self.errors,
                "latency_ms": None if self.latency_ms != self.latency_ms else round(self.latency_ms, 3),
                "last_error": self.last_error, "since_ns": self.since_ns,
                "bad_input": dict(sorted(self.bad_input.items())), "last_bad_input": self.last_bad_input}


class BadInput(DecodeError):
    """A whole message that cannot be used; ``cause`` is the counter it goes to (``LinkHealth.rejected``)."""

    def __init__(self, cause: str, detail: str) -> None:
        self.cause = cause
        super().__init__(detail)


#: (cause, detail) of the problems found in a message whose other parts were still usable.
Problems = list[tuple[str, str]]

TsVerdict = Literal["new", "duplicate", "out_of_order"]


class TsGuard:
    """Device timestamps per stream (a point key, a vibration channel): spots re-sends and reordering.

    ``check(stream, ts, value)`` says ``duplicate`` when (``ts``, ``value``) is one of the last
    ``window`` samples of the stream (a device or a QoS 1 redelivery re-sending a message: the row
    is dropped; the same timestamp with another value is a correction, not a re-send, and is kept),
    ``out_of_order`` when ``ts`` is older than the newest one (kept: late data is still data), else
    ``new``. Memory is bounded: ``window`` samples per stream.
    """

    def __init__(self, window: int = 32) -> None:
        self.window = window
        self._recent: dict[Hashable, tuple[deque[tuple[int, object]], set[tuple[int, object]]]] = {}
        self._newest: dict[Hashable, int] = {}

    def check(self, stream: Hashable, ts: int, value: float | None = None) -> TsVerdict:
        entry = self._recent.get(stream)
        if entry is None:
            entry = self._recent[stream] = (deque(), set())
        order, seen = entry
        sample: tuple[int, object] = (ts, "nan" if value is not None and value != value else value)
        if sample in seen:
            return "duplicate"
        order.append(sample)
        seen.add(sample)
        if len(order) > self.window:
            seen.discard(order.popleft())
        newest = self._newest.get(stream)
        if newest is not None and ts < newest:
            return "out_of_order"
        self._newest[stream] = ts
        return "new"


#: Where push connectors deliver what they receive.
Sink = Callable[[Batch], None]


class Commits:
    """Which durable commit a received message's rows go into, so a push link can acknowledge the
    message to its broker only once they are committed (MQTT QoS 1 with manual acks).

    The edge's collector ``seal``s the rows collected so far at the start of each flush and calls
    ``committed(gen)`` once that flush is in the buffer; a link reads ``open`` when it hands rows to
    the sink and acknowledges, in order, every message whose generation is committed.
    """

    def __init__(self) -> None:
        #: The generation rows handed to the sink now belong to (the next flush's).
        self.open = 1
        self.done = 0
        self._listeners: list[Callable[[int], None]] = []
        #: Called when a link holds many unacknowledged messages: the edge flushes early (a broker sends
        #: a client only so many unacknowledged QoS 1 messages at once; Mosquitto: 20).
        self.on_pressure: Callable[[], None] | None = None

    def pressure(self) -> None:
        """Ask for an early flush (see ``on_pressure``)."""
        if self.on_pressure is not None:
            self.on_pressure()

    def seal(self) -> int:
        """A flush starts: the rows collected so far are generation ``open``; later rows the next one."""
        gen = self.open
        self.open += 1
        return gen

    def committed(self, gen: int) -> None:
        """Every row of generations up to ``gen`` is durably committed (or dropped and counted)."""
        if gen > self.done:
            self.done = gen
            for fn in list(self._listeners):
                fn(gen)

    def listen(self, fn: Callable[[int], None]) -> Callable[[], None]:
        """Call ``fn(gen)`` on every commit; returns the function that stops it."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None


@runtime_checkable
class PolledConnector(Protocol):
    """A link the scheduler polls (Modbus)."""

    health: LinkHealth

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None: ...

    async def read(self, points: Sequence[PointRef]) -> Batch:
        """Read ``points`` now; raises ``ConnectorError`` when the device cannot be read."""
        ...


@runtime_checkable
class PushConnector(Protocol):
    """A link that delivers data itself (OPC UA subscriptions, MQTT)."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None: ...

    def healths(self) -> dict[str, LinkHealth]:
        """Health per machine id served by this connector."""
        ...

    async def run(self, sink: Sink) -> None:
        """Deliver batches to ``sink`` until cancelled; reconnects on its own."""
        ...


class PushLinks:
    """What every push connector shares: one ``LinkHealth`` per machine (``_health``), and a context
    manager with nothing to open — the connection lives in ``run``, which reconnects on its own."""

    _health: dict[str, LinkHealth]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    def healths(self) -> dict[str, LinkHealth]:
        return self._health


def machine_ids(points: Sequence[PointRef]) -> list[str]:
    seen: dict[str, None] = {}
    for p in points:
        seen.setdefault(p.machine.id, None)
    return list(seen)


async def reconnect_forever(session: Callable[[], Awaitable[None]], backoff: Backoff, *,
                            on_failure: Callable[[BaseException, bool], None], sessions: Callable[[], int],
                            expected: tuple[type[BaseException], ...] = (ConnectorError,)) -> None:
    """The reconnect loop every push connector shares: run ``session`` until cancelled, forever.

    When a session ends (an error, or the peer closing it) the failure goes to ``on_failure(exc,
    expected)`` (``expected`` False: not one of ``expected``, i.e. a library bug, which the caller logs
    with its traceback; it never ends the connector), then the loop waits ``backoff`` and starts a
    new session. A session that got established (``sessions()`` grew while it ran) resets the
    backoff first, so a link that worked reconnects at once and one that never comes up backs off.

    A cancellation a library swallowed (``asyncio.wait_for`` in Python 3.11 can, when its inner
    future finishes at the same moment) still ends the loop: the task's pending cancel request is
    checked after every session, so stopping the edge never hangs on a connector reconnecting.
    """
    task = asyncio.current_task()
    while True:
        before = sessions()
        try:
            await session()
        except asyncio.CancelledError:
            raise
        except expected as exc:
            on_failure(exc, True)
        except Exception as exc:  # never let a library bug end the connector
            on_failure(exc, False)
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        if sessions() > before:
            backoff.reset()
        await asyncio.sleep(backoff.fail())
