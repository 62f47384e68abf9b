"""The MQTT downlink nudge: after the registry signs a mill's new desired state, tell its edges to check
now (``spinline/down/{mill}/{edge}/models``) instead of at their next poll.

A nudge is a hint, not a command: it carries the new targets version and nothing the edge acts on
without TUF, so a forged nudge costs one extra check. Published with QoS 1 and not retained (an edge
that was offline finds the change at its next poll). paho's network loop runs in its own thread; a
broker that is down is logged once and the edges fall back to polling.
"""

from __future__ import annotations

import json
import logging
import threading

import paho.mqtt.client as paho

from spinline.core.modelspec import TOPIC_MODELS

log = logging.getLogger(__name__)


class MqttNudger:
    def __init__(self, host: str, port: int, *, client_id: str = "spinline-cloud-models",
                 username: str | None = None, password: str | None = None) -> None:
        self.host, self.port = host, port
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
        if username is not None:
            self._client.username_pw_set(username, password)
        self._failing = False
        self._lock = threading.Lock()
        self.sent = 0

    def start(self) -> None:
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __call__(self, mill: str, edges: list[str], targets_version: int) -> None:
        payload = json.dumps({"targets_version": targets_version}).encode()
        with self._lock:
            for edge in edges:
                info = self._client.publish(TOPIC_MODELS.format(mill=mill, edge=edge), payload, qos=1)
                if info.rc != paho.MQTT_ERR_SUCCESS:
                    if not self._failing:
                        log.warning("model nudges not delivered (MQTT rc %s): edges will find changes by polling",
                                    info.rc)
                    self._failing = True
                    return
                self.sent += 1
            if self._failing:
                log.info("model nudges delivered again")
            self._failing = False
