"""A real cloud process for the browser tests and ``bench/web.py`` (not a test module).

``Stack.start`` provisions users and edges in the stores, starts ``spinline cloud serve`` as a
subprocess on a free port (embedded DuckDB + SQLite in a temporary folder), and back-fills simulated
history through the real ingest path: ``spinline.sim.history`` batches, encoded and signed with each
mill's edge secret (``core.wire``), POSTed to ``/api/v1/ingest`` like an edge's HTTP uplink.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from spinline.cloud.app import build_cloud, open_stores
from spinline.cloud.auth.roles import Role
from spinline.cloud.settings import Settings
from spinline.core.batch import Batch
from spinline.core.site import load_site, point_key
from spinline.core.wire import Envelope, encode
from spinline.sim.mill import MillSim

ROOT = Path(__file__).resolve().parents[2]
ZONE = ROOT / "examples" / "zone.yaml"
PASSWORD = "spin-line-test-pw"
#: (user, role, mills): a zone operator, a mill-A manager, a mill-A maintenance engineer, a mill-B manager.
USERS: list[tuple[str, Role, list[str]]] = [
    ("zone", Role.ZONE_OPERATOR, []), ("alice", Role.MILL_MANAGER, ["mill-a"]),
    ("mario", Role.MAINTENANCE_ENGINEER, ["mill-a"]), ("bob", Role.MILL_MANAGER, ["mill-b"])]
FAST_ENV = {"SPINLINE_ARGON2_TIME_COST": "1", "SPINLINE_ARGON2_MEMORY_KIB": "1024", "SPINLINE_ARGON2_PARALLELISM": "1",
            "SPINLINE_STREAM_INTERVAL_S": "0.5", "SPINLINE_ROLLUP_REFRESH_S": "2", "SPINLINE_HEALTH_PIPELINE_S": "0",
            "SPINLINE_RETENTION_EVERY_S": "0", "SPINLINE_LOGIN_MAX_FAILURES": "50"}


class PortTaken(RuntimeError):
    """The chosen port answered, but not from our cloud process."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    folder: Path
    site: Path = ZONE
    url: str = ""
    secrets: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    seq: dict[str, int] = field(default_factory=dict)
    log: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        key = base64.urlsafe_b64encode(b"w" * 32).decode()
        return {**os.environ, **FAST_ENV, "SPINLINE_SECRET_KEY": key}

    def settings(self) -> Settings:
        return Settings.from_env(self.env, db=f"embedded:{self.folder / 'cloud'}", site=self.site)

    def provision(self, mills: list[str]) -> None:
        """Users and one edge per mill, written to the stores before the server opens them."""
        settings = self.settings()
        store, meta = open_stores(settings)
        try:
            cloud = build_cloud(settings, store, meta)
            known = {m.id for m in meta.mills()}
            for name, role, ms in USERS:
                if meta.user_by_name(name) is None and set(ms) <= known:
                    cloud.accounts.create_user(username=name, password=PASSWORD, role=role, mills=ms,
                                               full_name=name.capitalize())
            for m in mills:
                self.secrets[m] = cloud.edges.create(edge_id=f"edge-{m}", mill=m, created_by="test")[1]
        finally:
            store.close()
            meta.close()

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the cloud; a port taken by someone else between choosing and binding it is retried."""
        for attempt in range(3):
            try:
                self._start_once(timeout_s)
                return
            except PortTaken:
                self.stop()
                if attempt == 2:
                    raise

    def _start_once(self, timeout_s: float) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = self.folder / "cloud.log"
        out = self.log.open("wb")
        self.proc = subprocess.Popen(  # noqa: S603 (our own CLI)
            [str(Path(sys.executable).with_name("spinline")), "cloud", "serve",
             "--db", f"embedded:{self.folder / 'cloud'}", "--site", str(self.site), "--port", str(port),
             "--log-level", "warning"],
            env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the cloud exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    # ours, not another process that took the port: our process lives and knows our user
                    time.sleep(0.3)
                    r = httpx.post(self.url + "/api/v1/auth/login", json={"username": "zone", "password": PASSWORD},
                                   timeout=30)
                    if self.proc.poll() is not None or r.status_code != 200:
                        raise PortTaken(f"port {port}: {r.status_code}")
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the cloud did not start in {timeout_s}s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def backfill(self, mill: str, phases: list[tuple[float, float]], *, seed: int = 7) -> int:
        """Simulated history of ``mill`` ending now, through ``POST /api/v1/ingest``.

        ``phases`` are (days, step_s) from the oldest: e.g. [(28, 600), (2, 60)] gives a 30-day trend
        cheaply and minute data (what the per-minute KPIs assume) for the last two days. One simulator
        runs through all phases, so counters and states carry on across them.
        """
        site = load_site(self.site)
        end = time.time_ns() // 10**9 * 10**9 - 10**9
        start = end - int(sum(d for d, _ in phases) * 86400 * 1e9)
        sim = MillSim(site, mill, seed=seed, start_ns=start)
        rows = 0
        with httpx.Client(base_url=self.url, timeout=120) as c:
            for days, step_s in phases:
                left = int(round(days * 86400 / step_s))
                per = max(1, int(43200 // step_s))
                while left > 0:
                    n = min(per, left)
                    left -= n
                    rows += self.ingest(c, mill, sim.block_batch(n, step_s))
        return rows

    def ingest(self, c: httpx.Client, mill: str, b: Batch) -> int:
        """One batch as the mill's edge sends it: wire-encoded, HMAC-signed, POSTed to the ingest route."""
        seq = self.seq.get(mill, 0) + 1
        self.seq[mill] = seq
        payload = encode(Envelope(edge=f"edge-{mill}", mill=mill, seq=seq, batch=b, created_ns=time.time_ns()),
                         key=self.secrets[mill].encode())
        r = c.post("/api/v1/ingest", content=payload, headers={"Content-Type": "application/x-spinline-batch"})
        if r.status_code != 200 or r.json().get("status") not in ("stored", "duplicate"):
            raise RuntimeError(f"ingest refused: {r.status_code} {r.text[:500]}")
        return len(b)

    def send(self, mill: str, values: dict[str, float]) -> None:
        """Fresh values (tag -> value) of ``mill`` now, as its edge would send them."""
        tags = list(values)
        b = Batch.of([point_key(t) for t in tags], time.time_ns(), [values[t] for t in tags])
        with httpx.Client(base_url=self.url, timeout=30) as c:
            self.ingest(c, mill, b)

    def snapshot(self, mill: str, machine: str, channel: str, reason: str = "alarm") -> None:
        """A raw vibration snapshot of one channel now (the simulator's waveform), signed and posted as
        the mill's edge uploads it (``POST /api/v1/edge-snapshots``)."""
        from spinline.core import wire
        from spinline.edge.evidence import RawSnapshot, encode_snapshot

        now = time.time_ns()
        sim = MillSim(load_site(self.site), mill, seed=7, start_ns=now - 60 * 10**9)
        samples, fs, _ = sim.vibration_snapshot(machine, channel)
        body = encode_snapshot(RawSnapshot(f"{mill}/{machine}/{channel}", now, fs, samples), reason,  # type: ignore[arg-type]
                               f"edge-{mill}")
        msg = wire.encode_snapshot_upload(f"edge-{mill}", mill, now // 10**6, body, key=self.secrets[mill].encode())
        r = httpx.post(self.url + wire.SNAPSHOTS_PATH, content=msg,
                       headers={"Content-Type": wire.SNAPSHOT_CONTENT_TYPE}, timeout=30)
        if r.status_code != 200 or r.json().get("rejected"):
            raise RuntimeError(f"snapshot refused: {r.status_code} {r.text[:500]}")

    def token(self, user: str) -> str:
        r = httpx.post(self.url + "/api/v1/auth/login", json={"username": user, "password": PASSWORD}, timeout=30)
        r.raise_for_status()
        return str(r.json()["access_token"])


@contextlib.contextmanager
def running(folder: Path, mills: list[str], site: Path = ZONE) -> Iterator[Stack]:
    s = Stack(folder=folder, site=site)
    s.provision(mills)
    s.start()
    try:
        yield s
    finally:
        s.stop()
