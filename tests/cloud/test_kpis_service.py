"""KPIs through the real embedded store: minute samples in, rollups, KPI rows out (hand-worked)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from spinline.cloud.kpis.service import KpiService, shift_windows
from spinline.cloud.storage.base import TimeSeriesStore
from spinline.cloud.storage.catalog import point_infos
from spinline.cloud.storage.embedded import EmbeddedStore
from spinline.core.batch import Batch
from spinline.core.site import Site, parse_site, point_key

approx = pytest.approx
MIN = 60 * 10**9
# 2024-05-01 06:00 in Asia/Shanghai = 2024-04-30 22:00 UTC: a whole hour, the start of shift A.
T0 = int(datetime(2024, 4, 30, 22, tzinfo=UTC).timestamp()) * 10**9

RING = [{"name": n, "unit": u, "kind": k} for n, u, k in [
    ("output", "kg", "counter"), ("run_hours", "hour", "counter"), ("spindle_hours", "spindle * hour", "counter"),
    ("breaks", "event", "counter"), ("energy", "kWh", "counter"), ("spindle_speed", "rpm", "gauge"),
    ("twist", "1/m", "gauge"), ("worst5_break_share", "percent", "gauge")]]
SIMPLE = [{"name": n, "unit": u, "kind": "counter"} for n, u in [("output", "kg"), ("run_hours", "hour"),
                                                                 ("energy", "kWh")]]


def kpi_site() -> Site:
    return parse_site({
        "zone": {"id": "z"},
        "templates": {"ring": {"points": RING}, "simple": {"points": SIMPLE},
                      "meter": {"points": [{"name": "energy", "unit": "kWh", "kind": "counter"}]}},
        "mills": [{
            "id": "m1", "timezone": "Asia/Shanghai",
            "shifts": [{"name": "A", "start": "06:00", "hours": 1}, {"name": "B", "start": "07:00", "hours": 1},
                       {"name": "C", "start": "08:00", "hours": 22}],
            "workshops": [{"id": "w", "lines": [
                {"id": "prep", "count_ne": 59.05, "machines": [
                    {"id": "ca01", "type": "card", "template": "simple"},
                    {"id": "rv01", "type": "roving_frame", "template": "simple"}]},
                {"id": "ring", "count_ne": 59.05, "machines": [
                    {"id": "rf01", "type": "ring_frame", "template": "ring", "spindles": 1000}]},
                {"id": "util", "machines": [{"id": "em1", "type": "energy_meter", "template": "meter"}]},
            ]}],
        }],
    })


def _counter(tag: str, per_minute: np.ndarray) -> Batch:
    # Sample i (i = -1 .. 119) at T0 + i min is the total counted up to the end of minute i;
    # the sample at T0 - 1 min (value 0) gives the first bucket its starting point.
    values = np.r_[0.0, np.cumsum(per_minute)]
    ts = T0 + np.arange(-1, len(per_minute)) * MIN
    return Batch.of(np.full(len(ts), point_key(tag)), ts, values)


def _gauge(tag: str, per_minute: np.ndarray) -> Batch:
    ts = T0 + np.arange(len(per_minute)) * MIN
    return Batch.of(np.full(len(ts), point_key(tag)), ts, per_minute)


def hours(first: float, second_running_half: float) -> np.ndarray:
    """Per-minute increments: ``first`` spread over hour 1, ``second`` over the first half of hour 2."""
    return np.r_[np.full(60, first / 60), np.full(30, second_running_half / 30), np.zeros(30)]


@pytest.fixture(params=["embedded", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TimeSeriesStore]:
    if request.param == "postgres":
        from spinline.cloud.storage.postgres import PostgresStore

        s: TimeSeriesStore = PostgresStore(request.getfixturevalue("postgres_url"))
    else:
        s = EmbeddedStore(tmp_path / "ts.duckdb")
    s.migrate()
    site = kpi_site()
    s.register_points(point_infos(site, "m1"))
    # Ring frame rf01, 1000 spindles, Ne 59.05 (10 tex), twist 1000 turns/m:
    #   hour 1: runs all hour at 15 000 rpm, 8.1 kg, 950 spindle-h, 30 breaks, 80 kWh, worst-5 % share 35 %
    #   hour 2: runs 30 min at 12 000 rpm then stops (0 rpm): 3.24 kg, 450 spindle-h, 12 breaks, 45 kWh, share 30 %
    batches = [
        _counter("m1/rf01/output", hours(8.1, 3.24)),
        _counter("m1/rf01/run_hours", hours(1.0, 0.5)),
        _counter("m1/rf01/spindle_hours", hours(950, 450)),
        _counter("m1/rf01/breaks", hours(30, 12)),
        _counter("m1/rf01/energy", hours(80, 45)),
        _gauge("m1/rf01/spindle_speed", np.r_[np.full(60, 15000.0), np.full(30, 12000.0), np.zeros(30)]),
        _gauge("m1/rf01/twist", np.full(120, 1000.0)),
        _gauge("m1/rf01/worst5_break_share", np.r_[np.full(60, 35.0), np.full(60, 30.0)]),
        # card: 100 kg, roving frame: 50 kg (both in hour 1); energy 10 and 20 kWh; the meter 500 kWh
        _counter("m1/ca01/output", hours(100, 0)), _counter("m1/ca01/run_hours", hours(1, 0)),
        _counter("m1/ca01/energy", hours(10, 0)),
        _counter("m1/rv01/output", hours(50, 0)), _counter("m1/rv01/run_hours", hours(1, 0)),
        _counter("m1/rv01/energy", hours(20, 0)),
        _counter("m1/em1/energy", hours(300, 200)),
    ]
    s.write(Batch.concat(batches))
    s.refresh_rollups()
    yield s
    s.close()


def test_machine_kpis_from_the_store(store: TimeSeriesStore) -> None:
    mill = kpi_site().mill("m1")
    rows = {r.id: r for r in KpiService(store).mill_kpis(mill, T0, T0 + 120 * MIN, by="machine")}
    k = rows["rf01"].kpis
    # output 8.1 + 3.24 = 11.34 kg; theoretical 9.0 kg/h × 1 h + 7.2 kg/h × 0.5 h = 12.6 kg -> running 90 %
    # over both hours in full: 9.0 + 7.2 = 16.2 kg -> production efficiency 11.34 / 16.2 = 70 %
    assert k.output_kg == approx(11.34)
    assert k.running_efficiency_pct == approx(90.0)
    assert k.efficiency_pct == approx(70.0)
    # A = 1.5 / 2 = 75 %; P = 11.34 / (9.0 × 1.5) = 84 %; OEE = 0.75 × 0.84 × 1 = 63 %
    assert k.availability_pct == approx(75.0) and k.performance_pct == approx(84.0)
    assert k.oee_pct == approx(63.0)
    # utilisation 1400 / 2000 = 70 %; ends down 42 / 1400 × 1000 = 30; worst-5 % (35·30 + 30·12) / 42 = 33.57 %
    assert k.spindle_utilisation_pct == approx(70.0)
    assert k.ends_down_per_1000_spindle_h == approx(30.0)
    assert k.worst5_break_share_pct == approx(33.5714, abs=1e-3)
    # GPS 11.34 kg × 1000 / 1000 × 8 / 2 = 45.36 g; 40s-equivalent × (59.05/40)^1.5 = 1.793660 -> 81.36 g
    assert k.gps_g == approx(45.36)
    assert k.std_gps_g == approx(45.36 * 1.793660, abs=1e-3)
    assert rows["ca01"].kpis.output_kg == approx(100.0) and rows["ca01"].kpis.availability_pct == approx(50.0)


def test_line_and_mill_use_the_output_stage(store: TimeSeriesStore) -> None:
    mill = kpi_site().mill("m1")
    svc = KpiService(store)
    lines = {r.id: r.kpis for r in svc.mill_kpis(mill, T0, T0 + 120 * MIN, by="line")}
    # the preparation line's output is its roving frame's 50 kg, not card + roving (150 kg)
    assert lines["prep"].output_kg == approx(50.0)
    assert lines["prep"].energy_kwh == approx(30.0)           # card 10 + roving 20
    assert lines["ring"].output_kg == approx(11.34)
    (m,) = svc.mill_kpis(mill, T0, T0 + 120 * MIN, by="mill")
    # the mill's yarn = ring frames' 11.34 kg; energy = all machines except the meter: 125 + 10 + 20 = 155 kWh
    assert m.kpis.output_kg == approx(11.34)
    assert m.kpis.energy_kwh == approx(155.0)
    assert m.kpis.sec_kwh_per_kg == approx(155 / 11.34)


def test_kpis_per_shift(store: TimeSeriesStore) -> None:
    mill = kpi_site().mill("m1")
    rows = KpiService(store).mill_kpis(mill, T0, T0 + 120 * MIN, by="shift")
    assert [r.id for r in rows] == ["2024-05-01 A", "2024-05-01 B"]
    a, b = rows[0].kpis, rows[1].kpis
    # shift A (06:00-07:00 local): 8.1 kg of 9.0 -> 90 %, ran the whole hour -> A 100 %, GPS 8.1 × 8 = 64.8 g
    assert (a.output_kg, a.efficiency_pct, a.availability_pct) == (approx(8.1), approx(90.0), approx(100.0))
    assert a.running_efficiency_pct == approx(90.0)
    assert a.gps_g == approx(64.8)
    # shift B: 3.24 kg of 7.2 × 0.5 = 3.6 -> running 90 %; of 7.2 × 1 h = 7.2 -> production 45 %;
    # A = 0.5 / 1 = 50 %; P = 3.24 / (9.0 × 0.5) = 72 %
    assert (b.output_kg, b.efficiency_pct, b.availability_pct) == (approx(3.24), approx(45.0), approx(50.0))
    assert b.running_efficiency_pct == approx(90.0)
    assert b.performance_pct == approx(72.0)


def test_ragged_window_reads_minute_rollups(store: TimeSeriesStore) -> None:
    # 06:30-07:15 local: 30 min of hour 1 (4.05 kg) + 15 min of hour 2 at 0.108 kg/min (1.62 kg) = 5.67 kg
    mill = kpi_site().mill("m1")
    rows = {x.id: x for x in KpiService(store).mill_kpis(mill, T0 + 30 * MIN, T0 + 75 * MIN, by="machine")}
    assert rows["rf01"].kpis.output_kg == approx(5.67)
    assert rows["rf01"].kpis.hours == approx(0.75)


def test_shift_windows_follow_the_mill_time_zone() -> None:
    mill = kpi_site().mill("m1")
    day = 24 * 60 * MIN
    ws = shift_windows(mill, T0, T0 + day)
    # 06:00 local = 22:00 UTC the day before; shifts A (1 h), B (1 h), C (22 h) fill the day exactly
    assert [(w.label, (w.end_ns - w.start_ns) // MIN) for w in ws] == [
        ("2024-05-01 A", 60), ("2024-05-01 B", 60), ("2024-05-01 C", 22 * 60)]
    assert ws[0].start_ns == T0


def test_worker_processes_give_the_same_rows_in_jobs_of_windows(store: TimeSeriesStore) -> None:
    # KPIs by shift over 10 days: 30 windows, more than one job (WINDOWS_PER_JOB), computed in a worker
    # process of a ProcessLane (as the cloud does), equal to the same rows computed inline.
    from spinline.cloud.api.limits import ProcessLane
    from spinline.cloud.kpis.service import WINDOWS_PER_JOB

    mill = kpi_site().mill("m1")
    end = T0 + 10 * 24 * 60 * MIN
    inline = KpiService(store).mill_kpis(mill, T0, end, by="shift")
    assert len(inline) == 30 > WINDOWS_PER_JOB
    lane = ProcessLane("kpi", 1)
    try:
        pooled = KpiService(store, lane).mill_kpis(mill, T0, end, by="shift")
        assert lane.started == 1
    finally:
        lane.shutdown()
    assert [(r.id, r.window) for r in pooled] == [(r.id, r.window) for r in inline]
    assert [r.kpis for r in pooled] == [r.kpis for r in inline]           # NaN-free rows, or None alike
    assert pooled[0].kpis.output_kg == approx(8.1)
