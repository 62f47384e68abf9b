"""OPC UA connector: one session per endpoint, one subscription, a monitored item per point.

Data arrives as data-change notifications (sampling interval = the point's interval); the
device's SourceTimestamp is kept as the row's timestamp (provenance: device), falling back to
the ServerTimestamp and then the edge's receipt time. A session is checked every
``check_s`` by reading the server's state; a failed check, a Bad status-change notification,
or a transport error ends the session, and ``run`` reconnects with backoff and re-subscribes
everything (after a server restart too). No exception ends ``run``; only cancellation does.
If the server refuses subscriptions, the connector falls back to polling ``read_values``.

A value with a Bad StatusCode (or one that is not a number) is kept as a BAD row with NaN and
counted on its machine's health (``opcua_bad_status`` / ``field_not_number`` in ``bad_input``,
so in ``link_errors``), logged once per status code and machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from asyncua import Client, ua
from asyncua.common.node import Node

from spinline.core.backoff import Backoff
from spinline.core.batch import Batch, Quality
from spinline.core.errors import ConnectorError
from spinline.core.site import OpcUaLink, PointRef

from ..base import LinkHealth, PushLinks, Sink, machine_ids, reconnect_forever
from .codec import status_quality, to_float, to_ns

log = logging.getLogger(__name__)
SERVER_STATE = "i=2259"  # Server_ServerStatus_State


class OpcUaConnector(PushLinks):
    def __init__(self, endpoint: str, points: Sequence[PointRef], *, timeout_s: float = 2.0, check_s: float = 1.0,
                 flush_s: float = 0.1, backoff_s: tuple[float, float] = (0.5, 15.0), subscribe: bool = True) -> None:
        if not points:
            raise ValueError("no points")
        for p in points:
            if not isinstance(p.machine.link, OpcUaLink):
                raise ValueError(f"{p.tag} is not on an OPC UA link")
        self.endpoint = endpoint
        self.points = list(points)
        self.timeout_s, self.check_s, self.flush_s = timeout_s, check_s, flush_s
        self.backoff_s = backoff_s
        self.subscribe = subscribe
        self._health = {m: LinkHealth(f"opcua {m} ({endpoint})") for m in machine_ids(self.points)}
        self._keys = [p.key for p in self.points]
        self._rows: list[tuple[int, int, float, int]] = []
        self._by_node: dict[Any, int] = {}
        self._bad: str | None = None
        self.sessions = 0
        self.notifications = 0
        self.mode = "subscription"

    # --- asyncua subscription handler ---------------------------------------------------------------

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        i = self._by_node.get(node.nodeid)
        if i is None:
            return
        dv = data.monitored_item.Value
        code = dv.StatusCode.value if dv.StatusCode is not None else 0
        ts = to_ns(dv.SourceTimestamp) or to_ns(dv.ServerTimestamp) or time.time_ns()
        self.notifications += 1
        self._rows.append((self._keys[i], ts, *self._value(i, val, code)))

    def _value(self, i: int, val: Any, code: int) -> tuple[float, int]:
        """(value, quality) of one DataValue of point ``i``; bad ones are counted on the machine's health."""
        v = to_float(val)
        q = status_quality(code)
        p = self.points[i]
        h = self._health[p.machine.id]
        if q == Quality.BAD:
            name = ua.StatusCode(ua.UInt32(code)).name
            h.rejected("opcua_bad_status", f"{p.opcua_node_id()}: status {name} (0x{code:08x})", logger=log,
                       log_key=f"opcua_bad_status:{code}")
        elif math.isnan(v) and val is not None:
            h.rejected("field_not_number", f"{p.opcua_node_id()}: value {str(val)[:40]!r} is not a number",
                       logger=log)
            q = int(Quality.BAD)
        return v, q

    def status_change_notification(self, status: Any) -> None:
        code = getattr(getattr(status, "Status", None), "value", 0)
        if status_quality(code) != Quality.GOOD:
            self._bad = f"subscription status {getattr(status, 'Status', status)}"

    # --- session ----------------------------------------------------------------------------------

    def _flush(self, sink: Sink) -> None:
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        arr = np.asarray(rows, dtype=np.float64)
        b = Batch(np.asarray([r[0] for r in rows], dtype=np.int64), np.asarray([r[1] for r in rows], dtype=np.int64),
                  arr[:, 2].copy(), arr[:, 3].astype(np.uint8))
        sink(b)

    def _mark(self, ok: bool, err: BaseException | str | None = None, latency_ms: float | None = None,
              degraded: set[str] | None = None) -> None:
        for m, h in self._health.items():
            if ok:
                h.ok(latency_ms, degraded=bool(degraded and m in degraded), logger=log if m == next(iter(
                    self._health)) else None)
            else:
                h.failed(err or "down", logger=log if m == next(iter(self._health)) else None)

    async def _session(self, sink: Sink) -> None:
        client = Client(self.endpoint, timeout=self.timeout_s)
        try:
            await client.connect()
        except (OSError, TimeoutError, ua.UaError) as exc:
            raise ConnectorError(f"cannot connect to {self.endpoint}: {exc}") from exc
        self.sessions += 1
        self._bad = None
        try:
            nodes = [client.get_node(p.opcua_node_id()) for p in self.points]
            self._by_node = {n.nodeid: i for i, n in enumerate(nodes)}
            degraded: set[str] = set()
            poll_nodes: list[int] = []
            if self.subscribe:
                try:
                    period = 1000.0 * min(p.point.interval_s for p in self.points)
                    sub = await client.create_subscription(period, self)
                    groups: dict[float, list[int]] = {}
                    for i, p in enumerate(self.points):
                        groups.setdefault(p.point.interval_s, []).append(i)
                    for interval, idx in groups.items():
                        res = await sub.subscribe_data_change([nodes[i] for i in idx],
                                                              sampling_interval=ua.Double(interval * 1000.0),
                                                              queuesize=10)
                        for i, r in zip(idx, res, strict=True):
                            if not isinstance(r, int):
                                degraded.add(self.points[i].machine.id)
                    self.mode = "subscription"
                except ua.UaStatusCodeError as exc:
                    log.warning("%s refuses subscriptions (%s); polling instead", self.endpoint, exc)
                    self.mode = "poll"
                    poll_nodes = list(range(len(nodes)))
            else:
                self.mode = "poll"
                poll_nodes = list(range(len(nodes)))
            t0 = time.perf_counter()
            await client.read_values([client.get_node(SERVER_STATE)])
            self._mark(True, latency_ms=(time.perf_counter() - t0) * 1000, degraded=degraded)
            next_check = time.monotonic() + self.check_s
            poll_every = min(p.point.interval_s for p in self.points)
            next_poll = time.monotonic()
            while True:
                await asyncio.sleep(self.flush_s)
                self._flush(sink)
                if self._bad:
                    raise ConnectorError(self._bad)
                now = time.monotonic()
                if poll_nodes and now >= next_poll:
                    next_poll += poll_every
                    await self._poll(client, nodes, poll_nodes)
                if now >= next_check:
                    next_check = now + self.check_s
                    t0 = time.perf_counter()
                    try:
                        await asyncio.wait_for(client.read_values([client.get_node(SERVER_STATE)]), self.timeout_s)
                    except (OSError, TimeoutError, ua.UaError, ConnectionError) as exc:
                        raise ConnectorError(f"{self.endpoint} stopped answering: {exc}") from exc
                    self._mark(True, latency_ms=(time.perf_counter() - t0) * 1000, degraded=degraded)
        finally:
            self._flush(sink)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 2.0)

    async def _poll(self, client: Client, nodes: list[Node], idx: list[int]) -> None:
        dvs = await client.read_attributes([nodes[i] for i in idx], ua.AttributeIds.Value)
        now = time.time_ns()
        for i, dv in zip(idx, dvs, strict=True):
            code = dv.StatusCode.value if dv.StatusCode is not None else 0
            ts = to_ns(dv.SourceTimestamp) or now
            self._rows.append((self._keys[i], ts, *self._value(i, dv.Value.Value if dv.Value is not None else None,
                                                               code)))

    async def run(self, sink: Sink) -> None:
        await reconnect_forever(lambda: self._session(sink), Backoff(*self.backoff_s, jitter=False),
                                on_failure=self._failed, sessions=lambda: self.sessions,
                                expected=(ConnectorError, OSError, TimeoutError, ua.UaError, ConnectionError))

    def _failed(self, exc: BaseException, expected: bool) -> None:
        if not expected and not any(h.failing for h in self._health.values()):
            log.exception("%s: unexpected error (reconnecting)", self.endpoint)
        self._mark(False, exc)
