"""Edge AI bench: model propagation, automatic rollback, edge inference throughput, uplink bytes.

Prints a few human-readable lines, then ONE line of JSON with every figure. Runs the real cloud API
(uvicorn on a loopback port, embedded database in a temporary folder) and 20 edges' real update
clients (TUF verification, signed HTTP requests) in threads of this process.

* ``propagate``: time from ``promote`` to every one of 20 edges running the model (each polls every
  ``POLL_S``), beside the baseline of the same 20 edges fetching the same artefact with one plain signed
  GET each (no TUF metadata, no verification): the price of verification.
* ``rollback``: a deliberately bad canary on one mill's edges; time from the last evidence report to
  every canary edge back on the previous model (judge + publish + poll), beside the baseline of a
  manual ``rollback`` call taking the same path from the same state.
* ``inference``: snapshots per second on one core through the edge's full scorer (``AssetScorer``:
  model, health index, alarm rules) and through each JSON detector alone (``score_one`` and the
  vectorised ``score_many``), beside the learned ONNX path (a 50-tree isolation forest exported with
  skl2onnx, run by onnxruntime on one thread).
* ``detection``: latency from a bearing fault's onset to the alarm. At the edge: the snapshots its own
  scorer (commissioned baseline, alarm rules) needs after the onset to raise the alarm, times the
  channel's snapshot interval, plus the scorer's wall time on them. Round-tripping the cloud instead
  (the baseline): the same snapshots' features go up as a signed batch over HTTP to the real ingest,
  the cloud's health pipeline runs once on them and the alarm is read back from the API — measured
  wall time — plus the waits a deployment adds on top: the edge's flush interval (0.25 s) and, on
  average, half the pipeline period (``health_pipeline_s``, 60 s by default). The snapshot cadence is
  the same for both paths and is reported beside them (``snapshot_interval_s``).
* ``uplink``: bytes per mill per day of features (the wire format, compressed) and model updates
  (measured bytes per converged check, metadata in and the update report out, x checks per day) vs
  streaming the raw vibration of the same channels. The edge's status message, acks and snapshots are
  not counted here (``status_bytes_per_day`` is null): bench/uplink_budget.py measures all of a running
  edge's traffic from its ledger.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import asyncio  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import uvicorn  # noqa: E402

from spinline.cloud.app import create_app  # noqa: E402
from spinline.cloud.models.tuf_repo import generate_root_key  # noqa: E402
from spinline.cloud.settings import Settings  # noqa: E402
from spinline.core import wire  # noqa: E402
from spinline.core.batch import Batch  # noqa: E402
from spinline.core.request_auth import sign_request  # noqa: E402
from spinline.core.site import VIB_FEATURES, iter_machines, load_site, point_key  # noqa: E402
from spinline.edge.models import ModelSlot, ScoringConfig  # noqa: E402
from spinline.edge.scoring import AssetScorer, validate_record  # noqa: E402
from spinline.edge.updates import ApprovedModels, ModelUpdater  # noqa: E402
from spinline.health.anomaly import DETECTORS, VIB_MODEL_KEYS, vibration_detector  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "examples" / "zone.yaml"
N_EDGES = 20
POLL_S = 0.5
RF = "ring_frame.mahalanobis"
KIND = "asset_monitor/mahalanobis"


def params(seed: int = 0, scale: float = 1.0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    det = vibration_detector(seed=seed)
    rows = []
    for _ in range(48):
        r = {k: float(abs(rng.normal(1.0, 0.05)) * scale) for k in VIB_MODEL_KEYS} | {"shaft_hz": 24.7}
        rows.append(r)
        det.learn_one(r)
    det.score_one(rows[0])
    return {"detector": det.to_dict(), "baseline": {k: float(np.median([r[k] for r in rows])) for k in VIB_MODEL_KEYS},
            "commissioning_n": 48, "iso_class": "I"}


class CloudServer:
    def __init__(self, folder: Path) -> None:
        self.settings = Settings(db=f"embedded:{folder / 'cloud'}", site=SITE, rollup_refresh_s=0,
                                 health_pipeline_s=0, retention_every_s=0, models_every_s=0,
                                 secret_key=base64.urlsafe_b64encode(os.urandom(32)).decode())
        self.app = create_app(self.settings)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="error", lifespan="on"))

    def __enter__(self) -> CloudServer:
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])),
                                       daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        self.cloud = self.app.state.cloud
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def make_edges(cs: CloudServer, folder: Path) -> list[ModelUpdater]:
    site = load_site(SITE)
    mills = [m.id for m in site.mills]
    root = cs.cloud.models.repo.root(1)
    out = []
    for i in range(N_EDGES):
        mill = mills[i % len(mills)]
        edge = f"bench-{i:02d}"
        secret = cs.cloud.edges.create(edge_id=edge, mill=mill, created_by="bench")[1]
        approvals = ApprovedModels()
        slots = {a: ModelSlot(a, folder / edge / "models", verifier=approvals, validate=validate_record)
                 for a in (f"{mill}/rf01/main_motor", f"{mill}/rf02/main_motor")}
        out.append(ModelUpdater(base_url=cs.url, edge=edge, mill=mill, secret=secret.encode(),
                                data_dir=folder / edge, slots=slots, approvals=approvals, trusted_root=root,
                                report_every_s=0))
    return out


def poll_until(edges: list[ModelUpdater], version: str, timeout_s: float = 60.0) -> float:
    """Every edge polls every POLL_S until its slots run ``version``; returns when the last one does."""
    t0 = time.perf_counter()

    def one(e: ModelUpdater) -> float:
        while time.perf_counter() - t0 < timeout_s:
            tick = time.perf_counter()
            e.check_once()
            if all(s.version == version for s in e.slots.values()):
                return time.perf_counter() - t0
            time.sleep(max(0.0, POLL_S - (time.perf_counter() - tick)))
        raise TimeoutError(f"{e.edge} did not converge on {version}")

    with ThreadPoolExecutor(len(edges)) as pool:
        return max(pool.map(one, edges))


def plain_fetch(cs: CloudServer, edges: list[ModelUpdater], target: str) -> float:
    """Baseline: each edge GETs the artefact once, signed, no TUF metadata and no verification."""
    path = f"/api/v1/tuf/targets/{target}"
    t0 = time.perf_counter()

    def one(e: ModelUpdater) -> int:
        h = sign_request(e.secret, e.edge, "GET", path, time.time_ns())
        return len(httpx.get(cs.url + path, headers=h).content)

    with ThreadPoolExecutor(len(edges)) as pool:
        sizes = list(pool.map(one, edges))
    assert all(sizes)
    return time.perf_counter() - t0


def propagation_and_rollback(folder: Path) -> dict[str, Any]:
    with CloudServer(folder) as cs:
        reg = cs.cloud.models
        reg.repo.init(generate_root_key(folder / "root.pem"))
        edges = make_edges(cs, folder)
        mills = sorted({e.mill for e in edges})
        v1 = reg.register(name=RF, scope_kind="machine_type", scope="ring_frame", kind=KIND, params=params(0),
                          actor="bench").version
        t0 = time.perf_counter()
        reg.promote(RF, v1, mills=mills, actor="bench", reason="bench")
        publish_s = time.perf_counter() - t0
        promote_all_s = publish_s + poll_until(edges, v1)
        baseline_s = plain_fetch(cs, edges, reg.get(RF, v1).target)
        bytes_per_check = [e.bytes_in / max(1, e.checks) for e in edges]
        # a converged check: metadata only (timestamp; snapshot/targets only when they changed)
        before = [e.bytes_in for e in edges]
        for e in edges:
            e.check_once()
        idle_check_bytes = float(np.mean([e.bytes_in - b for e, b in zip(edges, before, strict=True)]))
        report_bytes = float(np.mean([e.last_report_bytes for e in edges]))
        # bad canary on mill-a's edges: evidence of alarms on every snapshot
        canary_edges = [e for e in edges if e.mill == mills[0]]
        bad = reg.register(name=RF, scope_kind="machine_type", scope="ring_frame", kind=KIND,
                           params=params(1, scale=0.5), actor="bench", parent=v1).version
        reg.canary(RF, bad, mills=[mills[0]], actor="bench", reason="bench canary", share=1.0)
        poll_until(canary_edges, bad)
        for e in edges:
            for a in e.slots:
                for _ in range(30):
                    e.observe(a, e.slots[a].version or "", latency_s=0.0004, alarm=e.mill == mills[0])
        for e in edges:
            e.check_once()   # the evidence reports
        t1 = time.perf_counter()
        verdicts = reg.evaluate_canaries()
        assert [v.decision for _m, v in verdicts] == ["rollback"], verdicts
        auto_s = time.perf_counter() - t1 + poll_until(canary_edges, v1)
        reason = reg.get(RF, bad).transitions[-1].reason
        # baseline: the same state, rolled back by hand (the registry's manual call, then the same polling)
        bad2 = reg.register(name=RF, scope_kind="machine_type", scope="ring_frame", kind=KIND,
                            params=params(2, scale=0.5), actor="bench", parent=v1).version
        reg.canary(RF, bad2, mills=[mills[0]], actor="bench", reason="bench canary 2", share=1.0)
        poll_until(canary_edges, bad2)
        t2 = time.perf_counter()
        reg.rollback(RF, actor="bench", reason="manual", version=bad2)
        manual_s = time.perf_counter() - t2 + poll_until(canary_edges, v1)
        refusals = sum(sum(e.refusals.values()) for e in edges)
    return {"propagate": {"edges": N_EDGES, "poll_s": POLL_S, "promote_to_all_running_s": round(promote_all_s, 3),
                          "publish_s": round(publish_s, 3),
                          "baseline_plain_fetch_all_s": round(baseline_s, 3),
                          "first_install_bytes_per_check": round(float(np.mean(bytes_per_check))),
                          "idle_check_bytes": round(idle_check_bytes), "report_bytes": round(report_bytes)},
            "rollback": {"canary_edges": len(canary_edges), "evidence_to_all_rolled_back_s": round(auto_s, 3),
                         "baseline_manual_rollback_to_all_s": round(manual_s, 3), "reason": reason},
            "refusals": refusals}


def inference(seconds: float = 1.5) -> dict[str, Any]:
    site = load_site(SITE)
    mill = site.mills[0]
    machine = next(m for _w, _l, m in iter_machines(mill) if m.id == "rf01")
    rng = np.random.default_rng(0)
    rows = [{k: float(abs(rng.normal(1.0, 0.05))) for k in VIB_MODEL_KEYS} for _ in range(512)]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        sc = AssetScorer(mill.id, machine, machine.vibration.channels[0].name, "I", Path(d),  # type: ignore[union-attr]
                         ScoringConfig(commissioning_n=8))
        approvals = ApprovedModels()
        sc.slot.verifier = approvals
        p = params(0)
        approvals.approve(sc.asset, "v1", "x")
        sc.slot.replace("v1", p, "x", kind=KIND)
        n, t0, ts = 0, time.perf_counter(), time.time_ns()
        while time.perf_counter() - t0 < seconds:
            ts += 60 * 10**9
            sc.score(ts, rows[n % len(rows)] | {"shaft_hz": 24.7})
            n += 1
        out["asset_scorer_per_s"] = round(n / (time.perf_counter() - t0))
    for kind, cls in DETECTORS.items():
        det = cls(features=list(VIB_MODEL_KEYS), min_samples=24, seed=0)
        for r in rows[:200]:
            det.learn_one(r)
        det.score_one(rows[0])
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            det.score_one(rows[n % len(rows)])
            n += 1
        one = n / (time.perf_counter() - t0)
        x = np.array([[r[k] for k in VIB_MODEL_KEYS] for r in rows])
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            det.score_many(x)
            n += len(x)
        out[f"json_{kind}_score_one_per_s"] = round(one)
        out[f"json_{kind}_score_many_per_s"] = round(n / (time.perf_counter() - t0))
    from spinline.health.anomaly import VIB_LOG_KEYS
    from spinline.health.onnx_detector import fit_isolation_forest

    onnx = fit_isolation_forest(rows, list(VIB_MODEL_KEYS), [k for k in VIB_LOG_KEYS if k in VIB_MODEL_KEYS],
                                n_estimators=50)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 3:
        onnx.score_one(rows[n % len(rows)])
        n += 1
    out["onnx_iforest50_score_one_per_s"] = round(n / (time.perf_counter() - t0))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 3:
        onnx.score_many(x)
        n += len(x)
    out["onnx_iforest50_score_many_per_s"] = round(n / (time.perf_counter() - t0))
    out["onnx_artefact_bytes"] = len(json.dumps(onnx.to_dict()))
    out["ratio_json_mahalanobis_over_onnx_score_one"] = round(
        out["json_mahalanobis_score_one_per_s"] / out["onnx_iforest50_score_one_per_s"], 2)
    return out


def detection(folder: Path, every_s: float = 300.0, flush_s: float = 0.25) -> dict[str, Any]:
    """Fault onset -> alarm at the edge vs through the cloud (see module docstring)."""
    site = load_site(SITE)
    mill = site.mills[0]
    machine = next(m for _w, _l, m in iter_machines(mill) if m.id == "rf01")
    assert machine.vibration is not None
    ch = machine.vibration.channels[0].name
    rng = np.random.default_rng(3)

    def row(scale: float) -> dict[str, float]:
        return {k: float(abs(rng.normal(1.0, 0.05)) * scale) for k in VIB_MODEL_KEYS}

    sc = AssetScorer(mill.id, machine, ch, "I", folder / "detect", ScoringConfig(commissioning_n=24))
    ts = time.time_ns() - 200 * int(every_s * 1e9)
    for _ in range(60):                      # commissioning, then healthy operation
        ts += int(every_s * 1e9)
        sc.score(ts, row(1.0) | {"shaft_hz": 24.7})
    assert not sc.engine.open_alarms(sc.asset), "a healthy machine alarmed"
    snaps, edge_wall = 0, 0.0
    fault_rows = []
    while not sc.engine.open_alarms(sc.asset):   # the bearing fault: every feature well above its baseline
        ts += int(every_s * 1e9)
        fault_rows.append((ts, row(6.0)))
        t0 = time.perf_counter()
        sc.score(ts, fault_rows[-1][1] | {"shaft_hz": 24.7})
        edge_wall += time.perf_counter() - t0
        snaps += 1
        assert snaps < 50, "the edge never alarmed on the fault"
    with CloudServer(folder / "detect-cloud") as cs:
        secret = cs.cloud.edges.create(edge_id="bench-detect", mill=mill.id, created_by="bench")[1].encode()
        feats = [f for f, _u in VIB_FEATURES]
        keys, tss, vals = [], [], []
        for t, r in fault_rows:
            for f in feats:
                keys.append(point_key(f"{mill.id}/{machine.id}/vib_{ch}_{f}"))
                tss.append(t)
                vals.append(4.0 if f == "iso_zone" else r.get(f, 6.0))
        body = wire.encode(wire.Envelope(edge="bench-detect", mill=mill.id, seq=1, batch=Batch.of(keys, tss, vals),
                                         created_ns=time.time_ns()), key=secret)
        tok = httpx.post(f"{cs.url}/api/v1/auth/login", json={"username": "bench", "password": "bench-password-1"})
        if tok.status_code != 200:
            from spinline.cloud.auth.roles import Role

            cs.cloud.accounts.create_user(username="bench", password="bench-password-1", role=Role.ZONE_OPERATOR,
                                          mills=[])
            tok = httpx.post(f"{cs.url}/api/v1/auth/login", json={"username": "bench", "password": "bench-password-1"})
        h = {"Authorization": f"Bearer {tok.json()['access_token']}"}
        t0 = time.perf_counter()
        r = httpx.post(cs.url + wire.INGEST_PATH, content=body, headers={"Content-Type": wire.BATCH_CONTENT_TYPE})
        assert r.status_code == 200, r.text
        report = cs.app.state.health_pipeline.run_once(mill.id)
        alarms = httpx.get(f"{cs.url}/api/v1/mills/{mill.id}/maintenance/alarms", headers=h).json()
        cloud_wall = time.perf_counter() - t0
        cloud_alarmed = any(a["asset"].startswith(machine.id) for a in alarms)
        period = cs.settings.health_pipeline_s or 60.0
    edge_s = snaps * every_s + edge_wall
    cloud_s = snaps * every_s + flush_s + cloud_wall + period / 2
    return {"snapshot_interval_s": every_s, "snapshots_to_alarm": snaps,
            "edge_compute_s": round(edge_wall, 4), "edge_onset_to_alarm_s": round(edge_s, 3),
            "cloud_roundtrip_measured_s": round(cloud_wall, 3), "cloud_alarmed": cloud_alarmed,
            "cloud_pipeline_period_s": period, "cloud_pipeline_samples": report.samples,
            "cloud_raised": len(report.raised),
            "baseline_cloud_onset_to_alarm_s": round(cloud_s, 3),
            "cloud_minus_edge_s": round(cloud_s - edge_s, 3),
            "ratio_cloud_over_edge_beyond_cadence": round((cloud_s - snaps * every_s) / max(edge_wall, 1e-9))}


def uplink(idle_check_bytes: float, report_bytes: float, poll_s_real: float = 300.0,
           report_s: float = 900.0) -> dict[str, Any]:
    """Per mill per day: features of every vibration channel (wire format) + model update checks vs raw."""
    site = load_site(SITE)
    mill = site.mills[0]
    chans = [(m, ch) for _w, _l, m in iter_machines(mill) if m.vibration is not None for ch in m.vibration.channels]
    feats = [f for f, _u in VIB_FEATURES] + ["health_index"]
    per_day_features = 0.0
    raw = 0.0
    for m, ch in chans:
        assert m.vibration is not None
        snaps = 86400 / m.vibration.every_s
        tags = [f"{mill.id}/{m.id}/vib_{ch.name}_{f}" for f in feats]
        # one uplink batch carries ~10 snapshots of a channel (the forwarder batches by time)
        ts = np.repeat(np.arange(10, dtype=np.int64) * int(m.vibration.every_s * 1e9), len(tags))
        keys = np.tile([point_key(t) for t in tags], 10)
        b = Batch.of(keys, ts + time.time_ns(), np.random.default_rng(0).normal(1, 0.1, len(keys)))
        enc = wire.encode(wire.Envelope(edge="e", mill=mill.id, seq=1, batch=b, created_ns=time.time_ns()),
                          key=b"k" * 32)
        per_day_features += len(enc) / 10 * snaps
        raw += m.vibration.fs_hz * 2 * 86400   # int16 samples, continuous
    model_checks = idle_check_bytes * 86400 / poll_s_real + report_bytes * 86400 / report_s
    total = per_day_features + model_checks
    return {"mill": mill.id, "channels": len(chans), "features_bytes_per_day": round(per_day_features),
            "model_check_bytes_per_day": round(model_checks), "model_poll_s": poll_s_real,
            "model_report_s": report_s,
            "total_bytes_per_day": round(total), "baseline_raw_vibration_bytes_per_day": round(raw),
            "ratio_raw_over_ours": round(raw / total, 1),
            "status_bytes_per_day": None}


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        fig: dict[str, Any] = propagation_and_rollback(Path(d))
    p, r = fig["propagate"], fig["rollback"]
    print(f"promote -> {p['edges']} edges running: {p['promote_to_all_running_s']} s (poll {POLL_S} s); "
          f"plain fetch by all: {p['baseline_plain_fetch_all_s']} s")
    print(f"bad canary: evidence -> {r['canary_edges']} edges rolled back {r['evidence_to_all_rolled_back_s']} s "
          f"(manual rollback: {r['baseline_manual_rollback_to_all_s']} s); reason: {r['reason'][:90]}")
    with tempfile.TemporaryDirectory() as d:
        fig["detection"] = detection(Path(d))
    dd = fig["detection"]
    print(f"fault onset -> alarm: edge {dd['edge_onset_to_alarm_s']} s ({dd['snapshots_to_alarm']} snapshots at "
          f"{dd['snapshot_interval_s']} s, compute {dd['edge_compute_s']} s); via the cloud "
          f"{dd['baseline_cloud_onset_to_alarm_s']} s (round trip measured {dd['cloud_roundtrip_measured_s']} s, "
          f"cloud alarmed: {dd['cloud_alarmed']})")
    fig["inference"] = inference()
    print(f"inference per core: {json.dumps(fig['inference'])}")
    fig["uplink"] = uplink(p["idle_check_bytes"], p["report_bytes"])
    u = fig["uplink"]
    print(f"uplink {u['mill']}: {u['total_bytes_per_day']} B/day vs raw {u['baseline_raw_vibration_bytes_per_day']}"
          f" B/day ({u['ratio_raw_over_ours']}x less)")
    fig["elapsed_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(fig, separators=(",", ":"), default=str))


if __name__ == "__main__":
    main()
