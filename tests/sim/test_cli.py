"""``spinline sim`` starts, prints its endpoints and writes the ground truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_cli_runs_and_logs_faults(mill_yaml: Path, tmp_path: Path) -> None:
    gt = tmp_path / "gt.jsonl"
    proc = subprocess.run([sys.executable, "-m", "spinline.cli", "sim", str(mill_yaml), "--speed", "60",
                           "--ephemeral", "--duration", "1.5", "--fault", "ca01:bearing_inner:600:3600:2",
                           "--ground-truth", str(gt)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "opc.tcp://127.0.0.1:" in proc.stdout and proc.stdout.count("modbus tcp://") == 2
    # the site's own schedule (ca01 bearing_outer from day 12) comes first, then --fault
    rows = [json.loads(line) for line in gt.read_text().splitlines()]
    assert [(r["machine"], r["type"]) for r in rows] == [("ca01", "bearing_outer"), ("ca01", "bearing_inner")]
    row = rows[-1]
    assert row["machine"] == "ca01" and row["type"] == "bearing_inner" and row["severity"] == 2.0
    assert row["failure_ns"] - row["onset_ns"] == 3600 * 10**9


def test_cli_rejects_bad_fault(mill_yaml: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "spinline.cli", "sim", str(mill_yaml), "--fault", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--fault" in proc.stderr
