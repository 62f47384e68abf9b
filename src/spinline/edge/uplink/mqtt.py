"""MQTT uplink: QoS 1 publishes of signed batches, acks from the cloud on TOPIC_ACK.

Events (alarms, diagnoses) go on TOPIC_EVENTS; their acks come back on TOPIC_EVENTS_ACK. Raw evidence
snapshots go on TOPIC_SNAPSHOT, acked on TOPIC_SNAPSHOT_ACK; the cloud's snapshot requests and its model's
answers to uncertain snapshots (``diagnoses``) come on TOPIC_REQUESTS (signed like acks).

The session is persistent (fixed client id per edge, ``clean_session=False``) so acks the cloud
publishes while the edge is briefly away are delivered when it returns. The broker's PUBACK
only means the broker has the batch; the batch leaves the edge buffer on the cloud's ack.
Credentials: MQTT username/password from the URL (or the edge id and secret by default when the
URL carries none, for brokers that authenticate per edge), plus the HMAC signature in every payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import aiomqtt

from spinline.core import wire
from spinline.core.errors import PayloadError, UplinkError

from .base import Ack, AckTrust, ack_object, parse_ack

log = logging.getLogger(__name__)


class MqttUplink:
    def __init__(self, url: str, *, edge: str, mill: str, secret: bytes, timeout_s: float = 10.0,
                 send_credentials: bool = False, trust: AckTrust | None = None) -> None:
        u = urlsplit(url)
        self.host = u.hostname or "127.0.0.1"
        self.tls = u.scheme == "mqtts"
        self.port = u.port or (8883 if self.tls else 1883)
        self.username = unquote(u.username) if u.username else (edge if send_credentials else None)
        self.password = unquote(u.password) if u.password else (secret.decode("utf-8", "replace")
                                                                  if send_credentials else None)
        self.edge, self.mill = edge, mill
        #: Signs the status (trailer form; batches and events are signed by the forwarder).
        self.secret = secret
        self.timeout_s = timeout_s
        self.topic_batch = wire.TOPIC_BATCH.format(mill=mill, edge=edge)
        self.topic_status = wire.TOPIC_STATUS.format(mill=mill, edge=edge)
        self.topic_ack = wire.TOPIC_ACK.format(mill=mill, edge=edge)
        self.topic_events = wire.TOPIC_EVENTS.format(mill=mill, edge=edge)
        self.topic_events_ack = wire.TOPIC_EVENTS_ACK.format(mill=mill, edge=edge)
        self.topic_snapshot = wire.TOPIC_SNAPSHOT.format(mill=mill, edge=edge)
        self.topic_snapshot_ack = wire.TOPIC_SNAPSHOT_ACK.format(mill=mill, edge=edge)
        self.topic_requests = wire.TOPIC_REQUESTS.format(mill=mill, edge=edge)
        self.acks: asyncio.Queue[Ack] = asyncio.Queue()
        self.event_acks: asyncio.Queue[wire.EventsAck] = asyncio.Queue()
        self.snapshot_acks: asyncio.Queue[wire.EventsAck] = asyncio.Queue()
        #: Assets the cloud asked a raw snapshot of (signed like an ack).
        self.requests: asyncio.Queue[str] = asyncio.Queue()
        #: A federated run's join requests (``core.fedjoin``; the ``federated`` field on TOPIC_REQUESTS).
        self.federated: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        #: Answers on TOPIC_REQUESTS carrying the cloud model's ``diagnoses`` (whole, unverified:
        #: ``edge.cloud_answers`` checks them, stricter than an ack).
        self.diagnoses: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        #: Completes when the session ends; created in ``__aenter__`` (constructors touch no loop).
        self.closed: asyncio.Future[None] = None  # type: ignore[assignment]
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self.bad_acks = 0
        #: Payload bytes received from the cloud (acks), for the uplink budget (``edge.traffic``).
        self.rx_bytes = 0
        #: Which acks are acted on (signatures; see ``base``): the forwarder's, shared across sessions.
        self.trust = trust if trust is not None else AckTrust(secret, edge)

    async def __aenter__(self) -> Self:
        self.closed = asyncio.get_running_loop().create_future()
        will = aiomqtt.Will(self.topic_status, wire.encode_status({"edge": self.edge, "mill": self.mill,
                                                                   "state": "offline"}, key=self.secret or None),
                            qos=1, retain=True)
        client = aiomqtt.Client(self.host, self.port, username=self.username, password=self.password,
                                identifier=f"spinline-edge-{self.mill}-{self.edge}", clean_session=False,
                                keepalive=10, timeout=self.timeout_s, will=will,
                                tls_context=ssl.create_default_context() if self.tls else None)
        try:
            await client.__aenter__()
            await client.subscribe(self.topic_ack, qos=1)
            await client.subscribe(self.topic_events_ack, qos=1)
            await client.subscribe(self.topic_snapshot_ack, qos=1)
            await client.subscribe(self.topic_requests, qos=1)
        except aiomqtt.MqttError as exc:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
            raise UplinkError(f"MQTT uplink to {self.host}:{self.port}: {exc}") from None
        self._client = client
        self._reader = asyncio.create_task(self._read(client), name="uplink-acks")
        return self

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            async for msg in client.messages:
                data = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else str(msg.payload)
                self.rx_bytes += len(data)
                events = msg.topic.matches(self.topic_events_ack)
                snap = msg.topic.matches(self.topic_snapshot_ack)
                reqs = msg.topic.matches(self.topic_requests)
                try:
                    d = ack_object(data)
                    if reqs and "diagnoses" in d:
                        self.diagnoses.put_nowait(d)
                    if not self.trust.accept(d, "events ack" if events else "snapshot ack" if snap
                                             else "snapshot requests" if reqs else "ack"):
                        self.bad_acks += 1
                        continue
                    if events:
                        self.event_acks.put_nowait(wire.decode_events_ack(d))
                    elif snap:
                        self.snapshot_acks.put_nowait(wire.decode_events_ack(d))
                    elif reqs:
                        for a in d.get("requests") or []:
                            self.requests.put_nowait(str(a)[:300])
                        if isinstance(join := d.get("federated"), dict):
                            self.federated.put_nowait(join)
                    else:
                        self.acks.put_nowait(parse_ack(d))
                except (UplinkError, PayloadError) as exc:
                    self.bad_acks += 1
                    if self.bad_acks <= 3 or self.bad_acks % 1000 == 0:  # a flood of junk must not flood the log
                        log.warning("ignoring a malformed ack on %s: %s (%d so far)", msg.topic, exc, self.bad_acks)
            if not self.closed.done():
                self.closed.set_result(None)
        except aiomqtt.MqttError as exc:
            if not self.closed.done():
                self.closed.set_exception(UplinkError(f"MQTT uplink lost: {exc}"))

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.__aexit__(None, None, None)
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        if self.closed is not None and self.closed.done() and not self.closed.cancelled():
            self.closed.exception()  # mark retrieved
        self._client = None

    def _c(self) -> aiomqtt.Client:
        if self._client is None or self.closed.done():
            raise UplinkError("MQTT uplink is not connected")
        return self._client

    async def send(self, seq: int, payload: bytes) -> None:
        try:
            await self._c().publish(self.topic_batch, payload, qos=1)
        except aiomqtt.MqttError as exc:
            raise UplinkError(f"publish of batch {seq} failed: {exc}") from None

    async def send_events(self, payload: bytes) -> None:
        try:
            await self._c().publish(self.topic_events, payload, qos=1)
        except aiomqtt.MqttError as exc:
            raise UplinkError(f"publish of events failed: {exc}") from None

    async def send_snapshot(self, payload: bytes) -> None:
        try:
            await self._c().publish(self.topic_snapshot, payload, qos=1)
        except aiomqtt.MqttError as exc:
            raise UplinkError(f"publish of a snapshot failed: {exc}") from None

    async def publish_status(self, payload: bytes) -> int | None:
        """Publish (retained) the status JSON ``payload``, signed in its trailer (the cloud refuses an
        unsigned one: anyone on the broker could otherwise fake this edge's fleet status)."""
        if self.secret:
            payload = payload + b"\n" + wire.sign_status(self.secret, payload).encode()
        try:
            await self._c().publish(self.topic_status, payload, qos=1, retain=True)
        except aiomqtt.MqttError as exc:
            raise UplinkError(f"status publish failed: {exc}") from None
        return len(payload)
