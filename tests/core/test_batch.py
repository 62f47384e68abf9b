from __future__ import annotations

import numpy as np
import pytest

from spinline.core.batch import Batch, Quality


def _batch(n: int = 5, seq: bool = True) -> Batch:
    return Batch.of(np.arange(n) % 3, 1_700_000_000_000_000_000 + np.arange(n) * 10**9, np.linspace(0, 1, n),
                    Quality.GOOD, np.arange(n) if seq else None)


def test_of_broadcasts_scalars() -> None:
    b = Batch.of([1, 2, 3], 5, [1.0, 2.0, 3.0])
    assert b.ts_ns.tolist() == [5, 5, 5]
    assert b.quality.tolist() == [0, 0, 0]
    assert b.seq is None
    assert b.point.dtype == np.int64 and b.value.dtype == np.float64 and b.quality.dtype == np.uint8


def test_mismatched_columns_refused() -> None:
    with pytest.raises(ValueError, match="column value has 2 rows, point has 3"):
        Batch(np.zeros(3, np.int64), np.zeros(3, np.int64), np.zeros(2), np.zeros(3, np.uint8))


def test_concat_take_sorted() -> None:
    a, b = _batch(4), _batch(3)
    c = Batch.concat([a, Batch.empty(), b])
    assert len(c) == 7 and c.seq is not None
    s = c.sorted()
    assert np.all(np.diff(s.point) >= 0)
    assert len(c.take(c.point == 1)) == int((c.point == 1).sum())
    assert Batch.concat([]).point.size == 0


def test_concat_drops_seq_when_any_missing() -> None:
    assert Batch.concat([_batch(2), _batch(2, seq=False)]).seq is None


def test_arrow_round_trip() -> None:
    b = _batch(100)
    t = b.to_arrow()
    assert t.num_rows == 100 and str(t.schema.field("ts").type) == "timestamp[ns, tz=UTC]"
    assert Batch.from_arrow(t).equals(b)


def test_checksum_is_order_independent_and_sensitive() -> None:
    b = _batch(50)
    perm = np.random.default_rng(1).permutation(50)
    assert b.checksum() == b.take(perm).checksum()
    changed = Batch.of(b.point, b.ts_ns, b.value + np.r_[np.zeros(49), 1e-9], b.quality, b.seq)
    assert changed.checksum() != b.checksum()
    assert b.take(slice(0, 49)).checksum() != b.checksum()


def test_equals_handles_nan() -> None:
    b = Batch.of([1], [1], [np.nan])
    assert b.equals(Batch.of([1], [1], [np.nan]))
