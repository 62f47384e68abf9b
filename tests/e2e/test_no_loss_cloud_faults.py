"""The no-loss test of the cloud side's faults (issue 12 item 10): rows and alarm events, every process real.

The simulated mill (ring frames and energy meters at 1 s, six ring frames with a vibration sensor that
publishes a waveform snapshot every second on a private device broker) -> ``spinline edge`` (its own
process, scoring the snapshots: a model commissioned per channel, then alarms as injected bearing,
imbalance and looseness faults grow) -> a private Mosquitto with persistence -> two ``spinline cloud``
processes, each the API and one member of the ``$share/ingest`` group (the way the docs scale ingest:
N workers in one group) -> a private PostgreSQL cluster. The clouds refresh rollups every few seconds
and run retention passes; an old partition placed before the run must be dropped by one.

During the run: PostgreSQL is stopped (``pg_ctl stop -m fast``) for at least 10 s, until the edge
committed events meanwhile (the models' commissioning); cloud A (the API and ingest worker 1) is
SIGKILLed and restarted, cloud B (ingest worker 2) likewise; the broker is stopped for at least 8 s,
until an alarm was committed meanwhile; cloud A is SIGKILLed again while the backlog drains. The
outages wait for events rather than for a clock, so a slow machine stretches them instead of
missing them. Then the edge is stopped, started once more to send what it still held, and
everything drains.

Afterwards, from the edge's own ledger (its buffer file) and the cloud's tables:

* rows: per point the store holds per-point seqs 0..n-1, with n the buffer's ``point_seq.next`` at the
  end of the span: none missing, none twice, none the edge never committed, no batch refused;
* events: the buffer assigned ids 1..N (AUTOINCREMENT, none dropped or dead-lettered); the cloud holds
  exactly ids 1..N under the buffer's incarnation, once each, among them model commissionings and
  alarms (``alarm_raised``);
* rollups: the clouds' own refresh ran during the run (and failed then recovered across the PostgreSQL
  outage, as did retention), and after the drain the 1-minute rollups count exactly the stored good
  rows of every (point, minute); retention ran (the old partition is gone).
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
import uuid
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from spinline.cloud.storage.factory import open_store
from spinline.core.batch import Batch
from spinline.core.site import Fault, FaultType, all_points, load_site
from spinline.sim.server import SimServer

from ..conftest import strict

h = import_module("spinline_e2e_helpers")
svc = import_module("spinline_e2e_services")

EDGE = "nl2"
S = 1_000_000_000
N_FRAMES = 30
VIBRATING = 6
SENTINEL_POINT = -7_000_001          # not a point of any mill: the row retention must drop
BEARING = {"name": "motor_de", "model": "SKF 6316", "n_balls": 8, "ball_diameter_mm": 34.0,
           "pitch_diameter_mm": 125.0}
#: Faults that grow during the run, so that alarms are raised before, during and after the outages.
FAULTS = [Fault(machine=f"rf{i + 1:03d}", type=t, start_s=20.0 + 10 * i, ramp_s=8.0, severity=1.0)
          for i, t in enumerate((FaultType.BEARING_OUTER, FaultType.IMBALANCE, FaultType.BEARING_INNER,
                                 FaultType.LOOSENESS, FaultType.MISALIGNMENT, FaultType.BEARING_BALL))]
#: The clouds' periodic jobs, short enough to run several times in the run.
CLOUD_ENV = {**svc.FAST_ARGON2, "SPINLINE_ROLLUP_REFRESH_S": "4", "SPINLINE_RETENTION_EVERY_S": "6",
             "SPINLINE_HEALTH_PIPELINE_S": "0", "SPINLINE_ZONE_REFRESH_S": "0", "SPINLINE_MODELS_EVERY_S": "0"}


def _site(mill_id: str) -> dict[str, Any]:
    doc = h.ring_mill_site(mill_id, N_FRAMES)
    frames = doc["mills"][0]["workshops"][0]["lines"][0]["machines"]
    for m in frames[:VIBRATING]:
        m["bearings"] = [dict(BEARING)]
        m["vibration"] = {"fs_hz": 25600, "snapshot_s": 1.0, "every_s": 1.0,
                          "channels": [{"name": "main_motor", "bearing": "motor_de", "shaft": "motor",
                                        "shaft_rpm": 1480}]}
    return doc


def _edge_ledger(db: Path) -> dict[str, Any]:
    """What the edge committed: rows per point (``point_seq.next``), the last event id assigned (ids are
    AUTOINCREMENT: 1..N, never reused), the incarnation, and the loss counters."""
    con = sqlite3.connect(db)
    try:
        last = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return {"rows": {int(p): int(n) for p, n in con.execute("SELECT point, next FROM point_seq")},
                "last_event": int(last[0]) if last else 0,
                "incarnation": str(con.execute("SELECT value FROM info WHERE name = 'incarnation'").fetchone()[0]),
                "pending_events": int(con.execute("SELECT count(*) FROM events").fetchone()[0]),
                "counters": {str(k): int(v) for k, v in con.execute("SELECT name, value FROM counters")}}
    finally:
        con.close()


def _query(url: str, sql: str, args: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, connect_timeout=5) as c:
        return c.execute(sql, args or []).fetchall()  # type: ignore[arg-type]


def _rollup_mismatches(url: str, keys: list[int]) -> int:
    """(point, minute) buckets whose 1-minute rollup does not count exactly the stored good rows."""
    return int(_query(url, """
        WITH raw AS (SELECT point, ts - ts %% 60000000000 AS bucket, count(*) AS n FROM samples
                     WHERE point = ANY(%s) AND quality < 128 AND value <> 'NaN' GROUP BY 1, 2),
             r AS (SELECT point, bucket, count AS n FROM rollup_1m WHERE point = ANY(%s))
        SELECT count(*) FROM raw FULL JOIN r USING (point, bucket) WHERE raw.n IS DISTINCT FROM r.n""",
                      [keys, keys])[0][0])


@pytest.mark.slow
async def test_no_loss_of_rows_and_events_through_cloud_kills_and_database_and_broker_outages(
        tmp_path: Path) -> None:
    bin_dir = svc.pg_bin()
    svc.require_binaries(strict(), pg_ctl=None if bin_dir is None else bin_dir / "pg_ctl",
                         initdb=None if bin_dir is None else bin_dir / "initdb", mosquitto=Path(h.MOSQUITTO))
    assert bin_dir is not None
    mill_id = f"nl2-{uuid.uuid4().hex[:6]}"
    site_path = h.write_site(_site(mill_id), tmp_path / "site.yaml")
    site = load_site(site_path)
    keys = sorted({p.key for p in all_points(site, mill_id)})

    pg = svc.PrivatePostgres(bin_dir)
    broker = h.Broker(persist_dir=tmp_path / "broker")
    devices = h.Broker()                             # the mill's own broker of its MQTT devices: never stopped
    env = {**CLOUD_ENV, "SPINLINE_SECRET_KEY": svc.secret_key()}
    clouds = [svc.CloudProcess(pg.url, site_path, tmp_path / name, broker.port, env) for name in ("cloud-a", "cloud-b")]
    a, b = clouds
    edge: Any = None
    timeline: list[tuple[float, int, str]] = []
    backlogs: dict[str, int] = {}
    events_during: dict[str, int] = {}
    refreshed_during_run = 0
    try:
        await asyncio.to_thread(pg.init)
        broker.start()
        devices.start()
        a.spawn()
        await a.ready()
        secret = a.cli("add-edge", "--mill", mill_id, "--id", EDGE).strip()
        b.spawn()
        await b.ready()
        # A row 100 days old (raw retention: 90 days), in a daily partition of its own: a retention pass drops it.
        old = open_store(pg.url)
        try:
            old.write(Batch(np.array([SENTINEL_POINT]), np.array([time.time_ns() - 100 * 86400 * S]),
                            np.array([1.0]), np.zeros(1, np.uint8)))
        finally:
            old.close()
        assert _query(pg.url, "SELECT count(*) FROM samples WHERE point = %s", [SENTINEL_POINT])[0][0] == 1

        async with SimServer(site, mill_id, speed=1.0, ephemeral=True, mqtt=("127.0.0.1", devices.port),
                             faults=FAULTS, seed=5) as sim:
            edge = h.EdgeProcess(site_path, tmp_path / "edge", f"mqtt://127.0.0.1:{broker.port}", sim.ports,
                                 secret.encode(), edge_id=EDGE,
                                 extra=["--device-mqtt", f"mqtt://127.0.0.1:{devices.port}", "--commissioning-n", "8"])
            edge.spawn()
            await edge.started()
            t0 = time.monotonic()

            async def at(t: float, what: str) -> None:
                """Note ``what`` in the timeline, ``t`` s after the edge started (0: now)."""
                await asyncio.sleep(max(0.0, t0 + t - time.monotonic()) if t else 0.0)
                timeline.append((time.monotonic() - t0, time.time_ns(), what))

            async def backlog(what: str) -> None:
                """Rows the edge holds unacknowledged as an outage ends (the outage was felt)."""
                backlogs[what] = len((await asyncio.to_thread(h.pending, edge.buffer))[0])

            async def outage(what: str, min_s: float, max_s: float) -> None:
                """Hold an outage at least ``min_s`` and until the edge committed an event during it
                (at most ``max_s``): rows and events both cross it, however slow the machine is."""
                first = (await asyncio.to_thread(_edge_ledger, edge.buffer))["last_event"]
                start = time.monotonic()
                while time.monotonic() - start < max_s:
                    last = (await asyncio.to_thread(_edge_ledger, edge.buffer))["last_event"]
                    if last > first and time.monotonic() - start >= min_s:
                        break
                    await asyncio.sleep(0.5)
                events_during[what] = last - first
                await backlog(what)

            # PostgreSQL first: the channels' models are commissioned (events) while it is down.
            await at(1, "PostgreSQL stop -m fast")
            await asyncio.to_thread(pg.stop)
            await outage("PostgreSQL", 10, 45)
            await at(0, "PostgreSQL start")
            await asyncio.to_thread(pg.start)
            await at(0, "SIGKILL cloud A (API + ingest worker 1)")
            a.kill()
            await asyncio.sleep(3)
            await at(0, "cloud A restarted")
            a.spawn()
            await asyncio.sleep(3)
            await at(0, "SIGKILL cloud B (ingest worker 2)")
            b.kill()
            await asyncio.sleep(3)
            await at(0, "cloud B restarted")
            b.spawn()
            await a.ready()
            await b.ready()
            refreshed_during_run = int(_query(pg.url, "SELECT count(*) FROM rollup_1m WHERE point = ANY(%s)",
                                              [keys])[0][0])
            # The broker next, held until an alarm (the faults grow from 20 s on) was committed meanwhile.
            await at(0, "broker stop")
            await asyncio.to_thread(broker.stop)
            await outage("broker", 8, 45)
            await at(0, "broker start")
            await asyncio.to_thread(broker.start)
            await asyncio.sleep(3)
            await at(0, "SIGKILL cloud A again (backlog draining)")
            a.kill()
            a.spawn()
            await asyncio.sleep(12)
            await at(0, "edge SIGINT (end of the span)")
            assert edge.alive(), edge.stderr()
            edge.kill(signal.SIGINT)
            span = _edge_ledger(edge.buffer)
            _, tail_seqs = await asyncio.to_thread(h.pending, edge.buffer)

            # What the edge still holds goes out when it comes back: wait until every batch of the span
            # was acknowledged and no event is left (new ones may be committed meanwhile: not counted).
            edge.spawn()
            await edge.started()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                left = (await asyncio.to_thread(h.pending, edge.buffer))[1]
                events_left = await asyncio.to_thread(
                    lambda: sqlite3.connect(edge.buffer).execute(
                        "SELECT count(*) FROM events WHERE id <= ?", (span["last_event"],)).fetchone()[0])
                if (not tail_seqs or not left or min(left) > max(tail_seqs)) and events_left == 0:
                    break
                await asyncio.sleep(0.5)
            timeline.append((time.monotonic() - t0, time.time_ns(), "drained"))
            edge.kill(signal.SIGINT)
        final = _edge_ledger(edge.buffer)

        # The clouds' own refresh folds the last rows in (every 4 s): wait for rollups to match the raw rows.
        deadline = time.monotonic() + 30
        while (mismatched := _rollup_mismatches(pg.url, keys)) and time.monotonic() < deadline:
            await asyncio.sleep(1)

        stored = _query(pg.url, "SELECT point, seq FROM samples WHERE point = ANY(%s)", [keys])
        events = _query(pg.url, "SELECT incarnation, event_id, kind, ts_ns FROM health_edge_events WHERE edge = %s",
                        [EDGE])
        sentinel = _query(pg.url, "SELECT count(*) FROM samples WHERE point = %s", [SENTINEL_POINT])[0][0]
        rejections = _query(pg.url, "SELECT edge, reason, detail FROM rejections")
        logs = [c.log_text() for c in clouds]
    finally:
        if edge is not None and edge.alive():
            edge.kill(signal.SIGKILL)
        for c in clouds:
            c.kill(signal.SIGTERM)
        broker.stop()
        devices.stop()
        await asyncio.to_thread(pg.close)

    # --- rows: exactly once ----------------------------------------------------------------------
    per_point: dict[int, list[int]] = {}
    for p, s in stored:
        per_point.setdefault(int(p), []).append(-1 if s is None else int(s))
    committed = sum(span["rows"].values())
    missing = duplicated = beyond = 0
    for p in keys:
        seqs = per_point.get(p, [])
        duplicated += len(seqs) - len(set(seqs))
        beyond += sum(1 for s in seqs if s < 0 or s >= final["rows"].get(p, 0))
        missing += span["rows"].get(p, 0) - len({s for s in seqs if 0 <= s < span["rows"].get(p, 0)})
    in_span = sum(sum(1 for s in set(per_point.get(p, [])) if 0 <= s < n) for p, n in span["rows"].items())

    # --- events: exactly once, under the buffer's incarnation --------------------------------------
    ids = [int(i) for inc, i, _, _ in events if inc == span["incarnation"]]
    other_inc = [e for e in events if e[0] != span["incarnation"]]
    kinds: dict[str, int] = {}
    for _, i, kind, _ in events:
        if int(i) <= span["last_event"]:
            kinds[kind] = kinds.get(kind, 0) + 1
    missing_events = sorted(set(range(1, span["last_event"] + 1)) - set(ids))
    dup_events = len(ids) - len(set(ids))

    print(f"\nno-loss (cloud faults): {len(keys)} points, rows committed {committed}, stored {in_span} "
          f"(+{len(stored) - in_span} after the span), missing {missing}, duplicated {duplicated}, beyond {beyond}; "
          f"events committed {span['last_event']}, stored {len(set(ids) & set(range(1, span['last_event'] + 1)))} "
          f"{kinds}, committed during the outages {events_during}, missing {len(missing_events)}, "
          f"duplicated {dup_events}; backlog rows as outages ended {backlogs}; rollup_1m rows during the run "
          f"{refreshed_during_run}, mismatched buckets after the drain {mismatched}; old partition rows left "
          f"{sentinel}; PostgreSQL stops {pg.stops}; edge counters {final['counters']}")
    for t, _, what in timeline:
        print(f"  {t:6.1f} s  {what}")

    assert not rejections, f"the cloud refused payloads: {rejections[:5]}"
    for k in ("dropped_rows", "dead_letters", "dropped_events", "dead_events"):
        assert final["counters"].get(k, 0) == 0, final["counters"]
    assert committed > 20_000, f"only {committed} rows committed: the run did not run"
    assert missing == 0, f"{missing} committed rows never reached the store"
    assert duplicated == 0, f"{duplicated} rows stored twice"
    assert beyond == 0, f"{beyond} stored rows carry a seq the edge never committed"
    assert kinds.get("model_commissioned", 0) >= 1 and kinds.get("alarm_raised", 0) >= 1, kinds
    assert not missing_events, f"events committed by the edge but not stored: {missing_events}"
    assert dup_events == 0 and not other_inc, (dup_events, other_inc)
    assert min(events_during.values()) >= 1, f"an outage saw no event committed: {events_during}"
    assert min(backlogs.values()) > 0, f"an outage left nothing unacknowledged: {backlogs}"
    assert refreshed_during_run > 0, "no rollup refresh ran during the run"
    assert mismatched == 0, f"{mismatched} 1-minute buckets do not count the stored rows"
    assert sentinel == 0, "no retention pass dropped the 100-day-old partition"
    assert sum("MQTT ingest subscribed" in t for t in logs) == 2, "both clouds ran an ingest worker"
    # Both periodic jobs ran into the PostgreSQL outage (outage >= 10 s > their period) and came back.
    assert any("rollup refresh recovered" in t for t in logs) and any("retention recovered" in t for t in logs), \
        "the clouds' rollup refresh and retention did not run through the PostgreSQL outage"
