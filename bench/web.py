"""Web console load times in a real browser (Debian's Chromium through Playwright), against a real cloud.

A 20-mill zone is generated from examples/zone.yaml (the three example mills repeated under new ids)
in a temporary folder; the cloud runs as a subprocess on the embedded store; every mill gets two hours
of minute data through the ingest route and mill-01 a 30-day history as well (tests/web/stack.py).
Then, signed in as the zone operator:

- each main view is loaded from a fresh navigation until its data is on screen (5 runs, median);
- the 30-day trend of a ring frame until its series are drawn;
- ``GET /api/v1/zone/overview`` for the 20 mills over HTTP (20 runs, median);
- the JavaScript the browser fetched for the first view (the zone), gzipped.

Baseline measured in the same run: the raw API call each view waits on (zone overview, mill tree,
the 30-day series, the maintenance alarms, the carbon month), timed with httpx beside the view.
Targets: every view < 1 s, zone overview < 100 ms, first-view JS < 1 MB gzipped. Ends with one JSON line.

    .venv/bin/python bench/web.py
"""

from __future__ import annotations

import gzip
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.web.stack import PASSWORD, ZONE, Stack  # noqa: E402

MILLS = 20
RUNS = 5


def zone_of(n: int, folder: Path) -> Path:
    """A site file of ``n`` mills: the example zone's mills repeated under ids mill-01 ... mill-NN."""
    doc = yaml.safe_load(ZONE.read_text(encoding="utf-8"))
    base = doc["mills"]
    mills = []
    for i in range(n):
        m = json.loads(json.dumps(base[i % len(base)]))
        m["id"] = f"mill-{i + 1:02d}"
        m["name"] = f"{m['name']} #{i + 1}"
        mills.append(m)
    doc["mills"] = mills
    path = folder / "zone20.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def median_ms(f: Any, runs: int) -> float:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        f()
        out.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(out), 1)


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        site = zone_of(MILLS, folder)
        s = Stack(folder=folder, site=site)
        mills = [f"mill-{i + 1:02d}" for i in range(MILLS)]
        t0 = time.perf_counter()
        s.provision(mills)
        s.start(timeout_s=180)
        rows = s.backfill("mill-01", [(30, 600)])
        for m in mills:
            rows += s.backfill(m, [(2 / 24, 60)], seed=hash(m) % 1000)
        setup_s = time.perf_counter() - t0
        month = time.strftime("%Y-%m", time.gmtime())
        end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        start30 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 30 * 86400))
        try:
            token = s.token("zone")
            api = httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            api.get("/api/v1/zone/overview").raise_for_status()  # warm
            overview_ms = median_ms(lambda: api.get("/api/v1/zone/overview").raise_for_status(), 20)
            baseline = {
                "zone": overview_ms,
                "mill": median_ms(lambda: api.get("/api/v1/mills/mill-01/tree").raise_for_status(), RUNS),
                "machine_30d_trend": median_ms(lambda: api.get(
                    "/api/v1/mills/mill-01/series", params=[("tag", "mill-01/rf01/power"),
                                                            ("tag", "mill-01/rf01/production_rate"),
                                                            ("start", start30), ("end", end),
                                                            ("max_points", 800)]).raise_for_status(), RUNS),
                "maintenance": median_ms(lambda: api.get("/api/v1/alarms", params={"mill": "mill-01", "limit": 10})
                                         .raise_for_status(), RUNS),
                "energy": median_ms(lambda: api.get(f"/api/v1/mills/mill-01/carbon/{month}").raise_for_status(), 2),
            }
            views = {
                "zone": ("/zone", ".zone-row"),
                # any machine whose state arrived (one of 40 may stand in a state the tile shows as unknown)
                "mill": ("/mills/mill-01", "[data-machine][data-state]:not([data-state=unknown])"),
                "machine_30d_trend": ("/mills/mill-01/machines/rf01?range=30d",
                                      "[data-test=trend-info]:not([data-fetches='0'])"),
                "maintenance": ("/mills/mill-01/maintenance", "[data-view=maintenance][data-loaded=true]"),
                "energy": (f"/mills/mill-01/energy?month={month}", ".kpi-card .value"),
                "fleet": ("/fleet", "[data-test=edges] .el-table__row"),
                "users": ("/users", "[data-test=users] .el-table__row"),
            }
            with sync_playwright() as p:
                b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                ctx = b.new_context(locale="zh-CN", viewport={"width": 1440, "height": 900}, base_url=s.url)
                page = ctx.new_page()
                scripts: dict[str, int] = {}

                def on_response(r: Any) -> None:
                    if r.request.resource_type == "script" and r.ok:
                        scripts[r.url] = len(gzip.compress(r.body(), 9))

                page.goto("/login")
                page.fill("input[name=username]", "zone")
                page.fill("input[name=password]", PASSWORD)
                page.click("[data-test=login]")
                page.locator("[data-test=user]").wait_for()
                # the JS of the first view, as a new visitor's browser fetches it (empty cache)
                fresh = b.new_context(base_url=s.url, storage_state=ctx.storage_state())
                fp = fresh.new_page()
                fp.on("response", on_response)
                fp.goto("/zone")
                fp.locator(".zone-row").first.wait_for(timeout=30000)
                fp.wait_for_load_state("networkidle")
                first_js_gz = sum(scripts.values())
                fresh.close()

                view_ms: dict[str, float] = {}
                for name, (path, marker) in views.items():
                    times = []
                    for _ in range(RUNS):
                        page.goto("about:blank")
                        t = time.perf_counter()
                        page.goto(path)
                        page.locator(marker).first.wait_for(timeout=60000)
                        times.append((time.perf_counter() - t) * 1000)
                    view_ms[name] = round(statistics.median(times), 1)
                b.close()
        finally:
            s.stop()

    targets = {"view_ms": 1000, "zone_overview_ms": 100, "first_view_js_gzip_bytes": 1_000_000}
    result = {
        "bench": "web", "mills": MILLS, "rows_ingested": rows, "setup_s": round(setup_s, 1),
        "view_ms": view_ms, "baseline_api_ms": baseline,
        "view_over_api_ratio": {k: round(v / baseline[k], 2) for k, v in view_ms.items() if baseline.get(k)},
        "zone_overview_ms": overview_ms, "first_view_js_gzip_bytes": first_js_gz, "first_view_js_files": len(scripts),
        "targets": targets,
        "met": {"views": all(v < targets["view_ms"] for v in view_ms.values()),
                "zone_overview": overview_ms < targets["zone_overview_ms"],
                "first_view_js": first_js_gz < targets["first_view_js_gzip_bytes"]},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
