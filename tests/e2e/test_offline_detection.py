"""An edge cut off from the cloud keeps judging its machines (issue 11, the end-to-end "Done when").

The simulated mill (examples/mill.yaml, a private mill id) runs with a bearing fault injected into card
ca01 soon after the start (accelerated: onset after ~25 s, full severity 10 s later; its vibration
snapshot every second). The real ``EdgeAgent`` commissions its baseline, then scores; its HTTP uplink
goes to the real cloud app (uvicorn) through a TCP relay that is **down from the start**. The edge
raises the alarm locally, with the link down; when the relay comes up, the alarm event, the alarm's
evidence snapshot and the work order the cloud opens for it reach the cloud. The technician verifies the
repair, and the verified order labels the feature rows the next training reads (``load_rows``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from pydantic import SecretStr

from spinline.cloud.app import create_app
from spinline.cloud.auth.roles import Role
from spinline.cloud.maintenance.store import HealthStore
from spinline.cloud.models.training import load_rows
from spinline.cloud.settings import Settings
from spinline.core.site import load_site, rebind
from spinline.edge.agent import EdgeAgent
from spinline.edge.models import ScoringConfig
from spinline.edge.settings import EdgeSettings
from spinline.health.workorders import Resolution
from spinline.sim.server import SimServer

from .helpers import Relay, free_port

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]
MACHINE, CHANNEL = "ca01", "cylinder"
ASSET = f"{MACHINE}/{CHANNEL}"


async def _until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.3)


async def test_an_offline_edge_detects_the_fault_and_the_cloud_learns_it_after_the_link_returns(
        mill_yaml: Path, mqtt_broker: tuple[str, int], tmp_path: Path) -> None:
    doc: dict[str, Any] = yaml.safe_load(mill_yaml.read_text())
    mill_id = f"off-{uuid.uuid4().hex[:8]}"
    doc["mills"] = doc["mills"][:1]
    mill = doc["mills"][0]
    mill["id"] = mill_id
    mill["faults"] = [{"machine": MACHINE, "type": "bearing_outer", "start_s": 25, "ramp_s": 10, "severity": 6.0}]
    for ws in mill["workshops"]:
        for line in ws["lines"]:
            for m in line["machines"]:
                if m["id"] == MACHINE:
                    m["vibration"]["every_s"] = 1.0
    site_path = tmp_path / "site.yaml"
    site_path.write_text(yaml.safe_dump(doc))
    site = load_site(site_path)
    settings = Settings(db=f"embedded:{tmp_path / 'cloud'}", site=site_path, rollup_refresh_s=0, argon2_time_cost=1,
                        argon2_memory_kib=64, argon2_parallelism=1, health_pipeline_s=0, models_every_s=0,
                        health_order_severity="warning",
                        secret_key=SecretStr(base64.urlsafe_b64encode(b"o" * 32).decode()))
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    relay = Relay(port)                   # the mill's link to the cloud: down until restored
    t_start = time.time_ns()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and not serving.done(), "uvicorn did not start"
            await asyncio.sleep(0.05)
        cloud = app.state.cloud
        _, secret = cloud.edges.create(edge_id="off1", mill=mill_id, created_by="e2e")
        cloud.accounts.create_user(username="zed", password="correct horse battery", role=Role.ZONE_OPERATOR, mills=[])
        hs = HealthStore(cloud.meta.engine)
        host, mport = mqtt_broker
        async with SimServer(site, mill_id, speed=1.0, ephemeral=True, mqtt=(host, mport)) as sim:
            agent = EdgeAgent(rebind(site, sim.ports), mill_id, EdgeSettings(
                edge_id="off1", data_dir=tmp_path / "edge", device_mqtt=f"mqtt://{host}:{mport}",
                cloud_url=f"http://127.0.0.1:{relay.port}", secret=secret.encode(), flush_s=0.2,
                status_every_s=0.2, status_heartbeat_s=0.5, scoring=ScoringConfig(commissioning_n=8)))
            async with agent:
                async def alarmed_locally() -> bool:
                    st = await agent.status()
                    return bool(((st.get("models") or {}).get(f"{mill_id}/{ASSET}") or {}).get("open_alarms"))
                await _until(alarmed_locally, 75, "the edge's local alarm on ca01 with the link down")
                st = await agent.status()
                assert st["uplink"]["state"] != "connected"
                assert not hs.list_alarms(mill_id)               # nothing reached the cloud yet
                await relay.restore()

                async def in_cloud() -> bool:
                    return any(a.asset == ASSET for a in hs.list_alarms(mill_id)) and \
                        any(w.asset == ASSET for w in hs.list_work_orders(mill_id))
                await _until(in_cloud, 45, "the alarm and its work order in the cloud after the link returned")
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                    r = await c.post("/api/v1/auth/login",
                                     json={"username": "zed", "password": "correct horse battery"})
                    h = {"Authorization": f"Bearer {r.json()['access_token']}"}

                    async def snapshot() -> bool:
                        r = await c.get(f"/api/v1/mills/{mill_id}/machines/{MACHINE}/snapshots/latest", headers=h)
                        return r.status_code == 200 and any(x["reason"] == "alarm" for x in r.json()["channels"])
                    await _until(snapshot, 45, "the alarm's evidence snapshot in the cloud")
        # the technician repairs the bearing and the order is verified: a label for the next training
        def fault_rows() -> int:
            rows = load_rows(cloud.store, lambda m: hs.list_work_orders(m), {mill_id: site.mills[0]}, "card",
                             t_start - 60 * 10**9, time.time_ns() + 60 * 10**9, lead=timedelta(seconds=30))
            assert rows[mill_id].rows, "no feature rows of the cards in the cloud"
            return sum(rows[mill_id].labels)

        assert fault_rows() == 0             # an open order is no label
        wo = next(w for w in hs.list_work_orders(mill_id) if w.asset == ASSET)
        now = wo.created_at
        wo.assign("tech", by="mgr", at=now)
        wo.start(by="tech", at=now)
        wo.update_fault("bearing_outer", by="tech", at=now, comment="outer race pitting")
        wo.resolve(by="tech", at=now + timedelta(seconds=30), resolution=Resolution.REPAIRED)
        wo.verify(95.0, by="mgr", at=now + timedelta(seconds=31))
        hs.save_work_order(mill_id, wo)
        assert fault_rows() > 0              # the verified order labels ca01's rows around the fault
    finally:
        await relay.close()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(serving, 15)
