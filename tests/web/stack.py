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
from spinline.core.site import load_site
from spinline.core.wire import Envelope, encode
from spinline.sim import history

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
            for name, role, ms in USERS:
                if meta.user_by_name(name) is None:
                    cloud.accounts.create_user(username=name, password=PASSWORD, role=role, mills=ms,
                                               full_name=name.capitalize())
            for m in mills:
                self.secrets[m] = cloud.edges.create(edge_id=f"edge-{m}", mill=m, created_by="test")[1]
        finally:
            store.close()
            meta.close()

    def start(self, timeout_s: float = 60.0) -> None:
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

    def backfill(self, mill: str, days: float, step_s: float, *, end_ns: int | None = None, seed: int = 7) -> int:
        """Simulated history of ``mill`` up to ``end_ns`` (default: now) through ``POST /api/v1/ingest``."""
        site = load_site(self.site)
        end = end_ns or time.time_ns() // 10**9 * 10**9 - 10**9
        start = end - int(days * 86400 * 1e9)
        rows = 0
        with httpx.Client(base_url=self.url, timeout=120) as c:
            for b in history.generate(site, mill, start, days * 86400, step_s, seed=seed, chunk_s=86400 / 2):
                seq = self.seq.get(mill, 0) + 1
                self.seq[mill] = seq
                payload = encode(Envelope(edge=f"edge-{mill}", mill=mill, seq=seq, batch=b, created_ns=end),
                                 key=self.secrets[mill].encode())
                r = c.post("/api/v1/ingest", content=payload, headers={"Content-Type": "application/x-spinline-batch"})
                if r.status_code != 200 or r.json().get("status") not in ("stored", "duplicate"):
                    raise RuntimeError(f"ingest refused: {r.status_code} {r.text[:500]}")
                rows += len(b)
        return rows

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
