"""A whole edge process on a LARGE mill: its CPU %, RSS and send latency (issue 12, item 12).

Used by bench/edge.py. The edge (``EdgeAgent``, default settings) runs alone in a child process, so
its own CPU time / wall time and ``/proc/self/status`` RSS are its figures and nothing else's: the
Modbus devices (a pymodbus server, another process) and the cloud (``IngestWorker`` +
``IngestService`` on an embedded store, in the bench process, acking every batch over the machine's
Mosquitto) are elsewhere. The mill: ``units`` Modbus devices x ``per_unit`` float32 points polled
every 1 s (deadband 0: every sample is a row, the worst case), and 5 vibration channels on each of
``vib_machines`` of them (their scoring stage is built and loaded). Without ``snapshot_every_s`` no
snapshot arrives during the run (the sensors' ``every_s`` is 300 s). With it, a publisher (its own
process) sends every channel a 1 s, 25.6 kHz snapshot: 10 each during the warm-up (the bench's
``commissioning_n`` is 8, so every asset's baseline is frozen before the measurement starts), then
one every ``snapshot_every_s`` per channel, staggered across the channels: the measurement holds
featurisation (FFT, envelope) and scoring of frozen models at that rate.

Send latency is measured at the cloud side: the bench subscribes to the edge's batch topic, decodes
each payload and takes, per row, arrival time minus the row's sample time (the Modbus read), for
rows arriving after the warm-up. ``loop_lag_*`` is how late the edge's event loop wakes a 50 ms
sleep during the measurement: a send latency tail with a small loop lag comes from outside the edge's
loop (its buffer thread's fsyncs, the broker, the machine's other processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import yaml

from spinline.cloud.ingest.mqtt_worker import IngestWorker
from spinline.cloud.ingest.service import IngestService
from spinline.cloud.storage.catalog import point_infos
from spinline.cloud.storage.embedded import EmbeddedStore
from spinline.core import wire
from spinline.core.site import all_points, parse_site

SERVER = """
import asyncio, sys
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
async def main():
    devs = [SimDevice(id=u, simdata=[SimData(0, count=1000, values=[0x3F80, 0] * 500, datatype=DataType.REGISTERS)])
            for u in range(1, int(sys.argv[1]) + 1)]
    srv = ModbusTcpServer(devs, address=("127.0.0.1", 0))
    await srv.serve_forever(background=True)
    print(srv.transport.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

EDGE = """
import asyncio, json, logging, sys, time
from pathlib import Path
from spinline.core.site import load_site
from spinline.edge.agent import EdgeAgent
from spinline.edge.settings import EdgeSettings
from spinline.edge.models import ScoringConfig
site_file, mill, url, data_dir, secret, warm, measure, flush_s, on_arrival, commissioning_n = sys.argv[1:11]
logging.basicConfig(level=logging.ERROR)
def rss():
    f = dict(l.split(":", 1) for l in Path("/proc/self/status").read_text().splitlines() if ":" in l)
    return int(f["VmRSS"].split()[0]) / 1024, int(f["VmHWM"].split()[0]) / 1024
async def main():
    t_import = time.process_time()
    rss_import = rss()[0]
    st = EdgeSettings(edge_id="bench-edge", secret=secret.encode(), data_dir=Path(data_dir), cloud_url=url,
                      flush_s=float(flush_s), flush_on_arrival=on_arrival == "1",
                      scoring=ScoringConfig(commissioning_n=int(commissioning_n)) if int(commissioning_n) else None)
    agent = EdgeAgent(load_site(site_file), mill, st)
    seen = [0]
    stage = agent.scoring_stage
    if stage is not None:   # count the snapshots that reach the scoring stage (bench instrumentation only)
        submit = stage.submit
        def counted(f):
            seen[0] += 1
            submit(f)
        stage.submit = counted
    def frozen():
        return sum(a.state == "frozen" for a in agent.scoring.assets.values()) if agent.scoring else 0
    lags = []
    async def lag():   # how late the loop wakes a 50 ms sleep (the edge's own stalls); 20 wakeups/s, ~0.2 % CPU
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.05)
            lags.append(time.monotonic() - t - 0.05)
    async with agent:
        print("up", flush=True)
        await asyncio.sleep(float(warm))
        c0, w0, n0, s0, f0 = time.process_time(), time.monotonic(), agent.collector.points_stored, seen[0], frozen()
        probe = asyncio.create_task(lag())
        await asyncio.sleep(float(measure))
        probe.cancel()
        cpu, wall, n = time.process_time() - c0, time.monotonic() - w0, agent.collector.points_stored - n0
        now, hwm = rss()
        s = await agent.status()
        snaps, f1 = seen[0] - s0, frozen()
    mods = sorted(m for m in ("numpy", "scipy", "sklearn", "onnxruntime", "asyncua", "pymodbus", "duckdb",
                              "pandas", "pyarrow", "httpx", "fastapi") if m in sys.modules)
    print(json.dumps({"cpu_pct_of_one_core": round(100 * cpu / wall, 1), "rows_per_s": round(n / wall),
                      "rss_mb": round(now, 1), "rss_peak_mb": round(hwm, 1),
                      "rss_after_imports_mb": round(rss_import, 1),
                      "acked": s["uplink"]["acked"], "buffer_rows_left": s["buffer"]["rows"],
                      "modules_loaded": mods, "cpu_s_imports": round(t_import, 2),
                      "snapshots_scored_per_s": round(snaps / wall, 2), "assets_frozen_at_start": f0,
                      "assets_frozen_at_end": f1, "evidence_queued": (s.get("evidence") or {}).get("queued"),
                      "open_alarms": sum(len(m["open_alarms"]) for m in (s.get("models") or {}).values()),
                      "loop_lag_p99_ms": round(1000 * sorted(lags)[int(0.99 * len(lags))], 1) if lags else None,
                      "loop_lag_max_ms": round(1000 * max(lags), 1) if lags else None}),
          flush=True)
asyncio.run(main())
"""

DRAIN = """
import asyncio, json, sys, time
from pathlib import Path
from spinline.edge.buffer import EdgeBuffer
from spinline.edge.buffer_io import AsyncBuffer
from spinline.edge.forwarder import Forwarder
from spinline.edge.uplink.factory import make_uplink
buf_file, mill, url, secret = sys.argv[1:5]
async def main():
    buf = AsyncBuffer(EdgeBuffer(buf_file))
    await buf.open()
    rows = (await buf.stats()).rows
    fw = Forwarder(buf, edge="bench-edge", mill=mill, secret=secret.encode(), backlog_rows_per_s=1e9)
    up = make_uplink(url, edge="bench-edge", mill=mill, secret=secret.encode(), trust=fw.trust)
    async with up:
        c0, w0 = time.process_time(), time.monotonic()
        task = asyncio.create_task(fw.run_session(up))
        while (await buf.stats()).rows:
            await asyncio.sleep(0.02)
        cpu, wall = time.process_time() - c0, time.monotonic() - w0
        task.cancel()
    await buf.close()
    print(json.dumps({"rows": rows, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                      "rows_per_s": round(rows / wall), "rows_per_cpu_s": round(rows / cpu)}), flush=True)
asyncio.run(main())
"""


def mill_doc(mill: str, port: int, units: int, per_unit: int, vib_machines: int,
             vib_every_s: float = 300) -> dict[str, Any]:
    """``units`` Modbus devices of ``per_unit`` float32 points at 1 s; 5 vibration channels on the first few."""
    pts = [{"name": f"p{i}", "unit": "kW", "interval_s": 1, "modbus": {"register": 2 * i}} for i in range(per_unit)]
    machines = []
    for u in range(1, units + 1):
        m: dict[str, Any] = {"id": f"d{u:02d}", "type": "ring_frame", "spindles": 1824, "points": pts,
                             "link": {"protocol": "modbus", "host": "127.0.0.1", "port": port, "unit_id": u,
                                      "timeout_s": 2}}
        if u <= vib_machines:
            m["vibration"] = {"fs_hz": 25600, "snapshot_s": 1.0, "every_s": vib_every_s,
                              "channels": [{"name": f"ch{c}", "shaft_rpm": 1480} for c in range(5)]}
        machines.append(m)
    return {"mills": [{"id": mill, "workshops": [{"id": "w", "lines": [{"id": "l", "machines": machines}]}]}]}


def _cloud(tmp: str, site: Any, mill: str, secret: str, broker: tuple[str, int]) -> tuple[EmbeddedStore, IngestWorker]:
    """The cloud's ingest over MQTT on an embedded store: it acks every batch of ``bench-edge``."""
    store = EmbeddedStore(Path(tmp) / "cloud.duckdb")
    store.migrate()
    store.register_points(point_infos(site, mill))
    keys = frozenset(p.key for p in all_points(site, mill))
    service = IngestService(store, {"bench-edge": secret.encode()}.get, {"bench-edge": mill}.get,
                            lambda m: keys if m == mill else frozenset())
    return store, IngestWorker(service, broker[0], broker[1], group=f"eb-{uuid.uuid4().hex[:6]}")


async def drain(buf_file: Path, site: Any, mill: str, broker: tuple[str, int] = ("127.0.0.1", 1883)) -> dict[str, Any]:
    """A backlog in ``buf_file`` drained by a forwarder in its own process (encode, sign, publish, ack, delete)."""
    secret = "bench-" + uuid.uuid4().hex
    with tempfile.TemporaryDirectory() as tmp:
        store, worker = _cloud(tmp, site, mill, secret, broker)
        await asyncio.to_thread(worker.start)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", DRAIN, str(buf_file), mill, f"mqtt://{broker[0]}:{broker[1]}", secret,
                stdout=asyncio.subprocess.PIPE, env=dict(os.environ))
            out, _ = await proc.communicate()
        finally:
            await asyncio.to_thread(worker.stop)
            store.close()
    res: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return res


WATCH = """
import asyncio, json, sys, time
import aiomqtt, numpy as np
from spinline.core import wire
host, port, topic, seconds, skip = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
async def main():
    lat = []
    start = time.time_ns()
    async with aiomqtt.Client(host, port) as c:
        await c.subscribe(topic, qos=1)
        print("ready", flush=True)
        async def read():
            async for msg in c.messages:
                now = time.time_ns()
                env = wire.decode(bytes(msg.payload))
                if env.kind == "live" and now - start >= skip * 1e9:   # the warm-up is not measured
                    lat.append((now - env.batch.ts_ns) / 1e9)
        try:   # ends at its deadline even when the edge stopped sending
            await asyncio.wait_for(read(), seconds)
        except TimeoutError:
            pass
    rows = np.concatenate(lat) if lat else np.zeros(0)
    print(json.dumps({"p50": float(np.median(rows)), "p95": float(np.percentile(rows, 95)), "n": len(rows)}))
asyncio.run(main())
"""


PUBLISH = """
import asyncio, sys, time
import aiomqtt, numpy as np
from spinline.sim.mqtt_publisher import vibration_payload, vibration_topic
host, port, mill, machines, channels, every, warm_n, warm_s, seconds = sys.argv[1:10]
port, machines, channels, every, warm_n, warm_s, seconds = (int(port), int(machines), int(channels), float(every),
                                                            int(warm_n), float(warm_s), float(seconds))
fs, rpm = 25600.0, 1480.0
t = np.arange(int(fs)) / fs
rng = np.random.default_rng(7)
chans = [(f"d{m:02d}", f"ch{c}") for m in range(1, machines + 1) for c in range(channels)]
def snapshot():   # a healthy motor (ISO 20816 zone A, ~1 mm/s rms): 1x, 2x shaft orders and noise, in g
    f = rpm / 60
    return (0.02 * np.sin(2 * np.pi * f * t) + 0.005 * np.sin(4 * np.pi * f * t)
            + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
async def main():
    start = time.monotonic()
    # warm-up: warm_n snapshots per channel, spaced over 0.6 * warm_s; then one every `every` s per channel
    step = 0.6 * warm_s / warm_n
    plan = sorted([(i * step + k * step / len(chans), m, c) for i in range(warm_n) for k, (m, c) in enumerate(chans)]
                  + [(warm_s + k * every / len(chans) + j * every, m, c) for k, (m, c) in enumerate(chans)
                     for j in range(int(seconds / every) + 1)])
    async with aiomqtt.Client(host, port) as cl:
        print("ready", flush=True)
        for at, m, c in plan:
            if at > seconds:
                break
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            await cl.publish(vibration_topic(mill, m, c), vibration_payload(time.time_ns() // 1_000_000, snapshot(),
                                                                            fs, rpm), qos=1)
asyncio.run(main())
"""

#: Snapshots per channel in the warm-up of a run with snapshots (= the bench's ``commissioning_n``).
WARM_SNAPSHOTS = 8


async def run_mill(*, units: int, per_unit: int, vib_machines: int, warm_s: float, measure_s: float,
                   flush_s: float = 0.25, on_arrival: bool = True, snapshot_every_s: float | None = None,
                   broker: tuple[str, int] = ("127.0.0.1", 1883)) -> dict[str, Any]:
    """One edge process on the synthetic mill; its own figures plus the cloud-side send latency."""
    host, bport = broker
    srv = subprocess.Popen([sys.executable, "-c", SERVER, str(units)], stdout=subprocess.PIPE, text=True)
    mill = f"eb-{uuid.uuid4().hex[:8]}"
    secret = "bench-" + uuid.uuid4().hex
    try:
        assert srv.stdout is not None
        port = int(srv.stdout.readline())
        doc = mill_doc(mill, port, units, per_unit, vib_machines, snapshot_every_s or 300)
        site = parse_site(doc)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "site.yaml").write_text(yaml.safe_dump(doc))
            store, worker = _cloud(tmp, site, mill, secret, broker)
            await asyncio.to_thread(worker.start)
            try:
                # The watcher has a process of its own: the cloud's ingest in this one must not delay it.
                watch = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", WATCH, host, str(bport),
                    wire.TOPIC_BATCH.format(mill=mill, edge="bench-edge"), str(warm_s + measure_s), str(warm_s),
                    stdout=asyncio.subprocess.PIPE)
                assert watch.stdout is not None
                await watch.stdout.readline()
                edge = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", EDGE, str(Path(tmp) / "site.yaml"), mill, f"mqtt://{host}:{bport}",
                    str(Path(tmp) / "edge"), secret, str(warm_s), str(measure_s), str(flush_s),
                    "1" if on_arrival else "0", str(WARM_SNAPSHOTS if snapshot_every_s and vib_machines else 0),
                    stdout=asyncio.subprocess.PIPE, env=dict(os.environ))
                assert edge.stdout is not None
                await edge.stdout.readline()   # "up": the agent runs; its warm-up has begun
                pub = None
                if snapshot_every_s is not None and vib_machines:
                    pub = await asyncio.create_subprocess_exec(
                        sys.executable, "-c", PUBLISH, host, str(bport), mill, str(vib_machines), "5",
                        str(snapshot_every_s), str(WARM_SNAPSHOTS + 2), str(warm_s), str(warm_s + measure_s),
                        stdout=asyncio.subprocess.PIPE)
                    assert pub.stdout is not None
                    if (await pub.stdout.readline()).strip() != b"ready":
                        raise RuntimeError("the snapshot publisher did not start")
                out, _ = await edge.communicate()
                if pub is not None:   # it may have sent its last snapshot already
                    with contextlib.suppress(ProcessLookupError):
                        pub.kill()
                    await pub.wait()
                try:
                    wout, _ = await asyncio.wait_for(watch.communicate(), 30)
                except TimeoutError:
                    watch.kill()
                    raise RuntimeError("the latency watcher did not end") from None
                if edge.returncode:
                    raise RuntimeError(f"the edge process failed (exit {edge.returncode})")
            finally:
                await asyncio.to_thread(worker.stop)
                store.close()
    finally:
        srv.kill()
        srv.wait()
    res: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    w = json.loads(wout.decode().strip().splitlines()[-1])
    res.update({"points": units * per_unit, "vibration_channels": 5 * vib_machines, "flush_s": flush_s,
                "flush_on_arrival": on_arrival, "snapshot_every_s": snapshot_every_s,
                "send_latency_p50_s": round(w["p50"], 3), "send_latency_p95_s": round(w["p95"], 3),
                "latency_rows": w["n"]})
    return res


if __name__ == "__main__":
    every = float(sys.argv[1]) if len(sys.argv) > 1 else None   # seconds between snapshots per channel
    print(json.dumps(asyncio.run(run_mill(units=10, per_unit=500, vib_machines=10, warm_s=10 if every is None else 20,
                                          measure_s=30, snapshot_every_s=every))))
