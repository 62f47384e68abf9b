"""The edge agent's composition root: site -> connectors -> coordinators -> buffer -> uplink.

``EdgeAgent`` is an async context manager (``async with EdgeAgent(...) as agent``) or ``run()``
forever. Everything runs in one asyncio loop (the buffer's fsyncs on one worker thread):

* one ``PollCoordinator`` per Modbus device, one OPC UA connector per endpoint, one MQTT
  connector per broker; all hand batches to ``_ingest``;
* ``_ingest`` checks device clocks, applies deadband/heartbeat/range flags and queues rows per
  priority; the flusher commits them to the durable buffer every ``flush_s`` (one transaction
  per priority class) and wakes the forwarder;
* the uplink loop keeps one session to the cloud, reconnecting with backoff, logging once;
* vibration snapshots are featurised by the MQTT connector and scored per asset by
  ``EdgeScoring`` (``scoring.py``; models persisted in ``models/`` of the data dir): the anomaly
  score and health index join the features, alarm/model events are committed to the buffer's
  ``events`` table at each flush and forwarded like batches;
* every second the agent emits link-health points per machine and its own ``_edge`` points,
  writes ``status.json`` atomically in its data dir and publishes it on TOPIC_STATUS.

Bad input is counted per device and cause where it is found (the connectors, see
``spinline.connectors.base``; values outside a point's ``min``/``max`` here, as ``out_of_range``)
and shows in ``status.json`` (``devices.<id>.bad_input``, ``bad_input_total``,
``unknown_devices``) and in each machine's ``link_errors`` point.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import numpy as np

from spinline.connectors.base import LinkHealth, LinkState, PushConnector
from spinline.connectors.modbus.connector import ModbusConnector
from spinline.connectors.mqtt.connector import MqttConnector
from spinline.core import wire
from spinline.core.batch import Batch
from spinline.core.errors import StorageError, UplinkError
from spinline.core.site import (
    EDGE_MACHINE_ID,
    ModbusLink,
    MqttLink,
    OpcUaLink,
    PointRef,
    Priority,
    Site,
    derived_points,
    point_key,
)

from .buffer import EdgeBuffer
from .clock import ClockGuard, ClockPolicy
from .coordinator import PollCoordinator
from .filter import PointTable, ReportFilter
from .forwarder import AsyncBuffer, Forwarder
from .scheduler import Backoff
from .uplink.factory import make_uplink

if TYPE_CHECKING:  # scoring pulls in the health models (scipy): only edges with vibration channels load it
    from .models import ModelVerifier
    from .scoring import EdgeScoring, ScoringConfig

log = logging.getLogger(__name__)
STATUS_FILE = "status.json"
BUFFER_FILE = "buffer.sqlite"
_RANK_PRIORITY = {0: Priority.LOW, 1: Priority.NORMAL, 2: Priority.HIGH}


class EdgeAgent:
    def __init__(self, site: Site, mill_id: str, *, edge_id: str, secret: bytes | None, data_dir: str | Path,
                 cloud_url: str | None, device_mqtt: str | None = None, budget_bytes: int = 1 << 30,
                 flush_s: float = 0.25, heartbeat_s: float = 60.0, clock_policy: ClockPolicy = "correct",
                 max_clock_skew_s: float = 120.0, backlog_rows_per_s: float = 200_000.0,
                 backlog_order: Literal["newest_first", "oldest_first"] = "newest_first",
                 ack_timeout_s: float = 10.0, status_every_s: float = 1.0, modbus_max_gap: int = 8,
                 scoring: ScoringConfig | None = None, model_verifier: ModelVerifier | None = None,
                 max_pending_rows: int = 2_000_000, require_signed_acks: bool = False) -> None:
        self.site = site
        self.mill = site.mill(mill_id)
        self.edge_id = edge_id
        self.secret = secret
        self.data_dir = Path(data_dir)
        self.cloud_url = cloud_url
        self.device_mqtt = device_mqtt
        self.flush_s = flush_s
        self.status_every_s = status_every_s
        self.modbus_max_gap = modbus_max_gap
        self.points = site.points(mill_id)
        self.derived = derived_points(site, mill_id)
        self.table = PointTable(self.points + self.derived, heartbeat_s=heartbeat_s)
        self.filter = ReportFilter(self.table)
        self.clock = ClockGuard(max_skew_s=max_clock_skew_s, policy=clock_policy)
        self.buffer = AsyncBuffer(EdgeBuffer(self.data_dir / BUFFER_FILE, budget_bytes=budget_bytes))
        self.forwarder = Forwarder(self.buffer, edge=edge_id, mill=mill_id, secret=secret,
                                   backlog_rows_per_s=backlog_rows_per_s, backlog_order=backlog_order,
                                   ack_timeout_s=ack_timeout_s, require_signed_acks=require_signed_acks)
        self.forwarder.on_ack = self._uplink_works
        self.scoring_config = scoring
        self.model_verifier = model_verifier
        self.scoring: EdgeScoring | None = None
        self._pending_events: list[wire.EdgeEvent] = []
        self.pollers: list[PollCoordinator] = []
        self.pushers: list[PushConnector] = []
        self._pending: dict[int, list[Batch]] = defaultdict(list)
        self._pending_meta: dict[str, int] = defaultdict(int)
        self._tasks: list[asyncio.Task[Any]] = []
        self._quarantine: list[Batch] = []
        self._pending_models: dict[str, Any] = {}
        #: Rows held in memory while the buffer cannot commit; past it the oldest low-priority rows go.
        self.max_pending_rows = max_pending_rows
        self.memory_dropped_rows = 0
        self._memory_drop_logged = False
        self._commit_failing = False
        self._commit_error_logged = False
        self._dropped_at_failure = 0
        self.points_collected = 0
        self.points_stored = 0
        self.batches_committed = 0
        self.started_ns = 0
        self._uplink_error_logged = False
        self._last_status: dict[str, Any] = {}
        self._uplink: Any = None
        self._machine_of_key = {p.key: p.machine.id for p in self.points}
        self._ref_of_key = {p.key: p for p in self.points}
        self._device_stamped = {p.key for p in self.points
                                if isinstance(p.machine.link, OpcUaLink | MqttLink)}
        self._edge_keys = {name: point_key(f"{mill_id}/{EDGE_MACHINE_ID}/{name}")
                           for name in ("buffer_rows", "buffer_bytes", "buffer_dropped", "uplink_state",
                                        "uplink_lag_s", "points_collected", "clock_skew_events")}
        self._build()
        self._health_of = self.healths()  # stable objects: built once, read by the data path
        for p in self.pushers:
            if isinstance(p, MqttConnector):  # bad input of a vibration sensor counts on its machine
                p.report_to = {m: h for m, h in self._health_of.items() if m not in p.healths()}

    # --- wiring (pure: objects only, no I/O) ---------------------------------------------------------

    def _build(self) -> None:
        by_machine: dict[str, list[PointRef]] = defaultdict(list)
        for p in self.points:
            by_machine[p.machine.id].append(p)
        opcua: dict[str, list[PointRef]] = defaultdict(list)
        mqtt: dict[tuple[str, int], list[PointRef]] = defaultdict(list)
        vib_machines: dict[tuple[str, int], list[Any]] = defaultdict(list)
        from spinline.connectors.opcua.connector import OpcUaConnector

        for i, (mid, pts) in enumerate(by_machine.items()):
            link = pts[0].machine.link
            if isinstance(link, ModbusLink):
                conn = ModbusConnector(pts[0].machine, max_gap=self.modbus_max_gap)
                self.pollers.append(PollCoordinator(f"modbus {mid}", conn, pts, self._ingest,
                                                    backoff=Backoff(seed=i), timeout_s=link.timeout_s * 4 + 1))
            elif isinstance(link, OpcUaLink):
                opcua[link.endpoint].extend(pts)
            elif isinstance(link, MqttLink):
                mqtt[self._broker(link)].extend(pts)
        for m in (p.machine for p in self.points):
            if m.vibration is not None:
                key = self._broker(m.link if isinstance(m.link, MqttLink) else None)
                if m not in vib_machines[key]:
                    vib_machines[key].append(m)
        for endpoint, pts in opcua.items():
            self.pushers.append(OpcUaConnector(endpoint, pts))
        iso = {m.id: self.site.templates[m.template].iso_class or "I"
               for m in (p.machine for p in self.points) if m.template and m.template in self.site.templates}
        all_vib = [m for ms in vib_machines.values() for m in ms]
        if all_vib:
            from .scoring import EdgeScoring

            self.scoring = EdgeScoring(self.mill.id, all_vib, iso, self.data_dir, self.scoring_config,
                                       self.model_verifier)
        for (host, port) in set(mqtt) | set(vib_machines):
            from spinline.health.features import featurize  # on use: health costs nothing without vibration

            mc = MqttConnector(host, port, mqtt.get((host, port), []), mill=self.mill.id,
                               vibration_machines=vib_machines.get((host, port), []),
                               iso_class=iso, client_id=f"spinline-dev-{self.edge_id}-{port}",
                               featurizer=featurize)
            mc.vib.scorer = self.scoring
            self.pushers.append(mc)

    def _broker(self, link: MqttLink | None) -> tuple[str, int]:
        url = (link.broker if link is not None and link.broker else None) or self.device_mqtt
        if url is None and self.cloud_url and urlsplit(self.cloud_url).scheme == "mqtt":
            url = self.cloud_url
        u = urlsplit(url or "mqtt://127.0.0.1:1883")
        return u.hostname or "127.0.0.1", u.port or 1883

    def healths(self) -> dict[str, LinkHealth]:
        out: dict[str, LinkHealth] = {}
        for c in self.pollers:
            out[c.points[0].machine.id] = c.connector.health
        for p in self.pushers:
            out.update(p.healths())
        return out

    # --- data path ---------------------------------------------------------------------------------

    def _ingest(self, batch: Batch) -> None:
        """Every connector's batches come through here (sync: called from the loop)."""
        if not len(batch):
            return
        self.points_collected += len(batch)
        now = time.time_ns()
        skew = np.abs(batch.ts_ns - now) > int(self.clock.max_skew_s * 1e9)
        if skew.any():
            batch = self._clock_fix(batch, now)
        else:
            for dev in self.clock._jumped:  # noqa: SLF001 - recovery is per device, checked cheaply
                if self.clock._jumped[dev]:  # noqa: SLF001
                    self._clock_recover(batch, now)
                    break
        out = self.filter.apply(batch)
        if self.filter.out_of_range is not None:
            self._count_out_of_range(self.filter.out_of_range)
        if not len(out):
            return
        pr = self.filter.priority_of(out)
        if bool((pr == pr[0]).all()):
            self._pending[int(pr[0])].append(out)
        else:
            for rank in np.unique(pr):
                self._pending[int(rank)].append(out.take(pr == rank))

    def _count_out_of_range(self, rows: Batch) -> None:
        """Values outside their point's plausible range: flagged UNCERTAIN by the filter, counted per device."""
        by_machine: dict[str, list[int]] = defaultdict(list)
        for i, k in enumerate(rows.point.tolist()):
            m = self._machine_of_key.get(k)
            if m is not None and m in self._health_of:
                by_machine[m].append(i)
        for m, idx in by_machine.items():
            ref = self._ref_of_key[int(rows.point[idx[0]])]
            self._health_of[m].rejected(
                "out_of_range", f"{ref.tag} = {float(rows.value[idx[0]]):g} {ref.point.unit} is outside its plausible "
                                f"range [{ref.point.min}, {ref.point.max}]; flagged uncertain", logger=log, n=len(idx))

    def _clock_fix(self, batch: Batch, now: int) -> Batch:
        machines = np.asarray([self._machine_of_key.get(int(k), "?") for k in batch.point])
        parts = []
        for m in np.unique(machines):
            sel = machines == m
            v = self.clock.check(str(m), batch.take(sel), now)
            parts.append(v.good)
            if len(v.quarantined):
                self._quarantine.append(v.quarantined)
            if v.corrected:
                self._pending_meta["clock_corrected_rows"] += v.corrected
        return Batch.concat(parts)

    def _clock_recover(self, batch: Batch, now: int) -> None:
        machines = {self._machine_of_key.get(int(k), "?") for k in np.unique(batch.point)}
        for m in machines:
            if self.clock._jumped.get(m):  # noqa: SLF001
                rows = np.asarray([self._machine_of_key.get(int(k)) == m for k in batch.point])
                self.clock.check(m, batch.take(rows), now)  # plausible rows: logs the recovery once

    async def flush(self) -> int:
        """Commit what was collected; returns rows committed.

        On a ``StorageError`` (disk full, I/O error, busy database) the rows not committed yet, the
        quarantined rows and the batch meta go back in memory for the next try (before anything
        collected meanwhile) and the error is raised. Memory is capped at ``max_pending_rows``: past
        it the oldest rows of the lowest priority are dropped, counted (``memory_dropped_rows``, part
        of the ``_edge/buffer_dropped`` point) and logged once per failure episode.
        """
        pending, self._pending = self._pending, defaultdict(list)
        meta: dict[str, Any] = dict(self._pending_meta)
        self._pending_meta.clear()
        if self._pending_models:
            meta["models"] = self._pending_models
            self._pending_models = {}
        quarantine, self._quarantine = self._quarantine, []
        rows = 0
        try:
            await self._commit_scoring()
            if self.scoring is not None and (versions := self.scoring.take_versions()):
                meta["models"] = {**meta.get("models", {}), **versions}  # model version behind each asset's scores
            for rank in sorted(pending, reverse=True):
                b = Batch.concat(pending[rank])
                if len(b):
                    m = {"ts_source": "edge+device", **meta}
                    await self.buffer.append(b, _RANK_PRIORITY[rank], m)
                    rows += len(b)
                    self.batches_committed += 1
                del pending[rank]
            if quarantine:
                await self.buffer.call(self.buffer.buffer.quarantine, Batch.concat(quarantine), "clock_skew")
                quarantine = []
        except StorageError:
            self._keep_uncommitted(pending, quarantine, meta if not rows else {})
            raise
        finally:
            if rows:
                self.points_stored += rows
                self.forwarder.notify()
        if self._commit_failing:
            log.warning("edge buffer commits work again (%d row(s) dropped from memory meanwhile)",
                        self.memory_dropped_rows - self._dropped_at_failure)
            self._commit_failing = False
        return rows

    def _keep_uncommitted(self, pending: dict[int, list[Batch]], quarantine: list[Batch],
                          meta: dict[str, Any]) -> None:
        """Put what a failed flush did not commit back in front of what was collected meanwhile, within the cap."""
        for rank, batches in pending.items():
            self._pending[rank] = batches + self._pending[rank]
        self._quarantine = quarantine + self._quarantine
        for k, v in meta.items():
            if k == "models":
                self._pending_models = {**v, **self._pending_models}
            elif isinstance(v, int):
                self._pending_meta[k] += v
        if not self._commit_failing:
            self._commit_failing = True
            self._dropped_at_failure = self.memory_dropped_rows
        self._enforce_memory_cap()

    def _enforce_memory_cap(self) -> None:
        over = sum(len(b) for bs in self._pending.values() for b in bs) - self.max_pending_rows
        dropped = 0
        for rank in sorted(self._pending):            # lowest priority first, oldest first within it
            batches = self._pending[rank]
            while over > 0 and batches:
                b = batches[0]
                if len(b) <= over:
                    batches.pop(0)
                    n = len(b)
                else:
                    batches[0] = b.take(slice(over, None))
                    n = over
                over -= n
                dropped += n
        q_over = sum(len(b) for b in self._quarantine) - self.max_pending_rows
        while q_over > 0 and self._quarantine:
            q_over -= len(self._quarantine[0])
            dropped += len(self._quarantine.pop(0))
        if dropped:
            self.memory_dropped_rows += dropped
            if not self._memory_drop_logged:
                self._memory_drop_logged = True
                log.error("edge buffer cannot commit and %d rows wait in memory (cap %d): dropping the oldest "
                          "lowest-priority rows (%d now; counted in buffer_dropped; logged once)",
                          self.max_pending_rows + dropped, self.max_pending_rows, dropped)

    async def _commit_scoring(self) -> None:
        """Persist changed model slots, commit the scoring events (kept for the next try on failure), then
        persist the alarm states: a crash in between re-raises an alarm after the restart, never loses one."""
        if self.scoring is None:
            return
        if self.scoring.dirty():
            await self.buffer.call(self.scoring.persist, alarms=False)
        self._pending_events += self.scoring.take_events()
        if self._pending_events:
            await self.buffer.call(self.buffer.buffer.append_events, self._pending_events)
            self._pending_events = []
            self.forwarder.notify_events()
        if self.scoring.alarms_dirty():
            await self.buffer.call(self.scoring.persist_alarms)

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
            except StorageError as exc:
                if not self._commit_error_logged:  # once per failure episode (every flush_s would flood the log)
                    self._commit_error_logged = True
                    log.error("edge buffer commit failed: %s; rows kept in memory (up to %d) for the next try",
                              exc, self.max_pending_rows)
                continue
            self._commit_error_logged = False

    # --- self points and status --------------------------------------------------------------------

    def _self_points(self, stats: dict[str, Any]) -> Batch:
        now = time.time_ns()
        keys, vals = [], []
        mill = self.mill.id
        for mid, h in self.healths().items():
            keys += [point_key(f"{mill}/{mid}/link_state"), point_key(f"{mill}/{mid}/link_errors"),
                     point_key(f"{mill}/{mid}/link_latency_ms")]
            vals += [float(h.state), float(h.link_errors), h.latency_ms if h.state != LinkState.DOWN else float("nan")]
        e = self._edge_keys
        up = stats["uplink"]
        for name, v in (("buffer_rows", stats["buffer"]["rows"]), ("buffer_bytes", stats["buffer"]["bytes"]),
                        ("buffer_dropped", stats["buffer"]["dropped_rows"] + self.memory_dropped_rows),
                        ("uplink_state", 0.0 if up["state"] == "connected" else 2.0),
                        ("uplink_lag_s", up["lag_s"]), ("points_collected", self.points_collected),
                        ("clock_skew_events", self.clock.events)):
            keys.append(e[name])
            vals.append(float(v))
        v = np.asarray(vals, dtype=np.float64)
        return Batch.of(keys, now, v, np.where(np.isnan(v), 0x80, 0).astype(np.uint8))

    async def status(self) -> dict[str, Any]:
        bs = await self.buffer.stats()
        now = time.time_ns()
        lag = 0.0 if bs.oldest_created_ns is None else max(0.0, (now - bs.oldest_created_ns) / 1e9)
        up = self.forwarder.stats.as_dict() | {"lag_s": round(lag, 3), "url": _redact(self.cloud_url)}
        return {"edge": self.edge_id, "mill": self.mill.id, "ts_ns": now, "pid": os.getpid(),
                "started_ns": self.started_ns,
                "devices": {m: h.snapshot() for m, h in sorted(self.healths().items())},
                "buffer": bs.as_dict(), "uplink": up, "points_collected": self.points_collected,
                "points_stored": self.points_stored, "batches_committed": self.batches_committed,
                "pending_rows": sum(len(b) for bs in self._pending.values() for b in bs),
                "memory_dropped_rows": self.memory_dropped_rows,
                "clock_skew_events": self.clock.events,
                "bad_input_total": sum(h.bad_input_total for h in self.healths().values()),
                "unknown_devices": {f"mqtt {p.host}:{p.port}": p.unknown_devices() for p in self.pushers
                                    if isinstance(p, MqttConnector) and p.unknown_topics},
                "models": self.scoring.snapshot() if self.scoring is not None else {},
                "alarms": (["buffer_full"] if bs.full else []) + (["uplink_down"] if up["state"] != "connected"
                                                                  else [])}

    def write_status(self, status: dict[str, Any]) -> None:
        path = self.data_dir / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=1, default=str))
        os.replace(tmp, path)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.status_every_s)
            try:
                st = await self.status()
                self._last_status = st
                self._ingest(self._self_points(st))
                await asyncio.to_thread(self.write_status, st)
                up = self._uplink
                if up is not None:
                    with contextlib.suppress(UplinkError):
                        await asyncio.wait_for(up.publish_status(wire.encode_status(st)), 2.0)
            except (OSError, StorageError, TimeoutError) as exc:
                log.warning("status update failed: %s", exc)

    # --- uplink ------------------------------------------------------------------------------------

    async def _uplink_loop(self) -> None:
        if not self.cloud_url:
            return
        backoff = Backoff(base_s=0.5, cap_s=10.0, seed=1)
        while True:
            up = make_uplink(self.cloud_url, edge=self.edge_id, mill=self.mill.id, secret=self.secret or b"",
                             trust=self.forwarder.trust)
            started = time.time_ns()
            try:
                async with up:
                    self._uplink = up
                    await self.forwarder.run_session(up)
            except asyncio.CancelledError:
                raise
            except UplinkError as exc:
                self.forwarder.stats.last_error = str(exc)
                if not self._uplink_error_logged:
                    log.warning("uplink to %s down: %s (buffering)", _redact(self.cloud_url), exc)
                    self._uplink_error_logged = True
            except Exception as exc:
                self.forwarder.stats.last_error = repr(exc)
                if not self._uplink_error_logged:
                    log.exception("uplink failed unexpectedly (buffering, retrying)")
                    self._uplink_error_logged = True
            finally:
                self._uplink = None
                if (self.forwarder.stats.last_ack_ns or 0) >= started:
                    backoff.reset()  # the session worked (an ack came back): reconnect quickly
            await asyncio.sleep(backoff.fail())

    def _uplink_works(self) -> None:
        """An ack arrived: the uplink works end to end (a session that opens but gets no ack does not count)."""
        if self._uplink_error_logged:
            log.info("uplink to %s restored", _redact(self.cloud_url))
            self._uplink_error_logged = False

    # --- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> EdgeAgent:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # pymodbus logs every failed connect at WARNING; our LinkHealth logs once per transition.
        logging.getLogger("pymodbus").setLevel(logging.ERROR)
        await self.buffer.open()
        if self.scoring is not None:
            await self.buffer.call(self.scoring.load)
        self.started_ns = time.time_ns()
        for c in self.pollers:
            self._tasks.append(asyncio.create_task(c.run(), name=c.name))
        for p in self.pushers:
            await p.__aenter__()
            self._tasks.append(asyncio.create_task(p.run(self._ingest), name=f"push-{type(p).__name__}"))
        self._tasks.append(asyncio.create_task(self._flusher(), name="flusher"))
        self._tasks.append(asyncio.create_task(self._status_loop(), name="status"))
        self._tasks.append(asyncio.create_task(self._uplink_loop(), name="uplink"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        for p in self.pushers:
            with contextlib.suppress(Exception):
                await p.__aexit__(None, None, None)
        with contextlib.suppress(StorageError):
            await self.flush()
        with contextlib.suppress(Exception):
            self.write_status(await self.status())
        await self.buffer.close()

    async def run(self) -> None:
        async with self:
            await asyncio.Event().wait()


def _redact(url: str | None) -> str | None:
    if not url:
        return url
    u = urlsplit(url)
    if u.password:
        return url.replace(f":{u.password}@", ":***@")
    return url
