"""Uplink budget: every byte the edge sends or receives on its uplink, by kind, per UTC day.

A mill's link is often metered or shared (a 4G router, a site VPN): the platform's promise is that
the edge sends features, scores, events and the occasional snapshot, not raw data, and this is where
that promise is measured. Bytes are counted where they cross the uplink — ``MeteredUplink`` wraps the
session's ``Uplink`` and adds ``len(payload)`` after each successful ``send`` / ``send_events`` /
``publish_status``; acks and other messages received are read from the uplink's
``rx_bytes`` counter — so the ledger is what the link carried (payload bytes; MQTT/TCP/TLS framing is
not included), not an estimate. The model update client (``edge.updates``) books its own traffic over
HTTP: ``models_in`` (TUF metadata and model artefacts downloaded) and ``model_report`` (its reports with
the canary evidence); it runs in a worker thread, so the ledger takes a lock. ``TrafficLedger.as_dict``
goes into the status (``traffic``) and
``spinline edge status``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self

from spinline.core.wire import EventsAck

from .uplink.base import Ack, Uplink

TrafficKind = Literal["batch", "status", "events", "snapshot", "model_report", "acks_in", "models_in"]
KINDS: tuple[TrafficKind, ...] = ("batch", "status", "events", "snapshot", "model_report", "acks_in", "models_in")
#: Kinds that leave the edge (``acks_in`` and ``models_in`` come back from the cloud).
UP_KINDS: tuple[TrafficKind, ...] = ("batch", "status", "events", "snapshot", "model_report")


def utc_day(t_s: float) -> str:
    """``YYYY-MM-DD`` of a Unix time in UTC (the ledger's day boundary, the same at every edge)."""
    return datetime.fromtimestamp(t_s, UTC).strftime("%Y-%m-%d")


class TrafficLedger:
    """Bytes and messages per kind for today and yesterday (UTC), plus totals since the process started."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.day = utc_day(clock())
        self.today: dict[str, list[int]] = {k: [0, 0] for k in KINDS}
        self.yesterday: dict[str, list[int]] | None = None
        self.total: dict[str, list[int]] = {k: [0, 0] for k in KINDS}
        self._lock = threading.Lock()   # the model update client books from its worker thread

    def _roll(self) -> None:
        d = utc_day(self.clock())
        if d != self.day:
            self.yesterday = {"day": self.day, **self.today}  # type: ignore[dict-item]
            self.day = d
            self.today = {k: [0, 0] for k in KINDS}

    def add(self, kind: TrafficKind, nbytes: int, messages: int = 1) -> None:
        if kind not in self.today:
            raise ValueError(f"unknown traffic kind {kind!r}; expected one of {KINDS}")
        with self._lock:
            self._roll()
            for book in (self.today, self.total):
                book[kind][0] += nbytes
                book[kind][1] += messages

    def bytes_today(self, kind: TrafficKind) -> int:
        with self._lock:
            self._roll()
            return self.today[kind][0]

    def as_dict(self) -> dict[str, Any]:
        """``{"day", "bytes": {kind: n}, "messages": {kind: n}, "up_bytes", "since_start": {...}, "yesterday"}``."""
        def book(b: dict[str, Any]) -> dict[str, Any]:
            return {"bytes": {k: b[k][0] for k in KINDS}, "messages": {k: b[k][1] for k in KINDS},
                    "up_bytes": sum(b[k][0] for k in UP_KINDS)}

        with self._lock:
            self._roll()
            out = {"day": self.day, **book(self.today), "since_start": book(self.total)}
            if self.yesterday is not None:
                out["yesterday"] = {"day": self.yesterday["day"], **book(self.yesterday)}
            return out


class MeteredUplink:
    """An ``Uplink`` that books every payload it sends (and the bytes its session received) in a ledger.

    One per session (the agent wraps each new session); everything else is delegated unchanged.
    """

    def __init__(self, inner: Uplink, ledger: TrafficLedger) -> None:
        self.inner = inner
        self.ledger = ledger
        self._rx_seen = 0
        self.acks: asyncio.Queue[Ack] = inner.acks
        self.event_acks: asyncio.Queue[EventsAck] = inner.event_acks
        #: Present when the inner uplink carries snapshots (``SnapshotUplink``).
        self.snapshot_acks: asyncio.Queue[EventsAck] | None = getattr(inner, "snapshot_acks", None)
        self.requests: asyncio.Queue[str] | None = getattr(inner, "requests", None)
        self.federated: asyncio.Queue[dict[str, Any]] | None = getattr(inner, "federated", None)
        self.diagnoses: asyncio.Queue[dict[str, Any]] | None = getattr(inner, "diagnoses", None)
        #: The inner session's (it exists once the session is entered).
        self.closed: asyncio.Future[None] = inner.closed

    def book_rx(self) -> None:
        """Move the bytes the session received since the last call into ``acks_in``."""
        rx = int(getattr(self.inner, "rx_bytes", 0))
        if rx > self._rx_seen:
            self.ledger.add("acks_in", rx - self._rx_seen, 0)
            self._rx_seen = rx

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        self.closed = self.inner.closed
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.book_rx()
        await self.inner.__aexit__(et, e, tb)

    async def send(self, seq: int, payload: bytes) -> None:
        await self.inner.send(seq, payload)
        self.ledger.add("batch", len(payload))
        self.book_rx()

    async def send_events(self, payload: bytes) -> None:
        await self.inner.send_events(payload)
        self.ledger.add("events", len(payload))

    async def send_snapshot(self, payload: bytes) -> None:
        await self.inner.send_snapshot(payload)  # type: ignore[attr-defined]
        self.ledger.add("snapshot", len(payload))
        self.book_rx()

    async def publish_status(self, payload: bytes) -> int | None:
        sent = await self.inner.publish_status(payload)
        self.ledger.add("status", len(payload) if sent is None else sent)
        self.book_rx()
        return sent


__all__ = ["KINDS", "UP_KINDS", "MeteredUplink", "TrafficKind", "TrafficLedger", "utc_day"]
