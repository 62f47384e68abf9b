"""Health of a machine's assets over time, and the bearing defect lines of their latest snapshot.

The history is read from the rollups of the feature points (1 min, or 1 h for long spans): each
bucket's mean features are assessed like a live sample (``health_pipeline.assess``: the edge's
index where it sent one, else computed here, with its driver and penalties; the ISO zone is the
bucket's worst). Thinned to ``max_points`` by keeping, in each group of buckets, the one with the
lowest index, so a dip is never averaged away.

What the edge sends per vibration channel is features, not spectra: ``env_bpfo`` ... ``env_ftf``
are the envelope spectrum's amplitudes at the bearing defect frequencies, as a multiple of the
background. The answer gives those lines with their frequencies in Hz from the bearing geometry
and the channel's shaft speed (``core.bearing``); ``spectrum`` stays null until an edge uploads
spectra.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np
from pydantic import BaseModel, Field

from spinline.cloud.api import schemas as s
from spinline.cloud.kpis.service import HOUR_NS
from spinline.cloud.maintenance.pipeline import Asset, assess, asset_class, assets_of
from spinline.cloud.storage.base import TimeSeriesStore
from spinline.core.bearing import defect_frequencies
from spinline.core.site import Machine

#: The envelope features and the bearing defect each one measures.
LINES: tuple[tuple[str, str], ...] = (("bpfo", "outer race"), ("bpfi", "inner race"), ("bsf", "rolling element"),
                                      ("ftf", "cage"))


class HealthSample(BaseModel):
    ts: datetime
    health_index: float
    status: str
    source: str = Field(description="edge: sent by the edge; cloud: computed from the features here")
    driver: str
    penalties: dict[str, float]
    anomaly_score: float | None
    velocity_rms: float | None
    iso_zone: str | None
    envelope: dict[str, float] = Field(description="env_bpfo/env_bpfi/env_bsf/env_ftf, x the background")


class DefectLine(BaseModel):
    line: str = Field(description="bpfo, bpfi, bsf or ftf")
    label: str
    freq_hz: float | None = Field(description="from the bearing geometry at the channel's shaft speed")
    envelope_ratio: float | None = Field(description="envelope amplitude at this line, x the background")


class ChannelSnapshot(BaseModel):
    asset: str
    at: datetime | None = Field(description="time of the latest features")
    bearing: str | None
    shaft_rpm: float | None
    lines: list[DefectLine]
    spectrum: list[tuple[float, float]] | None = Field(
        default=None, description="[Hz, amplitude] of the latest snapshot; null: the edge sends features only")
    envelope_spectrum: list[tuple[float, float]] | None = None


class AssetHistory(BaseModel):
    asset: str
    channel: str
    resolution: str
    samples: list[HealthSample]


class MachineHealthHistory(BaseModel):
    mill: str
    machine: str
    start: datetime
    end: datetime
    assets: list[AssetHistory]
    latest: list[ChannelSnapshot]


def _fin(v: float | None, nd: int = 3) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), nd)


def asset_history(store: TimeSeriesStore, a: Asset, start_ns: int, end_ns: int, max_points: int) -> AssetHistory:
    res = "1h" if (end_ns - start_ns) // HOUR_NS >= max_points else "1m"
    keys = {k: f for f, k in a.points.items()}
    r = store.rollup(list(keys), start_ns, end_ns, res)  # type: ignore[arg-type]
    rows: dict[int, dict[str, float]] = {}
    for p, b, mean, mx in zip(r.point.tolist(), r.bucket_ns.tolist(), r.mean.tolist(), r.max.tolist(), strict=True):
        feat = keys[int(p)]
        rows.setdefault(int(b), {})[feat] = mx if feat == "iso_zone" else mean
    cls = asset_class(a)
    assessed = [(b, assess(x, cls)) for b, x in sorted(rows.items())]
    if len(assessed) > max_points:
        groups = np.array_split(np.arange(len(assessed)), max_points)
        assessed = [min((assessed[i] for i in g), key=lambda bh: bh[1].value) for g in groups if len(g)]
    samples = [HealthSample(ts=s.ts(b), health_index=h.value, status=h.index.status, source=h.source,
                            driver=h.index.driver, penalties={k: round(v, 2) for k, v in h.index.penalties.items()},
                            anomaly_score=_fin(h.features.get("anomaly_score")),
                            velocity_rms=_fin(h.features.get("velocity_rms")), iso_zone=h.iso_zone,
                            envelope={f"env_{ln}": round(h.features[f"env_{ln}"], 3) for ln, _ in LINES
                                      if f"env_{ln}" in h.features})
               for b, h in assessed]
    return AssetHistory(asset=a.id, channel=a.channel, resolution=res, samples=samples)


def snapshot(store: TimeSeriesStore, a: Asset, machine: Machine | None) -> ChannelSnapshot:
    keys = [a.points[f"env_{ln}"] for ln, _ in LINES if f"env_{ln}" in a.points]
    latest = store.latest(keys) if keys else None
    got = {} if latest is None else {int(p): (int(t), float(v))
                                     for p, t, v in zip(latest.point, latest.ts_ns, latest.value, strict=True)}
    ch = next((c for c in (machine.vibration.channels if machine and machine.vibration else [])
               if c.name == a.channel), None)
    bearing = next((b for b in (machine.bearings if machine else []) if ch and b.name == ch.bearing), None)
    freqs = defect_frequencies(bearing.n_balls, bearing.ball_diameter_mm, bearing.pitch_diameter_mm,
                               bearing.contact_angle_deg, ch.shaft_rpm / 60.0) if bearing and ch else {}
    lines = []
    for ln, label in LINES:
        k = a.points.get(f"env_{ln}")
        v = got.get(k) if k is not None else None
        f = freqs.get(ln)
        lines.append(DefectLine(line=ln, label=label, freq_hz=_fin(float(f), 2) if f is not None else None,
                                envelope_ratio=_fin(v[1]) if v else None))
    at = max((t for t, _ in got.values()), default=None)
    return ChannelSnapshot(asset=a.id, at=s.ts(at), bearing=(bearing.model or bearing.name) if bearing else None,
                           shaft_rpm=ch.shaft_rpm if ch else None, lines=lines)


def machine_history(store: TimeSeriesStore, mill: str, machine: Machine | None, machine_id: str,
                    start_ns: int, end_ns: int, max_points: int) -> tuple[list[AssetHistory], list[ChannelSnapshot]]:
    assets: Sequence[Asset] = [a for a in assets_of(store.points(mill), mill) if a.machine == machine_id]
    return ([asset_history(store, a, start_ns, end_ns, max_points) for a in assets],
            [snapshot(store, a, machine) for a in assets])
