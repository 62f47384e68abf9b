"""MQTT device connector: JSON telemetry, Sparkplug B nodes and vibration snapshots on one broker.

One aiomqtt session per broker subscribes to every topic the site maps (QoS 1). The session is
re-opened with backoff whenever the broker goes away (aiomqtt leaves reconnection to the caller).
Link health per machine: ``up`` while its messages arrive, ``degraded`` when it has been silent
for ``stale_after`` x its shortest interval, ``down`` when the broker is unreachable or a
Sparkplug node sent NDEATH (or its Will fired).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self

import aiomqtt
import numpy as np

from spinline.core.batch import Batch, Quality
from spinline.core.errors import ConnectorError, DecodeError
from spinline.core.site import Machine, MqttLink, PointRef

from ..base import LinkHealth, LinkState, Sink
from . import sparkplug
from .json_map import TopicMap
from .vibration import VibrationMap

log = logging.getLogger(__name__)


class MqttConnector:
    def __init__(self, host: str, port: int, points: Sequence[PointRef], *, mill: str,
                 vibration_machines: Sequence[Machine] = (), iso_class: Mapping[str, str] | None = None,
                 stale_after: float = 5.0, backoff_s: tuple[float, float] = (0.5, 15.0),
                 client_id: str | None = None) -> None:
        self.host, self.port, self.mill = host, port, mill
        self.client_id = client_id
        self.stale_after = stale_after
        self.backoff_s = backoff_s
        json_pts = [p for p in points if isinstance(p.machine.link, MqttLink) and p.machine.link.format == "json"]
        spb_pts = [p for p in points if isinstance(p.machine.link, MqttLink) and p.machine.link.format == "sparkplug_b"]
        self.json = TopicMap(json_pts)
        self.vib = VibrationMap(mill, vibration_machines, iso_class)
        # Sparkplug: (edge node = machine id) -> metric name -> key; alias tables come from NBIRTH.
        self.spb_names: dict[str, dict[str, int]] = {}
        for p in spb_pts:
            self.spb_names.setdefault(p.machine.id, {})[p.mqtt_field()] = p.key
        self.spb_alias: dict[str, dict[int, int]] = {}
        self.spb_seq: dict[str, int] = {}
        self.spb_seq_gaps = 0
        # Health is kept for machines whose data link is MQTT (a vibration sensor on a Modbus
        # machine does not make its Modbus link's state).
        machines = {p.machine.id for p in points}
        self._health = {m: LinkHealth(f"mqtt {m} ({host}:{port})") for m in sorted(machines)}
        self._min_interval = {m: min((p.point.interval_s for p in points if p.machine.id == m), default=60.0)
                              for m in machines}
        self._last_msg: dict[str, float] = {}
        self._dead: set[str] = set()
        self.messages = 0
        self.decode_errors = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    def healths(self) -> dict[str, LinkHealth]:
        return self._health

    def subscriptions(self) -> list[str]:
        subs = self.json.topics + self.vib.topics
        for node in self.spb_names:
            subs.append(sparkplug.topic(self.mill, "+", node))
            subs.append(sparkplug.topic(self.mill, "+", node) + "/#")
        return subs

    # --- message handling (sync, no I/O) -----------------------------------------------------------

    def handle(self, topic: str, payload: bytes, received_ns: int) -> tuple[str | None, Batch]:
        """Rows from one message and the machine it came from."""
        if topic in self.json.by_topic:
            return self.json.machine_of(topic), self.json.decode(topic, payload, received_ns)
        if topic in self.vib.by_topic:
            return self.vib.machine_of(topic), self.vib.features(topic, payload, received_ns)
        t = sparkplug.parse_topic(topic)
        if t is not None and t.edge_node in self.spb_names and t.device is None:
            return t.edge_node, self._sparkplug(t, payload, received_ns)
        return None, Batch.empty()

    def _sparkplug(self, t: sparkplug.Topic, payload: bytes, received_ns: int) -> Batch:
        node = t.edge_node
        if t.message_type == "NDEATH":
            self._dead.add(node)
            self._health[node].failed("Sparkplug NDEATH", logger=log)
            return Batch.empty()
        if t.message_type not in ("NBIRTH", "NDATA"):
            return Batch.empty()
        ts_ms, seq, metrics = sparkplug.decode(payload)
        names = self.spb_names[node]
        if t.message_type == "NBIRTH":
            self._dead.discard(node)
            self.spb_alias[node] = {m.alias: names[m.name] for m in metrics
                                    if m.alias is not None and m.name in names}
        elif seq is not None and node in self.spb_seq and seq != (self.spb_seq[node] + 1) % 256:
            self.spb_seq_gaps += 1
            log.warning("Sparkplug node %s: seq %d after %d (messages lost on the device side)",
                        node, seq, self.spb_seq[node])
        if seq is not None:
            self.spb_seq[node] = seq
        aliases = self.spb_alias.get(node, {})
        keys, ts, vals, qual = [], [], [], []
        for m in metrics:
            key = names.get(m.name) if m.name is not None else aliases.get(m.alias) if m.alias is not None else None
            if key is None:
                continue
            keys.append(key)
            stamp = m.timestamp_ms if m.timestamp_ms is not None else ts_ms
            ts.append(int(stamp * 1_000_000) if stamp is not None else received_ns)
            vals.append(m.value)
            qual.append(int(Quality.GOOD) if np.isfinite(m.value) else int(Quality.BAD))
        return Batch(np.asarray(keys, dtype=np.int64), np.asarray(ts, dtype=np.int64),
                     np.asarray(vals, dtype=np.float64), np.asarray(qual, dtype=np.uint8))

    def _seen(self, machine: str) -> None:
        self._last_msg[machine] = time.monotonic()
        h = self._health.get(machine)
        if h is not None and machine not in self._dead:
            h.ok(None, logger=log)

    def check_stale(self) -> None:
        now = time.monotonic()
        for m, h in self._health.items():
            last = self._last_msg.get(m)
            if m in self._dead or h.state == LinkState.DOWN:
                continue
            limit = max(2.0, self.stale_after * self._min_interval.get(m, 60.0))
            if last is not None and now - last > limit and h.state == LinkState.UP:
                h.failed(f"no message for {now - last:.0f} s", logger=log, down=False)

    # --- session -----------------------------------------------------------------------------------

    async def _session(self, sink: Sink) -> None:
        client = aiomqtt.Client(self.host, self.port, identifier=self.client_id, keepalive=10, timeout=5.0)
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise ConnectorError(f"MQTT broker {self.host}:{self.port}: {exc}") from None
        try:
            for t in self.subscriptions():
                await client.subscribe(t, qos=1)
            for m, h in self._health.items():
                if h.state == LinkState.DOWN and m not in self._dead and m not in self._last_msg:
                    h.state = LinkState.DEGRADED  # broker up, device not heard yet
            stale = asyncio.create_task(self._stale_loop())
            try:
                async for msg in client.messages:
                    self.messages += 1
                    now = time.time_ns()
                    payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
                    try:
                        machine, batch = self.handle(str(msg.topic), payload, now)
                    except DecodeError as exc:
                        self.decode_errors += 1
                        log.debug("undecodable message on %s: %s", msg.topic, exc)
                        continue
                    if machine is not None:
                        self._seen(machine)
                    if len(batch):
                        sink(batch)
            finally:
                stale.cancel()
        except aiomqtt.MqttError as exc:
            raise ConnectorError(f"MQTT broker {self.host}:{self.port} lost: {exc}") from None
        finally:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def _stale_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.check_stale()

    async def run(self, sink: Sink) -> None:
        failures = 0
        while True:
            try:
                await self._session(sink)
            except asyncio.CancelledError:
                raise
            except ConnectorError as exc:
                for h in self._health.values():
                    h.failed(exc, logger=log if h is next(iter(self._health.values())) else None)
            except Exception as exc:  # never let a library bug end the connector
                log.exception("MQTT connector %s:%d: unexpected error (reconnecting)", self.host, self.port)
                for h in self._health.values():
                    h.failed(exc)
            failures += 1
            await asyncio.sleep(min(self.backoff_s[1], self.backoff_s[0] * 2 ** min(failures - 1, 10)))
