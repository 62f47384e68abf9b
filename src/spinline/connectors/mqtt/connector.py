"""MQTT device connector: JSON telemetry, Sparkplug B nodes and vibration snapshots on one broker.

One aiomqtt session per broker subscribes to every topic the site maps (QoS 1). The session is
re-opened with backoff whenever the broker goes away (aiomqtt leaves reconnection to the caller).
Link health per machine: ``up`` while its messages arrive, ``degraded`` when it has been silent
for ``stale_after`` x its shortest interval, ``down`` when the broker is unreachable or a
Sparkplug node sent NDEATH (or its Will fired).

Subscriptions are the mill's wildcards (``spinline/{mill}/+/telemetry``, ``.../+/vibration/+``,
``spBv1.0/{mill}/#``) plus the exact topics those do not cover (never both for one topic: a
broker may deliver overlapping subscriptions twice), so a device the site does not know is seen
and counted (``unknown_devices``) instead of silently ignored.

Bad input (``handle`` never raises for it): every message is checked against a size limit first
(``max_message_bytes``, 1 MiB; a vibration topic's limit is sized from the site's ``fs_hz`` x
``snapshot_s``), then decoded; a payload that cannot be used is counted per machine and cause
(``LinkHealth.rejected``: ``message_too_large``, ``json_invalid``, ``json_not_object``,
``field_not_number``, ``field_not_finite``, ``bad_timestamp``, ``snapshot_*``,
``sparkplug_undecodable``, ``sparkplug_no_birth``, ``sparkplug_unknown_alias``,
``sparkplug_seq_gap``, ``duplicate_ts``, ``out_of_order_ts``, ``future_ts`` (a snapshot stamped more
than ``MAX_FUTURE_NS`` ahead of the edge's clock: quarantined, never the channel's newest), and ``undecodable``
for anything else a message makes go wrong while it is handled: a catch-all, so no payload ends the session)
and logged once per cause and machine; the rest of the message, and the next messages, are still
collected. Device timestamps go through a ``TsGuard`` per point (per channel for snapshots): a
re-sent sample (same timestamp, same value) is dropped as a duplicate, an older timestamp is kept
(a late snapshot is featurised but not scored: the alarm rules need time to move forward).

Acknowledged after commit: with ``commits`` (the edge collector's ``Commits``) and a fixed
``client_id`` the session is persistent (MQTT 5, ``clean_start=False``, session expiry 7 days: the
broker keeps the subscriptions and queues QoS 1 messages while the edge is away; the client id carries
a digest of the subscriptions, ``session_id``) and messages are acknowledged manually (paho's
``manual_ack``; aiomqtt has no API for it yet, empicano/aiomqtt#345), in the order received, only
once the flush that holds their rows is committed to the buffer. An edge killed between receipt and
commit gets the messages again from the broker after its restart (duplicates of rows that did reach
the buffer are dropped by the ``TsGuard``, or stored once by the cloud). Without ``commits`` a
message is acknowledged on receipt (tests, tools).

Size: one broker session carries three payload formats, the ack-after-commit bookkeeping and the
MQTT 5 / 3.1.1 session choice; they share the session's state, so they stay together.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence

import aiomqtt
import numpy as np
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from spinline.core.backoff import Backoff
from spinline.core.batch import Batch, Quality
from spinline.core.errors import ConnectorError, DecodeError
from spinline.core.site import Machine, MqttLink, PointRef

from ..base import BadInput, Commits, LinkHealth, LinkState, Problems, PushLinks, Sink, TsGuard, reconnect_forever
from . import sparkplug
from .json_map import TS_MAX_NS, TS_MIN_NS, TopicMap
from .vibration import FeatureSink, Featurizer, VibrationMap

log = logging.getLogger(__name__)
#: Largest JSON telemetry / Sparkplug message accepted.
MAX_MESSAGE_BYTES = 1 << 20
#: Distinct unknown topics counted by name (the rest go to one bucket).
_MAX_UNKNOWN_TOPICS = 256
#: How far ahead of the edge's clock a snapshot may be stamped (device clock skew) before it is
#: quarantined: the cloud's own ``max_future_ns`` default, so nothing kept here is refused there.
MAX_FUTURE_NS = 300 * 1_000_000_000
_SPB_DATA = ("NBIRTH", "NDATA", "DBIRTH", "DDATA")
#: Unacknowledged messages past which the edge is asked to flush early: a broker sends a client only
#: so many unacknowledged QoS 1 messages at once (Mosquitto's ``max_inflight_messages``: 20).
ACK_PRESSURE = 10
#: How long the broker keeps an absent edge's session and queued messages (MQTT 5 session expiry).
SESSION_EXPIRY_S = 7 * 86400


def _session_properties(expiry_s: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry_s
    return props


class MqttConnector(PushLinks):
    def __init__(self, host: str, port: int, points: Sequence[PointRef], *, mill: str,
                 vibration_machines: Sequence[Machine] = (), iso_class: Mapping[str, str] | None = None,
                 stale_after: float = 5.0, backoff_s: tuple[float, float] = (0.5, 15.0),
                 client_id: str | None = None, max_message_bytes: int = MAX_MESSAGE_BYTES,
                 featurizer: Featurizer | None = None, feature_sink: FeatureSink | None = None,
                 share_features: bool = True, mqtt311: bool = False) -> None:
        self.host, self.port, self.mill = host, port, mill
        self.client_id = client_id
        self.stale_after = stale_after
        self.backoff_s = backoff_s
        #: Sessions established (connected and subscribed): one that worked resets the backoff.
        self.sessions = 0
        #: MQTT 3.1.1 for the persistent session: configured (``?protocol=3.1.1``), or set once a broker
        #: refused an MQTT 5 session.
        self._mqtt311 = mqtt311
        json_pts = [p for p in points if isinstance(p.machine.link, MqttLink) and p.machine.link.format == "json"]
        spb_pts = [p for p in points if isinstance(p.machine.link, MqttLink) and p.machine.link.format == "sparkplug_b"]
        self.json = TopicMap(json_pts)
        self.vib = VibrationMap(mill, vibration_machines, iso_class, featurizer=featurizer, sink=feature_sink,
                                 share_features=share_features)
        # Sparkplug: (edge node = machine id) -> metric name -> key; alias tables come from NBIRTH.
        self.spb_names: dict[str, dict[str, int]] = {}
        for p in spb_pts:
            self.spb_names.setdefault(p.machine.id, {})[p.mqtt_field()] = p.key
        self.spb_alias: dict[str, dict[int, int]] = {}
        self.spb_seq: dict[str, int] = {}
        self.spb_seq_gaps = 0
        # Health is kept for machines whose data link is MQTT (a vibration sensor on a Modbus
        # machine does not make its Modbus link's state).
        machines = {p.machine.id for p in points}
        self._health = {m: LinkHealth(f"mqtt {m} ({host}:{port})") for m in sorted(machines)}
        self._min_interval = {m: min((p.point.interval_s for p in points if p.machine.id == m), default=60.0)
                              for m in machines}
        self._last_msg: dict[str, float] = {}
        self._dead: set[str] = set()
        self.messages = 0
        self.decode_errors = 0
        self.max_message_bytes = max_message_bytes
        self.ts_guard = TsGuard()
        #: Where bad input of machines without an MQTT data link goes (a vibration sensor on a Modbus
        #: machine counts into that machine's health); the agent fills it, else one is made per machine.
        self.report_to: dict[str, LinkHealth] = {}
        self._extra: dict[str, LinkHealth] = {}
        self.unknown = LinkHealth(f"mqtt {host}:{port} unknown device")
        self.unknown_topics: dict[str, int] = {}
        #: The collector's commits (see the module docstring); None: acknowledge on receipt.
        self.commits: Commits | None = None
        #: Messages acknowledged to the broker after their commit.
        self.acked_after_commit = 0

    def session_id(self) -> str | None:
        """The persistent session's client id: ``client_id`` plus a digest of the subscriptions, so a site
        change starts a new session instead of inheriting the old one's subscriptions (the old one expires)."""
        if not self.client_id:
            return None
        digest = hashlib.sha256("\n".join(sorted(self.subscriptions())).encode()).hexdigest()[:10]
        return f"{self.client_id}-{digest}"

    def subscriptions(self) -> list[str]:
        wild = []
        if self.json.by_topic:
            wild.append(f"spinline/{self.mill}/+/telemetry")
        if self.vib.by_topic:
            wild.append(f"spinline/{self.mill}/+/vibration/+")
        if self.spb_names:
            wild.append(f"{sparkplug.NAMESPACE}/{self.mill}/#")
        exact = [t for t in self.json.topics + self.vib.topics
                 if not any(aiomqtt.Topic(t).matches(w) for w in wild)]
        return wild + exact

    def health_for(self, machine: str) -> LinkHealth:
        """The health that counts ``machine``'s bad input."""
        h = self._health.get(machine) or self.report_to.get(machine)
        if h is None:
            h = self._extra.setdefault(machine, LinkHealth(f"mqtt {machine} ({self.host}:{self.port})"))
        return h

    def unknown_devices(self) -> dict[str, object]:
        return {"messages": self.unknown.bad_input_total, "topics": dict(self.unknown_topics)}

    def _reject(self, machine: str | None, cause: str, detail: str, n: int = 1) -> None:
        if machine is None:
            self.unknown.rejected(cause, detail, logger=log)
        else:
            self.health_for(machine).rejected(cause, detail, logger=log, n=n)

    def _unknown(self, topic: str, what: str) -> None:
        if topic in self.unknown_topics or len(self.unknown_topics) < _MAX_UNKNOWN_TOPICS:
            self.unknown_topics[topic] = self.unknown_topics.get(topic, 0) + 1
        else:
            self.unknown_topics["(other)"] = self.unknown_topics.get("(other)", 0) + 1
        self.unknown.rejected("unknown_device", f"message on {topic}: {what}; ignored", logger=log,
                              log_key=topic)

    # --- message handling (sync, no I/O) -----------------------------------------------------------

    def handle(self, topic: str, payload: bytes, received_ns: int) -> tuple[str | None, Batch]:
        """Rows from one message and the machine it came from; bad input is counted here, never raised."""
        machine: str | None = None
        try:
            if topic in self.json.by_topic:
                machine = self.json.machine_of(topic)
                self._check_size(topic, payload, self.max_message_bytes)
                problems: Problems = []
                b = self.json.decode(topic, payload, received_ns, problems)
                for cause, detail in problems:
                    self._reject(machine, cause, detail)
                return machine, self._dedup(machine, topic, b)
            if topic in self.vib.by_topic:
                machine = self.vib.machine_of(topic)
                self._check_size(topic, payload, self.vib.max_bytes(topic))
                snap = self.vib.parse(topic, payload, received_ns)
                if snap.ts_problem is not None:
                    self._reject(machine, "bad_timestamp", f"{topic}: {snap.ts_problem}")
                if snap.ts_ns > received_ns + MAX_FUTURE_NS:
                    # Quarantined before the guard sees it: made the channel's newest, it would turn
                    # every good snapshot after it into an unscored late one until the clock caught up.
                    self._reject(machine, "future_ts", f"{topic}: snapshot ts {snap.ts_ns} is "
                                                       f"{(snap.ts_ns - received_ns) / 1e9:.0f} s ahead of the "
                                                       "edge's clock; quarantined (not scored, not stored)")
                    return machine, Batch.empty()
                verdict = self.ts_guard.check(topic, snap.ts_ns)
                if verdict == "duplicate":
                    self._reject(machine, "duplicate_ts", f"{topic}: snapshot ts {snap.ts_ns} re-sent; dropped")
                    return machine, Batch.empty()
                if verdict == "out_of_order":
                    self._reject(machine, "out_of_order_ts", f"{topic}: snapshot ts {snap.ts_ns} older than the "
                                                             "last one; featurised, not scored")
                return machine, self.vib.features_of(topic, snap, score=verdict == "new")
            t = sparkplug.parse_topic(topic)
            if t is not None and t.group == self.mill:
                if t.edge_node in self.spb_names and t.device is None:
                    machine = t.edge_node
                    self._check_size(topic, payload, self.max_message_bytes)
                    return machine, self._dedup(machine, topic, self._sparkplug(t, payload, received_ns))
                if t.message_type in _SPB_DATA:
                    who = f"Sparkplug {'device ' + t.device + ' of ' if t.device else ''}node {t.edge_node}"
                    self._unknown(topic, f"{who} is not in the site")
                return None, Batch.empty()
            self._unknown(topic, "no device of the site publishes here")
            return None, Batch.empty()
        except DecodeError as exc:
            self.decode_errors += 1
            cause = exc.cause if isinstance(exc, BadInput) else (
                "sparkplug_undecodable" if topic.startswith(sparkplug.NAMESPACE) else "undecodable")
            self._reject(machine, cause, str(exc))
            return machine, Batch.empty()
        except Exception as exc:  # noqa: BLE001 - one message must never end the broker session
            self.decode_errors += 1
            self._reject(machine, "undecodable", f"{topic}: message could not be handled: {type(exc).__name__}: "
                                                 f"{str(exc)[:200]}")
            return machine, Batch.empty()

    @staticmethod
    def _check_size(topic: str, payload: bytes, limit: int) -> None:
        if len(payload) > limit:
            raise BadInput("message_too_large", f"{topic}: message of {len(payload)} bytes exceeds the limit of "
                                                f"{limit} bytes; dropped unread")

    def _dedup(self, machine: str | None, topic: str, b: Batch) -> Batch:
        """Drop rows whose (point, device ts) was already received; count late ones."""
        if not len(b):
            return b
        keep = np.ones(len(b), dtype=bool)
        late = 0
        for i, (k, ts, val) in enumerate(zip(b.point.tolist(), b.ts_ns.tolist(), b.value.tolist(), strict=True)):
            v = self.ts_guard.check(k, ts, val)
            if v == "duplicate":
                keep[i] = False
            elif v == "out_of_order":
                late += 1
        if late:
            self._reject(machine, "out_of_order_ts", f"{topic}: {late} value(s) older than the last one received "
                                                     "(kept)", n=late)
        dups = int((~keep).sum())
        if dups:
            self._reject(machine, "duplicate_ts", f"{topic}: {dups} value(s) with a timestamp already received "
                                                  "(re-sent; dropped)", n=dups)
            return b.take(keep)
        return b

    def _sparkplug(self, t: sparkplug.Topic, payload: bytes, received_ns: int) -> Batch:
        node = t.edge_node
        if t.message_type == "NDEATH":
            self._dead.add(node)
            self._health[node].failed("Sparkplug NDEATH", logger=log)
            return Batch.empty()
        if t.message_type not in ("NBIRTH", "NDATA"):
            return Batch.empty()
        ts_ms, seq, metrics = sparkplug.decode(payload)
        if not metrics and ts_ms is None and seq is None:
            raise BadInput("sparkplug_undecodable", f"{t.message_type} from {node}: payload holds no Sparkplug "
                                                    f"timestamp, seq or metric ({len(payload)} bytes)")
        names = self.spb_names[node]
        if t.message_type == "NBIRTH":
            self._dead.discard(node)
            self.spb_alias[node] = {m.alias: names[m.name] for m in metrics
                                    if m.alias is not None and m.name in names}
        elif seq is not None and node in self.spb_seq and seq != (self.spb_seq[node] + 1) % 256:
            self.spb_seq_gaps += 1
            self._reject(node, "sparkplug_seq_gap", f"seq {seq} after {self.spb_seq[node]} (messages lost on the "
                                                    "device side)")
        if seq is not None:
            self.spb_seq[node] = seq
        aliases = self.spb_alias.get(node)
        keys, ts, vals, qual = [], [], [], []
        unaliased = 0
        for m in metrics:
            key = names.get(m.name) if m.name is not None else None
            if key is None and m.name is None and m.alias is not None:
                key = aliases.get(m.alias) if aliases is not None else None
                if key is None:
                    unaliased += 1
            if key is None:
                continue
            keys.append(key)
            stamp = m.timestamp_ms if m.timestamp_ms is not None else ts_ms
            ns = int(stamp * 1_000_000) if stamp is not None else received_ns
            if not TS_MIN_NS <= ns <= TS_MAX_NS:
                self._reject(node, "bad_timestamp", f"Sparkplug metric {m.name or m.alias}: timestamp {stamp} ms "
                                                    "is not plausible; receipt time used")
                ns = received_ns
            ts.append(ns)
            good = m.numeric and np.isfinite(m.value)
            if not m.numeric:
                self._reject(node, "field_not_number", f"Sparkplug metric {m.name or m.alias} is not a number "
                                                       f"(datatype {m.datatype})")
            elif not good and m.value == m.value:
                self._reject(node, "field_not_finite", f"Sparkplug metric {m.name or m.alias} is {m.value}")
            vals.append(m.value if good else np.nan)
            qual.append(int(Quality.GOOD) if good else int(Quality.BAD))
        if unaliased:
            if aliases is None:
                self._reject(node, "sparkplug_no_birth", f"{t.message_type} before any NBIRTH: {unaliased} metric(s) "
                                                         "sent by alias only cannot be mapped (aliases unknown)",
                             n=unaliased)
            else:
                self._reject(node, "sparkplug_unknown_alias", f"{unaliased} metric alias(es) not declared in the "
                                                              "last NBIRTH", n=unaliased)
        return Batch(np.asarray(keys, dtype=np.int64), np.asarray(ts, dtype=np.int64),
                     np.asarray(vals, dtype=np.float64), np.asarray(qual, dtype=np.uint8))

    def _seen(self, machine: str) -> None:
        self._last_msg[machine] = time.monotonic()
        h = self._health.get(machine)
        if h is not None and machine not in self._dead:
            h.ok(None, logger=log)

    def check_stale(self) -> None:
        now = time.monotonic()
        for m, h in self._health.items():
            last = self._last_msg.get(m)
            if m in self._dead or h.state == LinkState.DOWN:
                continue
            limit = max(2.0, self.stale_after * self._min_interval.get(m, 60.0))
            if last is not None and now - last > limit and h.state == LinkState.UP:
                h.failed(f"no message for {now - last:.0f} s", logger=log, down=False)

    # --- session -----------------------------------------------------------------------------------

    def _client(self, *, persistent: bool) -> aiomqtt.Client:
        if not persistent:
            return aiomqtt.Client(self.host, self.port, identifier=self.client_id, keepalive=10, timeout=5.0)
        if self._mqtt311:
            return aiomqtt.Client(self.host, self.port, identifier=self.session_id(), keepalive=10, timeout=5.0,
                                  clean_session=False)
        return aiomqtt.Client(self.host, self.port, identifier=self.session_id(), keepalive=10, timeout=5.0,
                              protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
                              properties=_session_properties(SESSION_EXPIRY_S))

    async def _session(self, sink: Sink) -> None:
        commits = self.commits if self.client_id else None
        client = self._client(persistent=commits is not None)
        unacked: collections.deque[tuple[int, int, int]] = collections.deque()   # (generation, mid, qos)
        stop_listening = None
        if commits is not None:
            client._client.manual_ack_set(True)   # noqa: SLF001 - aiomqtt has no manual-ack API yet (#345)

            def ack_committed(gen: int) -> None:
                while unacked and unacked[0][0] <= gen:
                    _, mid, qos = unacked.popleft()
                    client._client.ack(mid, qos)   # noqa: SLF001
                    self.acked_after_commit += 1
            stop_listening = commits.listen(ack_committed)
        try:
            try:
                await client.__aenter__()
            except aiomqtt.MqttError:
                if commits is None or self._mqtt311:
                    raise
                # A broker that speaks only MQTT 3.1.1 (the demo's embedded broker) drops a v5 CONNECT:
                # the same persistent session in 3.1.1 terms (clean_session=False, no expiry interval).
                self._mqtt311 = True
                log.warning("MQTT broker %s:%d refused an MQTT 5 session; using MQTT 3.1.1 with a persistent "
                            "session (no session expiry)", self.host, self.port)
                client = self._client(persistent=True)
                client._client.manual_ack_set(True)   # noqa: SLF001 - see above
                await client.__aenter__()
        except aiomqtt.MqttError as exc:
            if stop_listening is not None:
                stop_listening()
            raise ConnectorError(f"MQTT broker {self.host}:{self.port}: {exc}") from None
        try:
            for t in self.subscriptions():
                await client.subscribe(t, qos=1)
            self.sessions += 1
            for m, h in self._health.items():
                if h.state == LinkState.DOWN and m not in self._dead and m not in self._last_msg:
                    h.state = LinkState.DEGRADED  # broker up, device not heard yet
            stale = asyncio.create_task(self._stale_loop())
            try:
                async for msg in client.messages:
                    self.messages += 1
                    now = time.time_ns()
                    payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
                    machine, batch = self.handle(str(msg.topic), payload, now)
                    if machine is not None:
                        self._seen(machine)
                    if len(batch):
                        sink(batch)
                    if commits is not None and msg.qos > 0:
                        unacked.append((commits.open, msg.mid, msg.qos))
                        if len(unacked) >= ACK_PRESSURE:
                            commits.pressure()
            finally:
                stale.cancel()
        except aiomqtt.MqttError as exc:
            raise ConnectorError(f"MQTT broker {self.host}:{self.port} lost: {exc}") from None
        finally:
            if stop_listening is not None:
                stop_listening()   # unacked messages of this session: the broker sends them again
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def _stale_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.check_stale()

    async def run(self, sink: Sink) -> None:
        await reconnect_forever(lambda: self._session(sink), Backoff(*self.backoff_s, jitter=False),
                                on_failure=self._failed, sessions=lambda: self.sessions)

    def _failed(self, exc: BaseException, expected: bool) -> None:
        if not expected:
            log.exception("MQTT connector %s:%d: unexpected error (reconnecting)", self.host, self.port)
        first = next(iter(self._health.values()), None)
        for h in self._health.values():
            h.failed(exc, logger=log if expected and h is first else None)
