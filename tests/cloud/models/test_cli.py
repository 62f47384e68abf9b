"""``spinline models``: set up the update repository with an offline root key, import, promote, roll
back and inspect versions from the command line, over the same database the API serves."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from typer.testing import CliRunner

from spinline.cli import app as cli

from .conftest import fitted_params


def run(*args: str, ok: bool = True) -> str:
    r = CliRunner().invoke(cli, ["models", *args], catch_exceptions=False)
    assert (r.exit_code == 0) == ok, r.output
    return r.output


def test_models_commands(tmp_path: Path) -> None:
    db = ["--db", f"embedded:{tmp_path / 'cloud'}"]
    key = tmp_path / "usb" / "root.pem"
    out = run("tuf-init", "--root-key", str(key), "--root-out", str(tmp_path / "root.json"), *db)
    assert "keep it offline" in out
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    root = json.loads((tmp_path / "root.json").read_text())
    assert root["signed"]["_type"] == "root" and root["signed"]["version"] == 1
    assert "already" in run("tuf-init", "--root-key", str(key), *db, ok=False)
    params = tmp_path / "p.json"
    params.write_text(json.dumps(fitted_params()))
    v1 = json.loads(run("register", "--name", "card.mahalanobis", "--params", str(params), "--kind",
                        "asset_monitor/mahalanobis", "--machine-type", "card", "--by", "ana", *db))["version"]
    params.write_text(json.dumps(fitted_params(1)))
    v2 = json.loads(run("register", "--name", "card.mahalanobis", "--params", str(params), "--kind",
                        "asset_monitor/mahalanobis", "--machine-type", "card", *db))["version"]
    # a parameter file the edge could not load is refused with the reason
    params.write_text(json.dumps({"detector": {"kind": "nope"}}))
    assert "do not load" in run("register", "--name", "card.mahalanobis", "--params", str(params), "--kind",
                                "asset_monitor/mahalanobis", "--machine-type", "card", *db, ok=False)
    run("promote", "card.mahalanobis", v1, "--mill", "mill-a", "--reason", "first", "--by", "ana", *db)
    run("promote", "card.mahalanobis", v2, "--mill", "mill-a", "--reason", "better", "--by", "ana", *db)
    listing = run("list", *db)
    assert f"{v1:14} retired" in listing and f"{v2:14} active" in listing
    back = json.loads(run("rollback", "card.mahalanobis", "--reason", "alarms on ca02", "--by", "ana", *db))
    assert back["version"] == v1 and back["status"] == "active"
    shown = json.loads(run("show", "card.mahalanobis", v2, *db))
    assert shown["status"] == "retired" and shown["transitions"][-1]["reason"] == "rollback: alarms on ca02"
    assert "cannot become" in run("retire", "card.mahalanobis", v2, "--reason", "x", *db, ok=False)
    out = run("rotate-key", "--role", "timestamp", "--root-key", str(key), *db)
    assert "rotated" in out
    run("root", "--out", str(tmp_path / "root2.json"), *db)
    assert json.loads((tmp_path / "root2.json").read_text())["signed"]["version"] == 2


def test_federated_run_that_cannot_start_says_why(tmp_path: Path) -> None:
    """``models federated-run`` with no federated mill in the zone: exit 2 and the reason (the run itself,
    with edges joining, is tests/e2e/test_federated_zone.py; its failure paths tests/cloud/models/test_fedrun.py)."""
    out = run("federated-run", "--machine-type", "ring_frame", "--timeout-s", "10", "--db",
              f"embedded:{tmp_path / 'cloud'}", ok=False)
    assert "needs two federated mills with such machines or more; found none" in out
