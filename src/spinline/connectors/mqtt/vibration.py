"""Vibration snapshots -> feature rows. Only features go upstream, never raw waveforms.

A snapshot arrives on ``spinline/{mill}/{machine}/vibration/{channel}`` as JSON ``{"ts": epoch_ms,
"fs_hz", "shaft_rpm", "unit": "g", "encoding": "f32le-b64", "samples": base64 float32 LE}``.
Features come from ``spinline.health.features.featurize`` (the health engineer's functions);
``anomaly_score`` / ``health_index`` are left to the health models (the lead wires the scoring).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from spinline.core.batch import Batch, Quality
from spinline.core.errors import DecodeError
from spinline.core.site import VIB_FEATURES, Bearing, Machine, point_key

from .json_map import ts_from

VIB_TOPIC = "spinline/{mill}/{machine}/vibration/{channel}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    ts_ns: int
    fs_hz: float
    shaft_rpm: float
    samples: np.ndarray


def parse_snapshot(payload: bytes, received_ns: int) -> Snapshot:
    try:
        d = json.loads(payload)
        if d.get("encoding", "f32le-b64") != "f32le-b64":
            raise ValueError(f"unknown encoding {d.get('encoding')!r}")
        x = np.frombuffer(base64.b64decode(d["samples"]), dtype="<f4").astype(np.float64)
        return Snapshot(ts_from(d.get("ts")) or received_ns, float(d["fs_hz"]), float(d.get("shaft_rpm") or 0.0), x)
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError(f"bad vibration snapshot: {exc}") from None


class VibrationMap:
    """topic -> (machine, channel), and the featurisation of one snapshot."""

    def __init__(self, mill: str, machines: Sequence[Machine], iso_class: Mapping[str, str] | None = None) -> None:
        self.mill = mill
        self.by_topic: dict[str, tuple[Machine, str, Bearing | None, float]] = {}
        self.iso_class: Mapping[str, str] = iso_class or {}
        for m in machines:
            if m.vibration is None:
                continue
            bearings = {b.name: b for b in m.bearings}
            for ch in m.vibration.channels:
                t = VIB_TOPIC.format(mill=mill, machine=m.id, channel=ch.name)
                self.by_topic[t] = (m, ch.name, bearings.get(ch.bearing) if ch.bearing else None, ch.shaft_rpm)

    @property
    def topics(self) -> list[str]:
        return list(self.by_topic)

    def machine_of(self, topic: str) -> str | None:
        e = self.by_topic.get(topic)
        return e[0].id if e else None

    def features(self, topic: str, payload: bytes, received_ns: int) -> Batch:
        from spinline.health.features import featurize

        m, ch, bearing, rpm = self.by_topic[topic]
        s = parse_snapshot(payload, received_ns)
        if len(s.samples) < 64:
            raise DecodeError(f"{topic}: snapshot has only {len(s.samples)} samples")
        shaft_hz = (s.shaft_rpm or rpm) / 60.0
        feats = featurize(s.samples[None, :], s.fs_hz, shaft_hz, bearing,
                          machine_class=self.iso_class.get(m.id, "I"))
        keys, vals = [], []
        for name, _unit in VIB_FEATURES:
            if name in feats:
                keys.append(point_key(f"{self.mill}/{m.id}/vib_{ch}_{name}"))
                vals.append(float(feats[name][0]))
        v = np.asarray(vals, dtype=np.float64)
        q = np.where(np.isfinite(v), np.uint8(Quality.GOOD), np.uint8(Quality.BAD)).astype(np.uint8)
        return Batch(np.asarray(keys, dtype=np.int64), np.full(len(keys), s.ts_ns, dtype=np.int64), v, q)
