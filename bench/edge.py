"""Edge agent benchmark: Modbus collection rate, request coalescing, durable buffer rates.

Prints one JSON line:
  modbus_points_per_s_per_core  points decoded per CPU-second of this (edge) process, steady state,
                                coalesced block reads against a pymodbus server in another process
  modbus_per_point_points_per_s the same with one request per point (the common gateway's way)
  modbus_speedup                ratio of the two (same run, same server)
  example_mill_requests_*       requests per full poll cycle of examples/mill.yaml, coalesced vs per point
  buffer_append_points_per_s    rows/s appended, every batch committed with synchronous=FULL (fsync)
  buffer_replay_points_per_s    rows/s read back in seq order for replay
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from spinline.connectors.modbus.connector import ModbusConnector
from spinline.connectors.modbus.planner import PlanItem, plan
from spinline.core.batch import Batch
from spinline.core.site import load_site, parse_site
from spinline.edge.buffer import EdgeBuffer

ROOT = Path(__file__).resolve().parents[1]
UNITS, POINTS = 4, 400

SERVER = """
import asyncio, sys
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
async def main():
    devs = [SimDevice(id=u, simdata=[SimData(0, count=1000, values=[0x3F80, 0] * 500, datatype=DataType.REGISTERS)])
            for u in range(1, %d + 1)]
    srv = ModbusTcpServer(devs, address=("127.0.0.1", 0))
    await srv.serve_forever(background=True)
    print(srv.transport.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
""".replace("%d", str(UNITS))


def dense_site(port: int):
    pts = [{"name": f"p{i}", "unit": "kW", "modbus": {"register": 2 * i}} for i in range(POINTS)]
    machines = [{"id": f"d{u}", "type": "energy_meter", "points": pts,
                 "link": {"protocol": "modbus", "port": port, "unit_id": u, "timeout_s": 2}}
                for u in range(1, UNITS + 1)]
    line = {"id": "l", "machines": machines}
    return parse_site({"mills": [{"id": "b", "workshops": [{"id": "w", "lines": [line]}]}]})


async def collect(port: int, seconds: float, per_point: bool) -> tuple[float, float, int]:
    site = dense_site(port)
    pts = site.points("b")
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


def buffer_rates(batches: int = 60, rows: int = 20_200) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        buf = EdgeBuffer(Path(d) / "b.sqlite").open()
        keys = np.tile(np.arange(404, dtype=np.int64) * 7919, rows // 404)
        rng = np.random.default_rng(0)
        data = [Batch.of(keys, np.arange(len(keys)) + i, rng.random(len(keys))) for i in range(batches)]
        t = time.perf_counter()
        for b in data:
            buf.append(b)  # returns after the fsync'd commit
        append = batches * len(keys) / (time.perf_counter() - t)
        t = time.perf_counter()
        n = 0
        for s in buf.seqs(limit=batches):
            sb = buf.get(s)
            assert sb is not None
            n += len(sb.batch)
        replay = n / (time.perf_counter() - t)
        buf.close()
    return append, replay


def main() -> None:
    srv = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert srv.stdout is not None
        port = int(srv.stdout.readline())
        per_cpu, per_wall, _ = asyncio.run(collect(port, 6.0, per_point=False))
        base_cpu, base_wall, _ = asyncio.run(collect(port, 4.0, per_point=True))
    finally:
        srv.kill()
        srv.wait()
    coalesced, points = example_mill_requests()
    append, replay = buffer_rates()
    print(json.dumps({
        "modbus_points_per_s_per_core": round(per_cpu), "modbus_points_per_s_wall": round(per_wall),
        "modbus_per_point_points_per_s_per_core": round(base_cpu),
        "modbus_per_point_points_per_s_wall": round(base_wall),
        "modbus_speedup": round(per_cpu / base_cpu, 1),
        "example_mill_requests_coalesced": coalesced, "example_mill_requests_per_point": points,
        "example_mill_request_ratio": round(points / coalesced, 1),
        "buffer_append_points_per_s": round(append), "buffer_replay_points_per_s": round(replay),
        "buffer_commit": "sqlite WAL synchronous=FULL, one transaction per batch",
    }))


if __name__ == "__main__":
    main()
