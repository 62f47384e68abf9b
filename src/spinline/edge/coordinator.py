"""One poll coordinator per polled device (Home Assistant's DataUpdateCoordinator, for Modbus).

It reads the points that are due on each drift-free tick, hands the batch to ``emit``, and keeps
the device's ``LinkHealth``. A ``ConnectorError`` is a device failure: logged once when it starts
(by ``LinkHealth``) and once on recovery, followed by the device's own backoff. Any other
exception is a bug, logged with its traceback once per streak, and treated the same way: no
exception ever ends a poller, only cancellation does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np

from spinline.connectors.base import LinkState, PolledConnector
from spinline.core.batch import Batch
from spinline.core.errors import ConnectorError
from spinline.core.site import PointRef

from .scheduler import Backoff, base_tick, deadline, due_mask, next_tick, periods

log = logging.getLogger(__name__)


class PollCoordinator:
    def __init__(self, name: str, connector: PolledConnector, points: Sequence[PointRef],
                 emit: Callable[[Batch], None], *, backoff: Backoff | None = None,
                 timeout_s: float | None = None, seed: int = 0) -> None:
        if not points:
            raise ValueError(f"{name}: no points to poll")
        self.name = name
        self.connector = connector
        self.points = list(points)
        self.emit = emit
        self.base_s = base_tick([p.point.interval_s for p in self.points])
        self.period = periods([p.point.interval_s for p in self.points], self.base_s)
        self.backoff = backoff or Backoff(seed=seed)
        self.timeout_s = timeout_s
        self._due_cache: dict[bytes, list[PointRef]] = {}
        self.polls = 0
        self.failures = 0
        self.overruns = 0
        self.points_read = 0
        self._bug_streak = False

    @property
    def health(self) -> object:
        return self.connector.health

    def due(self, tick: int) -> list[PointRef]:
        mask = due_mask(self.period, tick)
        k = mask.tobytes()
        pts = self._due_cache.get(k)
        if pts is None:
            pts = self._due_cache[k] = [p for p, m in zip(self.points, mask, strict=True) if m]
        return pts

    async def poll_once(self, tick: int = 0) -> Batch:
        pts = self.due(tick)
        if self.timeout_s is None:
            return await self.connector.read(pts)
        try:
            return await asyncio.wait_for(self.connector.read(pts), self.timeout_s)
        except TimeoutError as exc:
            raise ConnectorError(f"{self.name}: poll took longer than {self.timeout_s} s") from exc

    async def run(self) -> None:
        """Poll until cancelled."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while True:
            wait = deadline(start, self.base_s, tick) - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            delay = 0.0
            try:
                batch = await self.poll_once(tick)
            except asyncio.CancelledError:
                raise
            except ConnectorError as exc:
                self.failures += 1
                self.connector.health.failed(exc, logger=log)
                delay = self.backoff.fail()
            except Exception as exc:  # a bug, not a device failure: never let it end the poller
                self.failures += 1
                if not self._bug_streak:
                    log.exception("%s: unexpected error while polling (poller keeps running)", self.name)
                    self._bug_streak = True
                self.connector.health.failed(exc)
                delay = self.backoff.fail()
            else:
                self.polls += 1
                self._bug_streak = False
                self.backoff.reset()
                if len(batch):
                    self.points_read += len(batch)
                    self.emit(batch)
            now = loop.time() + delay
            tick, skipped = next_tick(start, self.base_s, now, tick)
            if skipped and not delay:
                self.overruns += skipped
            if delay:
                # Resume on the first tick at or after the backoff expires (keeps the grid).
                tick = max(tick, int(np.ceil((now - start) / self.base_s)))

    def link_points(self) -> dict[str, float]:
        h = self.connector.health
        return {"link_state": float(h.state), "link_errors": float(h.link_errors),
                "link_latency_ms": float(h.latency_ms) if h.state != LinkState.DOWN else float("nan")}


def wall_ns() -> int:
    return time.time_ns()
