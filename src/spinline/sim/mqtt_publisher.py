"""MQTT face: JSON telemetry of MQTT-linked machines and vibration waveform snapshots.

Telemetry: ``PointRef.mqtt_topic()`` with ``{"ts": <epoch ms>, "<mqtt_field>": value, ...}`` (a dotted
field nests). Vibration: ``spinline/{mill}/{machine}/vibration/{channel}`` with ``{"ts", "fs_hz",
"shaft_rpm", "unit": "g", "encoding": "f32le-b64", "samples"}``, every ``every_s`` of simulated time,
or continuously in 1 s chunks for channels of a ``continuous: true`` block.
"""

from __future__ import annotations

import base64
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
    """A connected aiomqtt client; publishes at QoS 0 (telemetry is superseded every tick)."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.host, self.port = host, port
        self.client = aiomqtt.Client(host, port, identifier=client_id)
        self.connected = False

    async def start(self) -> None:
        await self.client.__aenter__()
        self.connected = True
        log.info("publishing to mqtt://%s:%d", self.host, self.port)

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.client.publish(topic, payload, qos=0)

    async def stop(self) -> None:
        if self.connected:
            self.connected = False
            await self.client.__aexit__(None, None, None)
