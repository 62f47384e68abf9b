"""Time a month's carbon report for a 3-mill zone at 1-minute data from the embedded store.

Fills an embedded DuckDB store with a simulated month (October 2026) of examples/zone.yaml at
1-minute steps (all points, or with --carbon-points-only just energy/power/output/spindle-hours),
then times ``month_report`` for every mill (hourly rollups through the TimeSeriesStore protocol)
against a baseline measured in the same run: the month's energy/output totals computed from the raw
1-minute rows (``store.range(..., resolution="raw")`` per point + counter increments), which is
what the report would cost without rollups. Target: report under 5 s for the zone on 2 cores.

    .venv/bin/python bench/carbon.py [--db /tmp/carbon_zone.duckdb] [--carbon-points-only] [--keep]

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

from spinline.carbon.meters import counter_increments
from spinline.carbon.report import write_report
from spinline.cloud.carbon.service import month_report
from spinline.cloud.storage.catalog import point_infos
from spinline.cloud.storage.embedded import EmbeddedStore
from spinline.core.site import load_site
from spinline.sim.history import generate

ROOT = Path(__file__).resolve().parents[1]
START = int(dt.datetime(2026, 10, 1, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()) * 10**9
END = int(dt.datetime(2026, 11, 1, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()) * 10**9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="/tmp/spinline_bench_carbon.duckdb")
    ap.add_argument("--site", default=str(ROOT / "examples" / "zone.yaml"))
    ap.add_argument("--carbon-points-only", action="store_true")
    ap.add_argument("--keep", action="store_true", help="reuse the store if it exists")
    args = ap.parse_args()
    site = load_site(args.site)
    db = Path(args.db)
    fill_s = 0.0
    rows = 0
    if not (args.keep and db.exists()):
        db.unlink(missing_ok=True)
        store = EmbeddedStore(db)
        store.migrate()
        store.register_points(point_infos(site))
        t = time.perf_counter()
        for mill in site.mills:
            keep = np.array(sorted(p.key for p in site.points(mill.id)
                                   if p.point.name in ("energy", "power", "output", "spindle_hours")))
            for b in generate(site, mill.id, START - 60 * 10**9, 31 * 86400 + 60, 60.0, seed=11,
                              chunk_s=7 * 86400.0):
                if args.carbon_points_only:
                    b = b.take(np.isin(b.point, keep))
                store.write(b)
                rows += len(b)
        store.refresh_rollups()
        fill_s = time.perf_counter() - t
        store.close()
    store = EmbeddedStore(db)
    try:
        # warm-up (DuckDB opens the file, factor YAML parsed once per call anyway)
        month_report(store, site.mills[0], "2026-10", trend_months=1)
        t = time.perf_counter()
        figs = [month_report(store, m, "2026-10", trend_months=6) for m in site.mills]
        report_s = time.perf_counter() - t
        t = time.perf_counter()
        out = Path("/tmp/spinline_bench_carbon_out")
        for f in figs:
            write_report(f, out)
        files_s = time.perf_counter() - t
        # baseline: the same month's energy and output totals from raw 1-minute rows
        t = time.perf_counter()
        raw_kwh = 0.0
        raw_rows = 0
        for m in site.mills:
            for p in site.points(m.id):
                if p.point.name in ("energy", "output", "spindle_hours"):
                    s = store.range(p.key, START, END, resolution="raw")
                    raw_rows += len(s.value)
                    if len(s.value) > 1:
                        inc, _ = counter_increments(s.value, p.point.rollover)
                        if p.point.name == "energy" and p.machine.type.value != "energy_meter":
                            raw_kwh += float(inc.sum())
        raw_s = time.perf_counter() - t
    finally:
        store.close()
    rollup_kwh = sum(sum(a.machine.kwh for a in f.footprint.machines) + sum(f.footprint.shared[k] for k in
                     ("hvac", "compressed_air")) for f in figs)
    print(json.dumps({
        "bench": "carbon_month_report", "mills": len(site.mills), "month": "2026-10", "step_s": 60,
        "rows_written": rows, "fill_s": round(fill_s, 2), "report_s": round(report_s, 3),
        "report_per_mill_s": round(report_s / len(site.mills), 3), "files_s": round(files_s, 3),
        "baseline_raw_totals_s": round(raw_s, 3), "baseline_raw_rows": raw_rows,
        "speedup_vs_raw": round(raw_s / report_s, 2) if report_s else None,
        "target_s": 5.0, "under_target": report_s < 5.0,
        "machine_kwh_rollup": round(rollup_kwh, 1), "machine_kwh_raw": round(raw_kwh, 1),
    }))


if __name__ == "__main__":
    main()
