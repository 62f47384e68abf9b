"""SIGKILL the edge while the uplink is cut; after restarts every committed point arrives exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

import aiomqtt
import numpy as np
import pytest

from spinline.core import wire

peers = import_module("spinline_test_peers")
SECRET = b"kill-test-secret"

SITE = """
version: 1
templates:
  dev:
    points:
      - {{name: a, unit: kW, interval_s: 0.05, modbus: {{register: 0}}}}
      - {{name: b, unit: kW, dtype: uint16, interval_s: 0.05, modbus: {{register: 2}}}}
      - {{name: c, unit: kWh, dtype: uint32, interval_s: 0.1, modbus: {{register: 3, word_order: little}}}}
mills:
  - id: m1
    workshops:
      - id: w
        lines:
          - id: l
            machines:
              - {{id: d1, type: energy_meter, template: dev, link: {{protocol: modbus, port: {port}, unit_id: 1}}}}
              - {{id: d2, type: energy_meter, template: dev, link: {{protocol: modbus, port: {port}, unit_id: 2}}}}
"""


def _spawn(site: Path, data: Path, broker_port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, SPINLINE_EDGE_SECRET=SECRET.decode())
    return subprocess.Popen([sys.executable, "-m", "spinline.edge", str(site), "--cloud",
                             f"mqtt://127.0.0.1:{broker_port}", "--data-dir", str(data), "--edge-id", "e1",
                             "--flush-s", "0.1", "--log-level", "WARNING"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _started(p: subprocess.Popen[bytes], data: Path, timeout: float = 60.0) -> int:
    """Wait for the edge's own readiness signal: a status.json written by *this* process; its started_ns.

    (A fixed sleep after spawning measured interpreter start-up on a loaded machine, not the edge.)
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            st = json.loads((data / "status.json").read_text())
            if st.get("pid") == p.pid:
                return int(st["started_ns"])
        if p.poll() is not None:
            raise AssertionError(f"edge exited with {p.returncode}: {p.stderr.read().decode() if p.stderr else ''}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"edge did not start within {timeout} s")


async def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (waited {timeout} s)")
        await asyncio.sleep(0.1)


def _committed(db: Path) -> tuple[set[tuple[int, int]], int]:
    """(point, per-point seq) of every row the buffer holds, and the last batch seq."""
    con = sqlite3.connect(db)
    try:
        rows: set[tuple[int, int]] = set()
        for p, s in con.execute("SELECT point, pseq FROM batches"):
            rows.update(zip(np.frombuffer(p, np.int64).tolist(), np.frombuffer(s, np.int64).tolist(), strict=True))
        last = con.execute("SELECT seq FROM sqlite_sequence WHERE name='batches'").fetchone()
        return rows, int(last[0]) if last else 0
    finally:
        con.close()


class Cloud:
    """A minimal cloud side: dedup by (edge, seq), keep rows, ack on TOPIC_ACK."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.batches: dict[tuple[str, int], wire.Envelope] = {}
        self.deliveries = 0
        self.kinds: list[str] = []

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier="kill-test-cloud") as c:
                    await c.subscribe("spinline/up/+/+/batch", qos=1)
                    async for msg in c.messages:
                        env = wire.decode(bytes(msg.payload), key_lookup=lambda e: SECRET if e == "e1" else None)
                        self.deliveries += 1
                        key = (env.edge, env.seq)
                        status = "duplicate" if key in self.batches else "stored"
                        self.batches.setdefault(key, env)
                        self.kinds.append(env.kind)
                        await c.publish(wire.TOPIC_ACK.format(mill=env.mill, edge=env.edge),
                                        f'{{"seq": {env.seq}, "status": "{status}", "reason": null, '
                                        f'"stored": {len(env.batch)}}}', qos=1)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    def rows(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for env in self.batches.values():
            assert env.batch.seq is not None
            out.extend(zip(env.batch.point.tolist(), env.batch.seq.tolist(), strict=True))
        return out


@pytest.mark.slow
async def test_sigkill_during_outage_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    broker = peers.Mosquitto()
    async with peers.ModbusPeer({1: 16, 2: 16}) as dev:
        site = tmp_path / "site.yaml"
        site.write_text(textwrap.dedent(SITE.format(port=dev.port)))
        data = tmp_path / "edge"
        db = data / "buffer.sqlite"

        async def feed() -> None:  # changing values, so rows are distinguishable
            i = 0
            while True:
                i += 1
                for u in (1, 2):
                    dev.hr[u][2] = i % 65536
                    dev.hr[u][3], dev.hr[u][4] = i & 0xFFFF, (i >> 16) & 0xFFFF
                await asyncio.sleep(0.01)

        feeder = asyncio.create_task(feed())
        cloud = Cloud(broker.port)
        cloud_task = asyncio.create_task(cloud.run())
        try:
            # 1. uplink cut (no broker): collect, then kill -9.
            # Readiness is the edge's own status file (not a sleep), then >200 committed rows; the
            # deadlines are generous because only a loaded machine needs them.
            p = _spawn(site, data, broker.port)
            await _started(p, data)
            await _until(lambda: len(_committed(db)[0]) > 200 or p.poll() is not None, 60,
                         "the edge should have committed data during the outage")
            assert p.poll() is None, p.stderr.read().decode() if p.stderr else ""
            p.send_signal(signal.SIGKILL)
            p.wait(5)
            outage_rows, outage_last = _committed(db)
            assert len(outage_rows) > 200, "the edge should have committed data during the outage"

            # 2. restart with the uplink back; kill -9 again while it is replaying: once the cloud has
            #    seen some of the backlog, but before all of it is acked.
            broker.start()
            p = _spawn(site, data, broker.port)
            await _started(p, data)
            await _until(lambda: cloud.deliveries > 0, 60, "the restarted edge never sent its backlog")
            await asyncio.sleep(0.3)
            p.send_signal(signal.SIGKILL)
            p.wait(5)

            # 3. restart once more and let it drain.
            p = _spawn(site, data, broker.port)
            await _started(p, data)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                pending, last = _committed(db)
                received = {k[1] for k in cloud.batches}
                if last > outage_last and set(range(1, outage_last + 1)) <= received and len(pending) < 2000:
                    break
            p.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
            if p.poll() is None:
                p.kill()
                p.wait(5)
        finally:
            feeder.cancel()
            cloud_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
            with contextlib.suppress(asyncio.CancelledError):
                await cloud_task
            broker.stop()

    got = cloud.rows()
    # Every row committed during the outage arrived ...
    missing = outage_rows - set(got)
    assert not missing, f"{len(missing)} committed rows never reached the cloud"
    # ... exactly once: no (point, per-point seq) in two different batches.
    assert len(got) == len(set(got)), "a row was stored twice under different batch seqs"
    # Per-point seqs are dense from 0: a SIGKILL never reused or skipped one.
    by_point: dict[int, list[int]] = {}
    for pt, s in got:
        by_point.setdefault(pt, []).append(s)
    for pt, seqs in by_point.items():
        seqs.sort()
        assert seqs == list(range(len(seqs))), f"point {pt}: per-point seqs have gaps or repeats"
    # Re-sends happened (the second kill cut acks) but were absorbed as duplicates; backlog was labelled.
    assert "backlog" in cloud.kinds and "live" in cloud.kinds
