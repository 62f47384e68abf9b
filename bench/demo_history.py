"""The demo's back-fill: days of a site's history through the real path, per stage, against the simulator alone.

Each mill of the site is written as ``spinline demo`` writes it (``spinline.demo.history``: 1-min
power/energy/production/speed, other points every 15 min, vibration snapshots scored by the edge's
models, signed batches into the cloud's ``IngestService`` over an embedded store), then the rollups
are refreshed. The baseline, measured in the same run, is the simulator alone stepping the same
days at the same 1-min steps (``MillSim.advance``): what a back-fill cannot go below. Wall and CPU
seconds both: on a shared machine the wall clock mostly measures the neighbours.

    .venv/bin/python bench/demo_history.py [--site examples/zone.yaml] [--days 3]

Prints progress, then one JSON line. Target (issue 10): 21 days of examples/zone.yaml <= 60 s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from spinline.cloud.ingest.service import IngestService
from spinline.cloud.storage.catalog import point_infos
from spinline.cloud.storage.embedded import EmbeddedStore
from spinline.core.site import all_points, load_site
from spinline.demo.history import HistoryPlan, HistoryWriter, offline_episode
from spinline.sim.mill import MillSim

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", default=str(ROOT / "examples" / "zone.yaml"))
    ap.add_argument("--days", type=float, default=3.0)
    a = ap.parse_args()
    site = load_site(a.site)
    hour = 3600 * 10**9
    end = time.time_ns() // hour * hour
    start = end - int(a.days * 24) * hour

    t0, c0 = time.perf_counter(), time.process_time()
    for m in site.mills:
        sim = MillSim(site, m.id, start_ns=start)
        n = int((end - start) // (60 * 10**9))
        while n > 0:
            sim.advance(min(n, 360), 60.0)
            n -= 360
    base_wall, base_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"simulator alone: {a.days:g} days of {len(site.mills)} mills in {base_wall:.1f}s ({base_cpu:.1f} CPU-s)")

    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedStore(Path(tmp) / "bench.duckdb")
        store.migrate()
        store.register_points(point_infos(site))
        secret = b"bench-history-edge-secret-012345"
        allowed = {m.id: {r.key for r in all_points(site, m.id)} for m in site.mills}
        ingest = IngestService(store, lambda e: secret, lambda e: e.removeprefix("edge-"),
                               lambda mill: allowed[mill])
        t0, c0 = time.perf_counter(), time.process_time()
        rows = 0
        for i, m in enumerate(site.mills):
            sim = MillSim(site, m.id, start_ns=start)
            plan = HistoryPlan(start, end, offline=offline_episode(start, end) if i == 0 else None)
            w = HistoryWriter(sim, plan, edge_id=f"edge-{m.id}", secret=secret, edge_dir=Path(tmp) / m.id,
                              ingest=ingest.handle_many)
            r = w.run()
            rows += r.rows
            assert not r.rejected, r.rejected
            print(f"  {m.id}: {r.rows:,} readings, {r.snapshots} snapshots in {r.wall_s:.1f}s")
        write_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        store.refresh_rollups()
        rollup_s = time.perf_counter() - t1
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        store.close()
    print(f"back-fill: {rows:,} readings in {wall:.1f}s ({cpu:.1f} CPU-s): write {write_s:.1f}s, "
          f"rollups {rollup_s:.1f}s")
    print(json.dumps({"bench": "demo_history", "site": Path(a.site).name, "mills": len(site.mills),
                      "days": a.days,
                      "readings": rows, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                      "write_s": round(write_s, 2), "rollup_s": round(rollup_s, 2),
                      "readings_per_cpu_s": round(rows / cpu) if cpu else None,
                      "baseline_simulator_only_wall_s": round(base_wall, 2),
                      "baseline_simulator_only_cpu_s": round(base_cpu, 2),
                      "ratio_cpu_to_baseline": round(cpu / base_cpu, 1) if base_cpu else None,
                      "projected_21_days_cpu_s": round(cpu * 21 / a.days, 1)}))


if __name__ == "__main__":
    main()
