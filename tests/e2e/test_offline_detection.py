"""An edge cut off from the cloud keeps judging its machines, and the cloud learns from the repair
(issue 11, the end-to-end "Done when"), on the simulated zone: the three mills of examples/zone.yaml
(private mill ids), three simulators on the machine's Mosquitto, three real ``EdgeAgent``s, one cloud.

Each mill keeps only its cards (the machine type trained here); the rest of a zone mill (OPC UA
draw frames, ring frames on Modbus, winders, meters) would triple the load of three simulators and
three edges on a loaded CI machine and plays no part in this story. The cards' vibration comes every
second so the cloud has rows to train on within a minute.

The held-out mill of the mill-wise split (``split_mills``) gets a bearing fault injected into card ca01
soon after the start (accelerated: onset after ~25 s, full severity 10 s later). Its edge's HTTP uplink
goes to the real cloud app (uvicorn) through a TCP relay that is **down from the start**; the other two
mills' edges are online and deliver their cards' features. The cut-off edge raises the alarm locally;
when the relay comes up, the alarm event, its evidence snapshot and the work order the cloud opens for
it reach the cloud. The registry then trains the card model (``ModelRegistry.train``: mill-wise, the
two online mills train, the faulted mill is held out) before and after the technician verifies the
order: before, the held-out mill has no fault label, nothing to judge a candidate on, and none is
registered; after, the verified order labels ca01's rows, the candidate is judged on them and
registered with the comparison that counts them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
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
from spinline.cloud.models.training import MillRows, load_rows, split_mills
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
LEAD = timedelta(seconds=30)


async def _until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.3)


def _zone_of_cards(zone_yaml: Path, tag: str) -> tuple[dict[str, Any], str]:
    """examples/zone.yaml with private mill ids and only the cards (vibration every second); the held-out
    mill of the mill-wise split gets the bearing fault on ca01. Returns the document and that mill's id."""
    doc: dict[str, Any] = yaml.safe_load(zone_yaml.read_text())
    ids = [f"{tag}-{m['id']}" for m in doc["mills"]]
    faulted = split_mills(ids)[1][0]
    for mill, new_id in zip(doc["mills"], ids, strict=True):
        mill["id"] = new_id
        mill["faults"] = [{"machine": MACHINE, "type": "bearing_outer", "start_s": 25, "ramp_s": 10,
                           "severity": 6.0}] if new_id == faulted else []
        workshops = []
        for ws in mill["workshops"]:
            lines = []
            for line in ws["lines"]:
                cards = [m for m in line["machines"] if m["type"] == "card"]
                for m in cards:
                    if "vibration" in m:
                        m["vibration"]["every_s"] = 1.0
                if cards:
                    lines.append(line | {"machines": cards})
            if lines:
                workshops.append(ws | {"lines": lines})
        mill["workshops"] = workshops
    return doc, faulted


async def test_an_offline_edge_detects_the_fault_and_the_next_training_uses_the_verified_label(
        zone_yaml: Path, mqtt_broker: tuple[str, int], tmp_path: Path) -> None:
    doc, faulted = _zone_of_cards(zone_yaml, f"off{uuid.uuid4().hex[:6]}")
    site_path = tmp_path / "site.yaml"
    site_path.write_text(yaml.safe_dump(doc))
    site = load_site(site_path)
    mills = {m.id: m for m in site.mills}
    assert len(mills) == 3
    settings = Settings(db=f"embedded:{tmp_path / 'cloud'}", site=site_path, rollup_refresh_s=0, argon2_time_cost=1,
                        argon2_memory_kib=64, argon2_parallelism=1, health_pipeline_s=0, models_every_s=0,
                        health_order_severity="warning",
                        secret_key=SecretStr(base64.urlsafe_b64encode(b"o" * 32).decode()))
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    relay = Relay(port)                   # the faulted mill's link to the cloud: down until restored
    t_start = time.time_ns()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and not serving.done(), "uvicorn did not start"
            await asyncio.sleep(0.05)
        cloud = app.state.cloud
        cloud.accounts.create_user(username="zed", password="correct horse battery", role=Role.ZONE_OPERATOR, mills=[])
        hs = HealthStore(cloud.meta.engine)
        host, mport = mqtt_broker

        def cloud_rows() -> dict[str, MillRows]:
            """The training input now: every mill's card rows in the cloud, labelled by the verified orders."""
            return load_rows(cloud.store, lambda m: hs.list_work_orders(m), mills, "card", t_start - 60 * 10**9,
                             time.time_ns() + 60 * 10**9, lead=LEAD)

        async with contextlib.AsyncExitStack() as stack:
            agents: dict[str, EdgeAgent] = {}
            for i, mill_id in enumerate(sorted(mills)):
                sim = await stack.enter_async_context(
                    SimServer(site, mill_id, speed=1.0, ephemeral=True, mqtt=(host, mport)))
                _, secret = cloud.edges.create(edge_id=f"edge{i}", mill=mill_id, created_by="e2e")
                via = relay.port if mill_id == faulted else port
                es = EdgeSettings(edge_id=f"edge{i}", data_dir=tmp_path / f"edge{i}", device_mqtt=f"mqtt://{host}:{mport}",
                                  cloud_url=f"http://127.0.0.1:{via}", secret=secret.encode(), flush_s=0.2,
                                  status_every_s=0.2, status_heartbeat_s=0.5, scoring=ScoringConfig(commissioning_n=8))
                agents[mill_id] = await stack.enter_async_context(EdgeAgent(rebind(site, sim.ports), mill_id, es))
            agent = agents[faulted]

            async def alarmed_locally() -> bool:
                st = await agent.status()
                return bool(((st.get("models") or {}).get(f"{faulted}/{ASSET}") or {}).get("open_alarms"))
            await _until(alarmed_locally, 75, "the cut-off edge's local alarm on ca01 with the link down")
            assert (await agent.status())["uplink"]["state"] != "connected"
            assert not hs.list_alarms(faulted)               # nothing of the faulted mill reached the cloud yet
            online = [m for m in mills if m != faulted]
            early = cloud_rows()
            assert all(early[m].rows for m in online) and not early[faulted].rows, \
                {m: len(d.rows) for m, d in early.items()}   # the other edges delivered meanwhile, the cut-off none
            await relay.restore()

            async def in_cloud() -> bool:
                return any(a.asset == ASSET for a in hs.list_alarms(faulted)) and \
                    any(w.asset == ASSET for w in hs.list_work_orders(faulted))
            await _until(in_cloud, 45, "the alarm and its work order in the cloud after the link returned")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                r = await c.post("/api/v1/auth/login", json={"username": "zed", "password": "correct horse battery"})
                h = {"Authorization": f"Bearer {r.json()['access_token']}"}

                async def snapshot() -> bool:
                    r = await c.get(f"/api/v1/mills/{faulted}/machines/{MACHINE}/snapshots/latest", headers=h)
                    # an alarm whose edge diagnosis is weak sends its onset waveform as "uncertain" (the cloud
                    # model answers it); either is the alarm's evidence
                    return r.status_code == 200 and any(x["reason"] in ("alarm", "uncertain")
                                                        for x in r.json()["channels"])
                await _until(snapshot, 45, "the alarm's evidence snapshot in the cloud")

            async def backlog_delivered() -> bool:   # the rows buffered offline follow the live ones
                return len(cloud_rows()[faulted].rows) >= 0.8 * min(len(early[m].rows) for m in online)
            await _until(backlog_delivered, 45, "the cut-off edge's buffered card rows in the cloud")

        span = (t_start, time.time_ns())
        reg = cloud.models
        before = cloud_rows()
        assert all(before[m].rows for m in mills), {m: len(d.rows) for m, d in before.items()}
        assert sum(before[faulted].labels) == 0                  # an open order is no label
        res0, cand0 = reg.train("card", before, actor="e2e", span=span)
        assert res0.test_mills == [faulted] and sorted(res0.train_mills) == sorted(online)
        assert res0.comparison["candidate"]["n_fault"] == 0 and cand0 is None, res0.comparison

        # the technician repairs the bearing and the order is verified: a label for the next training
        wo = next(w for w in hs.list_work_orders(faulted) if w.asset == ASSET)
        now = wo.created_at
        wo.assign("tech", by="mgr", at=now)
        wo.start(by="tech", at=now)
        wo.update_fault("bearing_outer", by="tech", at=now, comment="outer race pitting")
        wo.resolve(by="tech", at=now + timedelta(seconds=30), resolution=Resolution.REPAIRED)
        wo.verify(95.0, by="mgr", at=now + timedelta(seconds=31))
        hs.save_work_order(faulted, wo)
        after = cloud_rows()
        n_fault = sum(after[faulted].labels)
        assert n_fault > 0                                       # ca01's rows around the fault are labelled
        res1, cand1 = reg.train("card", after, actor="e2e", span=span)
        assert res1.test_mills == [faulted] and cand1 is not None, res1.comparison
        stored = reg.get(cand1.name, cand1.version)
        assert stored.status == "candidate" and sorted(stored.train_mills) == sorted(online)
        judged = stored.comparison["candidate"]
        assert judged["n_fault"] == n_fault and judged["n_healthy"] == len(after[faulted].labels) - n_fault
        assert not math.isnan(judged["auc"]), judged
    finally:
        await relay.close()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(serving, 15)
