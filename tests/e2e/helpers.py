"""Pieces the end-to-end tests share (not a test module): sites generated from the example
templates, a private broker, a cuttable TCP relay for the uplink, the edge as a real subprocess,
and readers of the edge's buffer file.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from spinline.core.batch import Batch

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mill.yaml"
MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- sites ------------------------------------------------------------------------------------------

def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def ring_mill_site(mill_id: str, n_frames: int, *, interval_s: float = 1.0) -> dict[str, Any]:
    """A mill of ``n_frames`` ring frames (Modbus port 5020, units 1..n) and two energy meters
    (port 5021), every point polled each ``interval_s`` with deadband 0, from examples/mill.yaml."""
    ex = example()
    templates = {name: copy.deepcopy(ex["templates"][name]) for name in ("ring_frame", "energy_meter")}
    for t in templates.values():
        for p in t["points"]:
            p["interval_s"] = interval_s
            p["deadband"] = 0
    if not 1 <= n_frames <= 247:
        raise ValueError("one Modbus port serves unit ids 1..247")
    frames = [{"id": f"rf{i:03d}", "type": "ring_frame", "template": "ring_frame",
               "spindles": (1824, 1632, 1440, 1200, 1008)[i % 5], "rated_kw": 80,
               "link": {"protocol": "modbus", "host": "127.0.0.1", "port": 5020, "unit_id": i}}
              for i in range(1, n_frames + 1)]
    half = n_frames // 2
    meters = [
        {"id": "em-main", "type": "energy_meter", "template": "energy_meter", "feeds": ["em-ring"],
         "link": {"protocol": "modbus", "host": "127.0.0.1", "port": 5021, "unit_id": 1}},
        {"id": "em-ring", "type": "energy_meter", "template": "energy_meter", "feeds": [f["id"] for f in frames],
         "link": {"protocol": "modbus", "host": "127.0.0.1", "port": 5021, "unit_id": 2}},
    ]
    return {"version": 1, "zone": {"id": "e2e"}, "templates": templates, "mills": [{
        "id": mill_id, "sim": {"seed": 7}, "workshops": [
            {"id": "spinning", "lines": [
                {"id": "ring-a", "count_ne": 32, "machines": frames[:half]},
                {"id": "ring-b", "count_ne": 40, "machines": frames[half:]}]},
            {"id": "utilities", "lines": [{"id": "power", "machines": meters}]}]}]}


def write_site(doc: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --- a private broker and a cuttable uplink ----------------------------------------------------------

class Broker:
    """A private Mosquitto on a fixed free port; ``stop`` then ``start`` brings it back on the same port.

    With ``persist_dir`` it keeps its sessions and queued QoS 1 messages across a restart (Mosquitto's
    ``persistence``, written at a clean stop), as a production broker is configured."""

    def __init__(self, persist_dir: Path | None = None) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.persist_dir = persist_dir

    def _args(self) -> list[str]:
        if self.persist_dir is None:
            return [MOSQUITTO, "-p", str(self.port)]
        self.persist_dir.mkdir(parents=True, exist_ok=True)
        conf = self.persist_dir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                        f"persistence_location {self.persist_dir}/\nautosave_interval 1\n"
                        # as root Mosquitto would switch to its own user, which cannot write a test's tmp dir
                        + ("user root\n" if os.geteuid() == 0 else ""))
        return [MOSQUITTO, "-c", str(conf)]

    def start(self) -> None:
        self.proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


class Relay:
    """A TCP relay edge -> broker. ``cut()`` drops every connection and refuses new ones (the mill's
    uplink goes down while the broker and the cloud stay up); ``restore()`` listens again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.cuts = 0

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()
        self.cuts += 1

    async def close(self) -> None:
        await self.cut()
        for t in list(self._tasks):
            t.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._conns.update((writer, uw))

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.transport.abort()

        tasks = [asyncio.create_task(pipe(reader, uw)), asyncio.create_task(pipe(ur, writer))]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)
        self._conns.discard(writer)
        self._conns.discard(uw)


def signal_and_reap(proc: subprocess.Popen[bytes], sig: int, grace_s: float = 15.0) -> None:
    """Send ``sig`` and wait for the process to end (SIGKILL after ``grace_s``): no zombie, no stray child."""
    proc.send_signal(sig)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --- the edge as a real process -----------------------------------------------------------------------

@dataclass
class EdgeProcess:
    site: Path
    data_dir: Path
    cloud_url: str
    ports: dict[int, int]
    secret: bytes
    edge_id: str = "e1"
    #: More ``spinline edge`` options (``--device-mqtt``, ``--commissioning-n`` ...).
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log: list[str] = field(default_factory=list)

    @property
    def buffer(self) -> Path:
        return self.data_dir / "buffer.sqlite"

    def spawn(self) -> None:
        env = dict(os.environ, SPINLINE_EDGE_SECRET=self.secret.decode())
        ports = ",".join(f"{a}:{b}" for a, b in self.ports.items())
        self.data_dir.mkdir(parents=True, exist_ok=True)
        err = open(self.data_dir / f"edge-{len(self.log)}.log", "wb")  # noqa: SIM115 - owned by the child
        self.log.append(err.name)
        self.proc = subprocess.Popen([sys.executable, "-m", "spinline.edge", str(self.site), "--cloud", self.cloud_url,
                                      "--data-dir", str(self.data_dir), "--edge-id", self.edge_id, "--ports", ports,
                                      "--log-level", "WARNING", *self.extra],
                                     env=env, stdout=subprocess.DEVNULL, stderr=err)
        err.close()

    async def started(self, timeout: float = 30.0) -> int:
        """Wait until this process wrote its status.json; its ``started_ns``."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status()
            if st is not None and st.get("pid") == self.proc.pid:
                return int(st["started_ns"])
            if self.proc.poll() is not None:
                raise AssertionError(f"edge exited with {self.proc.returncode}: {self.stderr()}")
            await asyncio.sleep(0.1)
        raise AssertionError(f"edge did not start within {timeout} s: {self.stderr()}")

    def status(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.data_dir / "status.json").read_text()))
        except (OSError, ValueError):
            return None

    def stderr(self) -> str:
        return "".join(Path(p).read_text(errors="replace")[-3000:] for p in self.log[-1:])

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Signal the process and reap it; the wall time of the signal (ns)."""
        assert self.proc is not None
        t = time.time_ns()
        signal_and_reap(self.proc, sig)
        self.proc = None
        return t

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


# --- reading the edge's buffer file (the edge's own record of what it committed) -----------------------

def committed_counts(db: Path) -> dict[int, int]:
    """Rows committed per point so far: per-point seqs run 0..n-1 (``point_seq.next`` = n)."""
    con = sqlite3.connect(db)
    try:
        return {int(p): int(n) for p, n in con.execute("SELECT point, next FROM point_seq")}
    finally:
        con.close()


def pending(db: Path) -> tuple[Batch, list[int]]:
    """Every row still in the buffer (not yet acked by the cloud), with per-point seqs, and batch seqs."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT seq, point, ts, value, quality, pseq FROM batches ORDER BY seq").fetchall()
    finally:
        con.close()
    if not rows:
        return Batch.empty(with_seq=True), []
    return Batch(np.concatenate([np.frombuffer(r[1], np.int64) for r in rows]),
                 np.concatenate([np.frombuffer(r[2], np.int64) for r in rows]),
                 np.concatenate([np.frombuffer(r[3], np.float64) for r in rows]),
                 np.concatenate([np.frombuffer(r[4], np.uint8) for r in rows]),
                 np.concatenate([np.frombuffer(r[5], np.int64) for r in rows])), [int(r[0]) for r in rows]


# --- the cloud app in a thread of its own ------------------------------------------------------------

class ThreadedServer:
    """``create_app``'s app under uvicorn on its own thread and event loop, on a free loopback port.

    For tests whose own loop makes blocking calls (sync httpx, registry work) that an in-loop server
    would wait on. ``start`` returns once uvicorn serves; ``stop`` asks it to exit and joins.
    """

    def __init__(self, app: Any) -> None:
        import threading

        import uvicorn

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self._sock])),
                                        daemon=True)

    def start(self, timeout_s: float = 30.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            assert time.monotonic() < deadline and self._thread.is_alive(), "the cloud did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(15)
