"""KPI arithmetic runs in worker processes, in its own lane (issue 13: a normal user's chart stays fast
while one client asks for the largest spans).

Why out of process: a thread, even a nice'd one, holds the interpreter lock while it computes, and
the event loop and the chart requests' threads wait for it. These tests check the structure, not
speed (that is bench/api_load.py): the work runs in another, lower-priority process; a chart is
answered while every KPI worker is held; a request whose caller went is let go while its job waits
in the lane; a dead worker does not break the lane for good.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from spinline.cloud.api.limits import ProcessLane
from spinline.cloud.app import open_stores
from spinline.cloud.kpis.service import WINDOWS_PER_JOB, Cancelled, KpiService
from spinline.core.site import Site

from .conftest import make_settings
from .hardening_helpers import api_with

KPIS = "/api/v1/mills/mill-a/kpis"
CHART = "/api/v1/points/mill-a/rf01/spindle_speed/range"
SHIFTS = {"by": "shift", "start": "2026-09-01T00:00:00Z", "end": "2026-09-20T00:00:00Z"}


def _gate(tmp_path: Path, name: str) -> Path:
    """A FIFO: a worker that reads it is held until the test writes to it (no sleeps, no timing)."""
    fifo = tmp_path / name
    os.mkfifo(fifo)
    return fifo


def _open_gate(fifo: Path) -> None:
    with fifo.open("w") as f:              # blocks until the held worker has opened it for reading
        f.write("go")


def test_work_runs_in_another_process_at_lower_priority() -> None:
    lane = ProcessLane("kpi", 1, nice=5)
    try:
        pid = lane.submit(os.getpid).result(timeout=60)
        prio = lane.submit(os.getpriority, os.PRIO_PROCESS, 0).result(timeout=60)
    finally:
        lane.shutdown()
    assert pid != os.getpid()
    assert prio >= os.getpriority(os.PRIO_PROCESS, 0) + 5 or prio == 19


def test_a_dead_worker_does_not_break_the_lane() -> None:
    lane = ProcessLane("kpi", 1)
    try:
        with pytest.raises(BrokenProcessPool):
            lane.submit(os._exit, 3).result(timeout=60)
        assert lane.submit(os.getpid).result(timeout=60) != os.getpid()      # a new pool took over
        assert lane.started == 2
    finally:
        lane.shutdown()


async def test_a_chart_is_answered_while_every_kpi_worker_is_held(tmp_path: Path, zone_site: Site) -> None:
    async with api_with(tmp_path, zone_site, max_heavy_requests=1) as api:
        alice = await api.login("alice")
        lane = api.cloud.kpi_lane
        assert lane.workers == 1 and lane.started == 0            # no worker before the first KPI request
        gate = _gate(tmp_path, "gate")
        blocker = lane.submit(gate.read_text)                     # the only worker: held at the gate
        kpis = asyncio.create_task(api.client.get(KPIS, headers=alice, params=SHIFTS, timeout=120))
        chart = await api.client.get(CHART, headers=alice, params={"max_points": 1000})
        assert chart.status_code == 200, chart.text
        assert not kpis.done()                                    # the KPI job waits in its lane ...
        await asyncio.to_thread(_open_gate, gate)
        assert await asyncio.wrap_future(blocker) == "go"
        r = await kpis                                            # ... and is answered once it is free
        assert r.status_code == 200, r.text
        assert len(r.json()["rows"]) > WINDOWS_PER_JOB            # 19 days of shifts: several jobs
        assert lane.started == 1


def test_a_caller_that_went_is_let_go_while_its_job_waits(tmp_path: Path, zone_site: Site) -> None:
    store, meta = open_stores(make_settings(tmp_path), site=zone_site)
    lane = ProcessLane("kpi", 1)
    try:
        gate = _gate(tmp_path, "gate")
        blocker = lane.submit(gate.read_text)
        asked: list[bool] = []

        def gone() -> bool:                # the client is there for the first question, then gone
            asked.append(True)
            return len(asked) > 1

        with pytest.raises(Cancelled):
            KpiService(store, lane).mill_kpis(zone_site.mill("mill-a"), 1_788_000_000 * 10**9,
                                              1_789_000_000 * 10**9, by="shift", cancelled=gone)
        assert not blocker.done()          # let go while the worker was still held: no result waited for
        _open_gate(gate)
        assert blocker.result(timeout=60) == "go"
    finally:
        lane.shutdown()
        store.close()
        meta.close()
