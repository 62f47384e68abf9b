"""Vibration snapshots -> feature rows. Only features go upstream, never raw waveforms.

A snapshot arrives on ``spinline/{mill}/{machine}/vibration/{channel}`` as JSON ``{"ts": epoch_ms,
"fs_hz", "shaft_rpm", "unit": "g", "encoding": "f32le-b64", "samples": base64 float32 LE}``.
Features come from a ``Featurizer`` the edge passes in (``spinline.health.features.featurize``, the
health engineer's functions): connectors sit below health in the layering and never import it.
``anomaly_score`` / ``health_index`` come from the per-asset models, which run beside the
connectors, not in their message loop: each snapshot that should be scored is handed, as
``ChannelFeatures``, to the ``sink`` the edge passes in (``spinline.edge.scoring_stage``), which
emits the two points at the snapshot's timestamp. Without a sink they are not emitted. With
``share_features=False`` (a federated mill) the feature rows go to the sink only: the scores are the
only vibration points that leave.

A snapshot that cannot be used raises ``BadInput`` naming the cause (the connector counts it per
machine and collects everything else): ``snapshot_invalid`` (not JSON, missing or non-numeric
``fs_hz``/``shaft_rpm``, unknown encoding), ``snapshot_bad_base64``, ``snapshot_sample_count``
(a truncated float32 buffer, fewer than ``MIN_SAMPLES`` or more than twice the site's
``fs_hz`` x snapshot length) and ``snapshot_nan_samples`` (NaN/inf samples would poison the
features and, worse, the asset's baseline while it commissions).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from spinline.core.batch import Batch, Quality
from spinline.core.site import VIB_FEATURES, Bearing, Machine, point_key

from ..base import BadInput
from .json_map import ts_from

VIB_TOPIC = "spinline/{mill}/{machine}/vibration/{channel}"
#: Fewer samples than this give no meaningful spectrum.
MIN_SAMPLES = 64


def max_samples(fs_hz: float, snapshot_s: float) -> int:
    """Largest snapshot accepted: twice the site's rate x length (a continuous sensor sends 1 s windows)."""
    return max(MIN_SAMPLES, int(2 * fs_hz * max(snapshot_s, 1.0)))


def max_payload_bytes(fs_hz: float, snapshot_s: float) -> int:
    """Message size limit of a vibration topic: the largest snapshot as base64 float32, plus 64 KiB of JSON."""
    return max(1 << 20, max_samples(fs_hz, snapshot_s) * 4 * 4 // 3 + (64 << 10))


@dataclass(frozen=True, slots=True)
class Snapshot:
    ts_ns: int
    fs_hz: float
    #: Speed the sensor reported with the snapshot; None when the payload has none (0 = stopped).
    shaft_rpm: float | None
    samples: np.ndarray
    #: Set when the payload's ``ts`` was present but unusable (the receipt time is used instead).
    ts_problem: str | None = None


def parse_snapshot(payload: bytes, received_ns: int, limit: int | None = None) -> Snapshot:
    """Decode one snapshot; raises ``BadInput`` naming the problem (see the module docstring)."""
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput("snapshot_invalid", f"vibration snapshot is not JSON: {exc}") from None
    except RecursionError:
        raise BadInput("snapshot_invalid", "vibration snapshot is nested too deeply to decode") from None
    if not isinstance(d, dict):
        raise BadInput("snapshot_invalid", f"vibration snapshot must be a JSON object, got {type(d).__name__}")
    if d.get("encoding", "f32le-b64") != "f32le-b64":
        raise BadInput("snapshot_invalid", f"vibration snapshot: unknown encoding {d.get('encoding')!r}")
    fs, rpm = d.get("fs_hz"), d.get("shaft_rpm")
    if isinstance(fs, bool) or not isinstance(fs, int | float) or not math.isfinite(fs) or fs <= 0:
        raise BadInput("snapshot_invalid", f"vibration snapshot: fs_hz {str(fs)[:40]!r} is not a positive number")
    if rpm is not None and (isinstance(rpm, bool) or not isinstance(rpm, int | float) or not math.isfinite(rpm)
                            or rpm < 0):
        raise BadInput("snapshot_invalid", f"vibration snapshot: shaft_rpm {str(rpm)[:40]!r} is not a number >= 0")
    raw = d.get("samples")
    if not isinstance(raw, str):
        raise BadInput("snapshot_invalid", "vibration snapshot: 'samples' (base64 text) is missing")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput("snapshot_bad_base64", f"vibration snapshot: samples are not valid base64: {exc}") from None
    if len(data) % 4:
        raise BadInput("snapshot_sample_count",
                       f"vibration snapshot: {len(data)} bytes of samples is not a whole number of float32")
    n = len(data) // 4
    if n < MIN_SAMPLES or (limit is not None and n > limit):
        raise BadInput("snapshot_sample_count", f"vibration snapshot has {n} samples, expected {MIN_SAMPLES}.."
                                                f"{limit if limit is not None else 'any'}")
    x = np.frombuffer(data, dtype="<f4").astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise BadInput("snapshot_nan_samples", f"vibration snapshot has {bad} NaN/inf sample(s) of {n}")
    raw_ts = d.get("ts")
    ts = ts_from(raw_ts)
    problem = None if ts is not None or raw_ts is None else \
        f"vibration snapshot: ts {str(raw_ts)[:40]!r} is not epoch ms; receipt time used"
    return Snapshot(ts if ts is not None else received_ns, float(fs), None if rpm is None else float(rpm), x,
                    problem)


@dataclass(frozen=True, slots=True)
class ChannelFeatures:
    """One snapshot's features of one channel, for the models (``featurize(..., extended=True)``)."""

    machine: str
    channel: str
    ts_ns: int
    shaft_hz: float
    features: Mapping[str, float]
    #: The raw waveform and its rate, for raw evidence on demand (``edge.evidence``); never sent as such.
    samples: np.ndarray | None = None
    fs_hz: float = 0.0


class FeatureSink(Protocol):
    """Takes a snapshot's features to be scored; called from the connector's message loop: must not block."""

    def __call__(self, features: ChannelFeatures) -> None: ...


class Featurizer(Protocol):
    """``spinline.health.features.featurize``'s signature, as far as a snapshot's features need it."""

    def __call__(self, x: np.ndarray, fs: float, shaft_hz: float, bearing: Bearing | None, *,
                 machine_class: str, extended: bool) -> Mapping[str, np.ndarray]: ...


class VibrationMap:
    """topic -> (machine, channel), and the featurisation of one snapshot."""

    def __init__(self, mill: str, machines: Sequence[Machine], iso_class: Mapping[str, str] | None = None,
                 *, featurizer: Featurizer | None = None, sink: FeatureSink | None = None,
                 share_features: bool = True) -> None:
        if machines and featurizer is None:
            raise ValueError("vibration machines need a featurizer (spinline.health.features.featurize)")
        self.mill = mill
        self.sink = sink
        #: False (a federated mill): the feature rows are handed to the sink only, not emitted upstream.
        self.share_features = share_features
        self.featurizer = featurizer
        self.by_topic: dict[str, tuple[Machine, str, Bearing | None, float]] = {}
        #: topic -> (most samples accepted, message size limit in bytes)
        self.limits: dict[str, tuple[int, int]] = {}
        self.iso_class: Mapping[str, str] = iso_class or {}
        for m in machines:
            if m.vibration is None:
                continue
            bearings = {b.name: b for b in m.bearings}
            for ch in m.vibration.channels:
                t = VIB_TOPIC.format(mill=mill, machine=m.id, channel=ch.name)
                self.by_topic[t] = (m, ch.name, bearings.get(ch.bearing) if ch.bearing else None, ch.shaft_rpm)
                v = m.vibration
                self.limits[t] = (max_samples(v.fs_hz, v.snapshot_s), max_payload_bytes(v.fs_hz, v.snapshot_s))

    @property
    def topics(self) -> list[str]:
        return list(self.by_topic)

    def machine_of(self, topic: str) -> str | None:
        e = self.by_topic.get(topic)
        return e[0].id if e else None

    def channel_of(self, topic: str) -> tuple[str, str] | None:
        e = self.by_topic.get(topic)
        return (e[0].id, e[1]) if e else None

    def max_bytes(self, topic: str) -> int:
        return self.limits[topic][1]

    def parse(self, topic: str, payload: bytes, received_ns: int) -> Snapshot:
        """The snapshot of one message (raises ``BadInput``)."""
        return parse_snapshot(payload, received_ns, self.limits[topic][0])

    def features(self, topic: str, payload: bytes, received_ns: int) -> Batch:
        return self.features_of(topic, self.parse(topic, payload, received_ns))

    def features_of(self, topic: str, s: Snapshot, *, score: bool = True) -> Batch:
        """Feature rows of a parsed snapshot; ``score=False`` leaves the models out (a late snapshot)."""
        assert self.featurizer is not None  # checked in __init__: a topic exists only with a featurizer
        m, ch, bearing, rpm = self.by_topic[topic]
        # A reported 0 means stopped (no score, no baseline sample); only a missing speed falls back to nominal.
        shaft_hz = (rpm if s.shaft_rpm is None else s.shaft_rpm) / 60.0
        feats = self.featurizer(s.samples[None, :], s.fs_hz, shaft_hz, bearing,
                          machine_class=self.iso_class.get(m.id, "I"), extended=True)
        row = {k: float(v[0]) for k, v in feats.items()}
        if self.sink is not None and score:
            self.sink(ChannelFeatures(m.id, ch, s.ts_ns, shaft_hz, dict(row), s.samples, s.fs_hz))
        if not self.share_features:
            return Batch.empty()
        keys, vals = [], []
        for name, _unit in VIB_FEATURES:
            if name in row:
                keys.append(point_key(f"{self.mill}/{m.id}/vib_{ch}_{name}"))
                vals.append(row[name])
        v = np.asarray(vals, dtype=np.float64)
        q = np.where(np.isfinite(v), np.uint8(Quality.GOOD), np.uint8(Quality.BAD)).astype(np.uint8)
        return Batch(np.asarray(keys, dtype=np.int64), np.full(len(keys), s.ts_ns, dtype=np.int64), v, q)
