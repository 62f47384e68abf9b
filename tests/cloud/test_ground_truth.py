"""KPIs and carbon against the simulator's own ground truth, through the whole path.

Six hours of examples/mill.yaml, every point read each minute, go the way a mill's data goes: the
simulator's blocks (``spinline.demo.history.HistoryWriter``, the back-fill path of the demo) ->
the edge's encoding and HMAC signature (``core.wire.encode``) -> the cloud's ``IngestService``
(decode, verify, validate, store) -> the store's 1-minute and 1-hour rollups -> ``KpiService`` and
the carbon ``month_report``. Their figures are compared with the simulator's internal
accumulators (``machines.Counter.total`` of each machine group: kg, kWh, breaks, spindle-hours),
which never pass through a register, a wire or a rollup.

Truth window: the increments between the first reading (one step after the start: a counter's
first reading has nothing before it to subtract) and the last reading, which is exactly what the
reports cover (the KPI window [start, end + 1 h) on whole hours, the carbon month's covered hours).

Tolerance: relative 1e-6. The path is exact arithmetic in float64 (the wire carries float64, the
store keeps DOUBLE, a counter's increase is summed step by step and telescopes to last − first),
so what is left is rounding of sums in a different order (~1e-13). The bound is far below any
error the path could make: one minute's increase counted twice or dropped (a catch-up step
double-counted, the first reading's increase taken from 0) is 1/360 = 2.8e-3 of six hours, a
drop mistaken for a counter reset far more, a machine missed or put in the wrong stage whole
percent. (Readings lost in between do not change a total: the counters bridge them.)
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from spinline.cloud.carbon.service import month_report
from spinline.cloud.ingest.service import IngestService
from spinline.cloud.kpis.service import KpiService
from spinline.cloud.storage.catalog import point_infos
from spinline.cloud.storage.embedded import EmbeddedStore
from spinline.core.site import MachineType, all_points, load_site
from spinline.demo.history import HistoryPlan, HistoryWriter
from spinline.sim.mill import DEFAULT_START_NS, MillSim

REL = 1e-6
HOUR = 3600 * 10**9
STEP = 60 * 10**9
START = DEFAULT_START_NS                       # 2025-01-06T00:00Z, a whole hour
END = START + 6 * HOUR


def truth(sim: MillSim) -> dict[str, dict[str, float]]:
    """Per machine: kg, kWh, breaks, spindle-hours so far, from the simulator's accumulators."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    groups: list[object] = [sim.ring, *sim.flows.values(), sim.winders, sim.compressors, sim.hvac, sim.meters]
    for g in groups:
        if g is None:
            continue
        for i, m in enumerate(g.machines):  # type: ignore[attr-defined]
            for name, attr in (("kg", "c_output"), ("kwh", "c_energy"), ("breaks", "c_breaks"),
                               ("sph", "c_sph")):
                c = getattr(g, attr, None)
                if c is not None:
                    out[m.id][name] = float(c.total[i])
    return dict(out)


def diff(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {m: {k: b[m][k] - a[m].get(k, 0.0) for k in b[m]} for m in b}


@pytest.fixture(scope="module")
def six_hours(tmp_path_factory: pytest.TempPathFactory, mill_yaml: Path) -> tuple[Path, dict[str, dict[str, float]]]:
    site = load_site(mill_yaml)
    folder = tmp_path_factory.mktemp("truth")
    store = EmbeddedStore(folder / "truth.duckdb")
    store.migrate()
    store.register_points(point_infos(site))
    secret = b"ground-truth-edge-secret-0123456"
    allowed = {r.key for r in all_points(site, "mill-a")}
    ingest = IngestService(store, lambda e: secret if e == "edge-a" else None,
                           lambda e: "mill-a" if e == "edge-a" else None, lambda m: allowed,
                           clock=lambda: END + HOUR)
    sim = MillSim(site, "mill-a", seed=11, start_ns=START)
    w = HistoryWriter(sim, HistoryPlan(START, END, slow_step_s=60.0, payload_s=3600.0), edge_id="edge-a",
                      secret=secret, edge_dir=folder / "edge", ingest=ingest.handle_many)
    w.run(START + STEP)
    first = truth(sim)
    report = w.run(END)
    last = truth(sim)
    assert report.rejected == {} and report.stored == report.rows > 0
    store.refresh_rollups()
    store.close()
    return folder / "truth.duckdb", diff(first, last)


def test_kpis_match_the_simulators_totals(six_hours: tuple[Path, dict[str, dict[str, float]]],
                                          mill_yaml: Path) -> None:
    path, t = six_hours
    mill = load_site(mill_yaml).mill("mill-a")
    store = EmbeddedStore(path)
    try:
        rows = {r.id: r for r in KpiService(store).mill_kpis(mill, START, END + HOUR, by="machine")}
        (m,) = KpiService(store).mill_kpis(mill, START, END + HOUR, by="mill")
    finally:
        store.close()
    rings = [k for k, r in rows.items() if r.machine_type == MachineType.RING_FRAME.value]
    assert len(rings) == 9
    for mid, r in rows.items():
        if mid in t and "kwh" in t[mid]:
            assert r.kpis.energy_kwh == pytest.approx(t[mid]["kwh"], rel=REL), mid
        if mid in t and "kg" in t[mid]:
            assert r.kpis.output_kg == pytest.approx(t[mid]["kg"], rel=REL), mid
    for mid in rings:
        k = rows[mid].kpis
        assert k.ends_down_per_1000_spindle_h == pytest.approx(1000 * t[mid]["breaks"] / t[mid]["sph"], rel=REL)
    # the mill: yarn = the ring frames' kg; ends down over all frames; kWh of every machine but the meters
    assert m.kpis.output_kg == pytest.approx(sum(t[r]["kg"] for r in rings), rel=REL)
    assert m.kpis.ends_down_per_1000_spindle_h == pytest.approx(
        1000 * sum(t[r]["breaks"] for r in rings) / sum(t[r]["sph"] for r in rings), rel=REL)
    machines_kwh = sum(v["kwh"] for mid, v in t.items() if not mid.startswith("em-"))
    assert m.kpis.energy_kwh == pytest.approx(machines_kwh, rel=REL)
    assert m.kpis.sec_kwh_per_kg == pytest.approx(machines_kwh / m.kpis.output_kg, rel=REL)


def test_carbon_matches_the_simulators_totals(six_hours: tuple[Path, dict[str, dict[str, float]]],
                                              mill_yaml: Path) -> None:
    path, t = six_hours
    mill = load_site(mill_yaml).mill("mill-a")
    store = EmbeddedStore(path)
    try:
        f = month_report(store, mill, "2025-01", now_ns=END + HOUR, trend_months=1)
    finally:
        store.close()
    fp = f.footprint
    assert f.hours == 7 and f.quality.estimated_share == 0.0 and f.quality.interpolated_share == 0.0
    types = {mm.id: mm.type.value for ws in mill.workshops for ln in ws.lines for mm in ln.machines}
    # per machine: direct kWh and kg
    by_machine = {a.machine.machine: a.machine for a in fp.machines}
    for mid, mt in by_machine.items():
        assert mt.kwh == pytest.approx(t[mid]["kwh"], rel=REL), mid
        if "kg" in t[mid]:
            assert mt.output_kg == pytest.approx(t[mid]["kg"], rel=REL), mid
    # per stage: direct kWh of its machines
    stage: dict[str, float] = defaultdict(float)
    truth_stage: dict[str, float] = defaultdict(float)
    for a in fp.machines:
        stage[a.machine.type] += a.machine.kwh
        truth_stage[a.machine.type] += t[a.machine.machine]["kwh"]
    assert set(stage) >= {"card", "draw_frame", "roving_frame", "ring_frame", "winder"}
    for s, v in stage.items():
        assert v == pytest.approx(truth_stage[s], rel=REL), s
    # shared loads: HVAC and compressed air are the simulator's HVAC units and compressors
    hvac = sum(v["kwh"] for mid, v in t.items() if types.get(mid) == MachineType.HVAC.value)
    air = sum(v["kwh"] for mid, v in t.items() if types.get(mid) == MachineType.AIR_COMPRESSOR.value)
    assert fp.shared["hvac"] == pytest.approx(hvac, rel=REL)
    assert fp.shared["compressed_air"] == pytest.approx(air, rel=REL)
    # the mill total is the main meter's; kWh/kg = main meter ÷ ring-frame yarn
    yarn = sum(v["kg"] for mid, v in t.items() if types.get(mid) == MachineType.RING_FRAME.value)
    assert fp.total_kwh == pytest.approx(t["em-main"]["kwh"], rel=REL)
    assert fp.yarn_kg == pytest.approx(yarn, rel=REL)
    assert fp.kwh_per_kg == pytest.approx(t["em-main"]["kwh"] / yarn, rel=REL)
    # and the stage shares still add up to the meter (shared loads allocated, nothing lost)
    assert sum(s.kwh for s in fp.stages) == pytest.approx(t["em-main"]["kwh"], rel=REL)
