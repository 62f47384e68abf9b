"""The README's main job: simulator -> edge -> cloud, on embedded defaults and on a real broker."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from spinline.demo.runner import CREDENTIALS_FILE, run_demo


@pytest.mark.slow
async def test_demo_embedded_defaults_brings_every_point_to_the_cloud(tmp_path: Path, mill_yaml: Path) -> None:
    summary = await run_demo(mill_yaml, data_dir=tmp_path, port=0, duration_s=14, report_every_s=5,
                             history_days=0)
    # Every device point of the mill, over all three protocols, reached the cloud store.
    assert summary.points_total == 404
    assert summary.points_with_values == summary.points_total
    assert set(summary.by_protocol) == {"modbus", "opcua", "mqtt"}
    assert summary.edge["uplink"]["state"] == "connected"
    # model updates are on: the edge checked the cloud's TUF repository (root.json from the data dir)
    mu = summary.edge["model_updates"]
    assert mu["checks"] >= 1 and mu["state"] == "ok" and not any(mu["refusals"].values()), mu
    assert mu["bytes_in"] > 0 and summary.edge["traffic"]["bytes"]["models_in"] == mu["bytes_in"]


@pytest.mark.slow
async def test_demo_over_a_real_broker_uses_the_mqtt_uplink(tmp_path: Path, mill_yaml: Path,
                                                            mqtt_broker: tuple[str, int]) -> None:
    host, port = mqtt_broker
    summary = await run_demo(mill_yaml, data_dir=tmp_path, port=0, duration_s=14, report_every_s=5,
                             broker=f"mqtt://{host}:{port}", history_days=0)
    assert summary.points_with_values == summary.points_total == 404
    assert summary.edge["uplink"]["url"].startswith("mqtt://")
    assert summary.edge["buffer"]["rows"] < 2000  # acked batches left the buffer


@pytest.mark.slow
async def test_demo_api_serves_the_mill_and_a_rerun_resumes(tmp_path: Path, mill_yaml: Path) -> None:
    import asyncio

    from spinline.demo.broker import free_port

    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    task = asyncio.create_task(run_demo(mill_yaml, data_dir=tmp_path, port=port, duration_s=12, report_every_s=4,
                                         history_days=0))
    for _ in range(150):
        await asyncio.sleep(0.2)
        if (tmp_path / CREDENTIALS_FILE).exists() and (tmp_path / "edge" / "edge.secret").exists():
            break
    await asyncio.sleep(6)
    async with httpx.AsyncClient(base_url=api_url) as client:
        creds = dict(line.split(": ", 1) for line in (tmp_path / CREDENTIALS_FILE).read_text().splitlines())
        assert (tmp_path / CREDENTIALS_FILE).stat().st_mode & 0o077 == 0  # the password file is private
        r = await client.post("/api/v1/auth/login", json={"username": creds["username"],
                                                          "password": creds["password"]})
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        r = await client.get("/api/v1/mills", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and "mill-a" in r.text
        r = await client.get("/api/v1/mills")
        assert r.status_code == 401  # nothing without a login
    first = await task
    # A second run on the same data dir reuses the user and the edge credential, and its buffer.
    second = await run_demo(mill_yaml, data_dir=tmp_path, port=0, duration_s=6, report_every_s=3, history_days=0)
    assert second.edge_ids == first.edge_ids == ["edge-mill-a"]
    assert second.points_with_values == 404


@pytest.mark.slow
async def test_demo_of_a_zone_runs_every_mill_with_its_own_edge(tmp_path: Path, zone_yaml: Path) -> None:
    # Until every device point has reached the cloud (slow-interval points need a few cycles on a busy
    # machine), at most 90 s: the assertion below is about completeness, not about speed.
    summary = await run_demo(zone_yaml, data_dir=tmp_path, port=0, duration_s=90, report_every_s=4, history_days=0,
                             stop_when_complete=True)
    assert summary.mills == ["mill-a", "mill-b", "mill-c"]
    assert summary.edge_ids == ["edge-mill-a", "edge-mill-b", "edge-mill-c"]
    # Every device point of every mill reached the cloud, each mill through its own edge credential.
    assert summary.per_mill == {"mill-a": 404, "mill-b": 297, "mill-c": 464}
    assert all(e["uplink"]["state"] == "connected" for e in summary.edges.values())
    assert all((tmp_path / f"edge-{m}" / "edge.secret").stat().st_mode & 0o077 == 0 for m in summary.mills)
