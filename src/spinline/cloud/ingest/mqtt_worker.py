"""An ingest worker: one MQTT 5 shared subscriber of the edges' batches, writing into the store.

Workers are stateless: run as many as the load needs, each with ``IngestWorker(service, host, port,
group="ingest")``. They all subscribe ``$share/ingest/spinline/up/+/+/batch`` (and ``.../status``), and
the broker hands each message to one member of the group, so N workers split the load with no
coordination; exactly-once storage comes from the idempotency key, not from the broker.

Two threads per worker: paho's network thread only queues what arrives (it must keep reading, or the
broker disconnects us); the writer thread takes up to ``max_coalesce`` queued payloads at a time,
checks them (``IngestService.prepare``), stores the good ones in one transaction (``commit``) and
only then publishes each ack (QoS 1) on ``spinline/down/{mill}/{edge}/ack``::

    {"seq": <batch seq>, "status": "stored" | "duplicate" | "rejected", "reason": code | null, "stored": n}

A refused payload is acknowledged as ``rejected`` at once (the edge dead-letters it) and never holds
up the good ones, but only when its signature was verified: a payload that is unsigned, forged or
unreadable before the signature check gets no ack at all (its claimed seq proves nothing, and an ack
would make the real edge dead-letter its real batch of that seq). Each payload is handled on its
own: one that makes the checks fail unexpectedly is logged and dropped without taking the others of
its group with it. When the store fails a write of several batches, they are written again one by
one, so one bad batch cannot stall the others; whatever still fails is not acknowledged: the edge
still holds those batches and sends them again. The broker's own QoS 1 acknowledgement happens on receipt, so a
worker that dies with payloads in its queue loses nothing either: the edge re-sends unacked batches.

Logs stay quiet under trouble: a store outage is logged once when it starts (its cause, no
traceback) and once when it ends (with how many operations failed meanwhile), however many
payloads arrive in between; an unexpected error is logged with its traceback the first time for
each kind, then counted. Topic parts are escaped before they reach a log line (``shown``), so a
newline in a topic cannot forge log lines.

Size: one worker owns one MQTT session and its writer thread; batches, status, events and raw
snapshots share that session, its ack publishing and its once-per-outage logging, so they stay here.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from spinline.cloud.evidence import EvidenceStore
from spinline.cloud.ingest.service import Accepted, IngestResult, IngestService
from spinline.cloud.maintenance.events import EdgeEvents
from spinline.core.errors import PayloadError, StorageError
from spinline.core.wire import (
    TOPIC_ACK,
    TOPIC_BATCH,
    TOPIC_EVENTS,
    TOPIC_EVENTS_ACK,
    TOPIC_REQUESTS,
    TOPIC_SNAPSHOT,
    TOPIC_SNAPSHOT_ACK,
    TOPIC_STATUS,
    parse_up_topic,
    sign_ack,
    signed_events_ack,
    up_filter,
)

logger = logging.getLogger(__name__)


def shown(text: str, limit: int = 80) -> str:
    r"""``text`` safe for one log line: control characters escaped, at most ``limit`` characters.

    >>> shown("mill-a\nFORGED ERROR")
    'mill-a\\nFORGED ERROR'
    """
    escaped = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."


def _is_outage(exc: BaseException) -> bool:
    """A failure of the database rather than of the payload (the store, or the edge lookups in the metadata DB)."""
    if isinstance(exc, StorageError):
        return True
    import sqlalchemy.exc

    return isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError
                      | sqlalchemy.exc.TimeoutError)


class Outage:
    """A failure that repeats while it lasts: logged when it starts and when it ends, counted between."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            first = self.failures == 1
        if first:
            cause = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
            logger.error("%s failing: %s (logged once; the recovery is logged with the count)", self.what, cause)

    def ok(self) -> None:
        with self._lock:
            n, self.failures = self.failures, 0
        if n:
            logger.warning("%s recovered after %d failed operation(s)", self.what, n)

#: Every mill's and edge's uplink topics (the topic layout is ``core.wire``'s, with wildcards).
BATCH_FILTER = up_filter(TOPIC_BATCH)
STATUS_FILTER = up_filter(TOPIC_STATUS)
EVENTS_FILTER = up_filter(TOPIC_EVENTS)
SNAPSHOT_FILTER = up_filter(TOPIC_SNAPSHOT)


@dataclass(slots=True)
class WorkerStats:
    """Counters of one worker (for tests, benches and the diagnostics endpoint)."""

    payloads: int = 0
    stored_batches: int = 0
    stored_points: int = 0
    duplicates: int = 0
    rejected: int = 0
    statuses: int = 0
    #: Status messages refused (unsigned, bad signature, unknown edge, malformed): counted per edge too.
    statuses_refused: int = 0
    events: int = 0
    snapshots: int = 0
    writes: int = 0
    failed_writes: int = 0
    #: Payloads or groups that failed unexpectedly (a bug, not bad input): logged once per kind.
    unexpected: int = 0


class IngestWorker:
    """MQTT 5 shared-subscription consumer that feeds ``IngestService`` and publishes acks.

    ``start()`` connects and subscribes (blocking until the broker confirms), ``stop()`` drains what
    was received, acknowledges it and disconnects. Also a context manager.
    """

    def __init__(self, service: IngestService, host: str = "127.0.0.1", port: int = 1883, group: str = "ingest",
                 *, client_id: str | None = None, max_coalesce: int = 512, max_rows_per_write: int = 1_000_000,
                 queue_size: int = 1024, keepalive: int = 30, rollup_every_s: float | None = None,
                 namespace: str = "", events: EdgeEvents | None = None,
                 evidence: EvidenceStore | None = None) -> None:
        self.service = service
        #: Keeps raw snapshots (``TOPIC_SNAPSHOT``, acked on ``TOPIC_SNAPSHOT_ACK``); None: not subscribed.
        self.evidence = evidence
        #: A federated run's join request waiting for an edge (``FederatedRuns.take``), if the cloud runs them.
        self.federated_take: Callable[[str], dict[str, Any] | None] | None = None
        #: Records edge events (``TOPIC_EVENTS``, acked on ``TOPIC_EVENTS_ACK``); None: not subscribed.
        self.events = events
        self.host, self.port, self.group = host, port, group
        self.client_id = client_id or f"spinline-ingest-{uuid.uuid4().hex[:10]}"
        self.max_coalesce = max_coalesce
        self.max_rows_per_write = max_rows_per_write
        self.keepalive = keepalive
        self.rollup_every_s = rollup_every_s
        #: Prefix of every topic (``"site-7/"``): one broker shared by several deployments or tests.
        self.namespace = namespace
        self.stats = WorkerStats()
        self._queue: queue.Queue[tuple[str, bytes, int]] = queue.Queue(maxsize=queue_size)
        self._client: mqtt.Client | None = None
        self._writer: threading.Thread | None = None
        self._subscribed = threading.Event()
        self._sub_error: str | None = None
        self._draining = threading.Event()
        self._last_rollup = time.monotonic()
        #: The store (or the metadata DB behind the edge lookups): one outage, logged once each way.
        self.outage = Outage(f"ingest worker {client_id}: the store")
        self._unexpected: dict[str, int] = {}

    @property
    def filters(self) -> list[str]:
        ns = self.namespace
        out = [f"$share/{self.group}/{ns}{BATCH_FILTER}", f"$share/{self.group}/{ns}{STATUS_FILTER}"]
        if self.events is not None:
            out.append(f"$share/{self.group}/{ns}{EVENTS_FILTER}")
        if self.evidence is not None:
            out.append(f"$share/{self.group}/{ns}{SNAPSHOT_FILTER}")
        return out

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        if self._client is not None:
            raise RuntimeError("worker already started")
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=MQTTProtocolVersion.MQTTv5)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.max_queued_messages_set(0)
        self._client = client
        self._draining.clear()
        self._writer = threading.Thread(target=self._write_loop, name=f"{self.client_id}-writer", daemon=True)
        self._writer.start()
        try:
            client.connect(self.host, self.port, keepalive=self.keepalive)
        except OSError as exc:
            self._shutdown_writer()
            self._client = None
            raise ConnectionError(f"cannot reach the MQTT broker at {self.host}:{self.port}: {exc}") from exc
        client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise ConnectionError(f"broker {self.host}:{self.port} did not confirm the subscription in {timeout} s")
        if self._sub_error is not None:
            self.stop()
            raise ConnectionError(self._sub_error)

    @property
    def connected(self) -> bool:
        """Connected to the broker (for the cloud's readiness route)."""
        client = self._client
        return client is not None and client.is_connected()

    def start_when_reachable(self, stop: threading.Event, backoff_s: tuple[float, float] = (0.5, 30.0),
                             timeout: float = 10.0) -> bool:
        """``start``, retried with backoff while the broker cannot be reached, saying so each time.

        For a cloud started before its broker: it serves HTTP meanwhile and subscribes when the
        broker comes up (after that, paho reconnects and re-subscribes by itself). Returns False when
        ``stop`` was set first.
        """
        delay, attempt = backoff_s[0], 0
        while not stop.is_set():
            try:
                self.start(timeout)
            except ConnectionError as exc:
                attempt += 1
                logger.warning("MQTT ingest: %s; retrying in %.1f s (attempt %d)", exc, delay, attempt)
                if stop.wait(delay):
                    return False
                delay = min(delay * 2, backoff_s[1])
                continue
            logger.info("MQTT ingest subscribed on %s:%d%s", self.host, self.port,
                     f" after {attempt} failed attempt(s)" if attempt else "")
            return True
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking messages, store and acknowledge what was received, then disconnect."""
        client = self._client
        if client is None:
            return
        if client.is_connected():
            client.unsubscribe(self.filters)
        self._shutdown_writer(timeout)
        client.disconnect()
        client.loop_stop()
        self._client = None
        self._subscribed.clear()

    def _shutdown_writer(self, timeout: float = 10.0) -> None:
        self._draining.set()
        if self._writer is not None:
            self._writer.join(timeout)
            self._writer = None

    def __enter__(self) -> IngestWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- paho callbacks (network thread: queue only) --------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        if reason.is_failure:
            self._sub_error = f"broker refused the connection: {reason}"
            self._subscribed.set()
            return
        client.subscribe([(f, 1) for f in self.filters])          # again after every reconnect

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self._sub_error = f"broker refused the shared subscription {self.filters}: {failed}"
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Blocks when the writer is behind: paho stops reading, TCP pushes back on the broker.
        self._queue.put((msg.topic, bytes(msg.payload), time.time_ns()))

    # --- writer thread --------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._draining.is_set():
                    return
                self._maybe_refresh()
                continue
            items = [first]
            while len(items) < self.max_coalesce:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._process(items)
            except Exception as exc:
                # The outermost loop of the thread: log the cause (once per kind) and keep consuming.
                self._failed(exc, f"on {len(items)} payloads")
            self._maybe_refresh()

    def _maybe_refresh(self) -> None:
        if self.rollup_every_s is None or time.monotonic() - self._last_rollup < self.rollup_every_s:
            return
        self._last_rollup = time.monotonic()
        try:
            self.service.store.refresh_rollups()
        except StorageError as exc:
            self.outage.failed(exc)

    def _process(self, items: list[tuple[str, bytes, int]]) -> None:
        accepted: list[Accepted] = []
        rows = 0
        self.service.sync_credentials()         # a revocation elsewhere counts from this group on
        for topic, payload, received in items:
            up = parse_up_topic(topic.removeprefix(self.namespace))
            if up is None:
                continue
            mill, edge, kind = up.mill, up.edge, up.kind
            self.stats.payloads += 1
            try:
                if kind == "status":
                    if self.service.handle_status(payload, mill, edge, received):
                        self.stats.statuses += 1
                    else:
                        self.stats.statuses_refused += 1
                    continue
                if kind == "events":
                    self._events(payload, mill, edge)
                    continue
                if kind == "snapshot":
                    self._snapshot(payload, mill, edge)
                    continue
                prepared = self.service.prepare(payload, received, topic=(mill, edge))
            except Exception as exc:
                # One payload only: the others of the group are still checked, stored and acked.
                self.stats.rejected += 1
                self._failed(exc, f"a {shown(kind)} payload on {shown(mill)}/{shown(edge)} failed its checks; "
                                  "dropped, not acked")
                continue
            if isinstance(prepared, IngestResult):
                self.stats.rejected += 1
                if prepared.verified:
                    self._ack(prepared, mill, edge)
                continue
            if accepted and rows + len(prepared.batch) > self.max_rows_per_write:
                self._commit(accepted)
                accepted, rows = [], 0
            accepted.append(prepared)
            rows += len(prepared.batch)
        self._commit(accepted)

    def _commit(self, accepted: list[Accepted]) -> None:
        if not accepted:
            return
        try:
            results = self.service.commit(accepted)
        except StorageError as exc:
            # Not acknowledged: the edges still hold these batches and send them again.
            self.stats.failed_writes += 1
            self.outage.failed(exc)
            if len(accepted) == 1 or self.outage.failures > 1:
                return                      # during an outage, one by one would only fail N times more
            for a in accepted:
                self._commit([a])
            return
        self.outage.ok()
        self.stats.writes += 1
        for r in results:
            if r.status == "duplicate":
                self.stats.duplicates += 1
            else:
                self.stats.stored_batches += 1
                self.stats.stored_points += r.stored
            self._ack(r, r.mill or "", r.edge or "")      # authenticated, and equal to the topic's

    def _events(self, payload: bytes, mill: str, edge: str) -> None:
        """Record an events payload and ack it; a refused one gets no ack (the contract in ``core.wire``)."""
        if self.events is None:
            return
        try:
            ack = self.events.handle(payload, topic=(mill, edge))
        except PayloadError as exc:
            self.stats.rejected += 1
            logger.debug("events from %s/%s refused: %s", shown(mill), shown(edge), exc)   # counted, not logged
            return
        except StorageError as exc:
            self.outage.failed(exc)                      # not acknowledged: the edge will re-send
            return
        self.stats.events += len(ack.acked)
        if self.evidence is not None and ack.acked:   # an order a cloud diagnosis waited for may be open now
            self.evidence.note_pending(mill)
        client = self._client
        if client is not None:
            client.publish(self.namespace + TOPIC_EVENTS_ACK.format(mill=mill, edge=edge),
                           signed_events_ack(ack, edge, self.service.edge_keys(edge)), qos=1)

    def _failed(self, exc: Exception, what: str) -> None:
        """An outage is logged once for its whole length; anything else with its traceback once per kind."""
        if _is_outage(exc):
            self.outage.failed(exc)
            return
        kind = type(exc).__name__
        n = self._unexpected.get(kind, 0) + 1
        if len(self._unexpected) < 64 or kind in self._unexpected:
            self._unexpected[kind] = n
        if n == 1:
            logger.error("ingest worker %s: %s (%s logged once, counted in stats)", self.client_id, what, kind,
                         exc_info=exc)
        self.stats.unexpected += 1

    def _snapshot(self, payload: bytes, mill: str, edge: str) -> None:
        """Keep a raw snapshot and ack it (signed); a refused one gets no ack, like events."""
        if self.evidence is None:
            return
        try:
            _, ack = self.evidence.handle(payload, topic=(mill, edge))
        except PayloadError as exc:
            self.stats.rejected += 1
            logger.warning("raw snapshot from %s/%s refused: %s", shown(mill), shown(edge), exc)
            return
        except StorageError:
            logger.warning("store refused a raw snapshot of %s/%s; not acknowledged, the edge will re-send",
                           shown(mill), shown(edge))
            return
        self.stats.snapshots += len(ack.acked)
        client = self._client
        if client is not None:
            client.publish(self.namespace + TOPIC_SNAPSHOT_ACK.format(mill=mill, edge=edge),
                           signed_events_ack(ack, edge, self.service.edge_keys(edge)), qos=1)
            self.publish_requests(mill, [edge])   # the cloud model's answer to an uncertain one, at once

    def publish_requests(self, mill: str, edges: list[str]) -> int:
        """Hand the pending snapshot requests of ``edges`` to them on ``TOPIC_REQUESTS`` (signed with each
        edge's key like an ack; a federated run's join request, ``federated_take``, and the cloud model's
        answers to uncertain snapshots, ``diagnoses``, ride along); the items published. Undelivered ones
        (no key, no client) stay queued for the HTTP status answer."""
        client, ev = self._client, self.evidence
        if client is None or ev is None:
            return 0
        n = 0
        for e in edges:
            key = self.service.edge_keys(e)
            if not key:
                continue
            reqs = ev.take_requests(e)
            join = self.federated_take(e) if self.federated_take is not None else None
            answers = ev.take_answers(e)
            if reqs or join or answers:
                body = json.dumps(sign_ack(key, {"edge": e, "requests": reqs} | ({"federated": join} if join else {})
                                           | ({"diagnoses": [a.to_json() for a in answers]} if answers else {})),
                                  separators=(",", ":"))
                client.publish(self.namespace + TOPIC_REQUESTS.format(mill=mill, edge=e), body, qos=1)
                n += len(reqs) + (1 if join else 0) + len(answers)
        return n

    def _ack(self, result: IngestResult, mill: str, edge: str) -> None:
        """Publish the ack JSON on the ack topic of the (mill, edge) the payload came from."""
        client = self._client
        if client is None:
            return
        # The topic's own mill/edge: an unverified payload's claims never pick where the ack goes.
        client.publish(self.namespace + TOPIC_ACK.format(mill=mill, edge=edge),
                       json.dumps(self.service.signed_ack(result), separators=(",", ":")), qos=1)
