"""Flush on arrival: device rows (and the status's) wake the flusher; vibration features and scores wait.

Vibration features and scores (per snapshot, 50 channels) spending the early-flush budget made a large
mill's device rows wait for ``flush_s`` (send latency p95 0.23 s instead of 0.05 s in ``bench/edge.py``
with snapshots arriving).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from spinline.core.batch import Batch
from spinline.core.site import derived_points, load_site
from spinline.edge.clock import ClockGuard
from spinline.edge.collector import Collector

ROOT = Path(__file__).resolve().parents[2]


def test_only_device_rows_wake_the_flusher() -> None:
    site = load_site(ROOT / "examples" / "mill.yaml")
    mill = site.mills[0].id
    points, derived = site.points(mill), derived_points(site, mill)
    vib = [p for p in derived if p.point.name.startswith("vib_")]
    link = [p for p in derived if p.point.name == "link_state"]
    assert vib and link
    c = Collector(points, derived, clock=ClockGuard(max_skew_s=120.0), heartbeat_s=60.0, max_pending_rows=10_000)
    woken: list[int] = []
    c.on_rows = lambda: woken.append(c.pending_rows)
    now = time.time_ns()

    def rows(refs: list, v: float) -> Batch:
        return Batch.of(np.asarray([p.key for p in refs], dtype=np.int64), now, np.full(len(refs), v))

    c.ingest(rows(vib[:13], 1.0))                  # one snapshot's features: queued, no early flush
    assert woken == [] and c.pending_rows == 13
    c.ingest(rows(points[:5], 2.0))                # a device's poll round: commit soon
    assert woken == [18]
    c.ingest(rows(link[:3], 0.0))                  # the status reporter's link health: soon too
    assert woken == [18, 21]
    c.ingest(rows([*vib[:1], points[5]], 3.0))     # a device row among vibration ones still wakes it
    assert woken == [18, 21, 23]
