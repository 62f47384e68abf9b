"""Issue 12 item 7: a vibration snapshot stamped far in the future (a year ahead) is quarantined —
counted as bad input (``future_ts``) on its machine — and never becomes the channel's newest
timestamp, so the good snapshots after it keep being scored."""

from __future__ import annotations

import time

import numpy as np

from spinline.connectors.mqtt.connector import MqttConnector
from spinline.connectors.mqtt.vibration import ChannelFeatures
from spinline.health.features import featurize

from .test_bad_input import mqtt_site, snapshot_payload


def test_snapshot_a_year_ahead_is_quarantined_and_later_snapshots_are_still_scored() -> None:
    tag = f"f{time.time_ns() % 10**10}"
    pts = {p.tag.split("/", 1)[1]: p for p in mqtt_site(tag).points(tag)}
    vib = [p.machine for p in pts.values() if p.machine.vibration is not None][:1]
    scored: list[ChannelFeatures] = []
    conn = MqttConnector("127.0.0.1", 1, list(pts.values()), mill=tag, vibration_machines=vib,
                         featurizer=featurize, feature_sink=scored.append)
    topic = f"spinline/{tag}/fan01/vibration/motor"
    x = np.sin(np.arange(25600) * 0.1).astype(np.float32)
    now_ms = int(time.time() * 1000)
    year_ms = 365 * 86_400_000

    _, b = conn.handle(topic, snapshot_payload(now_ms, x), now_ms * 1_000_000)
    assert len(b) and len(scored) == 1
    _, b = conn.handle(topic, snapshot_payload(now_ms + year_ms, x), (now_ms + 1000) * 1_000_000)
    assert not len(b), "a snapshot from the future must not become rows"
    assert len(scored) == 1, "a snapshot from the future must not be scored"
    for i in range(1, 4):
        t = now_ms + i * 1000
        _, b = conn.handle(topic, snapshot_payload(t, x), t * 1_000_000)
        assert len(b)
    assert [f.ts_ns for f in scored] == [(now_ms + i * 1000) * 1_000_000 for i in range(4)]
    bad = conn.health_for("fan01").snapshot()["bad_input"]
    assert bad == {"future_ts": 1}, bad
