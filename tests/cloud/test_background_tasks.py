"""Background tasks outlive any failure of a run, and one failing asset does not stop the others;
secret files are private even when they existed before with a looser mode."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from spinline.cloud.app import _every
from spinline.cloud.maintenance import pipeline as health_pipeline
from spinline.cloud.maintenance.pipeline import Asset, HealthPipeline, RunReport


async def test_every_survives_any_exception_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    runs = {"n": 0}

    def job() -> None:
        runs["n"] += 1
        if runs["n"] <= 3:
            raise OSError("disk full")             # what a store lets through, not a StorageError

    caplog.set_level(logging.INFO)
    task = asyncio.create_task(_every("rollup refresh", 0.01, job))
    await asyncio.sleep(0.3)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runs["n"] > 4
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs.count("rollup refresh failed") == 1 and msgs.count("rollup refresh recovered") == 1


async def test_health_loop_survives_any_exception(caplog: pytest.LogCaptureFixture) -> None:
    runs = {"n": 0}

    class P:
        def run_once(self) -> RunReport:
            runs["n"] += 1
            raise ValueError("year 60000 is out of range")

    task = asyncio.create_task(health_pipeline.run_periodically(P(), 0.01))  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    assert not task.done() and runs["n"] > 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [r.getMessage() for r in caplog.records].count("health pipeline failed") == 1


def test_one_failing_asset_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assets = [Asset("mill-a", "l1", f"rf0{i}", "main_motor", {}) for i in range(3)]
    monkeypatch.setattr(health_pipeline, "assets_of", lambda points, mill=None: assets)

    class Store:
        def points(self, mill: str | None = None) -> list[Any]:
            return []

    p = HealthPipeline(Store(), None, clock=lambda: 10**18)  # type: ignore[arg-type]
    done: list[str] = []
    broken = {"rf01"}

    def run_asset(a: Asset, end_ns: int, report: RunReport) -> None:
        if a.machine in broken:
            raise OverflowError("date value out of range")
        done.append(a.machine)

    monkeypatch.setattr(p, "_run_asset", run_asset)
    for _ in range(3):
        report = p.run_once()
        assert report.failed == ["mill-a/rf01/main_motor"]
    assert done == ["rf00", "rf02"] * 3
    broken.clear()
    assert p.run_once().failed == []
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("rf01/main_motor failed" in m for m in msgs) == 1
    assert sum("rf01/main_motor recovered" in m for m in msgs) == 1


def test_secret_files_are_made_private_even_if_they_existed(tmp_path: Path, zone_yaml: Path) -> None:
    from typer.testing import CliRunner

    from spinline.cli import app as cli
    from spinline.demo.runner import _write_private

    loose = tmp_path / "creds.txt"
    loose.write_text("old")
    os.chmod(loose, 0o644)
    _write_private(loose, "new")
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600 and loose.read_text() == "new"

    secret_file = tmp_path / "edge.secret"
    secret_file.write_text("old")
    os.chmod(secret_file, 0o644)
    env = {"SPINLINE_ARGON2_TIME_COST": "1", "SPINLINE_ARGON2_MEMORY_KIB": "64", "SPINLINE_ARGON2_PARALLELISM": "1",
           "SPINLINE_SECRET_KEY_FILE": str(tmp_path / "server.key")}
    db = f"embedded:{tmp_path / 'cloud'}"
    r = CliRunner().invoke(cli, ["cloud", "--db", db, "add-edge", "--mill", "mill-a", "--id", "edge-a1",
                                 "--site", str(zone_yaml), "--secret-file", str(secret_file)], env=env)
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret_file.read_text().strip() in r.output
