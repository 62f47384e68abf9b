"""The edge agent's composition root: site -> connectors -> collector -> buffer -> forwarder -> uplink.

``EdgeAgent(site, mill, EdgeSettings(...))`` is an async context manager (``async with``) or
``run()`` forever. It builds its parts (pure: no I/O in the constructor) and runs them in one
asyncio loop (the buffer's fsyncs on one worker thread, ``buffer_io``):

* connectors: one ``PollCoordinator`` per Modbus device, one OPC UA connector per endpoint, one
  MQTT connector per broker; all hand batches to the collector;
* ``collector.Collector``: clock checks, deadband/heartbeat/range flags, pending rows per
  priority, the memory cap, and the flush into the durable buffer every ``flush_s``;
* ``scoring_stage.ScoringStage`` (only with vibration channels): the MQTT connector featurises
  snapshots and hands the features over; the stage scores them per asset beside the connectors
  (models persisted in ``models/`` of the data dir) and feeds ``anomaly_score`` / ``health_index``
  to the collector; its alarm/model events are committed to the buffer at each flush;
* ``forwarder.Forwarder``: live first, backlog newest-first, delete on ack; the uplink loop here
  keeps one session to the cloud, reconnecting with backoff, logging once;
* ``status.StatusReporter``: every second the link-health and ``_edge`` points and ``status.json``
  (atomic); the status message on change and a slow heartbeat;
* ``traffic.TrafficLedger``: every byte through the uplink per kind and day (the session's uplink is
  wrapped in a ``MeteredUplink``).

Bad input is counted per device and cause where it is found (the connectors, see
``spinline.connectors.base``; values outside a point's ``min``/``max`` in the collector, as
``out_of_range``) and shows in ``status.json`` (``devices.<id>.bad_input``, ``bad_input_total``,
``unknown_devices``) and in each machine's ``link_errors`` point.

Size: the agent wires every stage (collect, score, flush, forward, status, updates, federated join)
and owns their start and stop order; the stages themselves live in their own modules.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlparse

from spinline.connectors.base import LinkHealth, PolledConnector, PushConnector
from spinline.connectors.mqtt.connector import MqttConnector
from spinline.connectors.registry import LinkContext, plan, vibration_machines
from spinline.core.aio import wait_event
from spinline.core.errors import StorageError, UplinkError
from spinline.core.site import Machine, Site, derived_points

from .buffer import EdgeBuffer
from .buffer_io import AsyncBuffer
from .clock import ClockGuard
from .cloud_answers import CloudAnswers
from .collector import Collector
from .coordinator import PollCoordinator
from .evidence import EvidenceKeeper, RawSnapshot, commit_snapshots
from .feature_log import FeatureLog
from .federated import Joiner
from .forwarder import Forwarder
from .scheduler import Backoff
from .settings import EdgeSettings
from .status import STATUS_FILE as STATUS_FILE
from .status import StatusReporter, StatusSources, redact
from .traffic import MeteredUplink, TrafficLedger
from .uplink.factory import make_uplink

if TYPE_CHECKING:  # scoring pulls in the health models (scipy): only edges with vibration channels load it
    from spinline.connectors.mqtt.vibration import ChannelFeatures
    from spinline.core.wire import CloudAnswer, EdgeEvent

    from .models import ModelVerifier
    from .scoring import EdgeScoring
    from .scoring_stage import ScoringStage
    from .updates import ApprovedModels, ModelUpdater, ObservedScorer

log = logging.getLogger(__name__)
BUFFER_FILE = "buffer.sqlite"
#: How long rows that arrive at an idle edge wait for the rest of their poll round before the flush.
COALESCE_S = 0.01
#: Early flushes (on arrival, before ``flush_s``) allowed per second: bounds the fsyncs a trickle of rows costs.
EARLY_FLUSHES_PER_S = 4
#: How long stopping waits for each round of task cancellations.
STOP_TIMEOUT_S = 5.0


class EdgeAgent:
    def __init__(self, site: Site, mill_id: str, settings: EdgeSettings, *,
                 model_verifier: ModelVerifier | None = None) -> None:
        self.site = site
        self.mill = site.mill(mill_id)
        self.settings = settings
        self.edge_id = settings.edge_id
        self.data_dir = settings.data_dir
        self.model_verifier = model_verifier
        self.points = site.points(mill_id)
        self.collector = Collector(self.points, derived_points(site, mill_id),
                                   clock=ClockGuard(max_skew_s=settings.max_clock_skew_s, policy=settings.clock_policy),
                                   heartbeat_s=settings.heartbeat_s, max_pending_rows=settings.max_pending_rows,
                                   max_batch_rows=settings.max_batch_rows)
        self.buffer = AsyncBuffer(EdgeBuffer(self.data_dir / BUFFER_FILE, budget_bytes=settings.budget_bytes))
        self.forwarder = Forwarder(self.buffer, edge=settings.edge_id, mill=mill_id, secret=settings.secret,
                                   backlog_rows_per_s=settings.backlog_rows_per_s,
                                   backlog_order=settings.backlog_order, ack_timeout_s=settings.ack_timeout_s,
                                   require_signed_acks=settings.require_signed_acks,
                                   max_batch_rows=settings.max_batch_rows, retry=settings.held_retry)
        self.forwarder.on_ack = self._uplink_works
        #: Every byte through the uplink, by kind, per day (``edge.traffic``; in the status as ``traffic``).
        self.traffic = TrafficLedger()
        self.scoring: EdgeScoring | None = None
        self.scoring_stage: ScoringStage | None = None
        #: Raw snapshots on demand (only with vibration channels; ``edge.evidence``).
        self.evidence: EvidenceKeeper | None = None
        #: The cloud model's answers to uncertain snapshots (with the evidence keeper; ``edge.cloud_answers``).
        self.cloud_answers: CloudAnswers | None = None
        #: A federated mill's own feature rows (they do not go up; its Flower client trains on them).
        self.feature_log: FeatureLog | None = None
        #: Its part in the cloud's federated runs (``edge.federated``), for a federated mill with vibration.
        self.joiner: Joiner | None = None
        #: The model update client (``updates.ModelUpdater``), when the settings turn updates on.
        self.updates: ModelUpdater | None = None
        self._nudge = asyncio.Event()
        self.pollers: list[PollCoordinator] = []
        self.pushers: list[PushConnector] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._uplink_error_logged = False
        self._uplink: MeteredUplink | None = None
        self._build()
        self.collector.health_of = self.healths()  # stable objects: built once, read by the data path
        for p in self.pushers:
            if isinstance(p, MqttConnector):  # bad input of a vibration sensor counts on its machine
                p.report_to = {m: h for m, h in self.collector.health_of.items() if m not in p.healths()}
                p.commits = self.collector.commits   # device messages acknowledged after their commit
        self.reporter = StatusReporter(
            edge_id=settings.edge_id, mill=mill_id, data_dir=self.data_dir, cloud_url=settings.cloud_url,
            every_s=settings.status_every_s, collector=self.collector, buffer=self.buffer, forwarder=self.forwarder,
            sources=StatusSources(healths=self.healths, unknown_devices=self._unknown_devices,
                                  models=lambda: self.scoring.snapshot() if self.scoring is not None else {},
                                  uplink=lambda: self._uplink, traffic=self.traffic.as_dict,
                                  evidence=self._evidence_status,
                                  model_updates=self.updates.status if self.updates is not None else None,
                                  federated=lambda: self.joiner.status() if self.joiner is not None else {}),
            heartbeat_s=settings.status_heartbeat_s)

    # --- wiring (pure: objects only, no I/O) ---------------------------------------------------------

    def _build(self) -> None:
        """The connectors the site needs (``connectors.registry``), the scoring stage if any channel vibrates."""
        iso = {m.id: self.site.templates[m.template].iso_class or "I"
               for m in (p.machine for p in self.points) if m.template and m.template in self.site.templates}
        featurizer = None
        vib = vibration_machines(self.points)
        if vib:
            from spinline.health.features import featurize  # on use: health costs nothing without vibration

            from .scoring import EdgeScoring
            from .scoring_stage import ScoringStage

            featurizer = featurize
            base = self.settings.models_base
            approvals = None
            if base is not None:
                from .updates import ApprovedModels

                approvals = ApprovedModels()   # registry models only through the verified update path
            self.scoring = EdgeScoring(self.mill.id, vib, iso, self.data_dir, self.settings.scoring,
                                       approvals if approvals is not None else self.model_verifier)
            scorer = self._build_updates(base, approvals) if base is not None and approvals is not None else None
            self.scoring_stage = ScoringStage(self.scoring, self.mill.id, self.collector.ingest, scorer)
            self.evidence = EvidenceKeeper(self.edge_id, self.settings.evidence, withhold=self.mill.federated)
            if self.mill.federated:
                self.feature_log = FeatureLog(self.data_dir)
                self.joiner = Joiner(self.feature_log, self.data_dir, self.mill.id)
                self.forwarder.on_federated = self.joiner.offer
            self._wire_evidence(vib)
        ctx = LinkContext(edge_id=self.edge_id, mill=self.mill.id, device_mqtt=self.settings.device_mqtt,
                          cloud_url=self.settings.cloud_url, modbus_max_gap=self.settings.modbus_max_gap,
                          iso_class=iso, featurizer=featurizer,
                          feature_sink=self._feature_sink if self.scoring_stage is not None else None,
                          share_features=not self.mill.federated)
        seed = {mid: i for i, mid in enumerate(dict.fromkeys(p.machine.id for p in self.points))}
        for c in plan(self.points, ctx):
            if c.shape == "polled":
                self.pollers.append(PollCoordinator(c.name, cast(PolledConnector, c.connector), list(c.points),
                                                    self.collector.ingest,
                                                    backoff=Backoff(seed=seed[c.points[0].machine.id]),
                                                    timeout_s=c.timeout_s))
            else:
                self.pushers.append(cast(PushConnector, c.connector))

    def _wire_evidence(self, vib: list[Machine]) -> None:
        """Raw snapshots at alarms (``uncertain`` ones with their diagnosis) and on the cloud's requests; the
        cloud model's answers checked (``CloudAnswers``) and handed to the asset's open alarm episode."""
        from .scoring import CloudDiagnosis

        keeper, scoring, stage = self.evidence, self.scoring, self.scoring_stage
        assert keeper is not None and scoring is not None and stage is not None
        mine = {f"{self.mill.id}/{m.id}/{c.name}" for m in vib for c in (m.vibration.channels if m.vibration else [])}

        def on_alarm(e: EdgeEvent) -> None:
            """An alarm's onset waveform goes up; as ``uncertain`` (with the diagnosis) when it is."""
            keeper.request_alarm(e.asset, e.fault, e.confidence, diagnosed=True)

        def on_request(asset: str) -> None:
            """A cloud request for a channel of this edge (requests go to every edge of the mill)."""
            if asset in mine:
                keeper.request(asset)

        def record(a: CloudAnswer) -> bool:
            """The cloud's answer: its asset's open alarm episode carries it in its later events."""
            return scoring.set_cloud_diagnosis(a.asset, CloudDiagnosis(a.fault, a.confidence, a.snapshot), a.ts_ns,
                                               keeper.settings.max_age_s)

        stage.on_alarm = on_alarm
        stage.on_episode_over = keeper.episode_over
        self.forwarder.on_request = on_request
        self.cloud_answers = CloudAnswers(self.settings.secret, self.edge_id, mine, record)
        self.forwarder.on_diagnoses = self.cloud_answers.offer

    def _feature_sink(self, features: ChannelFeatures) -> None:
        """A featurised snapshot: its waveform to the evidence keeper, its features to the scoring stage."""
        f = features
        if self.evidence is not None and f.samples is not None:
            self.evidence.offer(RawSnapshot(f"{self.mill.id}/{f.machine}/{f.channel}", f.ts_ns, f.fs_hz, f.samples,
                                            shaft_hz=f.shaft_hz))
        if self.feature_log is not None:
            self.feature_log.append(f"{self.mill.id}/{f.machine}/{f.channel}", f.ts_ns, f.features)
        assert self.scoring_stage is not None
        self.scoring_stage.submit(f)

    def _evidence_status(self) -> dict[str, Any]:
        """The evidence keeper's day and the cloud's answers (``evidence.cloud_diagnoses``); {} without vibration."""
        if self.evidence is None:
            return {}
        return self.evidence.stats() | ({"cloud_diagnoses": self.cloud_answers.stats()}
                                        if self.cloud_answers is not None else {})

    async def _commit_evidence(self) -> None:
        """Queued raw snapshots into the buffer file (durable before they count as queued)."""
        if self.evidence is None or not (items := self.evidence.take()):
            return
        try:
            await self.buffer.call(commit_snapshots, self.buffer.buffer.db, items)
        except BaseException:
            self.evidence.restore(items)
            raise
        self.evidence.committed += len(items)
        self.forwarder.notify_snapshots()

    def _build_updates(self, base: str, approvals: ApprovedModels) -> ObservedScorer:
        """The model update client over the scorer's slots, and the scorer wrapper that gathers evidence."""
        from .updates import ModelUpdater, ObservedScorer

        scoring = self.scoring
        assert scoring is not None and self.settings.secret is not None
        self.updates = ModelUpdater(base_url=base, edge=self.edge_id, mill=self.mill.id, secret=self.settings.secret,
                                    data_dir=self.data_dir, slots={a.asset: a.slot for a in scoring.assets.values()},
                                    approvals=approvals, trusted_root=self.settings.tuf_root,
                                    traffic=self.traffic.add)

        def version_of(machine: str, channel: str) -> tuple[str, str] | None:
            a = scoring.assets.get((machine, channel))
            return None if a is None else (a.asset, a.version)

        return ObservedScorer(scoring, self.updates, version_of, lambda: scoring.errors)

    def healths(self) -> dict[str, LinkHealth]:
        out: dict[str, LinkHealth] = {}
        for c in self.pollers:
            out[c.points[0].machine.id] = c.connector.health
        for p in self.pushers:
            out.update(p.healths())
        return out

    def _unknown_devices(self) -> dict[str, Any]:
        return {f"mqtt {p.host}:{p.port}": p.unknown_devices() for p in self.pushers
                if isinstance(p, MqttConnector) and p.unknown_topics}

    # --- data path ---------------------------------------------------------------------------------

    @property
    def memory_dropped_rows(self) -> int:
        return self.collector.memory_dropped_rows

    async def flush(self) -> int:
        """Commit what was collected (``Collector.flush``; scoring events and models first); returns rows."""
        stage = self.scoring_stage
        before = None if stage is None else (lambda: stage.commit(self.buffer, self.forwarder.notify_events))
        stored = self.collector.points_stored
        try:
            n = await self.collector.flush(self.buffer, before)
            await self._commit_evidence()
            return n
        finally:
            if self.collector.points_stored != stored:  # rows were committed (even if a later step failed)
                self.forwarder.notify()

    async def _flusher(self) -> None:
        """A flush every ``flush_s``; sooner under commit pressure, and on arrival when idle (``flush_on_arrival``).

        Arriving rows (``Collector.on_rows``; vibration features and scores wait for the regular flush) are
        committed after ``COALESCE_S`` (the rest of a poll round joins them) while fewer
        than ``EARLY_FLUSHES_PER_S`` such early flushes ran in the last second, else ``flush_s`` after the
        last flush: a quiet edge's sample is sent within milliseconds, and a busy one (rows arriving all the
        time) flushes at most ``1/flush_s + EARLY_FLUSHES_PER_S`` times a second outside commit pressure.
        The forwarder still sends only what a commit made durable.
        """
        logged = False
        flush_s = self.settings.flush_s
        early = asyncio.Event()
        wake = asyncio.Event()   # pressure or (with flush_on_arrival) rows arrived

        def pressure() -> None:
            early.set()
            wake.set()

        self.collector.commits.on_pressure = pressure   # MQTT messages wait for their commit to be acked
        if self.settings.flush_on_arrival:
            self.collector.on_rows = wake.set
        loop = asyncio.get_running_loop()
        last = loop.time()
        early_at: collections.deque[float] = collections.deque()   # when the early flushes of the last second ran
        while True:
            # rows arrived (woken before the regular flush): coalesce; early only within the budget
            if await wait_event(wake, last + flush_s - loop.time()) and not early.is_set():
                now = loop.time()
                while early_at and now - early_at[0] > 1.0:
                    early_at.popleft()
                due = last + flush_s - now
                if due > COALESCE_S and len(early_at) < EARLY_FLUSHES_PER_S:
                    early_at.append(now)
                    due = COALESCE_S
                await wait_event(early, max(min(COALESCE_S, flush_s), due))
            early.clear()
            wake.clear()
            try:
                await self.flush()
            except StorageError as exc:
                if not logged:  # once per failure episode (every flush_s would flood the log)
                    logged = True
                    log.error("edge buffer commit failed: %s; rows kept in memory (up to %d) for the next try",
                              exc, self.settings.max_pending_rows)
                continue
            else:
                logged = False
            finally:
                last = loop.time()   # flush_s from the end of a flush to the next, as before

    # --- status ------------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        return await self.reporter.status()

    # --- uplink ------------------------------------------------------------------------------------

    async def _uplink_loop(self) -> None:
        cloud_url = self.settings.cloud_url
        if not cloud_url:
            return
        backoff = Backoff(base_s=0.5, cap_s=10.0, seed=1)
        while True:
            up = MeteredUplink(make_uplink(cloud_url, edge=self.edge_id, mill=self.mill.id,
                                           secret=self.settings.secret or b"", trust=self.forwarder.trust),
                               self.traffic)
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
                    log.warning("uplink to %s down: %s (buffering)", redact(cloud_url), exc)
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
            log.info("uplink to %s restored", redact(self.settings.cloud_url))
            self._uplink_error_logged = False

    # --- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> EdgeAgent:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # pymodbus logs every failed connect at WARNING; our LinkHealth logs once per transition.
        logging.getLogger("pymodbus").setLevel(logging.ERROR)
        await self.buffer.open()
        if self.scoring is not None:
            await self.buffer.call(self.scoring.load)
        self.reporter.started_ns = time.time_ns()
        for c in self.pollers:
            self._tasks.append(asyncio.create_task(c.run(), name=c.name))
        for p in self.pushers:
            await p.__aenter__()
            self._tasks.append(asyncio.create_task(p.run(self.collector.ingest), name=f"push-{type(p).__name__}"))
        if self.scoring_stage is not None:
            self._tasks.append(asyncio.create_task(self.scoring_stage.run(), name="scoring"))
        if self.updates is not None:
            from .updates import listen_nudges, run_updates

            self._tasks.append(asyncio.create_task(run_updates(self.updates, self.settings.models_every_s,
                                                               self._nudge), name="model-updates"))
            cloud = urlparse(self.settings.nudge_broker or "")
            if cloud.hostname:   # the cloud's broker carries the nudge
                self._tasks.append(asyncio.create_task(listen_nudges(
                    cloud.hostname, cloud.port or 1883, self.mill.id, self.edge_id, self._nudge,
                    username=cloud.username, password=cloud.password), name="model-nudges"))
        self._tasks.append(asyncio.create_task(self._flusher(), name="flusher"))
        self._tasks.append(asyncio.create_task(self.reporter.run(), name="status"))
        self._tasks.append(asyncio.create_task(self._uplink_loop(), name="uplink"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        pending = set(self._tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=STOP_TIMEOUT_S)
        for _ in range(3):  # a library swallowed the cancel (asyncio.wait_for in 3.11): ask again
            if not pending:
                break
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=STOP_TIMEOUT_S)
        if pending:
            log.error("edge stop: %s did not stop; left behind", ", ".join(t.get_name() for t in pending))
        for t in self._tasks:
            if t.done() and not t.cancelled():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    t.result()
        self._tasks.clear()
        for p in self.pushers:
            with contextlib.suppress(Exception):
                await p.__aexit__(None, None, None)
        if self.scoring_stage is not None:
            self.scoring_stage.drain()  # features already collected get their scores before the last flush
        if self.joiner is not None:
            await self.joiner.stop()
        with contextlib.suppress(StorageError):
            await self.flush()
        with contextlib.suppress(Exception):
            self.reporter.write(await self.status())
        await self.buffer.close()
        if self.feature_log is not None:
            self.feature_log.close()

    async def run(self) -> None:
        async with self:
            await asyncio.Event().wait()
