"""The whole platform in one process: simulated mill -> edge agent -> cloud API, on embedded defaults.

This is a composition root only: every part is the production component (the simulator's real
Modbus/OPC UA/MQTT servers, the edge agent with its durable buffer, the cloud's FastAPI app over the
DuckDB store), wired over loopback.

Before it goes live the demo back-fills ``history_days`` of each mill's past through the real path
(``spinline.demo.history``: the simulator -> the edge's encoding and signing -> the cloud's ingest ->
rollups -> the health pipeline), with the faults of the site's schedule developing from the start
of the history and one edge down for a few hours. The simulator that wrote the history then runs
live, so its counters and faults carry on. A restart on the same data dir writes no history again
(``history.json`` says what was written); its simulators are fast-forwarded to now in silence.

Without ``broker`` an embedded MQTT broker carries the simulated devices' MQTT traffic and the edge
uses the HTTP uplink (the embedded broker speaks MQTT 3.1.1, not the MQTT 5 shared subscriptions
the ingest workers use). With ``broker`` every MQTT hop, uplink included, goes through that broker
and an ingest worker subscribes to it.

Model updates are on: the first start initialises the cloud's TUF repository with a root key kept
(0600) in the data dir as ``tuf-root.pem`` (a demo stand-in for the offline key of a real zone) and
writes ``root.json``, each edge's trust anchor; every edge then polls its signed desired state
(``models_every_s``) over HTTP, and with ``broker`` the cloud nudges the edges there on a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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
from spinline.demo.history import STEP_S, HistoryPlan, HistoryReport, HistoryWriter, offline_episode, replay
from spinline.edge.agent import EdgeAgent
from spinline.edge.settings import EdgeSettings
from spinline.sim.server import SimServer

log = logging.getLogger(__name__)

DEMO_USER = "admin"
ROOT_KEY_FILE = "tuf-root.pem"
ROOT_FILE = "root.json"
#: The demo's edges check for model updates this often (a nudge over the broker makes one at once).
MODELS_EVERY_S = 60.0
CREDENTIALS_FILE = "demo-credentials.txt"
HISTORY_FILE = "history.json"


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
    #: What the back-fill wrote per mill (empty when it was already there or disabled).
    history: dict[str, HistoryReport] = field(default_factory=dict)
    history_s: float = 0.0
    #: [start, end) of the history in the data dir (this run's or an earlier one's), ns.
    history_span: tuple[int, int] | None = None
    #: Per mill, the times the history's simulator was stepped to (``history.replay`` on a restart).
    history_untils: dict[str, list[int]] = field(default_factory=dict)
    #: Mill and [start, end) of the edge outage in the history.
    offline: tuple[str, int, int] | None = None

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
        _provision_models(cloud, data_dir, list(edges))

    return on_ready


def _provision_models(cloud: Cloud, data_dir: Path, mills: list[str]) -> None:
    """The update repository (once per data dir), ``root.json`` (the edges' trust anchor) and each mill's
    first signed desired state (nothing desired yet: the edges keep their commissioned baselines)."""
    from spinline.cloud.models.tuf_repo import generate_root_key, load_root_key

    reg = cloud.models
    repo = reg.repo if reg is not None else None
    if reg is None or repo is None:
        return
    if not repo.initialised():
        key = data_dir / ROOT_KEY_FILE
        repo.init(load_root_key(key) if key.exists() else generate_root_key(key))
    root = repo.root()
    assert root is not None
    (data_dir / ROOT_FILE).write_bytes(root)
    for mill in mills:
        if repo.metadata(mill, "timestamp") is None:
            reg.publish(mill)


async def run_demo(site_path: Path, *, mill: str | None = None, data_dir: Path = Path(".spinline/demo"),
                   host: str = "127.0.0.1", port: int = 8000, broker: str | None = None, speed: float = 1.0,
                   seed: int = 42, duration_s: float | None = None, report_every_s: float = 10.0,
                   report: Callable[[str], None] | None = None, history_days: float = 21.0,
                   stop_when_complete: bool = False) -> DemoSummary:
    """Back-fill ``history_days`` of the past, then run simulators + edges + cloud until ``duration_s``.

    Every mill of the site runs (a zone file gives the zone operator's view), or only ``mill``.
    ``stop_when_complete`` ends the run at the first progress report where the cloud has a value for
    every device point (a smoke run: ``duration_s`` is then the upper bound, not the length).
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
    summary = DemoSummary(api_url=api_url, mills=mills, edge_ids=[e for e, _ in edges.values()])
    t0 = time.monotonic()

    # The history: written once per data dir. Its start fixes the simulators' clock origin (the
    # faults of the site's schedule count from it), on this run and on every later one.
    marker = data_dir / HISTORY_FILE
    done = _read_marker(marker)
    now = time.time_ns() // 10**9 * 10**9
    resume = done is not None and not done.get("complete", True)
    if done is not None:
        hist_start = int(done["start_ns"])
        off = done.get("offline")
        summary.offline = (str(off[0]), int(off[1]), int(off[2])) if off else None
        summary.history_span = (hist_start, now if resume else int(done["end_ns"]))
        summary.history_untils = {str(m): [int(x) for x in u] for m, u in (done.get("untils") or {}).items()}
    elif history_days > 0:
        hist_start = now - int(history_days * 86400) * 10**9
        summary.history_span = (hist_start, now)
        ep = offline_episode(hist_start, now)
        summary.offline = (mills[0], ep[0], ep[1]) if ep else None
    else:
        hist_start = now
    write_history = resume or (done is None and history_days > 0)

    provision = _provision(data_dir, edges)
    app: Any = None
    sims: dict[str, SimServer] = {}       # built once the device broker's address is known

    def on_ready(cloud: Cloud) -> Callable[[], None] | None:
        provision(cloud)
        if write_history:
            # Marked first: an interrupted back-fill resumes with the same start and outage (its
            # batches are the same, so the ones already stored are duplicates and skipped).
            _write_marker(marker, summary, mills, complete=False)
            _backfill(cloud, app, sims, edges, hist_start, summary, say)
            _write_marker(marker, summary, mills, complete=True)
        else:
            # The history's steps again (the counters the cloud has), then the mills kept running while
            # the demo was off: catch up in silence, in the history's one-minute steps.
            for m, sim in sims.items():
                if summary.history_untils.get(m):
                    replay(sim.sim, hist_start, summary.history_untils[m])
                _fast_forward(sim, time.time_ns())
        if broker is None:
            return None
        from spinline.cloud.ingest.mqtt_worker import IngestWorker

        u = urlparse(broker)
        worker = IngestWorker(cloud.ingest, u.hostname or "127.0.0.1", u.port or 1883, group="demo-ingest",
                              events=cloud.edge_events)
        worker.start()
        from spinline.cloud.models.nudge import MqttNudger

        nudger = MqttNudger(u.hostname or "127.0.0.1", u.port or 1883, client_id=f"spinline-demo-models-{port}")
        nudger.start()
        if cloud.models is not None:
            cloud.models.notify = nudger

        def stop() -> None:
            worker.stop()
            nudger.stop()
        return stop

    lookback = max(86400.0, (now - hist_start) / 1e9 + 86400.0)
    settings = Settings(db="embedded", data_dir=data_dir / "cloud", site=site_path, rollup_refresh_s=10.0,
                        health_lookback_s=lookback)
    app = create_app(settings, on_ready=on_ready)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))

    async with contextlib.AsyncExitStack() as stack:
        if broker is None:
            emb = await stack.enter_async_context(EmbeddedBroker(host))
            # amqtt speaks MQTT 3.1.1 only: say so, rather than let the edge find out from a dropped v5 CONNECT.
            device_mqtt, uplink = emb.url + "?protocol=3.1.1", api_url
        else:
            device_mqtt, uplink = broker, broker
        u = urlparse(device_mqtt)
        sims.update({m: SimServer(site, m, speed=speed, seed=seed, ephemeral=True, start_ns=hist_start,
                                  mqtt=(u.hostname or "127.0.0.1", u.port or 1883)) for m in mills})
        serving = asyncio.create_task(server.serve(), name="cloud-api")
        while not server.started:
            if serving.done():
                serving.result()  # raises the start-up error
                raise RuntimeError("the cloud API stopped during start-up")
            await asyncio.sleep(0.05)
        stack.push_async_callback(_stop_server, server, serving)

        agents: dict[str, EdgeAgent] = {}
        for m in mills:
            sim = sims[m]
            _fast_forward(sim, time.time_ns())     # the history took a while: no seam at the start of live
            await stack.enter_async_context(sim)
            edge_id, folder = edges[m]
            secret = (folder / "edge.secret").read_text().strip().encode()
            agents[m] = await stack.enter_async_context(
                EdgeAgent(rebind(site, sim.ports, host=host), m,
                          EdgeSettings(edge_id=edge_id, secret=secret, data_dir=folder, cloud_url=uplink,
                                       device_mqtt=device_mqtt, tuf_root=(data_dir / ROOT_FILE).read_bytes(),
                                       models_url=api_url, models_every_s=MODELS_EVERY_S)))
            say(f"mill {m}: simulator on ports {sim.ports} (speed x{speed:g}); edge {edge_id} -> {uplink}")
        creds = data_dir / CREDENTIALS_FILE
        say(f"console: {api_url}/  (API: {api_url}/api/docs)")
        say(f"login: user {DEMO_USER!r}, password in {creds} (readable by you only)")

        protocol_of: dict[int, tuple[str, str]] = {
            r.key: (r.mill.id, r.machine.link.protocol if r.machine.link else "none")
            for m in mills for r in site.points(m)}
        t_live = time.monotonic()
        deadline = None if duration_s is None else t_live + duration_s
        next_report = time.monotonic() + min(report_every_s, duration_s or report_every_s)
        while deadline is None or time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if time.monotonic() >= next_report:
                next_report += report_every_s
                await _update(summary, agents, app, protocol_of)
                for m, e in summary.edges.items():
                    say(f"[{time.monotonic() - t_live:6.0f}s] {m}: edge collected {e.get('points_collected', 0):,} "
                        f"buffered {e.get('buffer', {}).get('rows', 0):,} uplink {e.get('uplink', {}).get('state')}; "
                        f"cloud has values for {summary.per_mill.get(m, 0)} device points")
                if stop_when_complete and summary.points_total and \
                        summary.points_with_values == summary.points_total:
                    break
        await _update(summary, agents, app, protocol_of)
    summary.wall_s = time.monotonic() - t0
    return summary


def _read_marker(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        int(d["start_ns"]), int(d["end_ns"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"{path} is unreadable ({exc}): start with a fresh --data-dir") from None
    return dict(d)


def _write_marker(path: Path, summary: DemoSummary, mills: list[str], *, complete: bool) -> None:
    span = summary.history_span
    assert span is not None
    path.write_text(json.dumps({"start_ns": span[0], "end_ns": span[1], "mills": mills, "complete": complete,
                                "offline": list(summary.offline) if summary.offline else None,
                                "untils": summary.history_untils,
                                "rows": {m: r.rows for m, r in summary.history.items()}}, indent=1),
                    encoding="utf-8")


def _fast_forward(sim: SimServer, until_ns: int) -> None:
    """Step a simulator to ``until_ns`` without sending anything (the demo was not running).

    In one-minute steps, as the history and near what the live simulator does: coarser steps drift
    (hour steps: a few per cent of the output over weeks, booked at once when the demo resumes).
    """
    step = STEP_S
    while (gap := (until_ns - sim.sim.now_ns) / 1e9) >= 1.0:
        n = int(gap // step)
        if n:
            sim.sim.advance(min(n, 1440), step)
        else:
            sim.sim.advance(1, gap)


def _backfill(cloud: Cloud, app: Any, sims: dict[str, SimServer], edges: dict[str, tuple[str, Path]],
              start_ns: int, summary: DemoSummary, say: Callable[[str], None]) -> None:
    """Write each mill's history up to now, catch up with the clock, then rollups and the health pipeline."""
    t0, cpu0 = time.monotonic(), time.process_time()
    end = summary.history_span[1] if summary.history_span else time.time_ns()
    days = (end - start_ns) / 86400e9
    say(f"writing {days:g} days of history for {', '.join(sims)} (simulator -> edge encoding -> cloud ingest)")
    first, off = (summary.offline[0], summary.offline[1:]) if summary.offline else ("", None)
    writers: dict[str, HistoryWriter] = {}
    # Rollups of one mill are computed (in DuckDB, off the GIL) while the next mill is simulated.
    rollups = ThreadPoolExecutor(1, thread_name_prefix="history-rollups")
    pending: list[Future[None]] = []
    for m, srv in sims.items():
        edge_id, folder = edges[m]
        secret = (folder / "edge.secret").read_text().strip().encode()
        plan = HistoryPlan(start_ns, end, offline=off if m == first else None)
        events = cloud.edge_events.handle if cloud.edge_events is not None else None
        evidence = getattr(cloud, "evidence", None)
        w = HistoryWriter(srv.sim, plan, edge_id=edge_id, secret=secret, edge_dir=folder,
                          ingest=cloud.ingest.handle_many, events=events, progress=say,
                          snapshots=evidence.handle if evidence is not None else None)
        writers[m] = w
        r = w.run()
        pending.append(rollups.submit(cloud.store.refresh_rollups))
        summary.history[m] = r
        bad = f", REFUSED {r.rejected}" if r.rejected else ""
        say(f"  {m}: {r.rows:,} readings in {r.payloads} signed batches, {r.snapshots} vibration snapshots "
            f"(the newest {r.raw_snapshots} kept as raw waveforms), "
            f"{r.events} edge alarm events{bad} ({time.monotonic() - t0:.0f}s)")
    if off is not None:
        say(f"  edge {edges[first][0]} was down {_hhmm(off[0])}-{_hhmm(off[1])} UTC: not collected")
    for f in pending:
        f.result()
    rollups.shutdown()
    # The clock moved on while the history was written: bring every mill up to now.
    for _ in range(3):
        now = time.time_ns()
        if all(now - w.sim.now_ns < 60 * 10**9 for w in writers.values()):
            break
        for w in writers.values():
            w.run(now)
    summary.history_untils = {m: list(w.untils) for m, w in writers.items()}
    cloud.store.refresh_rollups()
    pipeline = getattr(app.state, "health_pipeline", None) if app is not None else None
    alarms = ""
    if pipeline is not None:
        rep = pipeline.run_once()
        alarms = f"; health pipeline: {len(rep.raised)} alarms, {len(rep.orders)} work orders"
    summary.history_s = time.monotonic() - t0
    rows = sum(r.rows for r in summary.history.values())
    say(f"history written in {summary.history_s:.0f}s ({time.process_time() - cpu0:.0f} CPU-s, {rows:,} readings)"
        f"{alarms}")


def _hhmm(ts_ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC).strftime("%m-%d %H:%M")


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
