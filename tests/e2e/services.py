"""Private services the end-to-end tests may stop and kill (not a test module): a PostgreSQL cluster of
their own (``initdb`` + ``pg_ctl`` on a free port, in a temporary folder) and ``spinline cloud`` as a
real process. The machine's shared PostgreSQL and broker are never stopped: other tests use them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from spinline_e2e_helpers import free_port, signal_and_reap  # type: ignore[import-not-found]  # loaded by conftest.py

#: argon2 at its cheapest: the tests create credentials, they do not measure password hashing.
FAST_ARGON2 = {"SPINLINE_ARGON2_TIME_COST": "1", "SPINLINE_ARGON2_MEMORY_KIB": "64",
               "SPINLINE_ARGON2_PARALLELISM": "1"}


def pg_bin() -> Path | None:
    """The newest PostgreSQL server binaries installed (Debian layout), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


def require_binaries(strict: bool, **paths: Path | None) -> None:
    """Fail when ``strict`` (``CI``/``SPINLINE_STRICT``: tests/conftest.py's ``strict()``), else skip, when a
    server binary the test runs is missing."""
    missing = [f"{name} ({p or 'not installed'})" for name, p in paths.items() if p is None or not p.exists()]
    if missing:
        msg = f"missing server binaries: {', '.join(missing)}"
        if strict:
            pytest.fail(msg)
        pytest.skip(msg)


class PrivatePostgres:
    """A PostgreSQL cluster of this test only, stopped and started at will (``stop`` is ``pg_ctl stop -m
    fast``: the clients' connections are cut as in a server restart). As root it runs as the ``postgres``
    user (``initdb`` refuses root). ``close`` stops it and removes its folder."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="spinline-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.user: pwd.struct_passwd | None = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self.stops = 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/spinline"

    def _run(self, tool: str, *args: str, timeout: float = 90) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.user is not None:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)  # noqa: S603 - fixed tools
        if r.returncode != 0:
            raise RuntimeError(f"{tool} failed ({r.returncode}): {r.stderr.decode(errors='replace')[-2000:]}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.start()
        with psycopg.connect(self.url.replace("/spinline", "/postgres"), autocommit=True) as c:
            c.execute("CREATE DATABASE spinline")

    def start(self) -> None:
        # fsync off: the cluster is thrown away, and only clean (fast) stops are applied to it.
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", opts, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        self.stops += 1

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


def secret_key() -> str:
    """A sealing key for edge secrets that every cloud process of a test shares (base64 of 32 bytes)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


@dataclass
class CloudProcess:
    """``python -m spinline.cloud`` with an MQTT ingest worker (``--mqtt``): the API, one member of the
    ``$share/ingest`` group, and the app's rollup refresh and retention loops. ``env`` carries the
    settings (``SPINLINE_*``); each spawn logs to a new file in ``data_dir``."""

    db: str
    site: Path
    data_dir: Path
    mqtt_port: int
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    def cli(self, *args: str) -> str:
        """Run a ``spinline cloud`` management command against the same database; its stdout."""
        r = subprocess.run([sys.executable, "-m", "spinline.cloud", "--db", self.db, "--data-dir", str(self.data_dir),
                            *args], env=os.environ | self.env, capture_output=True, timeout=120, check=False)
        if r.returncode != 0:
            raise AssertionError(f"spinline cloud {' '.join(args)}: {r.stderr.decode(errors='replace')[-2000:]}")
        return r.stdout.decode()

    def spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / f"cloud-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "spinline.cloud", "--db", self.db, "--data-dir", str(self.data_dir),
                 "--site", str(self.site), "--port", str(self.port), "--log-level", "info",
                 "--mqtt", f"mqtt://127.0.0.1:{self.mqtt_port}"],
                env=os.environ | self.env, stdout=out, stderr=subprocess.STDOUT)

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    async def ready(self, timeout: float = 120.0) -> None:
        """Wait until this spawn serves ``/healthz`` and its ingest worker subscribed."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"cloud exited with {self.proc.returncode}: {self.log_text()[-3000:]}")
                subscribed = "MQTT ingest subscribed" in self.logs[-1].read_text(errors="replace")
                with contextlib.suppress(httpx.HTTPError):
                    if subscribed and (await c.get(f"http://127.0.0.1:{self.port}/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise AssertionError(f"cloud not ready within {timeout} s: {self.log_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is None:
            return
        signal_and_reap(self.proc, sig, grace_s=20)
        self.proc = None
