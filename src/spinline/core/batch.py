"""The canonical measurement batch: columns, never one Python object per reading.

Every layer (connectors, buffer, uplink, ingest, storage, health, carbon) passes ``Batch``. It is
four parallel numpy arrays plus an optional per-point sequence column, so a million readings are
a few contiguous arrays that convert to Arrow or go to disk without a Python loop.

Quality follows OPC UA's StatusCode severity (the top two bits): good, uncertain, bad.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import pyarrow as pa


class Quality(IntEnum):
    """OPC UA StatusCode severity, as the top byte of the code."""

    GOOD = 0x00
    UNCERTAIN = 0x40
    BAD = 0x80


POINT_DTYPE = np.dtype(np.int64)
TS_DTYPE = np.dtype(np.int64)
VALUE_DTYPE = np.dtype(np.float64)
QUALITY_DTYPE = np.dtype(np.uint8)
SEQ_DTYPE = np.dtype(np.int64)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True, eq=False)
class Batch:
    """Readings as columns.

    point:   int64 point key (``spinline.core.site.point_key`` of the tag)
    ts_ns:   int64 UTC timestamp, nanoseconds since the Unix epoch
    value:   float64 value in the point's unit (bools and states as 0/1/codes)
    quality: uint8 ``Quality``
    seq:     optional int64 per-point sample counter assigned by the edge; a jump in it is a gap
    """

    point: I64
    ts_ns: I64
    value: F64
    quality: U8
    seq: I64 | None = None

    def __post_init__(self) -> None:
        n = len(self.point)
        cols: list[tuple[str, Any]] = [("ts_ns", self.ts_ns), ("value", self.value),
                                       ("quality", self.quality)]
        if self.seq is not None:
            cols.append(("seq", self.seq))
        for name, col in cols:
            if len(col) != n:
                raise ValueError(f"column {name} has {len(col)} rows, point has {n}")

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def of(cls, point: Any, ts_ns: Any, value: Any, quality: Any = Quality.GOOD,
           seq: Any = None) -> Batch:
        """Build from anything array-like; scalars broadcast (e.g. one quality for all rows)."""
        p = np.ascontiguousarray(point, dtype=POINT_DTYPE).reshape(-1)
        n = len(p)
        t = np.ascontiguousarray(np.broadcast_to(np.asarray(ts_ns, dtype=TS_DTYPE), (n,)))
        v = np.ascontiguousarray(np.broadcast_to(np.asarray(value, dtype=VALUE_DTYPE), (n,)))
        q = np.ascontiguousarray(np.broadcast_to(np.asarray(quality, dtype=QUALITY_DTYPE), (n,)))
        s = None if seq is None else np.ascontiguousarray(
            np.broadcast_to(np.asarray(seq, dtype=SEQ_DTYPE), (n,)))
        return cls(p, t, v, q, s)

    @classmethod
    def empty(cls, with_seq: bool = False) -> Batch:
        z = np.empty(0, dtype=np.int64)
        return cls(z, z.copy(), np.empty(0, VALUE_DTYPE), np.empty(0, QUALITY_DTYPE),
                   z.copy() if with_seq else None)

    @classmethod
    def concat(cls, batches: Sequence[Batch] | Iterable[Batch]) -> Batch:
        bs = [b for b in batches if len(b)]
        if not bs:
            return cls.empty()
        if len(bs) == 1:
            return bs[0]
        seq = None
        if all(b.seq is not None for b in bs):
            seq = np.concatenate([b.seq for b in bs if b.seq is not None])
        return cls(np.concatenate([b.point for b in bs]), np.concatenate([b.ts_ns for b in bs]),
                   np.concatenate([b.value for b in bs]), np.concatenate([b.quality for b in bs]),
                   seq)

    # --- views ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.point)

    def take(self, index: Any) -> Batch:
        """Rows selected by a boolean mask, a slice or an index array."""
        return Batch(self.point[index], self.ts_ns[index], self.value[index], self.quality[index],
                     None if self.seq is None else self.seq[index])

    def sorted(self) -> Batch:
        """Rows ordered by (point, ts_ns): the order stores and rollups want."""
        order = np.lexsort((self.ts_ns, self.point))
        return self.take(order)

    def with_seq(self, seq: Any) -> Batch:
        return Batch(self.point, self.ts_ns, self.value, self.quality,
                     np.ascontiguousarray(seq, dtype=SEQ_DTYPE))

    @property
    def nbytes(self) -> int:
        return int(self.point.nbytes + self.ts_ns.nbytes + self.value.nbytes + self.quality.nbytes
                   + (self.seq.nbytes if self.seq is not None else 0))

    def checksum(self) -> int:
        """Order-independent checksum of the rows, for end-to-end no-loss checks."""
        if not len(self):
            return 0
        h = (self.point.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             ^ self.ts_ns.view(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
             ^ self.value.view(np.uint64))
        return int(np.bitwise_xor.reduce(h) ^ np.uint64(len(self)))

    def equals(self, other: Batch) -> bool:
        return (len(self) == len(other) and bool(np.array_equal(self.point, other.point))
                and bool(np.array_equal(self.ts_ns, other.ts_ns))
                and bool(np.array_equal(self.value, other.value, equal_nan=True))
                and bool(np.array_equal(self.quality, other.quality))
                and (self.seq is None) == (other.seq is None)
                and (self.seq is None or other.seq is None or bool(np.array_equal(self.seq, other.seq))))

    # --- Arrow ----------------------------------------------------------------------------------

    def to_arrow(self) -> pa.Table:
        """Zero-copy where numpy and Arrow layouts agree (all columns here)."""
        import pyarrow as pa

        cols = {"point": pa.array(self.point), "ts": pa.array(self.ts_ns).cast(pa.timestamp("ns", "UTC")),
                "value": pa.array(self.value), "quality": pa.array(self.quality)}
        if self.seq is not None:
            cols["seq"] = pa.array(self.seq)
        return pa.table(cols)

    @classmethod
    def from_arrow(cls, table: pa.Table) -> Batch:
        import pyarrow as pa

        ts = table.column("ts")
        if pa.types.is_timestamp(ts.type):
            ts = ts.cast(pa.timestamp("ns", "UTC")).cast(pa.int64())
        seq = table.column("seq").to_numpy() if "seq" in table.column_names else None
        return cls.of(table.column("point").to_numpy(), ts.to_numpy(),
                      table.column("value").to_numpy(), table.column("quality").to_numpy(), seq)
