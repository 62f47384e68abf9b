"""The no-loss test: the simulated mill -> the real edge process -> a real broker -> ingest -> the store.

A mill of 100 ring frames and 2 energy meters (2,008 device points, 2,321 with link-health and
edge points, all at 1 s with deadband 0) is served by ``SimServer``. The edge runs as its own
process (``python -m spinline.edge``) and uplinks through a TCP relay to a private Mosquitto; the
cloud side is an ``IngestWorker`` + ``IngestService`` over an ``EmbeddedStore``, subscribed to the
same broker directly. During the run the uplink is cut three times (the relay drops and refuses
connections), the broker is restarted once, and the edge is SIGKILLed twice, once while the uplink
is cut (so a backlog is on disk).

Afterwards:

* every row the edge committed to its buffer is stored exactly once: per point the store holds
  per-point seqs 0..n-1 with n = the buffer's ``point_seq.next``, no (point, seq) and no
  (point, ts) twice, and the rows read from the buffer's backlog during the outages have the same
  per-point checksum (``Batch.checksum``) in the store;
* every stored device value is a value the simulator served (the codec path is exact);
* the completeness report names no ``lost`` gap, and its ``not_collected`` gaps are exactly the
  windows the edge process was dead: each lies inside a kill window and each kill window is named
  for every point.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
import uuid
from importlib import import_module
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from spinline.cloud.ingest.mqtt_worker import IngestWorker
from spinline.cloud.ingest.service import IngestService
from spinline.cloud.storage.catalog import point_infos
from spinline.cloud.storage.embedded import EmbeddedStore
from spinline.core.batch import Batch
from spinline.core.site import DataType, all_points, load_site
from spinline.sim.server import SimServer

h = import_module("spinline_e2e_helpers")

EDGE = "e1"
SECRET = b"no-loss-test-secret-0123456789ab"
S = 1_000_000_000
N_FRAMES = 100
INTEGER_TYPES = {DataType.UINT16, DataType.INT16, DataType.UINT32, DataType.INT32, DataType.UINT64,
                 DataType.INT64, DataType.BOOL}


class SimHistory:
    """Every value the simulator served, tick by tick (recorded in the simulator's own loop)."""

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.ts: list[int] = []
        self.values: list[np.ndarray] = []

    def record(self) -> None:
        sim = self.server.sim
        if not self.ts or sim.last_ts_ns != self.ts[-1]:
            self.ts.append(sim.last_ts_ns)
            self.values.append(sim.last_values.copy())

    async def run(self) -> None:
        while True:
            self.record()
            await asyncio.sleep(0.05)


def _store_rows(path: Path) -> dict[str, np.ndarray]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        r = con.execute("SELECT point, ts, value, quality, seq FROM samples ORDER BY point, seq").fetchnumpy()
    finally:
        con.close()
    return {k: np.asarray(v.filled(-1) if isinstance(v, np.ma.MaskedArray) else v) for k, v in r.items()}


def _counters(db: Path) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        return {str(k): int(v) for k, v in con.execute("SELECT name, value FROM counters")}
    finally:
        con.close()


@pytest.mark.slow
async def test_no_loss_through_uplink_cuts_broker_restart_and_sigkills(tmp_path: Path) -> None:
    mill_id = f"nl-{uuid.uuid4().hex[:6]}"
    site_path = h.write_site(h.ring_mill_site(mill_id, N_FRAMES), tmp_path / "site.yaml")
    site = load_site(site_path)
    device = site.points(mill_id)
    refs = all_points(site, mill_id)
    assert len(device) >= 2000 and all(p.point.interval_s == 1.0 and p.point.deadband == 0 for p in refs)
    keys = frozenset(p.key for p in refs)

    broker = h.Broker()
    broker.start()
    relay = h.Relay(broker.port)
    await relay.restore()
    store_path = tmp_path / "cloud.duckdb"
    store = EmbeddedStore(store_path)
    store.migrate()
    store.register_points(point_infos(site, mill_id))
    service = IngestService(store, {EDGE: SECRET}.get, {EDGE: mill_id}.get,
                            lambda m: keys if m == mill_id else frozenset())
    worker = IngestWorker(service, "127.0.0.1", broker.port, group=f"e2e-{uuid.uuid4().hex[:6]}")
    await asyncio.to_thread(worker.start)

    events: list[tuple[str, int]] = []
    kills: list[tuple[int, int]] = []               # (SIGKILL sent, the next process's started_ns)
    snapshots: list[Batch] = []                     # backlog rows read from the edge's buffer
    edge: Any = None
    payloads_at_restart = 0
    try:
        async with SimServer(site, mill_id, speed=1.0, ephemeral=True) as sim:
            hist = SimHistory(sim)
            hist.record()
            recorder = asyncio.create_task(hist.run())
            edge = h.EdgeProcess(site_path, tmp_path / "edge", f"mqtt://127.0.0.1:{relay.port}", sim.ports, SECRET,
                                 edge_id=EDGE)
            edge.spawn()
            start_ns = await edge.started()
            t0 = time.monotonic()

            async def at(t: float) -> None:
                await asyncio.sleep(max(0.0, t0 + t - time.monotonic()))

            async def cut(label: str) -> None:
                await relay.cut()
                events.append((label, time.time_ns()))

            async def restore(label: str) -> None:
                # Off the event loop: a blocked loop would stall the simulated devices and make gaps.
                snapshots.append((await asyncio.to_thread(h.pending, edge.buffer))[0])  # the backlog on disk
                await relay.restore()
                events.append((label, time.time_ns()))

            async def kill_and_respawn(label: str, dead_s: float) -> None:
                k = edge.kill(signal.SIGKILL)
                events.append((label, k))
                snapshots.append((await asyncio.to_thread(h.pending, edge.buffer))[0])
                await asyncio.sleep(dead_s)
                edge.spawn()
                kills.append((k, await edge.started()))

            await at(5)
            await cut("cut 1")
            await at(9)
            await restore("restore 1")
            await at(14)
            await cut("cut 2")
            await at(17)
            await kill_and_respawn("SIGKILL 1 (uplink cut)", 2.0)
            await at(24)
            await restore("restore 2")
            await at(29)
            payloads_at_restart = worker.stats.payloads
            events.append(("broker stop", time.time_ns()))
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(broker.start)
            events.append(("broker start", time.time_ns()))
            await at(36)
            await cut("cut 3")
            await at(40)
            await restore("restore 3")
            await at(45)
            await kill_and_respawn("SIGKILL 2 (uplink up)", 2.0)
            await at(55)
            assert edge.alive(), edge.stderr()
            end_ns = edge.kill(signal.SIGINT)        # graceful stop: the end of the measured span
            events.append(("SIGINT (end)", end_ns))
            committed_at_end = h.committed_counts(edge.buffer)
            tail, tail_seqs = h.pending(edge.buffer)

            # The tail still in the buffer goes out when the edge comes back: start it once more and
            # wait until every batch committed during the span was acknowledged (left the buffer).
            edge.spawn()
            await edge.started()
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                left = h.pending(edge.buffer)[1]
                if not tail_seqs or not left or min(left) > max(tail_seqs):
                    break
                await asyncio.sleep(0.25)
            edge.kill(signal.SIGINT)
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder
    finally:
        if edge is not None and edge.alive():
            edge.kill(signal.SIGKILL)
        await relay.close()
        await asyncio.to_thread(worker.stop)
        broker.stop()

    worker_stats = worker.stats
    committed_final = h.committed_counts(edge.buffer)
    still_pending, _ = h.pending(edge.buffer)
    buffer_counters = _counters(edge.buffer)
    completeness = store.completeness(sorted(keys), start_ns, end_ns)
    rejections = store.rejections()
    store.close()
    rows = _store_rows(store_path)

    # --- exactly once ---------------------------------------------------------------------------
    point, ts, value, seq = rows["point"], rows["ts"], rows["value"], rows["seq"]
    assert not rejections, f"the cloud refused batches: {rejections}"
    assert buffer_counters.get("dropped_rows", 0) == 0 and buffer_counters.get("dead_letters", 0) == 0, \
        buffer_counters
    assert set(np.unique(point).tolist()) <= keys
    assert (seq >= 0).all(), "every stored row carries the edge's per-point seq"
    dup_seq = len(point) - len(np.unique(np.stack([point, seq]), axis=1).T)
    dup_ts = len(point) - len(np.unique(np.stack([point, ts]), axis=1).T)
    stored_per_point = dict(zip(*np.unique(point, return_counts=True), strict=True))
    committed_rows = sum(committed_at_end.values())
    missing_committed = 0
    beyond = 0
    for p in keys:
        n_end, n_final = committed_at_end.get(p, 0), committed_final.get(p, 0)
        sel = seq[point == p] if stored_per_point.get(p) else np.empty(0, np.int64)
        beyond += int((sel >= n_final).sum())
        missing_committed += n_end - int((sel < n_end).sum())
    stored_in_span = int(sum((seq[point == p] < n).sum() for p, n in committed_at_end.items()))

    # Backlog rows read from the buffer during the outages: same (ts, value) in the store, same checksum.
    snap = Batch.concat(snapshots)
    assert snap.seq is not None and len(snap) > 20_000, "each outage should leave a backlog on disk"
    _, first = np.unique(np.stack([snap.point, snap.seq]), axis=1, return_index=True)
    snap = snap.take(np.sort(first))
    assert snap.seq is not None
    order = np.lexsort((seq, point))
    skey = np.stack([point[order], seq[order]])
    store_index = {(int(a), int(b)): int(i) for i, (a, b) in enumerate(skey.T)}
    found = np.array([store_index.get((int(p), int(s)), -1) for p, s in zip(snap.point, snap.seq, strict=True)])
    assert (found >= 0).all(), f"{int((found < 0).sum())} backlog rows never reached the store"
    back = Batch(point[order][found], ts[order][found], value[order][found], rows["quality"][order][found])
    mismatched = [int(p) for p in np.unique(snap.point)
                  if snap.take(snap.point == p).checksum() != back.take(back.point == p).checksum()]

    # Every stored device value is one the simulator served (the Modbus path is exact).
    hv = np.vstack(hist.values)
    bad_values = 0
    for col, ref in enumerate(sim.sim.points):
        sel = (point == ref.key) & np.isfinite(value)
        v = value[sel]
        served = np.unique(hv[:, col][np.isfinite(hv[:, col])])
        if not len(v):
            continue
        i = np.clip(np.searchsorted(served, v), 1, max(1, len(served) - 1))
        near = np.minimum(np.abs(v - served[i - 1]), np.abs(v - served[np.minimum(i, len(served) - 1)]))
        tol = 0.5 if ref.point.dtype in INTEGER_TYPES else np.maximum(1e-6 * np.abs(v), 1e-9)
        bad_values += int((near > tol).sum())

    # --- gaps name the kill windows ------------------------------------------------------------
    lost = [g for c in completeness.values() for g in c.gaps if g.kind == "lost"]
    gaps = [g for c in completeness.values() for g in c.gaps if g.kind == "not_collected"]
    before, after = int(2.5 * S), int(5 * S)
    outside = [g for g in gaps if not any(k - before <= g.start_ns <= k and r <= g.end_ns <= r + after
                                          for k, r in kills)]
    named = [sum(1 for g in gaps if k - before <= g.start_ns <= k and r <= g.end_ns <= r + after)
             for k, r in kills]
    dead_s = [(r - k) / S for k, r in kills]
    uptime_s = (end_ns - start_ns) / S - sum(dead_s)
    device_keys = {p.key for p in device}
    device_rows = int(sum(stored_per_point.get(k, 0) for k in device_keys))
    rate = sum(int((seq[point == p] < committed_at_end.get(p, 0)).sum()) for p in device_keys) / uptime_s

    cuts = sum(1 for label, _ in events if label.startswith("cut"))
    restarts = sum(1 for label, _ in events if label == "broker start")
    print(f"\nno-loss: {len(keys)} points ({len(device)} device) at 1 s over {(end_ns - start_ns) / S:.0f} s "
          f"(uplink cut {cuts}x, broker restarted {restarts}x, edge SIGKILLed {len(kills)}x); "
          f"rows committed {committed_rows}, stored {stored_in_span} (+{len(point) - stored_in_span} after the span), "
          f"missing {missing_committed}, duplicates (point,seq) {dup_seq} (point,ts) {dup_ts}, "
          f"backlog rows checksummed {len(snap)} mismatched points {len(mismatched)}, "
          f"values not served by the sim {bad_values}, device rate {rate:.0f} points/s; "
          f"gaps: lost {len(lost)}, not_collected {len(gaps)} = {named} per kill window "
          f"(edge dead {', '.join(f'{d:.1f}' for d in dead_s)} s), outside the windows {len(outside)}; "
          f"worker payloads {worker_stats.payloads} ({payloads_at_restart} before the broker restart), "
          f"duplicates acked {worker_stats.duplicates}; still in the edge buffer {len(still_pending)}")
    for label, t in events:
        print(f"  {(t - start_ns) / S:6.1f} s  {label}")

    assert cuts >= 3 and restarts == 1 and len(kills) == 2
    when = dict(events)
    assert when["cut 2"] < when["SIGKILL 1 (uplink cut)"] < when["restore 2"], "the first kill left a backlog"
    assert missing_committed == 0, f"{missing_committed} committed rows never reached the store"
    assert beyond == 0, f"{beyond} stored rows carry a per-point seq the edge never committed"
    assert dup_seq == 0 and dup_ts == 0, f"stored twice: {dup_seq} (point, seq), {dup_ts} (point, ts)"
    assert not mismatched, f"{len(mismatched)} points differ between the edge's backlog and the store"
    assert bad_values == 0, f"{bad_values} stored values were never served by the simulator"
    assert worker_stats.payloads > payloads_at_restart, "the ingest worker did not reconnect after the restart"
    assert rate >= 2000 * 0.95, f"the edge kept only {rate:.0f} device points/s"
    assert device_rows > 0 and not lost, f"{len(lost)} lost gaps: {lost[:3]}"
    assert not outside, f"{len(outside)} not_collected gaps outside the kill windows, e.g. {outside[:3]}"
    # Each kill window is named once for every point (each point has rows on both sides of it).
    assert named == [len(keys)] * len(kills), f"kill windows named {named} times, expected {len(keys)} each"
