"""``spinline demo`` opens with a past: a short back-fill through the real path, then live.

Three days of examples/mill.yaml (the fault schedule replaced by one that develops within them:
card ca01's cylinder bearing from hour 50, failing at hour 68; the edge's models commission on
the first 48 hours of 2-hourly snapshots), then a few seconds live. Through the API: KPIs per
shift and per day, ca01's health index falling, an open alarm and a work order, the month's carbon
figure in the published band, and in the store a not-collected hole where the edge was down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from spinline.demo.broker import free_port
from spinline.demo.runner import CREDENTIALS_FILE, HISTORY_FILE, run_demo
from spinline.sim.physics import mill_kwh_per_kg_band

FAULT = "    faults: [{machine: ca01, type: bearing_outer, start_s: 180000, ramp_s: 64800, severity: 4.0}]\n"


def _site(tmp_path: Path, mill_yaml: Path) -> Path:
    lines = mill_yaml.read_text().splitlines(keepends=True)
    i = next(n for n, x in enumerate(lines) if x.startswith("    faults:"))
    j = i + 1
    while lines[j].startswith("      - "):
        j += 1
    p = tmp_path / "site.yaml"
    p.write_text("".join(lines[:i] + [FAULT] + lines[j:]))
    return p


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.slow
async def test_demo_back_fills_a_past_then_goes_live(tmp_path: Path, mill_yaml: Path) -> None:
    site = _site(tmp_path, mill_yaml)
    data = tmp_path / "demo"
    port = free_port()
    lines: list[str] = []
    task = asyncio.create_task(run_demo(site, data_dir=data, port=port, duration_s=8, report_every_s=4,
                                        history_days=3, report=lines.append))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for _ in range(900):
            await asyncio.sleep(0.2)
            if any(x.startswith("console:") for x in lines):
                break
        assert any(x.startswith("console:") for x in lines), lines
        creds = dict(x.split(": ", 1) for x in (data / CREDENTIALS_FILE).read_text().splitlines())
        r = await client.post("/api/v1/auth/login", json={"username": creds["username"],
                                                          "password": creds["password"]})
        h = {"Authorization": f"Bearer {r.json()['access_token']}"}
        marker = json.loads((data / HISTORY_FILE).read_text())
        start, end = marker["start_ns"], marker["end_ns"]
        hour = 3600 * 10**9
        day0 = (start // hour + 24) * hour

        # KPIs per shift and per day over the history
        r = await client.get("/api/v1/mills/mill-a/kpis", headers=h,
                             params={"start": _iso(day0), "end": _iso(day0 + 24 * hour), "by": "shift"})
        assert r.status_code == 200, r.text
        shifts = r.json()["rows"]
        assert len(shifts) >= 3 and all(x["output_kg"] > 0 for x in shifts[1:-1])
        r = await client.get("/api/v1/mills/mill-a/kpis", headers=h,
                             params={"start": _iso(day0), "end": _iso(day0 + 24 * hour), "by": "mill"})
        (d,) = r.json()["rows"]
        assert 88 < d["efficiency_pct"] < 98 and d["output_kg"] == pytest.approx(
            sum(x["output_kg"] for x in shifts), rel=1e-6)

        # the faulted asset's health index falls: healthy first two days, failing at the end
        r = await client.get("/api/v1/points/mill-a/ca01/vib_cylinder_health_index/range", headers=h,
                             params={"start": _iso(start), "end": _iso(end + hour), "resolution": "raw"})
        assert r.status_code == 200, r.text
        v = np.array([np.nan if x is None else x for x in r.json()["value"]], dtype=float)
        assert len(v) >= 20
        assert np.nanmean(v[:10]) > 65 and np.nanmean(v[-3:]) < 35, v

        # an open alarm and a work order for it
        r = await client.get("/api/v1/mills/mill-a/maintenance/alarms", headers=h)
        alarms = [a for a in r.json() if a["asset"] == "ca01/cylinder" and a["state"] == "active"]
        assert alarms, r.json()
        r = await client.get("/api/v1/mills/mill-a/maintenance/work-orders", headers=h)
        assert any(w["asset"] == "ca01/cylinder" for w in r.json()), r.json()

        # the raw evidence of the history: the newest waveform of every vibration channel, the faulted
        # card's as an alarm snapshot, with both spectra (the machine view draws them on first load)
        r = await client.get("/api/v1/mills/mill-a/machines/ca01/snapshots/latest", headers=h)
        assert r.status_code == 200, (r.text, lines)
        (cyl,) = [c for c in r.json()["channels"] if c["channel"] == "cylinder"]
        assert cyl["reason"] == "alarm" and len(cyl["envelope_spectrum"]["freq_hz"]) > 100
        assert end - 3 * hour < cyl["ts_ns"] <= end

        # the month's carbon figure (the month the history mostly lies in) in the published band
        month = dt.datetime.fromtimestamp((end - 86400 * 10**9) / 1e9, dt.timezone(dt.timedelta(hours=8)))
        r = await client.get(f"/api/v1/mills/mill-a/carbon/{month:%Y-%m}", headers=h)
        assert r.status_code == 200, r.text
        c = r.json()
        assert c["period"]["hours"] >= 12 and c["energy"]["estimated_flagged"] is False
        for cnt in c["counts"]:
            lo, hi = mill_kwh_per_kg_band(float(cnt["count"][2:]))
            assert lo <= cnt["kwh_per_kg"] <= hi, cnt
    summary = await task
    assert summary.history["mill-a"].rejected == {} and summary.history["mill-a"].stored > 100_000
    assert summary.points_with_values == summary.points_total == 404     # and then it went live

    # the edge outage is a not-collected hole in the store (the counters bridge it)
    assert summary.offline is not None
    _, off0, off1 = summary.offline
    from spinline.cloud.storage.embedded import EmbeddedStore
    from spinline.core.site import point_key

    store = EmbeddedStore(data / "cloud" / "spinline.duckdb")
    try:
        # a device point (read each minute) and the edge's own count of what it collected (each 15 min)
        keys = [point_key("mill-a/em-main/energy"), point_key("mill-a/_edge/points_collected")]
        comp = store.completeness(keys, off0 - 3600 * 10**9, off1 + 3600 * 10**9)
    finally:
        store.close()
    for key in keys:
        holes = [g for g in comp[key].gaps if g.kind == "not_collected" and g.end_ns - g.start_ns >= off1 - off0]
        assert len(holes) == 1 and holes[0].start_ns < off0 and holes[0].end_ns >= off1, key

    # a restart on the same data dir writes no history again
    import time

    restart_ns = time.time_ns()
    again: list[str] = []
    second = await run_demo(site, data_dir=data, port=0, duration_s=3, report_every_s=3, history_days=3,
                            report=again.append)
    assert second.history == {} and not any("history" in x for x in again)
    assert second.history_span == (start, end)
    assert summary.history["mill-a"].raw_snapshots >= 6     # one per vibration channel at least

    # ... and its simulators resume with the counters the cloud has: across the restart a ring frame's
    # output rises by what it made in the seconds between, not by hours of output (a simulator
    # fast-forwarded in coarse steps drifted by a few per cent of the history: a day's production
    # efficiency of 92-118 % after a restart)
    from spinline.cloud.kpis.service import KpiService
    from spinline.core.site import load_site

    store = EmbeddedStore(data / "cloud" / "spinline.duckdb")
    try:
        for rf in ("rf01", "rf02", "rf03", "rf04", "rf05"):
            b = store.range(point_key(f"mill-a/{rf}/output"), restart_ns - hour, time.time_ns() + hour,
                            resolution="raw")
            before, after = b.value[b.ts_ns < restart_ns], b.value[b.ts_ns >= restart_ns]
            assert len(before) and len(after), rf
            seam_s = (int(b.ts_ns[b.ts_ns >= restart_ns][0]) - int(b.ts_ns[b.ts_ns < restart_ns][-1])) / 1e9
            rate_kg_s = 60.0 / 3600                                  # above any frame's output rate
            assert -0.5 <= after[0] - before[-1] <= rate_kg_s * seam_s + 0.5, (rf, before[-1], after[0], seam_s)
        last = int(store.latest([point_key("mill-a/rf01/output")]).ts_ns.max())
        (row,) = KpiService(store).mill_kpis(load_site(site).mill("mill-a"), last - 2 * hour, last + 60 * 10**9)
    finally:
        store.close()
    assert 70 < row.kpis.efficiency_pct < 100, row.kpis
