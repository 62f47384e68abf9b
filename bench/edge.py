"""Edge agent benchmark: Modbus collection, the durable buffer, a backlog draining, a whole edge process.

Prints a few lines, then one JSON line (every figure beside its baseline from the same run):
  modbus_points_per_s_per_core  points decoded per CPU-second of this (edge) process, steady state,
                                coalesced block reads against a pymodbus server in another process
                                (contiguous registers: the best case)
  modbus_per_point_points_per_s the same with one request per point (the common gateway's way)
  modbus_speedup                ratio of the two (same run, same server)
  example_mill_requests_*       requests per full poll cycle of examples/mill.yaml, coalesced vs per point
  example_mill_modbus_*         collection on examples/mill.yaml's own register map (gaps, mixed dtypes,
                                scale), coalesced, vs the contiguous best case above
  buffer_append_*               rows/s appended, every batch committed with synchronous=FULL (fsync): the
                                agent's shape (one row per point per flush, 1,250 of 5,000 points) vs the
                                old bench shape (50 rows per point per batch, the baseline)
  drain_*                       a backlog drained by a forwarder in its own process: read, encode, sign,
                                publish (MQTT QoS 1), the cloud's ack, delete; vs reading it back only
  large_mill                    one edge process (``EdgeAgent``, default settings) on 5,000 points at 1 s
                                and 50 vibration channels: its CPU % of one core (own CPU time / wall),
                                RSS, send latency (sample -> the batch at the broker's subscriber); no
                                vibration snapshot arrives during the measurement (sensors at 300 s)
  large_mill_snapshots          the same while snapshots arrive: one per channel every
                                ``--snapshot-every-s`` (default 30 s: 50 channels, ~1.7 snapshots/s), the
                                assets' baselines frozen in the warm-up, so featurisation and scoring count
  baseline_rss_*                RSS of a bare interpreter and of one that imported numpy only (this run)
  low_load                      the same on 100 points: send latency with ``flush_on_arrival`` vs the
                                baseline (a flush every ``flush_s`` only)
Targets (issue 12): large mill <= 10 % of one core and <= 100 MB RSS; low-load p50 latency <= 0.1 s.
The machine's load average is printed with the figures (a shared, loaded machine: repeat if high).

``--only edge_process`` runs the large mill (both variants), the baselines and the low load only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from edge_mill import SERVER, drain, mill_doc, run_mill

from spinline.connectors.modbus.connector import ModbusConnector
from spinline.connectors.modbus.planner import PlanItem, plan
from spinline.core.batch import Batch
from spinline.core.site import Priority, Site, load_site, parse_site, rebind
from spinline.edge.buffer import EdgeBuffer

ROOT = Path(__file__).resolve().parents[1]
UNITS, POINTS = 4, 400

SERVER_UNITS = 16


def dense_site(port: int):
    pts = [{"name": f"p{i}", "unit": "kW", "modbus": {"register": 2 * i}} for i in range(POINTS)]
    machines = [{"id": f"d{u}", "type": "energy_meter", "points": pts,
                 "link": {"protocol": "modbus", "port": port, "unit_id": u, "timeout_s": 2}}
                for u in range(1, UNITS + 1)]
    line = {"id": "l", "machines": machines}
    return parse_site({"mills": [{"id": "b", "workshops": [{"id": "w", "lines": [line]}]}]})


def example_site(port: int) -> Site:
    """examples/mill.yaml pointed at the bench's server (its own unit ids, 1-16)."""
    site = load_site(ROOT / "examples" / "mill.yaml")
    ports = {p.machine.link.port: port for p in site.points("mill-a")
             if p.machine.link is not None and p.machine.link.protocol == "modbus"}
    return rebind(site, ports, host="127.0.0.1")


async def collect(port: int, seconds: float, per_point: bool, example: bool = False) -> tuple[float, float, int]:
    site, mill = (example_site(port), "mill-a") if example else (dense_site(port), "b")
    pts = [p for p in site.points(mill) if p.point.modbus is not None and p.machine.link is not None
           and p.machine.link.protocol == "modbus"]
    by_m: dict[str, list] = {}
    for p in pts:
        by_m.setdefault(p.machine.id, []).append(p)
    conns = [ModbusConnector(v[0].machine) for v in by_m.values()]
    n = 0

    async def loop(conn: ModbusConnector, points: list) -> None:
        nonlocal n
        singles = [[p] for p in points]
        while time.perf_counter() < end:
            if per_point:
                for s in singles:
                    n += len(await conn.read(s))
            else:
                n += len(await conn.read(points))

    for c, v in zip(conns, by_m.values(), strict=True):   # warm up: connect and plan
        await c.read(v)
    c0, w0 = time.process_time(), time.perf_counter()
    end = w0 + seconds
    await asyncio.gather(*(loop(c, v) for c, v in zip(conns, by_m.values(), strict=True)))
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    for c in conns:
        await c.__aexit__(None, None, None)
    return n / cpu, n / wall, sum(c.requests for c in conns)


def example_mill_requests() -> tuple[int, int]:
    site = load_site(ROOT / "examples" / "mill.yaml")
    per: dict[str, list[PlanItem]] = {}
    for p in site.points("mill-a"):
        if p.point.modbus is not None and p.machine.link is not None and p.machine.link.protocol == "modbus":
            per.setdefault(p.machine.id, []).append(PlanItem(p.point.modbus, p.point.dtype))
    return sum(len(plan(v)) for v in per.values()), sum(len(v) for v in per.values())


def _append_rate(path: Path, data: list[Batch]) -> float:
    with EdgeBuffer(path) as buf:
        t = time.perf_counter()
        for b in data:
            buf.append(b)  # returns after the fsync'd commit
        return sum(len(b) for b in data) / (time.perf_counter() - t)


def buffer_rates(keys_all: np.ndarray, batches: int = 60, rows: int = 20_200) -> dict[str, float]:
    """Append rows/s in the agent's shape and the old bench shape; read-back rows/s (the old replay figure)."""
    rng = np.random.default_rng(0)
    now = time.time_ns()
    with tempfile.TemporaryDirectory() as d:
        keys = np.tile(np.arange(404, dtype=np.int64) * 7919, rows // 404)
        bench = [Batch.of(keys, np.arange(len(keys)) + i, rng.random(len(keys))) for i in range(batches)]
        bench_rate = _append_rate(Path(d) / "a.sqlite", bench)
        # The agent: a flush every 0.25 s of 5,000 points polled at 1 s = 1,250 rows, one per point.
        per = len(keys_all) // 4
        agent = [Batch.of(keys_all[(i % 4) * per:(i % 4 + 1) * per], np.full(per, now + i * 250_000_000),
                          rng.random(per)) for i in range(4 * batches)]
        agent_rate = _append_rate(Path(d) / "b.sqlite", agent)
        with EdgeBuffer(Path(d) / "b.sqlite") as buf:
            t = time.perf_counter()
            n = 0
            for s in buf.seqs(limit=len(agent)):
                sb = buf.get(s)
                assert sb is not None
                n += len(sb.batch)
            replay = n / (time.perf_counter() - t)
    return {"agent": agent_rate, "bench": bench_rate, "read": replay}


def backlog(path: Path, keys_all: np.ndarray, seconds: int) -> int:
    """``seconds`` of the large mill's rows (a flush every 0.25 s) committed as an outage would leave them."""
    per = len(keys_all) // 4
    start = time.time_ns() - seconds * 1_000_000_000
    rng = np.random.default_rng(1)
    with EdgeBuffer(path) as buf:
        for i in range(4 * seconds):
            buf.append(Batch.of(keys_all[(i % 4) * per:(i % 4 + 1) * per], np.full(per, start + i * 250_000_000),
                                rng.random(per)), priority=Priority.NORMAL)
    return 4 * seconds * per


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


RSS = ("from pathlib import Path\n"
       "print(int(next(l for l in Path('/proc/self/status').read_text().splitlines()"
       " if l.startswith('VmRSS')).split()[1]) / 1024)")


def baseline_rss() -> dict[str, float]:
    """RSS (MB) of a bare interpreter and of one that imported numpy: the floor under any edge process."""
    bare = subprocess.run([sys.executable, "-c", RSS], capture_output=True, text=True, check=True).stdout
    numpy = subprocess.run([sys.executable, "-c", "import numpy\n" + RSS], capture_output=True, text=True,
                           check=True).stdout
    return {"bare_python": round(float(bare), 1), "python_numpy": round(float(numpy), 1)}


def edge_process(snapshot_every_s: float) -> dict[str, Any]:
    """The large mill without and with snapshots arriving, the RSS baselines, the low load (the edge part)."""
    base = baseline_rss()
    print("baseline rss:", base, load(), flush=True)
    large = asyncio.run(run_mill(units=10, per_unit=500, vib_machines=10, warm_s=10, measure_s=30))
    large["load_average"] = load()
    print("large mill:", large, flush=True)
    snaps = asyncio.run(run_mill(units=10, per_unit=500, vib_machines=10, warm_s=20, measure_s=30,
                                 snapshot_every_s=snapshot_every_s))
    snaps["load_average"] = load()
    print("large mill, snapshots arriving:", snaps, flush=True)
    low: dict[str, Any] = {}
    for on in (False, True):
        r = asyncio.run(run_mill(units=1, per_unit=100, vib_machines=0, warm_s=4, measure_s=20, on_arrival=on))
        low["on_arrival" if on else "baseline_flush_every_flush_s"] = {
            k: r[k] for k in ("send_latency_p50_s", "send_latency_p95_s", "latency_rows", "cpu_pct_of_one_core",
                              "rss_mb")} | {"load_average": load()}
        print("low load:", on, r, flush=True)

    def targets(r: dict[str, Any]) -> dict[str, Any]:
        cpu, rss = float(r["cpu_pct_of_one_core"]), float(r["rss_mb"])
        return {"cpu_le_10pct": cpu <= 10, "rss_le_100mb": rss <= 100,
                "rss_over_bare_python_mb": round(rss - base["bare_python"], 1),
                "rss_over_python_numpy_mb": round(rss - base["python_numpy"], 1)}

    return {"baseline_rss_mb": base, "large_mill": large, "large_mill_targets": targets(large),
            "large_mill_snapshots": snaps, "large_mill_snapshots_targets": targets(snaps),
            "snapshots_vs_none_cpu": round(snaps["cpu_pct_of_one_core"] / max(large["cpu_pct_of_one_core"], 0.1), 2),
            "low_load": low, "low_load_p50_le_0_1s": low["on_arrival"]["send_latency_p50_s"] <= 0.1,
            "low_load_on_arrival_vs_baseline_p50": round(
                low["on_arrival"]["send_latency_p50_s"]
                / max(low["baseline_flush_every_flush_s"]["send_latency_p50_s"], 1e-3), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("all", "edge_process"), default="all",
                    help="edge_process: the large mill (with and without snapshots) and the low load only")
    ap.add_argument("--snapshot-every-s", type=float, default=30.0,
                    help="seconds between snapshots of each of the 50 channels in large_mill_snapshots")
    args = ap.parse_args()
    if args.only == "edge_process":
        res = edge_process(args.snapshot_every_s)
        print(json.dumps(res | {"load_average_end": load()}))
        return
    srv = subprocess.Popen([sys.executable, "-c", SERVER, str(SERVER_UNITS)], stdout=subprocess.PIPE, text=True,
                           env=dict(os.environ))
    try:
        assert srv.stdout is not None
        port = int(srv.stdout.readline())
        per_cpu, per_wall, _ = asyncio.run(collect(port, 6.0, per_point=False))
        base_cpu, base_wall, _ = asyncio.run(collect(port, 4.0, per_point=True))
        ex_cpu, ex_wall, _ = asyncio.run(collect(port, 4.0, per_point=False, example=True))
    finally:
        srv.kill()
        srv.wait()
    print("modbus:", round(per_cpu), round(base_cpu), round(ex_cpu), "points/CPU-s;", load(), flush=True)
    coalesced, points = example_mill_requests()
    mill = "eb-drain"
    site = parse_site(mill_doc(mill, 1, 10, 500, 0))
    keys_all = np.asarray([p.key for p in site.points(mill)], dtype=np.int64)
    buf = buffer_rates(keys_all)
    print("buffer:", {k: round(v) for k, v in buf.items()}, load(), flush=True)
    with tempfile.TemporaryDirectory() as d:
        rows = backlog(Path(d) / "buffer.sqlite", keys_all, 60)
        dr = asyncio.run(drain(Path(d) / "buffer.sqlite", site, mill))
    assert dr["rows"] == rows
    print("drain:", dr, load(), flush=True)
    edge = edge_process(args.snapshot_every_s)
    print(json.dumps({
        "modbus_points_per_s_per_core": round(per_cpu), "modbus_points_per_s_wall": round(per_wall),
        "modbus_per_point_points_per_s_per_core": round(base_cpu),
        "modbus_per_point_points_per_s_wall": round(base_wall),
        "modbus_speedup": round(per_cpu / base_cpu, 1),
        "example_mill_requests_coalesced": coalesced, "example_mill_requests_per_point": points,
        "example_mill_request_ratio": round(points / coalesced, 1),
        "example_mill_modbus_points_per_s_per_core": round(ex_cpu),
        "example_mill_modbus_points_per_s_wall": round(ex_wall),
        "example_mill_vs_contiguous": round(ex_cpu / per_cpu, 2),
        "buffer_append_agent_shape_points_per_s": round(buf["agent"]),
        "buffer_append_bench_shape_points_per_s": round(buf["bench"]),
        "buffer_append_agent_vs_bench_shape": round(buf["agent"] / buf["bench"], 2),
        "buffer_commit": "sqlite WAL synchronous=FULL, one transaction per batch",
        "drain_rows": dr["rows"], "drain_points_per_s": dr["rows_per_s"],
        "drain_points_per_edge_cpu_s": dr["rows_per_cpu_s"],
        "buffer_read_only_points_per_s": round(buf["read"]),
        "drain_vs_read_only": round(dr["rows_per_s"] / buf["read"], 3),
    } | edge | {"load_average_end": load()}))


if __name__ == "__main__":
    main()
