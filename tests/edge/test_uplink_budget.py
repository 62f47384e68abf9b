"""Uplink budget (issue 11 item 8): the status message on change plus a slow heartbeat, every byte booked.

Pure: ``StatusGate`` over a simulated steady hour sends the session's first status and one per
heartbeat, whatever the noise in levels and counters; a device going down or an alarm goes out at
once. ``TrafficLedger`` rolls over at the UTC day.

Real: an ``EdgeAgent`` collecting from the simulated mill sends to the machine's Mosquitto (no cloud:
batches are re-sent after the ack timeout, which the ledger must count too); a subscriber on the
edge's up topics counts what the broker delivered. The status ticks every 0.1 s but goes up about
once per 3 s heartbeat in steady state; stopping the ring frames' Modbus port puts a status with the
device down on the wire within a second or two; and the edge's ledger equals, kind by kind, the bytes
the broker delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from spinline.connectors.base import LinkState
from spinline.core import wire
from spinline.core.site import parse_site, rebind
from spinline.edge.agent import EdgeAgent
from spinline.edge.cli import _fmt_status
from spinline.edge.settings import EdgeSettings
from spinline.edge.status import StatusGate, status_digest
from spinline.edge.traffic import TrafficLedger
from spinline.sim.server import SimServer

RING_PORT = 5020


def _status(t: float, *, lag: float = 0.3, rows: int = 120, rf: str = "up", sent: int = 0,
            alarms: list[str] | None = None) -> dict[str, Any]:
    return {"edge": "e", "mill": "m", "ts_ns": int(t * 1e9), "points_collected": sent * 40,
            "devices": {"rf01": {"state": rf, "latency_ms": 3.0 + t % 1}, "meter": {"state": "up", "latency_ms": 1.0}},
            "buffer": {"rows": rows, "bytes": rows * 33, "full": False, "dead_letters": 0, "dead_events": 0,
                       "dropped_rows": 0},
            "uplink": {"state": "connected", "lag_s": lag, "sent": sent, "acked": sent, "rejected": 0,
                       "events_rejected": 0, "acks_ignored": 0},
            "alarms": alarms or [], "bad_input_total": 0, "clock_skew_events": 0, "memory_dropped_rows": 0,
            "models": {"m/rf01/de": {"kind": "zscore", "version": "v1", "state": "active", "health_index": 90 - t % 7,
                                     "anomaly_score": t % 3, "open_alarms": []}},
            "traffic": {"up_bytes": sent * 1000}}


def test_steady_hour_sends_one_status_per_heartbeat_and_a_change_at_once() -> None:
    gate = StatusGate(heartbeat_s=60.0)
    session = object()
    sent_at: list[tuple[float, str]] = []
    for i in range(3600):  # one hour of 1 s status ticks: levels, scores and counters move all the time
        st = _status(float(i), lag=0.2 + (i % 9) * 0.5, rows=(i * 37) % 5000, sent=i)
        why = gate.due(st, float(i), session)
        if why:
            gate.done(st, float(i), session)
            sent_at.append((float(i), why))
    assert sent_at[0] == (0.0, "session")
    assert [w for _, w in sent_at[1:]] == ["heartbeat"] * 59, sent_at[:5]
    assert gate.sent == 60 and gate.skipped == 3540

    down = _status(3600.0, rf="down", sent=3600)
    assert gate.due(down, 3600.0, session) == "change"      # a device link down goes out at once
    gate.done(down, 3600.0, session)
    assert gate.due(_status(3601.0, rf="down", sent=3601), 3601.0, session) is None
    alarm = _status(3602.0, rf="down", sent=3602, alarms=["uplink_down"])
    assert gate.due(alarm, 3602.0, session) == "change"
    assert gate.due(alarm, 3602.0, object()) == "session"  # a new uplink session gets the status at once


def test_digest_buckets_levels_but_keeps_states_and_refusals() -> None:
    base = status_digest(_status(0.0))
    assert status_digest(_status(5.0, lag=9.0, rows=9_000)) == base
    assert status_digest(_status(0.0, lag=75.0)) != base         # lag crosses a minute
    assert status_digest(_status(0.0, rows=20_000)) != base       # backlog building up
    refused = _status(0.0)
    refused["buffer"]["dead_letters"] = 1
    assert status_digest(refused) != base
    model = _status(0.0)
    model["models"]["m/rf01/de"]["version"] = "v2"
    assert status_digest(model) != base
    # the cloud's answer to an uncertain snapshot, and forged answers, go out at once
    answered = _status(0.0)
    answered["evidence"] = {"cloud_diagnoses": {"by_asset": {"m/rf01/de": {"fault": "bearing_outer"}}, "refused": 0}}
    assert status_digest(answered) != base
    forged = _status(0.0)
    forged["evidence"] = {"cloud_diagnoses": {"by_asset": {}, "refused": 1}}
    assert status_digest(forged) != base


def test_ledger_books_by_kind_and_rolls_over_at_utc_midnight() -> None:
    now = [1_780_000_000.0 - 1_780_000_000.0 % 86400 + 86400 - 2]  # 2 s before a UTC midnight
    ledger = TrafficLedger(clock=lambda: now[0])
    ledger.add("batch", 1000)
    ledger.add("status", 300)
    ledger.add("acks_in", 80, 0)
    d = ledger.as_dict()
    assert d["bytes"]["batch"] == 1000 and d["up_bytes"] == 1300 and d["messages"]["status"] == 1
    with pytest.raises(ValueError, match="unknown traffic kind"):
        ledger.add("video", 1)  # type: ignore[arg-type]
    now[0] += 5
    ledger.add("events", 50)
    d2 = ledger.as_dict()
    assert d2["day"] != d["day"] and d2["up_bytes"] == 50
    assert d2["yesterday"] == {"day": d["day"], **{k: d[k] for k in ("bytes", "messages", "up_bytes")}}
    assert d2["since_start"]["up_bytes"] == 1350


async def _listen(host: str, port: int, mill: str, edge: str, got: list[tuple[float, str, bytes]],
                  ready: asyncio.Event) -> None:
    async with aiomqtt.Client(host, port, identifier=f"it-up-{uuid.uuid4().hex[:8]}") as c:
        await c.subscribe(f"spinline/up/{mill}/{edge}/+", qos=1)
        ready.set()
        async for msg in c.messages:
            payload = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
            got.append((time.monotonic(), str(msg.topic).rsplit("/", 1)[1], payload))



def _read_status(p: bytes) -> dict:
    """A status message as the cloud reads it: signed with the edge's key (JSON, newline, signature)."""
    body = wire.verify_signed_status(p, b"s" * 32)
    assert body is not None, "status on the broker is not signed with the edge's key"
    return json.loads(body)

async def test_agent_status_on_change_and_ledger_matches_the_broker(
        mill_yaml: Path, mqtt_broker: tuple[str, int], tmp_path: Path) -> None:
    doc: dict[str, Any] = yaml.safe_load(mill_yaml.read_text())
    mill_id = f"ub-{uuid.uuid4().hex[:8]}"
    doc["mills"] = doc["mills"][:1]
    doc["mills"][0]["id"] = mill_id
    site = parse_site(doc)
    host, port = mqtt_broker
    got: list[tuple[float, str, bytes]] = []
    ready = asyncio.Event()
    listener = asyncio.create_task(_listen(host, port, mill_id, "ub", got, ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        async with asyncio.timeout(90), SimServer(site, mill_id, speed=1.0, ephemeral=True, mqtt=(host, port)) as sim:
            settings = EdgeSettings(edge_id="ub", secret=b"s" * 32, data_dir=tmp_path / "edge",
                                    cloud_url=f"mqtt://{host}:{port}", device_mqtt=f"mqtt://{host}:{port}",
                                    flush_s=0.2, status_every_s=0.1, status_heartbeat_s=3.0, ack_timeout_s=3.0)
            agent = EdgeAgent(rebind(site, sim.ports), mill_id, settings)
            async with agent:
                await asyncio.sleep(4.0)                      # warm-up: devices come up, first status
                t0, n0 = time.monotonic(), sum(1 for _, k, _ in got if k == "status")
                await asyncio.sleep(6.0)                      # steady
                steady = sum(1 for _, k, _ in got if k == "status") - n0
                ticks = (time.monotonic() - t0) / 0.1
                await sim.stop_port(RING_PORT)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and all(h.state != LinkState.DOWN
                                                          for h in agent.healths().values()):
                    await asyncio.sleep(0.05)
                down_at = time.monotonic()
                assert down_at < deadline, "the ring frames' link never went down"
                await asyncio.sleep(2.0)
                await sim.start_port(RING_PORT)
            ledger = agent.traffic.as_dict()
            await asyncio.sleep(1.0)                          # the broker delivers what was PUBACKed
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError, TimeoutError):
            await asyncio.wait_for(listener, 10)

    # steady: about one status per heartbeat (6 s / 3 s), not one per 0.1 s tick
    assert ticks > 50 and steady <= 6, f"{steady} status messages in 6 s of steady state"
    # the link going down is on the wire at once, not at the next heartbeat
    downs = [t for t, k, p in got if k == "status" and t >= down_at - 0.2
             and any(d.get("state") == "down" for d in _read_status(p).get("devices", {}).values())]
    assert downs and downs[0] - down_at < 1.5, f"device-down status {downs[:1]} vs link down at {down_at}"
    # the ledger is what went over the link, kind by kind (the retained will is the broker's, not sent)
    on_wire: dict[str, list[int]] = {}
    for _, kind, p in got:
        if kind == "status" and _read_status(p).get("state") == "offline":
            continue
        b = on_wire.setdefault(kind, [0, 0])
        b[0] += len(p)
        b[1] += 1
    for kind in ("batch", "status", "events"):
        assert ledger["bytes"][kind] == on_wire.get(kind, [0, 0])[0], (kind, ledger, on_wire)
        assert ledger["messages"][kind] == on_wire.get(kind, [0, 0])[1], (kind, ledger, on_wire)
    assert ledger["bytes"]["batch"] > 0 and ledger["messages"]["status"] >= 3
    assert ledger["up_bytes"] == sum(ledger["bytes"][k] for k in ("batch", "status", "events", "snapshot"))
    written = json.loads((tmp_path / "edge" / "status.json").read_text())
    assert written["traffic"]["bytes"]["batch"] > 0 and written["status_messages"]["skipped"] > 0
    shown = "\n".join(_fmt_status(written))                # what `spinline edge status` prints
    assert "uplink bytes today" in shown and "status messages sent" in shown


async def test_http_uplink_books_what_it_sent_and_the_answers_it_received() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from spinline.edge.traffic import MeteredUplink
    from spinline.edge.uplink.http import HttpUplink

    answer = b'{"ok":true,"note":"status kept"}'
    received: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received.append(len(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)          # a free port from the OS
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        ledger = TrafficLedger()
        up = MeteredUplink(HttpUplink(f"http://127.0.0.1:{srv.server_address[1]}", edge="e", mill="m",
                                      secret=b"k" * 32), ledger)
        async with up:
            for body in (b'{"edge":"e","n":1}', b'{"edge":"e","n":22}'):
                await up.publish_status(body)
        d = ledger.as_dict()
    finally:
        srv.shutdown()
    assert d["bytes"]["status"] == sum(received) == 18 + 19 and d["messages"]["status"] == 2
    assert d["bytes"]["acks_in"] == 2 * len(answer)
