"""Times at the API's edge: one format out (UTC with ``Z``), one supported range in.

- ``UtcDatetime``: every datetime the API sends. A naive value is taken as UTC (the health and
  maintenance records keep naive UTC), an aware one is converted; pydantic then writes
  ``2026-10-01T06:00:00Z``.
- ``InDatetime``: every datetime the API accepts (query or body). Outside ``MIN_TIME`` ..
  ``MAX_TIME`` it is refused with a message naming the field and the range: the stores keep
  nanoseconds since 1970 in 64 bits, and no mill has data from before 1970 or after 2100.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import status
from pydantic import AfterValidator

MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2100, 1, 1, tzinfo=UTC)


def as_utc(d: datetime) -> datetime:
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def utc_text(d: datetime) -> str:
    """``2026-10-01T06:00:00Z`` (microseconds only when there are any)."""
    return as_utc(d).isoformat().replace("+00:00", "Z")


def _in_range(d: datetime) -> datetime:
    try:
        u = as_utc(d)
    except OverflowError:
        raise ValueError(f"{d.isoformat()} is outside the supported range "
                         f"{MIN_TIME:%Y-%m-%d} .. {MAX_TIME:%Y-%m-%d}") from None
    if not MIN_TIME <= u < MAX_TIME:
        raise ValueError(f"{utc_text(u)} is outside the supported range {MIN_TIME:%Y-%m-%d} .. {MAX_TIME:%Y-%m-%d}")
    return d


def check_time(d: datetime, name: str) -> datetime:
    """``d`` as aware UTC, or 422 ``time_out_of_range`` naming ``name``."""
    try:
        return as_utc(_in_range(d))
    except (ValueError, OverflowError) as exc:
        from spinline.cloud.api.errors import ApiError

        raise ApiError(status.HTTP_422_UNPROCESSABLE_CONTENT, "time_out_of_range", f"{name}: {exc}") from None


#: Aware UTC; pydantic writes an aware UTC datetime with ``Z``.
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
InDatetime = Annotated[datetime, AfterValidator(_in_range)]

__all__ = ["MAX_TIME", "MIN_TIME", "InDatetime", "UtcDatetime", "as_utc", "check_time", "utc_text"]
