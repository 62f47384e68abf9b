"""Raw evidence with the real edge agent, the real HTTP uplink and the real API (issue 11 item 7).

The simulated mill's vibration sensors publish on the machine's Mosquitto; an ``EdgeAgent`` collects,
featurises and queues the day's sample snapshot of each channel; its HTTP uplink sends them to the cloud
app served by uvicorn, which stores them; ``GET .../snapshots/latest`` serves them to a zone operator. A
maintenance engineer's request comes back to the edge in the answer to its status post, and the
requested snapshot arrives. Nothing is refused.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from pydantic import SecretStr

from spinline.cloud.app import create_app
from spinline.cloud.auth.roles import Role
from spinline.cloud.settings import Settings
from spinline.core.site import load_site, rebind
from spinline.edge.agent import EdgeAgent
from spinline.edge.settings import EdgeSettings
from spinline.sim.server import SimServer

from .helpers import free_port


async def _until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_agent_snapshots_reach_the_api_and_a_request_is_served(mill_yaml: Path, mqtt_broker: tuple[str, int],
                                                                      tmp_path: Path) -> None:
    doc: dict[str, Any] = yaml.safe_load(mill_yaml.read_text())
    mill_id = f"ev-{uuid.uuid4().hex[:8]}"
    doc["mills"] = doc["mills"][:1]
    doc["mills"][0]["id"] = mill_id
    machine = channel = None
    for ws in doc["mills"][0]["workshops"]:
        for line in ws["lines"]:
            for m in line["machines"]:
                if "vibration" in m:
                    m["vibration"]["every_s"] = 1.0
                    machine, channel = machine or m["id"], channel or m["vibration"]["channels"][0]["name"]
    assert machine is not None
    site_path = tmp_path / "site.yaml"
    site_path.write_text(yaml.safe_dump(doc))
    site = load_site(site_path)
    settings = Settings(db=f"embedded:{tmp_path / 'cloud'}", site=site_path, rollup_refresh_s=0, argon2_time_cost=1,
                        argon2_memory_kib=64, argon2_parallelism=1, health_pipeline_s=0,
                        secret_key=SecretStr(base64.urlsafe_b64encode(b"k" * 32).decode()))
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and not serving.done(), "uvicorn did not start"
            await asyncio.sleep(0.05)
        cloud = app.state.cloud
        _, secret = cloud.edges.create(edge_id="ev1", mill=mill_id, created_by="e2e")
        cloud.accounts.create_user(username="zed", password="correct horse battery", role=Role.ZONE_OPERATOR, mills=[])
        cloud.accounts.create_user(username="mia", password="correct horse battery",
                                   role=Role.MAINTENANCE_ENGINEER, mills=[mill_id])
        latest = f"/api/v1/mills/{mill_id}/machines/{machine}/snapshots/latest"
        host, mport = mqtt_broker
        async with httpx.AsyncClient(base_url=base) as c:
            async def token(user: str) -> dict[str, str]:
                r = await c.post("/api/v1/auth/login", json={"username": user, "password": "correct horse battery"})
                assert r.status_code == 200, r.text
                return {"Authorization": f"Bearer {r.json()['access_token']}"}

            zed, mia = await token("zed"), await token("mia")
            async with SimServer(site, mill_id, speed=1.0, ephemeral=True, mqtt=(host, mport)) as sim:
                agent = EdgeAgent(rebind(site, sim.ports), mill_id, EdgeSettings(
                    edge_id="ev1", data_dir=tmp_path / "edge", device_mqtt=f"mqtt://{host}:{mport}",
                    cloud_url=base, secret=secret.encode(), flush_s=0.2, status_every_s=0.2,
                    status_heartbeat_s=0.5))
                async with agent:
                    async def served() -> bool:
                        r = await c.get(latest, headers=zed)
                        return r.status_code == 200
                    await _until(served, 40, "the sample snapshot in the API")
                    ch = (await c.get(latest, headers=zed)).json()["channels"]
                    assert {x["reason"] for x in ch} == {"sample"} and all(x["n"] > 1000 for x in ch)
                    assert all(x["fs_hz"] == 25600 and x["spectrum"]["amplitude"] for x in ch)
                    r = await c.post(f"/api/v1/mills/{mill_id}/machines/{machine}/snapshot-requests", headers=mia,
                                     json={"channel": channel})
                    assert r.status_code == 202, r.text

                    async def requested() -> bool:
                        r = await c.get(latest, headers=zed)
                        return any(x["channel"] == channel and x["reason"] == "request" for x in r.json()["channels"])
                    await _until(requested, 30, "the requested snapshot in the API")
                    st = await agent.status()
        assert st["evidence"]["queued"]["request"] == 1 and st["evidence"]["refused"] == 0
        assert st["traffic"]["bytes"]["snapshot"] > 0
        assert st["uplink"]["snapshots_acked"] >= 2
        assert not cloud.store.rejections()
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(serving, 15)
