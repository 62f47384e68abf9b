"""A federated round across the three mills of the simulated zone, started from the product, with no raw
data leaving them (issue 11, the end-to-end "Done when").

The three mills of examples/zone.yaml, all marked federated; the cloud API under uvicorn with an MQTT
ingest worker on a private Mosquitto; three real ``spinline edge`` processes: mill-a's uplink is MQTT
(its join request comes signed on ``spinline/down/{mill}/{edge}/requests``), mill-b's and mill-c's are
HTTP (theirs in the signed answer to a status post). Each edge's feature log holds a month of its ring
frames' rows (written before it starts), and mill-a's edge featurises live vibration snapshots of rf01
published on the broker (its device MQTT) before the run: they join its feature log, not the cloud. The zone operator
starts the run through the API; every edge joins by itself (export, Flower client in ``.venv-fl``),
reports ``done`` in its status, and the result is registered as a federated candidate. A mill manager may
not start one. Then: no feature point of those mills holds a value in the cloud's store, no snapshot of
theirs is in the evidence store, training's ``load_rows`` reads nothing of them, and no value of their
rows is in any file the cloud wrote.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from importlib import import_module
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from spinline.cloud.app import create_app
from spinline.cloud.auth.roles import Role
from spinline.cloud.evidence import snapshots_t
from spinline.cloud.ingest.mqtt_worker import IngestWorker
from spinline.cloud.maintenance.pipeline import assets_of
from spinline.cloud.models.training import load_rows
from spinline.cloud.settings import Settings
from spinline.edge.feature_log import FeatureLog
from spinline.health.anomaly import VIB_MODEL_KEYS

_h = import_module("spinline_e2e_helpers")
ThreadedServer, signal_and_reap = _h.ThreadedServer, _h.signal_and_reap

pytestmark = [pytest.mark.mqtt, pytest.mark.slow]
MILLS = ("mill-a", "mill-b", "mill-c")
FEATS = list(VIB_MODEL_KEYS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A Mosquitto of this test's own: the cloud's ingest worker subscribes to every edge's topics."""
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "mosquitto did not start"
                time.sleep(0.1)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(10)


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


def _seed(d: Path, mill: str, seed: int, n: int = 120) -> np.ndarray:
    """A month of the mill's ring-frame rows in its edge's own feature log (one every ~6 h per asset)."""
    rng = np.random.default_rng(seed)
    x = np.exp(rng.normal(0.0, 0.05, (n, len(FEATS))) + rng.normal(0.0, 0.02, len(FEATS)))
    log = FeatureLog(d)
    now = time.time_ns()
    for i, r in enumerate(x):
        log.append(f"{mill}/rf0{1 + i % 2}/main_motor", now - (i + 1) * 21_600 * 10**9,
                   dict(zip(FEATS, r.tolist(), strict=True)))
    log.close()
    return x


def _publish_vibration(host: str, port: int, edge_dir: Path, seeded: int, n: int = 6) -> int:
    """Publish ``n`` waveform snapshots of mill-a's rf01 main motor and wait until its edge logged them."""
    import sqlite3

    import paho.mqtt.client as paho

    from spinline.sim.mqtt_publisher import vibration_payload, vibration_topic

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"e2e-vib-{uuid.uuid4().hex[:6]}")
    c.connect(host, port)
    c.loop_start()
    rng = np.random.default_rng(7)
    fs, t = 25600.0, np.arange(25600) / 25600.0
    try:
        for i in range(n):
            x = 0.3 * np.sin(2 * np.pi * 24.7 * t) + rng.normal(0.0, 0.05, t.size)
            ts_ms = int(time.time() * 1000) - (n - i) * 1000
            c.publish(vibration_topic("mill-a", "rf01", "main_motor"), vibration_payload(ts_ms, x, fs, 1480.0),
                      qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.closing(sqlite3.connect(edge_dir / "features.sqlite")) as db:
                have = int(db.execute("SELECT count(*) FROM rows").fetchone()[0]) - seeded
            if have >= n:
                return have
            assert time.monotonic() < deadline, f"mill-a's edge logged {have} of {n} live snapshots"
            time.sleep(0.3)
    finally:
        c.loop_stop()
        c.disconnect()


def _leaks(blob: bytes, values: np.ndarray) -> list[float]:
    """Values found in ``blob`` as float64 (either byte order) or as text (first 11 characters of repr)."""
    wins = {bytes(blob[i:i + 8]) for i in range(max(0, len(blob) - 7))}
    text = blob.decode("latin-1")
    return [v for v in values.ravel().tolist()
            if struct.pack("<d", v) in wins or struct.pack(">d", v) in wins or repr(v)[:11] in text]


async def test_a_federated_round_across_the_zone_completes_with_no_raw_data_leaving_the_mills(
        tmp_path: Path, zone_yaml: Path, private_broker: tuple[str, int]) -> None:
    host, port = private_broker
    doc = yaml.safe_load(zone_yaml.read_text())
    for m in doc["mills"]:
        m["federated"] = True
    site_file = tmp_path / "zone-federated.yaml"
    site_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    cloud_dir = tmp_path / "cloud"
    settings = Settings(db=f"embedded:{cloud_dir}", site=site_file, rollup_refresh_s=0, health_pipeline_s=0,
                        retention_every_s=0, models_every_s=0, argon2_time_cost=1, argon2_memory_kib=64,
                        argon2_parallelism=1, secret_key=base64.urlsafe_b64encode(b"f" * 32).decode())

    def on_ready(cloud: Any) -> Callable[[], None]:
        worker = IngestWorker(cloud.ingest, host, port, client_id=f"e2e-fed-{uuid.uuid4().hex[:6]}",
                              events=cloud.edge_events, evidence=cloud.evidence)
        worker.federated_take = cloud.federated.take
        worker.start()
        cloud.publish_requests = worker.publish_requests
        return worker.stop

    app = create_app(settings, on_ready=on_ready)
    srv = ThreadedServer(app)
    url = srv.url
    procs: list[subprocess.Popen[bytes]] = []
    try:
        srv.start()
        cloud = app.state.cloud
        cloud.accounts.create_user(username="zone", password="zone-operator-pw", role=Role.ZONE_OPERATOR, mills=[])
        cloud.accounts.create_user(username="alice", password="mill-manager-pw", role=Role.MILL_MANAGER,
                                   mills=["mill-a"])
        tag = uuid.uuid4().hex[:6]
        edges: dict[str, tuple[str, Path]] = {}
        rows: dict[str, np.ndarray] = {}
        for i, mill in enumerate(MILLS):
            edge = f"{mill}-{tag}"
            secret = cloud.edges.create(edge_id=edge, mill=mill, created_by="e2e")[1]
            d = tmp_path / edge
            d.mkdir()
            rows[mill] = _seed(d, mill, i)
            edges[mill] = (edge, d)
            uplink = f"mqtt://{host}:{port}" if mill == "mill-a" else url
            devices = f"mqtt://{host}:{port}" if mill == "mill-a" else "mqtt://127.0.0.1:9"
            err = open(d / "edge.log", "wb")  # noqa: SIM115 - owned by the child
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "spinline.edge", str(site_file), "--mill", mill, "--cloud", uplink,
                 "--edge-id", edge, "--data-dir", str(d), "--device-mqtt", devices,
                 "--status-heartbeat-s", "1", "--log-level", "WARNING"],
                env=dict(os.environ, SPINLINE_EDGE_SECRET=secret), stdout=subprocess.DEVNULL, stderr=err))
            err.close()
        for mill, (_e, d) in edges.items():
            await _until(lambda d=d: (_status(d).get("uplink") or {}).get("state") == "connected",
                         f"{mill}'s edge did not connect", 45)

        # live vibration at mill-a: rf01's snapshots are featurised and scored on the edge, and kept there
        _ea, da = edges["mill-a"]
        live = await asyncio.to_thread(_publish_vibration, host, port, da, len(rows["mill-a"]))

        async def login(user: str, pw: str) -> dict[str, str]:
            r = await asyncio.to_thread(httpx.post, f"{url}/api/v1/auth/login",
                                        json={"username": user, "password": pw})
            return {"Authorization": f"Bearer {r.json()['access_token']}"}

        runs_url = f"{url}/api/v1/models/federated-runs"
        body = {"machine_type": "ring_frame", "held_out": ["mill-c"], "timeout_s": 60}
        alice = await login("alice", "mill-manager-pw")
        r = await asyncio.to_thread(httpx.post, runs_url, headers=alice, json=body)
        assert r.status_code == 403, r.text
        zone = await login("zone", "zone-operator-pw")
        r = await asyncio.to_thread(httpx.post, runs_url, headers=zone, json=body, timeout=60)
        assert r.status_code == 202, r.text
        run = r.json()
        assert run["status"] == "running" and run["mills"] == {"train": ["mill-a", "mill-b"], "test": ["mill-c"]}

        # every edge joins by itself and reports it; the run ends with a federated candidate
        def record() -> dict[str, Any]:
            return dict(httpx.get(f"{runs_url}/{run['id']}", headers=zone).json())

        await _until(lambda: record()["status"] != "running", "the federated run did not end", 90)
        rec = record()
        assert rec["status"] == "done", rec["detail"]
        for mill, (_e, d) in edges.items():
            await _until(lambda d=d: (_status(d).get("federated") or {}).get("state") == "done",
                         f"{mill}'s edge does not report the run done", 15)
            fl = _status(d)["federated"]
            assert fl["run"] == run["id"] and fl["rows"] == len(rows[mill]) + (live if mill == "mill-a" else 0)
            assert fl["done"] == 1
            assert not list(d.glob("fl-rows-*.json")), "the rows file outlived the run"
        cand = cloud.models.get("ring_frame.mahalanobis", rec["version"])
        assert cand.status == "candidate" and cand.metrics["federated"] and cand.comparison["federated"]
        assert cand.train_mills == ["mill-a", "mill-b"] and cand.comparison["held_out_mills"] == ["mill-c"]
        assert cand.metrics["n_train"] == len(rows["mill-a"]) + live + len(rows["mill-b"])
        assert cand.metrics["n_healthy"] == len(rows["mill-c"])    # mill-c evaluated on its own rows
        assert all(p.poll() is None for p in procs), "an edge process died"

        # no raw data of the mills reached the cloud
        store, now = cloud.store, time.time_ns()
        mills = {r.id: r.config for r in cloud.meta.mills()}
        with cloud.meta.engine.connect() as con:
            snaps = con.execute(sa.select(sa.func.count()).select_from(snapshots_t)).scalar_one()
        assert snaps == 0
        for mill in MILLS:   # what does go up: the model outputs (anomaly score, health index); no feature
            sent = sorted(f"{a.id}:{f}" for a in assets_of(store.points(mill), mill) for f, k in a.points.items()
                          if len(store.range(k, 0, now, resolution="raw").ts_ns))
            assert [x for x in sent if x.rsplit(":", 1)[1] not in ("anomaly_score", "health_index")] == [], sent
        assert load_rows(store, lambda _m: [], mills, "ring_frame", 0, now) == {}
    finally:
        for p in procs:
            signal_and_reap(p, signal.SIGINT)
        srv.stop()
    lf = FeatureLog(edges["mill-a"][1])
    live_rows = np.array([list(json.loads(f).values()) for (f,) in lf.db.execute(
        "SELECT features FROM rows ORDER BY id DESC LIMIT ?", (live,))])
    lf.close()
    assert live_rows.size >= live * len(FEATS)
    # the live features with 8 significant digits or more (a round 3.0 is in any file; these are not)
    live_vals = [v for v in live_rows.ravel().tolist() if v > 0 and len(repr(v).replace(".", "").lstrip("0")) >= 8]
    assert len(live_vals) >= live * len(FEATS) // 2
    rows["mill-a"] = np.concatenate([rows["mill-a"].ravel(), np.array(live_vals)])
    blob = b"".join(p.read_bytes() for p in cloud_dir.rglob("*") if p.is_file())
    for mill in MILLS:
        assert _leaks(blob, np.concatenate([rows[mill].ravel(), np.log(rows[mill]).ravel()])) == [], mill
