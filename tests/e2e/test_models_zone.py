"""Models across the zone, with real processes: the cloud API (uvicorn) with its TUF repository and the
MQTT nudge on the machine's Mosquitto, and three ``spinline edge`` processes (one per mill of
examples/zone.yaml) provisioned with their secret and the repository's root.json.

A model promoted in the registry reaches every edge (seen in each edge's status.json and in the fleet
API); a tampered update, an expired (frozen) one and a validly signed step back to an older version
the registry did not record (a rollback attack) are each refused, with the reason in the edge's status
and the fleet view, while the edge keeps the model it had; a rollback the registry asks for is taken;
a canary whose alarms the technicians close as no fault found (work-order API) is rolled back by the
canary judge with its reason, and the edge steps back. Data goes over HTTP (this test must not feed
other tests' clouds on the shared broker); only the nudges use Mosquitto, on topics named by this
test's random edge ids.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import import_module
from pathlib import Path
from typing import Any

import httpx
import pytest

from spinline.cloud.app import create_app
from spinline.cloud.auth.roles import Role
from spinline.cloud.maintenance.service import Maintenance
from spinline.cloud.maintenance.store import HealthStore
from spinline.cloud.models import tables as t
from spinline.cloud.models.nudge import MqttNudger
from spinline.cloud.models.tuf_repo import TufRepository, generate_root_key
from spinline.cloud.settings import Settings
from spinline.core.modelspec import canonical, desired_path
from spinline.health.alarms import Severity
from spinline.health.anomaly import VIB_MODEL_KEYS, vibration_detector

_h = import_module("spinline_e2e_helpers")
ThreadedServer, signal_and_reap = _h.ThreadedServer, _h.signal_and_reap

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]
RF = "ring_frame.mahalanobis"
MILLS = ("mill-a", "mill-b", "mill-c")
RF_ASSETS = ("rf01/main_motor", "rf02/main_motor")


def _params(seed: int) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    det = vibration_detector(seed=seed)
    rows = [{k: float(abs(rng.normal(1.0, 0.05))) for k in VIB_MODEL_KEYS} | {"shaft_hz": 24.7} for _ in range(40)]
    for r in rows:
        det.learn_one(r)
    det.score_one(rows[0])
    return {"detector": det.to_dict(), "baseline": {k: 1.0 for k in VIB_MODEL_KEYS}, "iso_class": "I"}


def _trained(reg: Any) -> Any:
    """The registry's own training on labelled feature rows of the zone's mills (an outer-race defect
    raises the BPFO envelope line and the kurtosis): the candidate it registers is what ships."""
    import numpy as np

    from spinline.cloud.models.training import MillRows

    rng = np.random.default_rng(0)
    data = {}
    for m in MILLS:
        mr = MillRows()
        for j in range(120):
            fault = j % 6 == 0
            r = {k: float(np.exp(rng.normal(0.0, 0.05))) for k in VIB_MODEL_KEYS}
            if fault:
                r["env_bpfo"] *= 3.0
                r["kurtosis"] *= 1.6
            mr.add(r, int(fault))
        data[m] = mr
    res, model = reg.train("ring_frame", data, actor="e2e")
    assert model is not None and model.name == RF, res.comparison
    return model


def _status(d: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((d / "status.json").read_text()))
    except (OSError, ValueError):
        return {}


async def _until(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


def _running(d: Path, mill: str) -> dict[str, str | None]:
    models = _status(d).get("models") or {}
    return {a: (models.get(f"{mill}/{a}") or {}).get("version") for a in RF_ASSETS}


async def test_models_reach_every_edge_and_bad_updates_are_refused(tmp_path: Path, zone_yaml: Path,
                                                                   mqtt_broker: tuple[str, int]) -> None:
    host, port = mqtt_broker
    settings = Settings(db=f"embedded:{tmp_path / 'cloud'}", site=zone_yaml, rollup_refresh_s=0, health_pipeline_s=0,
                        retention_every_s=0, models_every_s=0, argon2_time_cost=1, argon2_memory_kib=64,
                        argon2_parallelism=1, secret_key=base64.urlsafe_b64encode(b"z" * 32).decode())
    nudger = MqttNudger(host, port, client_id=f"e2e-models-{uuid.uuid4().hex[:6]}")

    def on_ready(cloud: Any) -> Callable[[], None]:
        nudger.start()
        cloud.models.notify = nudger
        return nudger.stop

    app = create_app(settings, on_ready=on_ready)
    srv = ThreadedServer(app)
    url = srv.url
    procs: list[subprocess.Popen[bytes]] = []
    try:
        srv.start()
        cloud = app.state.cloud
        reg = cloud.models
        reg.repo.init(generate_root_key(tmp_path / "offline" / "root.pem"))
        root = tmp_path / "root.json"
        root.write_bytes(reg.repo.root())
        cloud.accounts.create_user(username="zone", password="zone-operator-pw", role=Role.ZONE_OPERATOR, mills=[])
        tag = uuid.uuid4().hex[:6]
        edges: dict[str, tuple[str, Path]] = {}
        for mill in MILLS:
            edge = f"{mill}-{tag}"
            secret = cloud.edges.create(edge_id=edge, mill=mill, created_by="e2e")[1]
            d = tmp_path / edge
            d.mkdir()
            edges[mill] = (edge, d)
            err = open(d / "edge.log", "wb")  # noqa: SIM115 - owned by the child
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "spinline.edge", str(zone_yaml), "--mill", mill, "--cloud", url,
                 "--edge-id", edge, "--data-dir", str(d), "--device-mqtt", "mqtt://127.0.0.1:9",
                 "--tuf-root", str(root), "--models-every-s", "60", "--models-nudge", f"mqtt://{host}:{port}",
                 "--log-level", "WARNING"],
                env=dict(os.environ, SPINLINE_EDGE_SECRET=secret), stdout=subprocess.DEVNULL, stderr=err))
            err.close()
        for mill, (_e, d) in edges.items():
            await _until(lambda d=d: (_status(d).get("model_updates") or {}).get("checks", 0) >= 1,
                         f"{mill}'s edge did not start checking for models")
        await asyncio.sleep(1.0)   # the nudge subscriptions are in place

        # 1. a model promoted in the registry reaches every edge (nudged: their poll is a minute)
        v1 = _trained(reg).version   # trained in the cloud, mill-wise, from labelled rows of the three mills
        t0 = time.monotonic()
        await asyncio.to_thread(reg.promote, RF, v1, mills=list(MILLS), actor="zone", reason="e2e")
        for mill, (_e, d) in edges.items():
            await _until(lambda d=d, mill=mill: set(_running(d, mill).values()) == {v1}, f"{mill} did not get {v1}")
        reach_s = time.monotonic() - t0
        assert reach_s < 30
        tok = httpx.post(f"{url}/api/v1/auth/login", json={"username": "zone", "password": "zone-operator-pw"}
                         ).json()["access_token"]
        auth = {"Authorization": f"Bearer {tok}"}

        def fleet() -> dict[str, Any]:
            return {e["id"]: e for e in httpx.get(f"{url}/api/v1/edges", headers=auth).json()}

        await _until(lambda: all(all(x["converged"] for x in fleet()[e]["models"]["assets"].values())
                                 for e, _d in edges.values()), "the fleet view does not show every edge converged")
        assert all(fleet()[e]["versions"][f"{m}/rf01/main_motor"] == v1 for m, (e, _d) in edges.items())

        # 2. a tampered model on its way to mill-a's edge is refused; the edge keeps v1
        v2 = reg.register(name=RF, scope_kind="machine_type", scope="ring_frame", kind="asset_monitor/mahalanobis",
                          params=_params(1), actor="e2e").version
        orig_publish = reg.repo.publish

        def tampering_publish(mill: str, files: dict[str, bytes]) -> int:
            version = orig_publish(mill, files)
            if mill == "mill-a":
                path = reg.get(RF, v2).target
                with reg.engine.begin() as con:
                    con.execute(t.tuf_targets.update().where(t.tuf_targets.c.mill == mill,
                                                             t.tuf_targets.c.path == path)
                                .values(data=files[path].replace(b'"far":0.001', b'"far":0.5')))
            return version

        reg.repo.publish = tampering_publish  # type: ignore[method-assign]
        await asyncio.to_thread(reg.promote, RF, v2, mills=list(MILLS), actor="zone", reason="e2e v2")
        reg.repo.publish = orig_publish  # type: ignore[method-assign]
        ea, da = edges["mill-a"]
        await _until(lambda: ((_status(da).get("model_updates") or {}).get("refusals") or {}).get("tampered", 0) >= 1,
                     "mill-a's edge did not refuse the tampered model")
        assert set(_running(da, "mill-a").values()) == {v1}
        for mill in ("mill-b", "mill-c"):
            _e, d = edges[mill]
            await _until(lambda d=d, mill=mill: set(_running(d, mill).values()) == {v2}, f"{mill} did not get {v2}")
        await _until(lambda: (fleet()[ea]["models"].get("refusals") or {}).get("tampered", 0) >= 1,
                     "the fleet view does not show the refusal")
        assert fleet()[ea]["models"]["last_refusal"]["reason"] == "tampered"

        # 3. metadata signed two days ago (a frozen repository) is refused as expired
        live = reg.repo
        reg.repo = TufRepository(live.engine, live.sealer, clock=lambda: time.time_ns() - 2 * 86400 * 10**9)
        await asyncio.to_thread(reg.publish, "mill-b")
        reg.repo = live
        eb, db = edges["mill-b"]
        await _until(lambda: ((_status(db).get("model_updates") or {}).get("refusals") or {}).get("expired", 0) >= 1,
                     "mill-b's edge did not refuse the expired metadata")
        assert set(_running(db, "mill-b").values()) == {v2}

        # 3b. a rollback attack: validly signed metadata (a stolen online key, an insider) desires the older v1 at
        # mill-c's edge without the registry's recorded rollback: refused, the edge keeps v2
        ec, dc = edges["mill-c"]
        m1 = reg.get(RF, v1)
        doc = reg.desired_doc("mill-c", ec, reg.assets("mill-c"))
        for want in doc["assets"].values():
            want.update(version=v1, seq=m1.seq, sha256=m1.sha256, target=m1.target, allow_rollback=False)
        tv = await asyncio.to_thread(reg.repo.publish, "mill-c", {desired_path(ec): canonical(doc),
                                                                  m1.target: reg.artefact(m1)})
        nudger("mill-c", [ec], tv)
        await _until(lambda: ((_status(dc).get("model_updates") or {}).get("refusals") or {}).get("rollback", 0) >= 1,
                     "mill-c's edge did not refuse the rollback it was not asked for")
        assert set(_running(dc, "mill-c").values()) == {v2}
        await _until(lambda: (fleet()[ec]["models"].get("last_refusal") or {}).get("reason") == "rollback",
                     "the fleet view does not show the rollback refusal")

        # 4. the registry rolls v2 back: every edge returns to v1 (mill-a never left it)
        await asyncio.to_thread(reg.rollback, RF, actor="zone", reason="e2e rollback")
        for mill, (_e, d) in edges.items():
            await _until(lambda d=d, mill=mill: set(_running(d, mill).values()) == {v1},
                         f"{mill} did not roll back to {v1}")

        # 5. a bad canary on mill-a's edge: its alarms are closed as no fault found through the work-order API;
        # the canary judge rolls it back with no human step, the reason recorded, and the edge steps back
        v3 = reg.register(name=RF, scope_kind="machine_type", scope="ring_frame", kind="asset_monitor/mahalanobis",
                          params=_params(3), actor="e2e").version
        await asyncio.to_thread(reg.canary, RF, v3, mills=["mill-a"], actor="zone", reason="e2e canary", share=1.0)
        await _until(lambda: set(_running(da, "mill-a").values()) == {v3}, "mill-a did not get the canary")
        hs = HealthStore(reg.engine)
        wo_url = f"{url}/api/v1/mills/mill-a/maintenance/work-orders"
        for asset in RF_ASSETS:
            al = Maintenance(hs).record_alarm("mill-a", asset=asset, rule="anomaly", severity=Severity.WARNING,
                                              message="anomaly", raised_at=datetime.now(UTC).replace(tzinfo=None),
                                              value=1.5, evidence={"source": "edge", "model_version": v3})
            wo = httpx.post(wo_url, headers=auth, json={"alarm_id": al.id}).json()
            for step, body in (("assign", {"assignee": "tech"}), ("start", {}),
                               ("resolve", {"resolution": "no_fault_found", "comment": "bearing fine"})):
                r = httpx.post(f"{wo_url}/{wo['id']}/{step}", headers=auth, json=body)
                assert r.status_code == 200, r.text
        verdicts = await asyncio.to_thread(reg.evaluate_canaries)
        assert [(m.version, v.decision) for m, v in verdicts] == [(v3, "rollback")]
        last = reg.get(RF, v3).transitions[-1]
        assert last.actor == "canary-judge" and "no fault found: 2" in last.reason
        await _until(lambda: set(_running(da, "mill-a").values()) == {v1}, "mill-a did not step back from the canary")
        assert all(p.poll() is None for p in procs), "an edge process died"
    finally:
        for p in procs:
            signal_and_reap(p, signal.SIGINT)
        srv.stop()
