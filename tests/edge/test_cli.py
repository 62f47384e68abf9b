"""``spinline edge``: the run flags and the status view (models, health, bad input)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spinline.edge.cli import app
from spinline.edge.settings import EdgeSettings

ROOT = Path(__file__).resolve().parents[2]

STATUS = {
    "edge": "e1", "mill": "m", "ts_ns": 0, "pid": 1, "started_ns": 0,
    "devices": {"d1": {"state": "up", "errors": 0, "latency_ms": 1.5, "last_error": None, "since_ns": 0,
                       "bad_input": {"out_of_range": 3}, "last_bad_input": "out_of_range: m/d1/kw = 500 kW"}},
    "buffer": {"batches": 1, "rows": 2, "bytes": 100, "budget_bytes": 1 << 30, "dropped_rows": 0, "dead_letters": 0,
               "full": False},
    "uplink": {"state": "connected", "url": None, "lag_s": 0.0, "sent": 1, "acked": 1, "inflight": 0},
    "points_collected": 2, "points_stored": 2, "clock_skew_events": 0, "bad_input_total": 3,
    "unknown_devices": {"mqtt 127.0.0.1:1883": {"messages": 2, "topics": {"spinline/m/ghost/telemetry": 2}}},
    "models": {"m/rf01/main_motor": {"kind": "asset_monitor/zscore", "version": "local-abc123", "state": "frozen",
                                     "learned": None, "commissioning_n": 24, "health_index": 87.4,
                                     "anomaly_score": 0.31, "scored_ns": 1, "open_alarms": ["anomaly"]},
               "m/rf02/main_motor": {"kind": "asset_monitor/zscore", "version": "commissioning",
                                     "state": "commissioning", "learned": 5, "commissioning_n": 24,
                                     "health_index": None, "anomaly_score": None, "scored_ns": None,
                                     "open_alarms": []}},
    "alarms": [],
}


def test_status_shows_model_version_health_and_bad_input(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text(json.dumps(STATUS | {"ts_ns": time.time_ns()}))
    out = CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "bad input: out_of_range 3" in out.output
    assert "unknown devices on mqtt 127.0.0.1:1883: 2 message(s) on spinline/m/ghost/telemetry" in out.output
    line = next(x for x in out.output.splitlines() if "m/rf01/main_motor" in x)
    assert "frozen" in line and "local-abc123" in line and "health 87" in line and "alarms anomaly" in line
    assert "(5/24 learned)" in next(x for x in out.output.splitlines() if "m/rf02/main_motor" in x)


def test_run_documents_commissioning_n_and_the_model_slot_folder() -> None:
    out = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0
    assert "--commissioning-n" in out.output and "models/" in out.output
    bad = CliRunner().invoke(app, ["run", "site.yaml", "--commissioning-n", "3"])
    assert bad.exit_code == 2       # below the minimum of 8: refused before anything starts


def test_run_passes_the_held_row_backoff_to_the_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--held-retry-base-s`` / ``--held-retry-cap-s`` reach ``EdgeSettings``; a cap below the base is refused."""
    import spinline.edge.agent as agent_mod

    built: list[EdgeSettings] = []

    class Agent:
        def __init__(self, site: object, mill: str, settings: EdgeSettings) -> None:
            built.append(settings)

        async def run(self) -> None:
            return None

    monkeypatch.setattr(agent_mod, "EdgeAgent", Agent)
    site = str(ROOT / "examples" / "mill.yaml")
    base = ["run", site, "--data-dir", str(tmp_path)]
    out = CliRunner().invoke(app, [*base, "--held-retry-base-s", "5", "--held-retry-cap-s", "60"])
    assert out.exit_code == 0, out.output
    assert (built[0].held_retry_base_s, built[0].held_retry_cap_s) == (5.0, 60.0)
    assert built[0].held_retry.delay_s(2) == 10.0
    bad = CliRunner().invoke(app, [*base, "--held-retry-base-s", "60", "--held-retry-cap-s", "5"])
    assert bad.exit_code == 2 and "held_retry_cap_s" in bad.output and len(built) == 1
