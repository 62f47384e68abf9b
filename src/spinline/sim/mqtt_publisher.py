"""MQTT face: JSON telemetry of MQTT-linked machines and vibration waveform snapshots.

Telemetry: ``PointRef.mqtt_topic()`` with ``{"ts": <epoch ms>, "<mqtt_field>": value, ...}`` (a dotted
field nests). Vibration: ``spinline/{mill}/{machine}/vibration/{channel}`` with ``{"ts", "fs_hz",
"shaft_rpm", "unit": "g", "encoding": "f32le-b64", "samples"}``, every ``every_s`` of simulated time,
or continuously in 1 s chunks for channels of a ``continuous: true`` block.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
from typing import Any

import aiomqtt
import numpy as np

from spinline.core.site import MqttLink, PointRef

log = logging.getLogger(__name__)


def vibration_topic(mill: str, machine: str, channel: str) -> str:
    return f"spinline/{mill}/{machine}/vibration/{channel}"


def vibration_payload(ts_ms: int, samples: np.ndarray, fs_hz: float, shaft_rpm: float) -> bytes:
    data = np.asarray(samples, dtype="<f4").tobytes()
    return json.dumps({"ts": ts_ms, "fs_hz": fs_hz, "shaft_rpm": shaft_rpm, "unit": "g", "encoding": "f32le-b64",
                       "samples": base64.b64encode(data).decode("ascii")}).encode()


def decode_samples(payload: dict[str, Any]) -> np.ndarray:
    """Inverse of the ``samples`` field (for tests and the edge)."""
    return np.frombuffer(base64.b64decode(payload["samples"]), dtype="<f4")


def telemetry_payloads(refs: list[tuple[int, PointRef]], values: np.ndarray, quality: np.ndarray,
                       ts_ns: int) -> dict[str, bytes]:
    """One JSON document per topic; bad or NaN values are left out (the field is missing)."""
    docs: dict[str, dict[str, Any]] = {}
    for col, ref in refs:
        doc = docs.setdefault(ref.mqtt_topic(), {"ts": ts_ns // 1_000_000})
        v = float(values[col])
        if quality[col] >= 0x80 or not math.isfinite(v):
            continue
        *parents, leaf = ref.mqtt_field().split(".")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return {t: json.dumps(d).encode() for t, d in docs.items()}


def mqtt_refs(refs: list[PointRef]) -> list[tuple[int, PointRef]]:
    return [(c, r) for c, r in enumerate(refs) if isinstance(r.machine.link, MqttLink)]


class MqttFace:
    """Publishes at QoS 0 (telemetry is superseded every tick), reconnecting by itself.

    One background task holds the session: when the broker goes away (a restart, a network cut) the
    next publish fails, the session is dropped and re-opened with backoff (0.5 s doubling to 10 s),
    logged once per outage. Messages published while disconnected are dropped and counted
    (``dropped``): a simulated device on a dead network loses them too.
    """

    def __init__(self, host: str, port: int, client_id: str, *, backoff_s: tuple[float, float] = (0.5, 10.0)) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.backoff_s = backoff_s
        self.connected = False
        self.connects = 0
        self.dropped = 0
        self._client: aiomqtt.Client | None = None
        self._lost = asyncio.Event()
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 10.0) -> None:
        """Start the session task and wait (up to ``timeout``) for the first connection."""
        self._task = asyncio.create_task(self._run(), name=f"mqtt-face-{self.client_id}")
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            log.warning("mqtt://%s:%d not reachable yet; publishing starts when it is", self.host, self.port)

    async def _run(self) -> None:
        delay, failing = self.backoff_s[0], False
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, identifier=self.client_id, keepalive=10) as client:
                    self._client, self.connected = client, True
                    self._lost.clear()
                    self._up.set()
                    self.connects += 1
                    delay = self.backoff_s[0]
                    log.info("publishing to mqtt://%s:%d%s", self.host, self.port,
                             " (reconnected)" if self.connects > 1 else "")
                    failing = False
                    await self._lost.wait()
            except aiomqtt.MqttError as exc:
                if not failing:
                    log.warning("mqtt://%s:%d: %s; reconnecting with backoff", self.host, self.port, exc)
                failing = True
            finally:
                self._client, self.connected = None, False
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_s[1])

    async def publish(self, topic: str, payload: bytes) -> None:
        client = self._client
        if client is None:
            self.dropped += 1
            return
        try:
            await client.publish(topic, payload, qos=0)
        except aiomqtt.MqttError:
            self.dropped += 1
            self.connected = False
            self._lost.set()            # the session task drops it and reconnects

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.connected = False
