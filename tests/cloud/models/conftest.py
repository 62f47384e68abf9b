"""The real cloud app under uvicorn on a loopback port (a thread of its own, so the edge's blocking
update client can call it from the test), with the zone's mills, users and one edge per mill; and
helpers to build an edge's model slots and a fitted model's parameters."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn

from spinline.cloud.api.deps import Cloud
from spinline.cloud.app import create_app
from spinline.cloud.auth.roles import Role
from spinline.cloud.models.registry import ModelRegistry
from spinline.cloud.models.tuf_repo import TufRepository, generate_root_key
from spinline.cloud.settings import Settings
from spinline.edge.models import ModelSlot
from spinline.edge.scoring import validate_record
from spinline.edge.updates import ApprovedModels, ModelUpdater
from spinline.health.anomaly import VIB_MODEL_KEYS, vibration_detector

PASSWORD = "correct horse battery"
EDGES = {"edge-a": "mill-a", "edge-b": "mill-b", "edge-c": "mill-c"}
USERS = [("zone", Role.ZONE_OPERATOR, []), ("alice", Role.MILL_MANAGER, ["mill-a"]),
         ("bob", Role.MILL_MANAGER, ["mill-b"]), ("vera", Role.VIEWER, ["mill-a"])]
RF_ASSETS = {m: [f"{m}/rf01/main_motor", f"{m}/rf02/main_motor"] for m in EDGES.values()}


@dataclass
class Zone:
    url: str
    cloud: Cloud
    root_key: Path
    tmp: Path
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def registry(self) -> ModelRegistry:
        assert self.cloud.models is not None
        return self.cloud.models

    @property
    def repo(self) -> TufRepository:
        assert self.registry.repo is not None
        return self.registry.repo

    def edge(self, edge: str, *, assets: list[str] | None = None, name: str = "") -> ModelUpdater:
        """An edge's update client over its own data dir and slots (one per ring-frame asset by default)."""
        mill = EDGES[edge]
        approvals = ApprovedModels()
        data = self.tmp / f"{edge}{name}"
        slots = {a: ModelSlot(a, data / "models", verifier=approvals, validate=validate_record)
                 for a in (assets or RF_ASSETS[mill])}
        for s in slots.values():
            s.load()
        root = self.repo.root(1)
        return ModelUpdater(base_url=self.url, edge=edge, mill=mill, secret=self.secrets[edge].encode(),
                            data_dir=data, slots=slots, approvals=approvals, trusted_root=root, report_every_s=0)


def fitted_params(seed: int = 0, scale: float = 1.0) -> dict[str, Any]:
    """What the edge's scorer loads: a fitted vibration detector and baseline medians."""
    rng = np.random.default_rng(seed)
    det = vibration_detector(min_samples=24, seed=seed)
    rows = []
    for _ in range(40):
        r = {k: float(abs(rng.normal(1.0, 0.05)) * scale) for k in VIB_MODEL_KEYS}
        r["shaft_hz"] = 24.7
        rows.append(r)
        det.learn_one(r)
    det.score_one(rows[0])
    base = {k: float(np.median([r[k] for r in rows])) for k in VIB_MODEL_KEYS}
    return {"detector": det.to_dict(), "baseline": base, "commissioning_n": 40, "iso_class": "I"}


def _free_socket() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


@pytest.fixture()
def zone(tmp_path: Path, zone_yaml: Path) -> Iterator[Zone]:
    settings = Settings(db=f"embedded:{tmp_path / 'cloud'}", site=zone_yaml, rollup_refresh_s=0,
                        health_pipeline_s=0, retention_every_s=0, models_every_s=0, argon2_time_cost=1,
                        argon2_memory_kib=64, argon2_parallelism=1,
                        secret_key=base64.urlsafe_b64encode(b"k" * 32).decode())
    app = create_app(settings)
    sock = _free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        cloud: Cloud = app.state.cloud
        z = Zone(f"http://127.0.0.1:{sock.getsockname()[1]}", cloud, tmp_path / "offline" / "root.pem", tmp_path)
        for name, role, mills in USERS:
            cloud.accounts.create_user(username=name, password=PASSWORD, role=role, mills=mills)
        for edge, mill in EDGES.items():
            z.secrets[edge] = cloud.edges.create(edge_id=edge, mill=mill, created_by="test")[1]
        z.repo.init(generate_root_key(z.root_key))
        yield z
    finally:
        server.should_exit = True
        thread.join(15)
