"""``spinline cloud``: add-user / add-edge / revoke-edge, and the server itself (uvicorn on loopback)
with the embedded store and with PostgreSQL, including the live SSE stream."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from spinline.cli import app as cli

from .conftest import signed

PW = "zone-operator-pw"
FAST_ENV = {"SPINLINE_ARGON2_TIME_COST": "1", "SPINLINE_ARGON2_MEMORY_KIB": "64", "SPINLINE_ARGON2_PARALLELISM": "1",
            "SPINLINE_STREAM_INTERVAL_S": "0.1", "SPINLINE_PASSWORD": PW}


def run(*args: str) -> str:
    r = CliRunner().invoke(cli, ["cloud", *args], env=FAST_ENV, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(db: str, data_dir: Path, zone_yaml: Path) -> Iterator[str]:
    port = _free_port()
    env = os.environ | FAST_ENV
    proc = subprocess.Popen([sys.executable, "-m", "spinline.cloud", "--db", db, "--data-dir", str(data_dir),
                             "--site", str(zone_yaml), "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"spinline cloud did not start: {out[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _exercise(base: str, secret: str) -> None:
    with httpx.Client(base_url=base, timeout=10) as c:
        r = c.post("/api/v1/auth/login", json={"username": "ops", "password": PW})
        h = {"Authorization": f"Bearer {r.json()['access_token']}"}
        assert [m["id"] for m in c.get("/api/v1/mills", headers=h).json()] == ["mill-a", "mill-b", "mill-c"]
        tag = "mill-a/rf01/spindle_speed"
        r = c.post("/api/v1/ingest", content=signed("edge-a1", "mill-a", 1, secret, {tag: 17500.0}),
                   headers={"Content-Type": "application/x-spinline-batch"})
        assert r.status_code == 200 and r.json()["status"] == "stored", r.text
        # the live stream: the first event carries the current values, then changes only
        events = []
        with c.stream("GET", "/api/v1/mills/mill-a/stream", headers=h,
                      params={"points": "rf01/spindle_speed", "max_events": 2}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            pushed = False
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if not pushed:
                        r = c.post("/api/v1/ingest", headers={"Content-Type": "application/x-spinline-batch"},
                                   content=signed("edge-a1", "mill-a", 2, secret, {tag: 18000.0}))
                        assert r.status_code == 200
                        pushed = True
        assert [[v["value"] for v in e] for e in events] == [[17500.0], [18000.0]]
        edges = c.get("/api/v1/edges", headers=h).json()
        assert [(e["id"], e["active"]) for e in edges] == [("edge-a1", True)]


def test_cli_and_embedded_server(tmp_path: Path, zone_yaml: Path) -> None:
    db = f"embedded:{tmp_path / 'cloud'}"
    assert "created" in run("--db", db, "add-user", "--username", "ops", "--role", "zone_operator",
                            "--site", str(zone_yaml))
    secret = run("--db", db, "add-edge", "--mill", "mill-a", "--id", "edge-a1").strip()
    assert len(secret) >= 40
    # a mill that does not exist is refused
    r = CliRunner().invoke(cli, ["cloud", "--db", db, "add-edge", "--mill", "mill-z", "--id", "x"], env=FAST_ENV)
    assert r.exit_code == 2 and "unknown mill" in r.output
    with serving(db, tmp_path, zone_yaml) as base:
        _exercise(base, secret)
        # users and edges can be managed while the embedded server holds the DuckDB file
        assert run("--db", db, "add-edge", "--mill", "mill-b", "--id", "edge-b1").strip()
        assert "revoked" in run("--db", db, "revoke-edge", "--id", "edge-a1")
        r = httpx.post(f"{base}/api/v1/ingest", content=signed("edge-a1", "mill-a", 9, secret, {
            "mill-a/rf01/spindle_speed": 1.0}), headers={"Content-Type": "application/x-spinline-batch"})
        assert r.status_code == 401
    assert "revoked" in run("--db", db, "edges")


@pytest.mark.postgres
def test_cli_and_postgres_server(tmp_path: Path, zone_yaml: Path, postgres_url: str) -> None:
    env_key = {"SPINLINE_SECRET_KEY": "a" * 43}
    FAST_ENV.update(env_key)
    try:
        assert "created" in run("--db", postgres_url, "add-user", "--username", "ops", "--role", "zone_operator",
                                "--site", str(zone_yaml))
        secret = run("--db", postgres_url, "add-edge", "--mill", "mill-a", "--id", "edge-a1").strip()
        with serving(postgres_url, tmp_path, zone_yaml) as base:
            _exercise(base, secret)
    finally:
        for k in env_key:
            FAST_ENV.pop(k)
