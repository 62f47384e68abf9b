"""`spinline health fit` / `score` on the user's own CSV or Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from spinline.cli import app

runner = CliRunner(env={"COLUMNS": "250", "TERM": "dumb"})


def _data(n: int = 600, fault_at: int = 450) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    speed = 1480 + 20 * np.sin(np.arange(n) / 40)
    vib = 0.002 * speed + 0.1 * rng.standard_normal(n)
    temp = 40 + 0.5 * rng.standard_normal(n)
    cur = 50 + 0.02 * (speed - 1480) + 0.5 * rng.standard_normal(n)
    label = np.zeros(n, dtype=int)
    vib[fault_at:] += 2.0
    label[fault_at:] = 1
    return pd.DataFrame({"time": pd.date_range("2026-03-01", periods=n, freq="1min"), "vib": vib, "temp": temp,
                         "current": cur, "rpm": speed, "fault": label})


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_fit_then_score(tmp_path: Path, ext: str) -> None:
    df = _data()
    data = tmp_path / f"d.{ext}"
    if ext == "csv":
        df.to_csv(data, sep=";", index=False)
    else:
        df.to_parquet(data, index=False)
    model = tmp_path / "m.json"
    r = runner.invoke(app, ["health", "fit", str(data), "--normal", "0:300", "--out", str(model), "--label", "fault",
                            "--speed", "rpm", "--far", "0.01"])
    assert r.exit_code == 0, r.output
    saved = json.loads(model.read_text())
    assert saved["format"] == "spinline-health-model/2"
    assert saved["features"] == ["vib", "temp", "current"]  # label, speed, time left out
    out = tmp_path / f"o.{ext}"
    r = runner.invoke(app, ["health", "score", str(data), "--model", str(model), "--out", str(out),
                            "--label", "fault", "--on-delay", "2"])
    assert r.exit_code == 0, r.output
    res = pd.read_csv(out) if ext == "csv" else pd.read_parquet(out)
    assert len(res) == len(df)
    assert {"time", "anomaly_score", "alarm_raised", "alarm_active", "health_index", "status", "driver",
            "moved_most"} <= set(res.columns)
    assert res["alarm_active"].iloc[455:].mean() > 0.95
    assert res["alarm_active"].iloc[300:450].mean() < 0.05
    assert res["health_index"].iloc[460:].max() < 70 < res["health_index"].iloc[300:450].median()
    assert (res["moved_most"].iloc[460:] == "vib").all()
    assert "F1" in r.output


def test_normal_rows_by_column_value(tmp_path: Path) -> None:
    df = _data()
    data = tmp_path / "d.csv"
    df.to_csv(data, index=False)
    model = tmp_path / "m.json"
    r = runner.invoke(app, ["health", "fit", str(data), "--normal", "fault=0", "--out", str(model),
                            "--features", "vib,temp", "--kind", "robust_z"])
    assert r.exit_code == 0, r.output
    assert "450 normal" in r.output
    assert json.loads(model.read_text())["features"] == ["vib", "temp"]
    assert json.loads(model.read_text())["fleet"]["kind"] == "robust_z"


def test_errors_are_explained(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    _data().to_csv(data, index=False)
    r = runner.invoke(app, ["health", "fit", str(data), "--normal", "x:y", "--out", str(tmp_path / "m.json")])
    assert r.exit_code != 0 and "row range" in r.output
    r = runner.invoke(app, ["health", "fit", str(data), "--normal", "0:100", "--out", str(tmp_path / "m.json"),
                            "--features", "nope"])
    assert r.exit_code != 0 and "nope" in r.output
    r = runner.invoke(app, ["health", "fit", str(tmp_path / "missing.csv"), "--normal", "0:10", "--out", "m.json"])
    assert r.exit_code != 0
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = runner.invoke(app, ["health", "score", str(data), "--model", str(bad), "--out", str(tmp_path / "o.csv")])
    assert r.exit_code != 0 and "not a spinline health model" in r.output
