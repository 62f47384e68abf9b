"""The MQTT downlink nudge over the machine's Mosquitto: an edge polling once an hour still runs a newly
promoted model within seconds, because the cloud tells it to check; what it installs is still what TUF
verified over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest

from spinline.cloud.models.nudge import MqttNudger
from spinline.edge.models import ModelSlot
from spinline.edge.scoring import validate_record
from spinline.edge.updates import ApprovedModels, ModelUpdater, listen_nudges, run_updates

from .conftest import Zone, fitted_params

pytestmark = pytest.mark.mqtt
RF = "ring_frame.mahalanobis"


async def test_a_nudge_makes_an_hourly_poller_converge_in_seconds(zone: Zone,
                                                                   mqtt_broker: tuple[str, int]) -> None:
    host, port = mqtt_broker
    edge = f"nudge-{uuid.uuid4().hex[:8]}"
    secret = zone.cloud.edges.create(edge_id=edge, mill="mill-a", created_by="test")[1]
    nudger = MqttNudger(host, port, client_id=f"test-cloud-{edge}")
    nudger.start()
    zone.registry.notify = nudger
    approvals = ApprovedModels()
    assets = ["mill-a/rf01/main_motor", "mill-a/rf02/main_motor"]
    slots = {a: ModelSlot(a, zone.tmp / edge / "models", verifier=approvals, validate=validate_record) for a in assets}
    upd = ModelUpdater(base_url=zone.url, edge=edge, mill="mill-a", secret=secret.encode(), data_dir=zone.tmp / edge,
                       slots=slots, approvals=approvals, trusted_root=zone.repo.root(1))
    nudge = asyncio.Event()
    tasks = [asyncio.create_task(listen_nudges(host, port, "mill-a", edge, nudge)),
             asyncio.create_task(run_updates(upd, 3600.0, nudge))]
    try:
        deadline = time.monotonic() + 10
        while upd.checks < 1:                      # the first check at start: nothing desired yet
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)                   # the subscription is in place
        for seed in (0, 1):
            v = zone.registry.register(name=RF, scope_kind="machine_type", scope="ring_frame",
                                       kind="asset_monitor/mahalanobis", params=fitted_params(seed), actor="t").version
            t0 = time.monotonic()
            await asyncio.to_thread(zone.registry.promote, RF, v, mills=["mill-a"], actor="zone", reason="nudge")
            while {s.version for s in slots.values()} != {v}:
                assert time.monotonic() - t0 < 10, "the nudged edge did not converge"
                await asyncio.sleep(0.05)
        assert nudger.sent >= 2 and upd.checks <= 4
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        nudger.stop()
