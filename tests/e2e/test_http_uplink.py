"""The edge's HTTP uplink against the real cloud API (``create_app`` under uvicorn on a loopback port).

The simulated mill (20 ring frames and 2 meters, Modbus) feeds a real edge process whose cloud is
``http://127.0.0.1:PORT``; the edge is registered through the API's own credential service and
signs with the secret it issued. The edge is SIGKILLed once mid-run (an in-flight POST may be
stored without its response: the re-send must be a duplicate) and stopped at the end. Every row
it committed and that left its buffer is stored exactly once, nothing is refused, and its signed
status messages are accepted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import time
import uuid
from importlib import import_module
from pathlib import Path

import duckdb
import numpy as np
import uvicorn
from pydantic import SecretStr

from spinline.cloud.app import create_app
from spinline.cloud.settings import Settings
from spinline.core.site import all_points, load_site
from spinline.sim.server import SimServer

h = import_module("spinline_e2e_helpers")
S = 1_000_000_000


async def test_http_uplink_stores_every_committed_row_once(tmp_path: Path) -> None:
    mill_id = f"hu-{uuid.uuid4().hex[:6]}"
    site_path = h.write_site(h.ring_mill_site(mill_id, 20), tmp_path / "site.yaml")
    site = load_site(site_path)
    keys = {p.key for p in all_points(site, mill_id)}
    folder = tmp_path / "cloud"
    settings = Settings(db=f"embedded:{folder}", site=site_path, rollup_refresh_s=0, argon2_time_cost=1,
                        argon2_memory_kib=64, argon2_parallelism=1,
                        secret_key=SecretStr(base64.urlsafe_b64encode(b"k" * 32).decode()))
    app = create_app(settings)
    port = h.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    edge = None
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            assert not serving.done(), "uvicorn exited"
            await asyncio.sleep(0.05)
        assert server.started
        cloud = app.state.cloud
        _, secret = cloud.edges.create(edge_id="h1", mill=mill_id, created_by="e2e")
        async with SimServer(site, mill_id, speed=1.0, ephemeral=True) as sim:
            edge = h.EdgeProcess(site_path, tmp_path / "edge", f"http://127.0.0.1:{port}", sim.ports,
                                 secret.encode(), edge_id="h1")
            edge.spawn()
            await edge.started()
            await asyncio.sleep(6.0)
            edge.kill(signal.SIGKILL)
            edge.spawn()
            await edge.started()
            await asyncio.sleep(6.0)
            edge.kill(signal.SIGINT)
        committed = h.committed_counts(edge.buffer)
        tail, _ = h.pending(edge.buffer)
        status = cloud.store.edge_status(mill_id)
        rejections = cloud.store.rejections()
    finally:
        if edge is not None and edge.alive():
            edge.kill(signal.SIGKILL)
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(serving, 15)

    con = duckdb.connect(str(folder / "spinline.duckdb"), read_only=True)
    try:
        r = con.execute("SELECT point, ts, seq FROM samples").fetchnumpy()
    finally:
        con.close()
    point, ts, seq = (np.asarray(r[c]) for c in ("point", "ts", "seq"))
    pending_pairs = set(zip(tail.point.tolist(), tail.seq.tolist(), strict=True)) if len(tail) else set()
    stored_pairs = list(zip(point.tolist(), seq.tolist(), strict=True))
    expected = {(p, s) for p, n in committed.items() for s in range(n)}
    missing = expected - set(stored_pairs) - pending_pairs
    dup_seq = len(stored_pairs) - len(set(stored_pairs))
    dup_ts = len(point) - len(set(zip(point.tolist(), ts.tolist(), strict=True)))
    print(f"\nhttp uplink: {len(keys)} points, committed {len(expected)} rows, stored {len(stored_pairs)}, "
          f"still in the edge buffer {len(pending_pairs)}, missing {len(missing)}, duplicates (point,seq) {dup_seq} "
          f"(point,ts) {dup_ts}, rejections {rejections}, edge status from {sorted(status)}")
    assert len(expected) > 20 * 20 * 8, "the edge committed too little"
    assert set(point.tolist()) <= keys
    assert not missing, f"{len(missing)} committed rows were neither stored nor kept for a re-send"
    assert set(stored_pairs) <= expected, "the store holds rows the edge never committed"
    assert dup_seq == 0 and dup_ts == 0
    assert not rejections, rejections
    assert "h1" in status and status["h1"].status.get("edge") == "h1", status
