"""Pure OPC UA value mapping: DataValue parts -> (value, ts_ns, quality)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from spinline.core.batch import Quality

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def status_quality(code: int | None) -> int:
    """OPC UA StatusCode -> ``Quality`` (the severity bits: 00 good, 01 uncertain, 1x bad)."""
    if code is None:
        return int(Quality.GOOD)
    sev = (int(code) >> 30) & 0x3
    return int(Quality.GOOD) if sev == 0 else int(Quality.UNCERTAIN) if sev == 1 else int(Quality.BAD)


def to_ns(t: dt.datetime | None) -> int | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    delta = t - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def to_float(v: Any) -> float:
    """Numbers and bools as float; anything else (strings, arrays, None) is NaN."""
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, int | float):
        f = float(v)
        return f if math.isfinite(f) or math.isnan(f) else f
    return math.nan
