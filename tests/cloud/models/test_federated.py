"""Federated mode end to end: the cloud's Flower server and three mills' Flower clients as real processes
(``.venv-fl``) over loopback gRPC, every byte they exchange recorded by a proxy; the mills' rows come from
each edge's own feature log; the candidate lands in the registry; no value of any mill's rows is in what
crossed, nor in the cloud's files and database. And the cloud's trainer refuses a federated mill's rows."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from spinline.cloud.models.federated import FederatedError, ServerRun, Spec, fl_python, register
from spinline.cloud.models.registry import ModelRegistry
from spinline.edge.feature_log import FeatureLog
from spinline.edge.federated import export, start_client
from spinline.health.anomaly import VIB_LOG_KEYS, VIB_MODEL_KEYS, BaselineDetector

MILLS = ("mill-a", "mill-b", "mill-c")
FEATS = list(VIB_MODEL_KEYS)
LOGS = [k for k in VIB_LOG_KEYS if k in FEATS]
T0 = 1_790_000_000 * 10**9


def _rows(seed: int, n: int = 160) -> tuple[np.ndarray, list[int]]:
    """A mill's feature rows: healthy around its own level, every 8th an outer-race defect (labelled)."""
    rng = np.random.default_rng(seed)
    x = np.exp(rng.normal(0.0, 0.05, (n, len(FEATS))) + rng.normal(0.0, 0.02, len(FEATS)))
    labels = [int(i % 8 == 0) for i in range(n)]
    for i in range(n):
        if labels[i]:
            x[i, FEATS.index("env_bpfo")] *= 3.0
            x[i, FEATS.index("kurtosis")] *= 1.6
    return x, labels


class Tap:
    """A loopback TCP proxy that records every byte in both directions (what reaches the cloud's server)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.up = bytearray()
        self.down = bytearray()
        self._lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                c, _ = self.sock.accept()
                u = socket.create_connection(self.target)
                threading.Thread(target=self._pipe, args=(c, u, self.up), daemon=True).start()
                threading.Thread(target=self._pipe, args=(u, c, self.down), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, rec: bytearray) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                with self._lock:
                    rec.extend(data)
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()


def _leaks(blob: bytes, values: np.ndarray) -> list[float]:
    """Values of ``values`` found in ``blob``: as float64 (numpy's and Flower's encoding, either byte order)
    or as text (JSON, logs) by the first 11 characters of its shortest repr (rounded text would differ)."""
    wins = {bytes(blob[i:i + 8]) for i in range(max(0, len(blob) - 7))}
    text = blob.decode("latin-1")
    found = []
    for v in values.ravel().tolist():
        if struct.pack("<d", v) in wins or struct.pack(">d", v) in wins or repr(v)[:11] in text:
            found.append(v)
    return found


def test_a_federated_round_trains_a_candidate_with_no_row_leaving_the_mills(tmp_path: Path) -> None:
    try:
        py = fl_python()
    except FederatedError as exc:
        pytest.fail(f"{exc}")   # scripts/setup makes it; CI runs scripts/setup first
    data = {m: _rows(i) for i, m in enumerate(MILLS)}
    spec = Spec(mills=list(MILLS), train_mills=["mill-a", "mill-b"], test_mills=["mill-c"], features=FEATS,
                log_keys=LOGS, far=0.01)
    cloud_dir = tmp_path / "cloud"
    server = ServerRun(spec, cloud_dir / "fl")
    clients = []
    tap: Tap | None = None
    try:
        server.wait_ready()
        host, port = server.address.rsplit(":", 1)
        tap = Tap((host, int(port)))
        for m in MILLS:   # each mill's edge: its own feature log, labelled by its verified fault windows
            edge_dir = tmp_path / f"edge-{m}"
            log = FeatureLog(edge_dir)
            ts = [T0 + i * 300 * 10**9 for i in range(len(data[m][1]))]
            for t, r in zip(ts, data[m][0], strict=True):
                log.append(f"{m}/rf01/main_motor", t, dict(zip(FEATS, r.tolist(), strict=True)))
            windows = {"rf01/main_motor": [(t, t + 1) for t, y in zip(ts, data[m][1], strict=True) if y]}
            rows = export(log, edge_dir / "fl-rows.json", m, [f"{m}/rf01/main_motor"], FEATS, LOGS, windows,
                          (T0, ts[-1] + 1))
            log.close()
            clients.append(start_client(py, f"127.0.0.1:{tap.port}", rows, edge_dir / "fl-client.log"))
        result = server.wait(180)
        for c in clients:
            assert c.wait(60) == 0
    finally:
        server.stop()
        for c in clients:
            if c.poll() is None:
                c.kill()
        if tap is not None:
            tap.close()
    assert tap is not None
    assert result["mills"] == sorted(MILLS) and result["contributors"] == ["mill-a", "mill-b"]
    assert result["n"] == sum(1 for m in ("mill-a", "mill-b") for y in data[m][1] if y == 0)

    # the candidate, registered like any fleet model and marked federated
    reg = ModelRegistry(sa.create_engine(f"sqlite:///{cloud_dir / 'meta.db'}"))
    reg.create_schema()
    cand = register(reg, "ring_frame", spec, result, actor="zone")
    assert cand.status == "candidate" and cand.metrics["federated"] and cand.comparison["federated"]
    assert cand.train_mills == ["mill-a", "mill-b"] and cand.comparison["held_out_mills"] == ["mill-c"]
    assert cand.metrics["auc"] > 0.9 and cand.metrics["detection_rate"] > 0.8
    assert cand.metrics["false_alarm_rate"] < 0.1
    # the artefact the edges get scores the held-out mill's faults above the alarm level, its healthy rows below
    import json

    det = BaselineDetector.from_dict(json.loads(reg.artefact(cand))["params"]["detector"])
    x, y = data["mill-c"]
    s = np.array([det.score_one(dict(zip(FEATS, r, strict=True))) for r in x])
    assert np.mean(s[np.array(y) == 1] > 1) > 0.8 and np.mean(s[np.array(y) == 0] > 1) < 0.1

    # the recorder sees the payload: each training mill's mean (its round-1 update) crossed, byte for byte
    up = bytes(tap.up)
    assert len(up) > 10_000
    from spinline.core import fedstats

    for m in ("mill-a", "mill-b"):
        z = fedstats.transform(data[m][0][np.array(data[m][1]) == 0], FEATS, LOGS)
        assert len(_leaks(up, z.mean(axis=0))) == len(FEATS), f"{m}'s update is not where the tap looks"
    # ... and the needle search finds raw rows where they are (the mill's own files)
    for m in MILLS:
        assert len(_leaks((tmp_path / f"edge-{m}" / "fl-rows.json").read_bytes(), data[m][0][:5])) == 5 * len(FEATS)
    # no value of any mill's rows crossed to the cloud, nor sits in anything the cloud stored
    cloud_bytes = up + bytes(tap.down) + b"".join(p.read_bytes() for p in cloud_dir.rglob("*") if p.is_file())
    for m in MILLS:   # as measured, and as the detector's log transform makes them
        x = data[m][0]
        found = _leaks(cloud_bytes, np.concatenate([x.ravel(), np.log(x).ravel()]))
        assert found == [], f"{m}'s rows reached the cloud"


def test_the_cloud_does_not_train_on_a_federated_mills_rows(tmp_path: Path, zone_yaml: Path) -> None:
    """Rows of a federated mill handed to the cloud's trainer are refused (and ``load_rows`` never reads them)."""
    from datetime import timedelta

    from spinline.cloud.models.registry import RegistryError
    from spinline.cloud.models.training import MillRows, load_rows
    from spinline.core.site import load_site

    site = load_site(zone_yaml)
    fed = site.mills[1].model_copy(update={"federated": True})
    mills = {m.id: (fed if m.id == fed.id else m) for m in site.mills}
    reg = ModelRegistry(sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}"), mills=mills.get)
    reg.create_schema()
    data = {m: MillRows(rows=[dict(zip(FEATS, r, strict=True)) for r in _rows(i)[0].tolist()], labels=_rows(i)[1])
            for i, m in enumerate(mills)}
    with pytest.raises(RegistryError, match=f"{fed.id} are federated"):
        reg.train("ring_frame", data, actor="trainer")
    assert reg.versions() == []

    # the store holds rows of every mill (as if the federated one had sent some): its rows are not read
    import base64
    from datetime import UTC, datetime

    from spinline.cloud.app import open_stores
    from spinline.cloud.settings import Settings
    from spinline.core.batch import Batch
    from spinline.core.site import point_key

    settings = Settings(db=f"embedded:{tmp_path / 'cloud'}", secret_key=base64.urlsafe_b64encode(b"k" * 32).decode())
    store, meta = open_stores(settings, site=site)
    try:
        t0 = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1e9)
        keys, ts, vals = [], [], []
        for m in mills:
            x = _rows(0, 12)[0]
            for h, r in enumerate(x):
                for k, v in zip(FEATS, r.tolist(), strict=True):
                    keys.append(point_key(f"{m}/rf01/vib_main_motor_{k}"))
                    ts.append(t0 + h * 3_600_000_000_000)
                    vals.append(v)
        store.write(Batch.of(keys, ts, vals))
        out = load_rows(store, lambda _m: [], mills, "ring_frame", t0, t0 + 86_400_000_000_000,
                        lead=timedelta(hours=1))
    finally:
        store.close()
        meta.close()
    assert fed.id not in out
    assert all(len(out[m].rows) == 12 for m in mills if m != fed.id)
