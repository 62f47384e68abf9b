from __future__ import annotations

import numpy as np
import pytest

from spinline.core.batch import Batch
from spinline.core.site import Priority
from spinline.edge.buffer import EdgeBuffer, per_point_rank


def mk(points: list[int], t0: int = 0) -> Batch:
    n = len(points)
    return Batch.of(points, np.arange(t0, t0 + n), np.arange(n, dtype=float))


def test_per_point_rank() -> None:
    uniq, inv, rank, counts = per_point_rank(np.asarray([5, 3, 5, 5, 3], dtype=np.int64))
    assert uniq.tolist() == [3, 5] and counts.tolist() == [2, 3]
    assert rank.tolist() == [0, 0, 1, 2, 1]


def test_seqs_survive_reopen_and_are_never_reused(tmp_path) -> None:
    path = tmp_path / "b.sqlite"
    with EdgeBuffer(path) as buf:
        a = buf.append(mk([1, 2, 1]))
        b = buf.append(mk([1]))
        assert (a.seq, b.seq) == (1, 2)
        assert a.batch.seq.tolist() == [0, 0, 1] and b.batch.seq.tolist() == [2]
        buf.ack([1, 2])
        assert buf.stats().rows == 0
    with EdgeBuffer(path) as buf:  # as after a crash: state comes from disk
        c = buf.append(mk([2, 1]))
        assert c.seq == 3                      # batch seq not reused after acks
        assert c.batch.seq.tolist() == [1, 3]  # per-point seqs continue
        got = buf.get(3)
        assert got is not None and got.batch.equals(c.batch)


def test_read_order_ack_and_dead_letter(tmp_path) -> None:
    with EdgeBuffer(tmp_path / "b.sqlite") as buf:
        for i in range(5):
            buf.append(mk([i]))
        assert buf.seqs(order="desc", limit=2) == [5, 4]
        assert buf.seqs(min_seq=2, max_seq=3) == [2, 3]
        assert buf.ack([1, 99]) == 1
        assert buf.dead_letter(2, "unknown_point")
        s = buf.stats()
        assert (s.batches, s.rows, s.dead_letters) == (3, 3, 1)


def test_full_policy_drops_lowest_priority_oldest_first_and_says_so(tmp_path, caplog) -> None:
    one = mk(list(range(100))).nbytes + 800  # ~ one batch with its per-point seq column
    with EdgeBuffer(tmp_path / "b.sqlite", budget_bytes=5 * one) as buf:
        buf.append(mk(list(range(100))), priority=Priority.HIGH)      # 1
        buf.append(mk(list(range(100))), priority=Priority.LOW)       # 2
        buf.append(mk(list(range(100))), priority=Priority.NORMAL)    # 3
        buf.append(mk(list(range(100))), priority=Priority.LOW)       # 4
        assert not buf.stats().full
        for _ in range(4):
            buf.append(mk(list(range(100))), priority=Priority.HIGH)  # 5..8
        s = buf.stats()
        assert s.full and s.dropped_batches >= 2 and s.bytes <= 5 * one
        dropped = [d["seq"] for d in buf.drops()]
        assert dropped[:2] == [2, 4]             # low priority first, oldest first
        if len(dropped) > 2:
            assert dropped[2] == 3               # then normal, then the oldest high
        assert "buffer full" in caplog.text
        # The dropped rows' per-point seqs are a visible gap: later rows continue after them.
        last = buf.get(buf.seqs(order="desc", limit=1)[0])
        assert last is not None and int(last.batch.seq[0]) == 7
        # Acking brings it back under the low-water mark and clears the alarm.
        buf.ack(buf.seqs())
        buf.append(mk([1]))
        assert not buf.stats().full


def test_empty_batch_refused(tmp_path) -> None:
    with EdgeBuffer(tmp_path / "b.sqlite") as buf, pytest.raises(ValueError):
        buf.append(Batch.empty())
