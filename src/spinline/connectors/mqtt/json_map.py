"""Pure mapping of JSON device payloads to rows, as the site file declares.

A machine's points name a topic (``PointRef.mqtt_topic()``) and a field (``mqtt_field()``, a
dotted path into the JSON object). The payload's ``ts`` (epoch milliseconds; seconds are
accepted when the number is small enough to be seconds) is the device timestamp; without it the
edge's receipt time is used. Missing fields produce no row; a field that is not a number (a
string, null, an object, or a bool where the point is not a bool/state point) or is not finite
(``NaN``/``Infinity``, which Python's json accepts) produces a BAD row with NaN, so a broken
device is visible, not silent, and is reported in ``problems`` (``field_not_number`` /
``field_not_finite``) while the message's other fields are still read. A payload that is not
JSON (``json_invalid``) or not a JSON object (``json_not_object``) raises ``BadInput``; a ``ts``
that is present but unusable (not a number, not finite, or outside ``TS_MIN_NS``..``TS_MAX_NS``: before
1970 or past what int64 nanoseconds hold, e.g. ``10**30``) falls back to the receipt time and is reported
(``bad_timestamp``). JSON nested too deeply for the parser (``RecursionError``) is ``json_invalid``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spinline.core.batch import Batch, Quality
from spinline.core.site import DataType, PointKind, PointRef

from ..base import BadInput, Problems


@dataclass(frozen=True, slots=True)
class FieldMap:
    path: tuple[str, ...]
    key: int
    machine: str
    #: true/false is a valid value (bool points, state codes); elsewhere a bool is a type error.
    takes_bool: bool = True


def lookup(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


_MISSING = object()
#: Plausible device timestamps (ns): from the epoch to the last one an int64 holds (year 2262).
TS_MIN_NS = 0
TS_MAX_NS = (1 << 63) - 1


def ts_from(value: Any) -> int | None:
    """Device timestamp in ns from an epoch-ms (or epoch-s) number; None if absent or unusable.

    Unusable: not a number, not finite, or outside ``TS_MIN_NS``..``TS_MAX_NS`` (a timestamp that
    does not fit the int64 columns, e.g. ``10**30``, must never reach numpy).
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if abs(value) > 1e20:  # beyond int64 ns whatever the unit: refuse before any arithmetic on it
        return None
    scale = 1_000_000_000 if abs(value) < 1e11 else 1_000_000
    if isinstance(value, int):
        ns = value * scale  # exact: a float product loses the last digits of an ns timestamp
    else:
        whole = math.floor(value)
        ns = whole * scale + round((value - whole) * scale)
    return ns if TS_MIN_NS <= ns <= TS_MAX_NS else None


class TopicMap:
    """topic -> the fields to read from its payloads."""

    def __init__(self, points: Sequence[PointRef]) -> None:
        self.by_topic: dict[str, list[FieldMap]] = {}
        for p in points:
            self.by_topic.setdefault(p.mqtt_topic(), []).append(
                FieldMap(tuple(p.mqtt_field().split(".")), p.key, p.machine.id,
                         p.point.dtype == DataType.BOOL or p.point.kind == PointKind.STATE))

    @property
    def topics(self) -> list[str]:
        return list(self.by_topic)

    def machine_of(self, topic: str) -> str | None:
        fields = self.by_topic.get(topic)
        return fields[0].machine if fields else None

    def decode(self, topic: str, payload: bytes, received_ns: int, problems: Problems | None = None) -> Batch:
        """Rows of one payload; raises ``BadInput`` for an unusable payload, appends field problems."""
        fields = self.by_topic.get(topic)
        if not fields:
            return Batch.empty()
        try:
            obj = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadInput("json_invalid", f"{topic}: payload is not JSON: {exc}") from None
        except RecursionError:
            raise BadInput("json_invalid", f"{topic}: payload is nested too deeply to decode") from None
        if not isinstance(obj, dict):
            raise BadInput("json_not_object",
                           f"{topic}: payload must be a JSON object, got {type(obj).__name__}")
        raw_ts = obj.get("ts")
        ts = ts_from(raw_ts)
        if ts is None:
            ts = received_ns
            if raw_ts is not None and problems is not None:
                problems.append(("bad_timestamp", f"{topic}: ts {str(raw_ts)[:40]!r} is not epoch ms; "
                                                  "receipt time used"))
        keys, vals, quals = [], [], []
        for f in fields:
            v = lookup(obj, f.path)
            if v is _MISSING:
                continue
            if isinstance(v, bool) and f.takes_bool:
                fv, q = (1.0 if v else 0.0), Quality.GOOD
            elif isinstance(v, int | float) and not isinstance(v, bool):
                fv = float(v)
                q = Quality.GOOD if math.isfinite(fv) else Quality.BAD
                if q == Quality.BAD:
                    if problems is not None:
                        problems.append(("field_not_finite", f"{topic}: field {'.'.join(f.path)} is {fv}"))
                    fv = math.nan
            else:
                fv, q = math.nan, Quality.BAD
                if problems is not None:
                    problems.append(("field_not_number", f"{topic}: field {'.'.join(f.path)} is "
                                                         f"{type(v).__name__} {str(v)[:40]!r}, not a number"))
            keys.append(f.key)
            vals.append(fv)
            quals.append(int(q))
        return Batch(np.asarray(keys, dtype=np.int64), np.full(len(keys), ts, dtype=np.int64),
                     np.asarray(vals, dtype=np.float64), np.asarray(quals, dtype=np.uint8))
