"""Vibration snapshots -> feature rows. Only features go upstream, never raw waveforms.

A snapshot arrives on ``spinline/{mill}/{machine}/vibration/{channel}`` as JSON ``{"ts": epoch_ms,
"fs_hz", "shaft_rpm", "unit": "g", "encoding": "f32le-b64", "samples": base64 float32 LE}``.
Features come from ``spinline.health.features.featurize`` (the health engineer's functions).
``anomaly_score`` / ``health_index`` come from the per-asset models: the edge sets ``scorer`` (a
``FeatureScorer``, ``spinline.edge.scoring.EdgeScoring``) and its values join the snapshot's other
features at the same timestamp. Without a scorer those two points are not emitted.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

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
    #: Speed the sensor reported with the snapshot; None when the payload has none (0 = stopped).
    shaft_rpm: float | None
    samples: np.ndarray


def parse_snapshot(payload: bytes, received_ns: int) -> Snapshot:
    try:
        d = json.loads(payload)
        if d.get("encoding", "f32le-b64") != "f32le-b64":
            raise ValueError(f"unknown encoding {d.get('encoding')!r}")
        x = np.frombuffer(base64.b64decode(d["samples"]), dtype="<f4").astype(np.float64)
        rpm = d.get("shaft_rpm")
        return Snapshot(ts_from(d.get("ts")) or received_ns, float(d["fs_hz"]), None if rpm is None else float(rpm), x)
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError(f"bad vibration snapshot: {exc}") from None


class FeatureScorer(Protocol):
    """Adds model outputs (``anomaly_score``, ``health_index``) to one snapshot's features.

    Called synchronously in the connector's message loop: it must not block. ``features`` holds
    ``featurize(..., extended=True)`` of the channel; an empty result (machine stopped, no model)
    adds nothing.
    """

    def score(self, machine: str, channel: str, ts_ns: int, shaft_hz: float,
              features: Mapping[str, float]) -> Mapping[str, float]: ...


class VibrationMap:
    """topic -> (machine, channel), and the featurisation of one snapshot."""

    def __init__(self, mill: str, machines: Sequence[Machine], iso_class: Mapping[str, str] | None = None,
                 scorer: FeatureScorer | None = None) -> None:
        self.mill = mill
        self.scorer = scorer
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
        # A reported 0 means stopped (no score, no baseline sample); only a missing speed falls back to nominal.
        shaft_hz = (rpm if s.shaft_rpm is None else s.shaft_rpm) / 60.0
        feats = featurize(s.samples[None, :], s.fs_hz, shaft_hz, bearing,
                          machine_class=self.iso_class.get(m.id, "I"), extended=True)
        row = {k: float(v[0]) for k, v in feats.items()}
        if self.scorer is not None:
            row.update(self.scorer.score(m.id, ch, s.ts_ns, shaft_hz, row))
        keys, vals = [], []
        for name, _unit in VIB_FEATURES:
            if name in row:
                keys.append(point_key(f"{self.mill}/{m.id}/vib_{ch}_{name}"))
                vals.append(row[name])
        v = np.asarray(vals, dtype=np.float64)
        q = np.where(np.isfinite(v), np.uint8(Quality.GOOD), np.uint8(Quality.BAD)).astype(np.uint8)
        return Batch(np.asarray(keys, dtype=np.int64), np.full(len(keys), s.ts_ns, dtype=np.int64), v, q)
