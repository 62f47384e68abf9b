"""An embedded MQTT broker for the demo, so a laptop needs no Mosquitto.

amqtt speaks MQTT 3.1.1 only, which is what the simulated devices publish. Production runs a
clustering broker (Mosquitto, EMQX, VerneMQ) with MQTT 5 shared subscriptions for the uplink; with
the embedded broker the demo's edge uses the HTTP uplink instead.
"""

from __future__ import annotations

import logging
import socket
from types import TracebackType

from amqtt.broker import Broker

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """``async with EmbeddedBroker() as b: b.port``: an anonymous broker bound to loopback."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def __aenter__(self) -> EmbeddedBroker:
        if self.port == 0:
            self.port = free_port(self.host)
        self._broker = Broker({
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        })
        await self._broker.start()
        log.info("embedded MQTT broker listening on %s", self.url)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
