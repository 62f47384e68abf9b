from __future__ import annotations

import numpy as np
import pytest

from spinline.core.batch import Batch, Quality
from spinline.core.errors import UplinkError
from spinline.core.site import parse_site
from spinline.edge.clock import ClockGuard
from spinline.edge.filter import PointTable, ReportFilter
from spinline.edge.scheduler import Backoff, base_tick, due_mask, next_tick, periods
from spinline.edge.uplink.base import parse_ack


def test_base_tick_periods_and_due() -> None:
    assert base_tick([1.0, 10.0, 60.0]) == pytest.approx(1.0)
    assert base_tick([0.5, 0.75]) == pytest.approx(0.25)
    per = periods([1.0, 10.0, 60.0], 1.0)
    assert per.tolist() == [1, 10, 60]
    assert due_mask(per, 0).tolist() == [True, True, True]
    assert due_mask(per, 10).tolist() == [True, True, False]
    assert due_mask(per, 7).tolist() == [True, False, False]


def test_next_tick_never_drifts_and_skips_missed_slots() -> None:
    assert next_tick(0.0, 1.0, 0.3, 0) == (1, 0)       # on time
    assert next_tick(0.0, 1.0, 3.7, 0) == (3, 2)       # overran: run the current slot, skip 2
    # after many ticks, deadlines are still start + n * base
    t, _ = next_tick(100.0, 0.1, 100.0 + 1000 * 0.1 + 0.01, 999)
    assert t == 1000


def test_backoff_grows_caps_and_resets() -> None:
    b = Backoff(base_s=1, cap_s=8, seed=1)
    d = [b.fail() for _ in range(6)]
    assert all(0.5 <= x <= 8 for x in d) and d[3] >= 4 and max(d) <= 8
    b.reset()
    assert b.fail() <= 1


def _site():
    return parse_site({"mills": [{"id": "m", "workshops": [{"id": "w", "lines": [{"id": "l", "machines": [
        {"id": "d", "type": "energy_meter", "points": [
            {"name": "a", "unit": "kW", "deadband": 0.5, "min": 0, "max": 10},
            {"name": "b", "unit": "kW"}]}]}]}]}]})


def test_deadband_heartbeat_and_range_flags() -> None:
    pts = _site().points("m")
    a, b = pts[0].key, pts[1].key
    f = ReportFilter(PointTable(pts, heartbeat_s=60))
    s = 1_000_000_000
    out = f.apply(Batch.of([a, b], 0, [1.0, 1.0]))
    assert len(out) == 2                                     # first samples
    out = f.apply(Batch.of([a, b], s, [1.3, 1.0]))
    assert out.point.tolist() == [b]                         # a within deadband, b deadband 0
    out = f.apply(Batch.of([a], 2 * s, [1.6]))
    assert len(out) == 1                                     # moved 0.6 from the last emitted 1.0
    out = f.apply(Batch.of([a], 70 * s, [1.6]))
    assert len(out) == 1                                     # heartbeat
    out = f.apply(Batch.of([a], 71 * s, [11.0]))
    assert out.quality.tolist() == [Quality.UNCERTAIN]       # above max
    # several samples of one point in one batch are filtered in order
    out = f.apply(Batch.of([a, a, a], [72 * s, 73 * s, 74 * s], [11.1, 12.0, 12.2]))
    assert out.value.tolist() == [12.0]


def test_clock_guard_corrects_or_quarantines_once_per_jump() -> None:
    now = 1_700_000_000_000_000_000
    jump = 946_684_800_000_000_000  # 2000-01-01
    g = ClockGuard(max_skew_s=60)
    v = g.check("plc", Batch.of([1, 2], [jump, now - 1], [1.0, 2.0]), now)
    assert v.corrected == 1 and v.new_event and g.events == 1
    assert v.good.ts_ns.tolist() == [now, now - 1]
    assert v.good.quality.tolist() == [Quality.UNCERTAIN, Quality.GOOD]
    v = g.check("plc", Batch.of([1], [jump], [1.0]), now)
    assert not v.new_event and g.events == 1                 # same jump: one event
    g.check("plc", Batch.of([1], [now], [1.0]), now)          # recovered
    q = ClockGuard(max_skew_s=60, policy="quarantine")
    v = q.check("plc", Batch.of([1, 2], [jump, now], [1.0, 2.0]), now)
    assert len(v.quarantined) == 1 and len(v.good) == 1


def test_parse_ack() -> None:
    a = parse_ack(b'{"seq": 3, "status": "stored", "reason": null, "stored": 10}')
    assert (a.seq, a.status, a.stored, a.final) == (3, "stored", 10, True)
    assert not parse_ack({"seq": 1, "status": "rejected", "reason": "unauthorised"}).final
    assert parse_ack({"seq": 1, "status": "rejected", "reason": "unknown_point"}).final
    with pytest.raises(UplinkError):
        parse_ack(b'{"seq": 1, "status": "weird"}')
    assert np.isfinite(1.0)
