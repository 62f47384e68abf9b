"""The whole platform in one process: simulated mill -> edge agent -> cloud API, on embedded defaults.

This is a composition root only: every part is the production component (the simulator's real
Modbus/OPC UA/MQTT servers, the edge agent with its durable buffer, the cloud's FastAPI app over the
DuckDB store), wired over loopback.

Without ``broker`` an embedded MQTT broker carries the simulated devices' MQTT traffic and the edge
uses the HTTP uplink (the embedded broker speaks MQTT 3.1.1, not the MQTT 5 shared subscriptions
the ingest workers use). With ``broker`` every MQTT hop, uplink included, goes through that broker
and an ingest worker subscribes to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import uvicorn

from spinline.cloud.api.deps import Cloud
from spinline.cloud.app import create_app
from spinline.cloud.auth.roles import Role
from spinline.cloud.settings import Settings
from spinline.core.site import Site, load_site, rebind
from spinline.demo.broker import EmbeddedBroker, free_port
from spinline.edge.agent import EdgeAgent
from spinline.edge.settings import EdgeSettings
from spinline.sim.server import SimServer

log = logging.getLogger(__name__)

DEMO_USER = "admin"
CREDENTIALS_FILE = "demo-credentials.txt"


@dataclass
class DemoSummary:
    """What the demo did, for the terminal and for tests (totals over every mill run)."""

    api_url: str
    mills: list[str]
    edge_ids: list[str]
    wall_s: float = 0.0
    #: Edge status per mill (``EdgeAgent.status()``).
    edges: dict[str, dict[str, Any]] = field(default_factory=dict)
    points_with_values: int = 0
    points_total: int = 0
    by_protocol: dict[str, int] = field(default_factory=dict)
    #: Device points with values in the cloud, per mill.
    per_mill: dict[str, int] = field(default_factory=dict)

    @property
    def edge(self) -> dict[str, Any]:
        """The edge status of the first mill (the whole story for a one-mill site)."""
        return self.edges.get(self.mills[0], {}) if self.mills else {}


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)              # the mode above applies to a new file only; tighten an existing one
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def edge_dir(data_dir: Path, mill: str, single: bool) -> Path:
    """One edge per mill; a one-mill demo keeps the plain ``edge/`` folder."""
    return data_dir / "edge" if single else data_dir / f"edge-{mill}"


def _provision(data_dir: Path, edges: dict[str, tuple[str, Path]]) -> Callable[[Cloud], None]:
    """On first start: a zone-operator login and each mill's edge credential, all kept 0600 in data_dir."""

    def on_ready(cloud: Cloud) -> None:
        creds = data_dir / CREDENTIALS_FILE
        if cloud.meta.user_by_name(DEMO_USER) is None:
            password = secrets.token_urlsafe(12)
            cloud.accounts.create_user(username=DEMO_USER, password=password, role=Role.ZONE_OPERATOR,
                                       full_name="Demo zone operator")
            _write_private(creds, f"username: {DEMO_USER}\npassword: {password}\n")
        for mill, (edge_id, folder) in edges.items():
            secret_file = folder / "edge.secret"
            if secret_file.exists() and cloud.edges.mill_of(edge_id) == mill:
                continue  # a re-run on the same data dir: the edge and its buffer carry on
            if cloud.meta.edge(edge_id) is not None:
                raise RuntimeError(f"edge {edge_id} is registered but {secret_file} is missing or the edge was "
                                   f"revoked: start with a fresh --data-dir")
            _, secret = cloud.edges.create(edge_id=edge_id, mill=mill, description="demo edge",
                                           created_by="demo")
            _write_private(secret_file, secret)

    return on_ready


async def run_demo(site_path: Path, *, mill: str | None = None, data_dir: Path = Path(".spinline/demo"),
                   host: str = "127.0.0.1", port: int = 8000, broker: str | None = None, speed: float = 1.0,
                   seed: int = 42, duration_s: float | None = None, report_every_s: float = 10.0,
                   report: Callable[[str], None] | None = None) -> DemoSummary:
    """Run simulators + edges + cloud until ``duration_s`` (or cancelled); return what happened.

    Every mill of the site runs (a zone file gives the zone operator's view), or only ``mill``.
    """
    site: Site = load_site(site_path)
    mills = [site.mill(mill).id] if mill else [m.id for m in site.mills]
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    single = len(mills) == 1
    edges = {m: (f"edge-{m}", edge_dir(data_dir, m, single)) for m in mills}
    port = port or free_port(host)
    api_url = f"http://{host}:{port}"
    say = report or (lambda s: log.info("%s", s))

    provision = _provision(data_dir, edges)

    def on_ready(cloud: Cloud) -> Callable[[], None] | None:
        provision(cloud)
        if broker is None:
            return None
        from spinline.cloud.ingest.mqtt_worker import IngestWorker

        u = urlparse(broker)
        worker = IngestWorker(cloud.ingest, u.hostname or "127.0.0.1", u.port or 1883, group="demo-ingest",
                              events=cloud.edge_events)
        worker.start()
        return worker.stop

    settings = Settings(db="embedded", data_dir=data_dir / "cloud", site=site_path, rollup_refresh_s=10.0)
    app = create_app(settings, on_ready=on_ready)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    summary = DemoSummary(api_url=api_url, mills=mills, edge_ids=[e for e, _ in edges.values()])
    t0 = time.monotonic()

    async with contextlib.AsyncExitStack() as stack:
        serving = asyncio.create_task(server.serve(), name="cloud-api")
        while not server.started:
            if serving.done():
                serving.result()  # raises the start-up error
                raise RuntimeError("the cloud API stopped during start-up")
            await asyncio.sleep(0.05)
        stack.push_async_callback(_stop_server, server, serving)
        say(f"cloud API on {api_url}/api/docs; login in {data_dir / CREDENTIALS_FILE}")

        if broker is None:
            emb = await stack.enter_async_context(EmbeddedBroker(host))
            device_mqtt, uplink = emb.url, api_url
        else:
            device_mqtt, uplink = broker, broker
        u = urlparse(device_mqtt)
        agents: dict[str, EdgeAgent] = {}
        for m in mills:
            sim = await stack.enter_async_context(
                SimServer(site, m, speed=speed, seed=seed, ephemeral=True,
                          mqtt=(u.hostname or "127.0.0.1", u.port or 1883)))
            edge_id, folder = edges[m]
            secret = (folder / "edge.secret").read_text().strip().encode()
            agents[m] = await stack.enter_async_context(
                EdgeAgent(rebind(site, sim.ports, host=host), m,
                          EdgeSettings(edge_id=edge_id, secret=secret, data_dir=folder, cloud_url=uplink,
                                       device_mqtt=device_mqtt)))
            say(f"mill {m}: simulator on ports {sim.ports} (speed x{speed:g}); edge {edge_id} -> {uplink}")

        protocol_of: dict[int, tuple[str, str]] = {
            r.key: (r.mill.id, r.machine.link.protocol if r.machine.link else "none")
            for m in mills for r in site.points(m)}
        deadline = None if duration_s is None else t0 + duration_s
        next_report = time.monotonic() + min(report_every_s, duration_s or report_every_s)
        while deadline is None or time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if time.monotonic() >= next_report:
                next_report += report_every_s
                await _update(summary, agents, app, protocol_of)
                for m, e in summary.edges.items():
                    say(f"[{time.monotonic() - t0:6.0f}s] {m}: edge collected {e.get('points_collected', 0):,} "
                        f"buffered {e.get('buffer', {}).get('rows', 0):,} uplink {e.get('uplink', {}).get('state')}; "
                        f"cloud has values for {summary.per_mill.get(m, 0)} device points")
        await _update(summary, agents, app, protocol_of)
    summary.wall_s = time.monotonic() - t0
    return summary


async def _update(summary: DemoSummary, agents: dict[str, EdgeAgent], app: Any,
                  protocol_of: dict[int, tuple[str, str]]) -> None:
    summary.edges = {m: await a.status() for m, a in agents.items()}
    cloud: Cloud | None = getattr(app.state, "cloud", None)
    if cloud is None:
        return
    latest = await asyncio.to_thread(cloud.store.latest, list(protocol_of))
    have = set(latest.point.tolist())
    summary.points_total = len(protocol_of)
    summary.points_with_values = len(have)
    counts: dict[str, int] = {}
    per_mill: dict[str, int] = {}
    for k in have:
        mill, proto = protocol_of[k]
        counts[proto] = counts.get(proto, 0) + 1
        per_mill[mill] = per_mill.get(mill, 0) + 1
    summary.by_protocol = dict(sorted(counts.items()))
    summary.per_mill = dict(sorted(per_mill.items()))


async def _stop_server(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await task
