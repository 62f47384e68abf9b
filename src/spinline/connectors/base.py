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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from spinline.core.batch import Batch
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
    _failing: bool = False

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

    @property
    def failing(self) -> bool:
        return self._failing

    def snapshot(self) -> dict[str, object]:
        return {"state": self.state.name.lower(), "errors": self.errors,
                "latency_ms": None if self.latency_ms != self.latency_ms else round(self.latency_ms, 3),
                "last_error": self.last_error, "since_ns": self.since_ns}


#: Where push connectors deliver what they receive.
Sink = Callable[[Batch], None]


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


def machine_ids(points: Sequence[PointRef]) -> list[str]:
    seen: dict[str, None] = {}
    for p in points:
        seen.setdefault(p.machine.id, None)
    return list(seen)
