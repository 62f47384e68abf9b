"""The uplink interface: send signed wire payloads, receive the cloud's acks.

An uplink is an async context manager holding one session to the cloud. ``send`` hands a
payload over (raising ``UplinkError`` when the session is broken); the cloud's verdict for each
batch seq arrives later as an ``Ack`` on ``acks`` (MQTT: on TOPIC_ACK; HTTP: in the response).
Events (``spinline.core.wire`` events contract) go the same way: ``send_events`` hands a signed
events payload over, and the cloud's ``EventsAck`` arrives on ``event_acks``. A cloud that does not
answer events yet only makes them wait in the buffer: event failures other than a broken transport
never end the session, so batches keep flowing.
``closed`` completes (with the cause) when the session ends, so the forwarder can reconnect.
Reconnection is the caller's job (aiomqtt's rule): one session per ``async with``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol, Self
from urllib.parse import urlsplit

from spinline.core.errors import UplinkError
from spinline.core.wire import EventsAck

AckStatus = Literal["stored", "duplicate", "rejected"]
#: Rejections that say nothing about the batch itself (fix the credentials, the batch is fine):
#: the batch stays in the buffer and is re-sent later instead of going to the dead letters.
RETRYABLE_REASONS = frozenset({"unauthorised"})


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    status: AckStatus
    reason: str | None = None
    stored: int = 0

    @property
    def final(self) -> bool:
        """The batch can leave the buffer (stored, duplicate, or refused for good)."""
        return self.status != "rejected" or self.reason not in RETRYABLE_REASONS


def parse_ack(data: bytes | str | dict[str, Any]) -> Ack:
    """An ack from its JSON form ``{"seq", "status", "reason", "stored"}``; raises ``UplinkError``."""
    try:
        d = data if isinstance(data, dict) else json.loads(data)
        status = str(d["status"])
        if status not in ("stored", "duplicate", "rejected"):
            raise ValueError(f"unknown ack status {status!r}")
        reason = d.get("reason")
        return Ack(int(d["seq"]), status, None if reason is None else str(reason),  # type: ignore[arg-type]
                   int(d.get("stored") or 0))
    except (ValueError, KeyError, TypeError) as exc:
        raise UplinkError(f"bad ack: {exc}") from None


class Uplink(Protocol):
    acks: asyncio.Queue[Ack]
    event_acks: asyncio.Queue[EventsAck]
    closed: asyncio.Future[None]

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None: ...

    async def send(self, seq: int, payload: bytes) -> None: ...

    async def publish_status(self, payload: bytes) -> None: ...

    async def send_events(self, payload: bytes) -> None: ...


def make_uplink(url: str, *, edge: str, mill: str, secret: bytes, timeout_s: float = 10.0) -> Uplink:
    """An uplink for ``mqtt://[user:pass@]host:port`` or ``http(s)://host:port[/prefix]``."""
    scheme = urlsplit(url).scheme
    if scheme in ("mqtt", "mqtts", "tcp"):
        from .mqtt import MqttUplink

        return MqttUplink(url, edge=edge, mill=mill, secret=secret, timeout_s=timeout_s)
    if scheme in ("http", "https"):
        from .http import HttpUplink

        return HttpUplink(url, edge=edge, mill=mill, secret=secret, timeout_s=timeout_s)
    raise ValueError(f"unsupported cloud URL {url!r} (use mqtt://host:port or https://host)")
