"""Pure mapping of JSON device payloads to rows, as the site file declares.

A machine's points name a topic (``PointRef.mqtt_topic()``) and a field (``mqtt_field()``, a
dotted path into the JSON object). The payload's ``ts`` (epoch milliseconds; seconds are
accepted when the number is small enough to be seconds) is the device timestamp; without it the
edge's receipt time is used. Missing fields produce no row; a field that is not a number (or
bool) produces a BAD row with NaN, so a broken device is visible, not silent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spinline.core.batch import Batch, Quality
from spinline.core.errors import DecodeError
from spinline.core.site import PointRef


@dataclass(frozen=True, slots=True)
class FieldMap:
    path: tuple[str, ...]
    key: int
    machine: str


def lookup(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


_MISSING = object()


def ts_from(value: Any) -> int | None:
    """Device timestamp in ns from an epoch-ms (or epoch-s) number; None if absent or unusable."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    scale = 1_000_000_000 if abs(value) < 1e11 else 1_000_000
    if isinstance(value, int):
        return value * scale  # exact: a float product loses the last digits of an ns timestamp
    whole = math.floor(value)
    return whole * scale + round((value - whole) * scale)


class TopicMap:
    """topic -> the fields to read from its payloads."""

    def __init__(self, points: Sequence[PointRef]) -> None:
        self.by_topic: dict[str, list[FieldMap]] = {}
        for p in points:
            self.by_topic.setdefault(p.mqtt_topic(), []).append(
                FieldMap(tuple(p.mqtt_field().split(".")), p.key, p.machine.id))

    @property
    def topics(self) -> list[str]:
        return list(self.by_topic)

    def machine_of(self, topic: str) -> str | None:
        fields = self.by_topic.get(topic)
        return fields[0].machine if fields else None

    def decode(self, topic: str, payload: bytes, received_ns: int) -> Batch:
        fields = self.by_topic.get(topic)
        if not fields:
            return Batch.empty()
        try:
            obj = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(f"{topic}: payload is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise DecodeError(f"{topic}: payload must be a JSON object")
        ts = ts_from(obj.get("ts")) or received_ns
        keys, vals, quals = [], [], []
        for f in fields:
            v = lookup(obj, f.path)
            if v is _MISSING:
                continue
            if isinstance(v, bool):
                fv, q = (1.0 if v else 0.0), Quality.GOOD
            elif isinstance(v, int | float) and v is not None:
                fv = float(v)
                q = Quality.GOOD if math.isfinite(fv) else Quality.BAD
            else:
                fv, q = math.nan, Quality.BAD
            keys.append(f.key)
            vals.append(fv)
            quals.append(int(q))
        return Batch(np.asarray(keys, dtype=np.int64), np.full(len(keys), ts, dtype=np.int64),
                     np.asarray(vals, dtype=np.float64), np.asarray(quals, dtype=np.uint8))
