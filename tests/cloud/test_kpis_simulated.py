"""KPIs over a simulated mill day (spinline.sim.history) through the real embedded store."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinline.cloud.kpis.service import KpiService
from spinline.cloud.storage.catalog import point_infos
from spinline.cloud.storage.embedded import EmbeddedStore
from spinline.core.site import MachineType, iter_machines, load_site
from spinline.sim import history as sim_history

START = 1_714_500_000 // 3600 * 3600 * 10**9   # a whole hour, 2024-04-30
DAY = 86400 * 10**9


def test_a_simulated_day(tmp_path: Path, zone_yaml: Path) -> None:
    site = load_site(zone_yaml)
    store = EmbeddedStore(tmp_path / "sim.duckdb")
    try:
        store.migrate()
        store.register_points(point_infos(site, "mill-a"))
        for b in sim_history.generate(site, "mill-a", START, 86400, 60, seed=7):
            store.write(b)
        store.refresh_rollups()
        mill = site.mill("mill-a")
        svc = KpiService(store)
        (day,) = svc.mill_kpis(mill, START, START + DAY, by="mill")
        k = day.kpis
        assert 1000 < k.output_kg < 20000
        # production efficiency (doffs and stops in) in the band mills quote, 90-96 % [domain.md (a): 85-97];
        # running efficiency (run time only) above it: the simulator's frames lose ~1 % to ends down
        assert 88 < (k.efficiency_pct or 0) < 98
        assert (k.efficiency_pct or 0) < (k.running_efficiency_pct or 0) <= 100.5
        assert 80 < (k.spindle_utilisation_pct or 0) <= 100
        assert 5 < (k.ends_down_per_1000_spindle_h or 0) < 100
        assert 20 < (k.worst5_break_share_pct or 0) < 50          # domain.md: 30-35 % from 5 % of spindles
        assert 0 < (k.oee_pct or 0) <= (k.availability_pct or 0)
        # the three shifts of the day add up to the day (Asia/Shanghai shifts on whole UTC hours)
        shifts = svc.mill_kpis(mill, START, START + DAY, by="shift")
        assert sum(r.kpis.output_kg for r in shifts) == pytest.approx(k.output_kg, rel=1e-9)
        assert sum(r.kpis.hours for r in shifts) == pytest.approx(24.0)
        # machines add up to the mill: the mill's yarn is the ring frames' output
        machines = {r.id: r.kpis for r in svc.mill_kpis(mill, START, START + DAY, by="machine")}
        rings = [m.id for _, _, m in iter_machines(mill) if m.type == MachineType.RING_FRAME]
        assert sum(machines[r].output_kg for r in rings) == pytest.approx(k.output_kg)
        assert k.spindles == sum(m.spindles or 0 for _, _, m in iter_machines(mill) if m.id in rings)
    finally:
        store.close()
