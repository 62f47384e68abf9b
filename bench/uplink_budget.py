"""Uplink bytes per mill per day, all traffic, vs streaming raw vibration (issue 11, item 8).

Runs the real pieces for ``--seconds`` (default 150): the simulator serving examples/mill.yaml (a
private mill id) on ephemeral ports and the machine's Mosquitto, one ``EdgeAgent`` with its default
settings (status heartbeat 60 s) sending over MQTT to an ``IngestWorker`` + ``IngestService`` on an
embedded store (so batches are acked and leave the buffer as in production). The edge's own
``TrafficLedger`` counts every payload at the uplink send.

**A day, honestly.** The first ``--warmup`` seconds (default 30) are start-up: the session's first
status, devices coming up, every point's first value. They happen once per edge start, not once per
150 s, so multiplying a short run by 86400 / run seconds would book them ~600 times a day and make the
status share read high. The bench reads the ledger at the end of the warm-up and at the end of the run:
a day is the start-up bytes once plus the steady window's rate x (86400 - warm-up). Both parts are
printed per kind (``startup_bytes``, ``steady_bytes_per_hour``), and the naive whole-run extrapolation
is kept beside them (``naive_whole_run_extrapolation``) so the difference is visible.

Baselines, from the same run: streaming raw vibration of the same channels (sample rate x 4 bytes
float32 x 86400 s, no framing), and the status message sent every second as before (the run's mean
status message size x 86400). Targets: total >= 100x less than raw, status <= 5 % of the total.
Raw-evidence snapshots are queued at the edge within a daily byte budget (``EvidenceSettings``) but
their transport to the cloud is not built yet, so the run sends none; the worst case — the whole
budget spent every day — is given beside the measured figure (``worst_case_with_snapshot_budget``).
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from spinline.cloud.ingest.mqtt_worker import IngestWorker
from spinline.cloud.ingest.service import IngestService
from spinline.cloud.storage.catalog import point_infos
from spinline.cloud.storage.embedded import EmbeddedStore
from spinline.core.site import all_points, parse_site, rebind
from spinline.edge.agent import EdgeAgent
from spinline.edge.evidence import EvidenceSettings
from spinline.edge.settings import EdgeSettings
from spinline.sim.server import SimServer

ROOT = Path(__file__).resolve().parents[1]
DAY = 86400.0


def raw_vibration_bytes_per_day(doc: dict[str, Any]) -> tuple[int, float]:
    """(channels, bytes/day) of streaming every vibration channel's samples as float32."""
    channels, per_s = 0, 0.0
    for ws in doc["mills"][0]["workshops"]:
        for line in ws["lines"]:
            for m in line["machines"]:
                v = m.get("vibration")
                if v:
                    n = len(v.get("channels") or [])
                    channels += n
                    per_s += n * float(v["fs_hz"]) * 4
    return channels, per_s * DAY


def day_bytes(startup: dict[str, int], steady: dict[str, int], steady_s: float, warmup_s: float) -> dict[str, int]:
    """Per kind: the start-up bytes once plus the steady rate over the rest of the day.

    >>> day_bytes({"status": 1000}, {"status": 60}, 60.0, 30.0)
    {'status': 87370}
    """
    if steady_s <= 0:
        raise ValueError("the steady window is empty: --seconds must exceed --warmup")
    return {k: round(startup.get(k, 0) + steady.get(k, 0) / steady_s * (DAY - warmup_s))
            for k in sorted(set(startup) | set(steady))}


async def run(seconds: float, warmup: float, host: str, port: int) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "mill.yaml").read_text())
    mill = f"ub-{uuid.uuid4().hex[:8]}"
    doc["mills"] = doc["mills"][:1]
    doc["mills"][0]["id"] = mill
    site = parse_site(doc)
    channels, raw_per_day = raw_vibration_bytes_per_day(doc)
    secret = b"bench-secret-" + uuid.uuid4().hex.encode()
    edge = "ub-edge"
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedStore(Path(tmp) / "cloud.duckdb")
        store.migrate()
        store.register_points(point_infos(site, mill))
        keys = frozenset(p.key for p in all_points(site, mill))
        service = IngestService(store, {edge: secret}.get, {edge: mill}.get,
                                lambda m: keys if m == mill else frozenset())
        worker = IngestWorker(service, host, port, group=f"ub-{uuid.uuid4().hex[:6]}")
        await asyncio.to_thread(worker.start)
        try:
            async with SimServer(site, mill, speed=1.0, ephemeral=True, mqtt=(host, port)) as sim:
                settings = EdgeSettings(edge_id=edge, secret=secret, data_dir=Path(tmp) / "edge",
                                        cloud_url=f"mqtt://{host}:{port}", device_mqtt=f"mqtt://{host}:{port}")
                agent = EdgeAgent(rebind(site, sim.ports), mill, settings)
                async with agent:
                    t0 = time.monotonic()
                    await asyncio.sleep(warmup)
                    at_warm = agent.traffic.as_dict()["since_start"]
                    t_warm = time.monotonic()
                    await asyncio.sleep(max(0.0, seconds - warmup))
                    elapsed = time.monotonic() - t0
                    traffic = agent.traffic.as_dict()["since_start"]
                    st = await agent.status()
        finally:
            await asyncio.to_thread(worker.stop)
            store.close()
    b, n = traffic["bytes"], traffic["messages"]
    startup, startup_n = at_warm["bytes"], at_warm["messages"]
    steady = {k: b[k] - startup[k] for k in b}
    steady_n = {k: n[k] - startup_n[k] for k in n}
    warm_s, steady_s = t_warm - t0, elapsed - (t_warm - t0)
    per_day = day_bytes(startup, steady, steady_s, warm_s)
    up = ("batch", "status", "events", "snapshot")
    up_day = sum(per_day[k] for k in up)
    naive = {k: round(v * DAY / elapsed) for k, v in b.items()}
    naive_up = sum(naive[k] for k in up)
    status_msg = b["status"] / max(1, n["status"])
    old_status_day = status_msg * DAY
    return {
        "bench": "uplink_budget", "site": "examples/mill.yaml", "run_s": round(elapsed, 1),
        "warmup_s": round(warm_s, 1), "steady_s": round(steady_s, 1),
        "points": len(keys), "vibration_channels": channels,
        "uplink_bytes_per_day": up_day, "by_kind_bytes_per_day": per_day,
        "startup_bytes": {k: startup[k] for k in up},
        "steady_bytes_per_hour": {k: round(steady[k] / steady_s * 3600) for k in up},
        "messages_in_run": n, "steady_messages": {k: steady_n[k] for k in up},
        "status_share": round(per_day["status"] / max(1, up_day), 4),
        "naive_whole_run_extrapolation": {"uplink_bytes_per_day": naive_up,
                                          "status_share": round(naive["status"] / max(1, naive_up), 4)},
        "raw_vibration_bytes_per_day": round(raw_per_day), "ratio_vs_raw": round(raw_per_day / max(1, up_day), 1),
        "baseline_status_every_1s_bytes_per_day": round(old_status_day),
        "status_message_bytes": round(status_msg),
        "targets": {"ratio_vs_raw_ge_100": raw_per_day / max(1, up_day) >= 100,
                    "status_share_le_5pct": per_day["status"] <= 0.05 * up_day},
        "worst_case_with_snapshot_budget": {
            "snapshot_budget_bytes_per_day": (sb := EvidenceSettings().daily_bytes),
            "uplink_bytes_per_day": up_day + sb, "ratio_vs_raw": round(raw_per_day / (up_day + sb), 1),
            "status_share": round(per_day["status"] / (up_day + sb), 4)},
        "evidence_queued_in_run": (st.get("evidence") or {}).get("queued"),
        "batches_acked": st["uplink"]["acked"], "buffer_rows_left": st["buffer"]["rows"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=150.0)
    ap.add_argument("--warmup", type=float, default=30.0, help="start-up seconds, booked once a day")
    ap.add_argument("--broker", default="127.0.0.1:1883")
    a = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    host, _, port = a.broker.partition(":")
    if a.seconds <= a.warmup:
        ap.error("--seconds must exceed --warmup (the steady window is what is extrapolated)")
    print(json.dumps(asyncio.run(run(a.seconds, a.warmup, host, int(port or 1883)))))


if __name__ == "__main__":
    main()
