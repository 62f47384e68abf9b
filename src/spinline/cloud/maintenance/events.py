"""Edge events in the cloud: alarms raised and cleared at the edge, with their diagnosis.

The receiving side of the contract in ``spinline.core.wire`` (``encode_events``/``decode_events``):
the same signed payload arrives over HTTP (``POST /api/v1/edge-events``) or MQTT (``TOPIC_EVENTS``),
and ``EdgeEvents.handle`` answers the ack (``EventsAck``) both transports send back.

* The payload's signature is checked with the claimed edge's secret, and the edge must belong to
  the payload's mill (and, over MQTT, to the topic's mill and edge); a payload failing that is
  refused whole (``PayloadError("unauthorised")``: HTTP 401, no MQTT ack) and counted: against the
  edge when its signature was verified, else under the neutral edge ``UNVERIFIED_EDGE`` with a
  fixed detail (an unverified payload proves nothing about who sent it).
* An event that fails validation (a ``ts_ns`` out of range, a bad field) but carries its id is
  rejected alone as ``malformed``, as is one whose recording fails on its values; the others of
  the payload are recorded.
* ``(edge, incarnation, event id)`` is the idempotency key (table ``health_edge_events``): an event
  seen before is acked again and changes nothing. The incarnation is the edge buffer's (payload
  ``"inc"``; "" from an edge that sends none), so a wiped gateway whose ids restart at 1 has its new
  events stored, not acked as duplicates. The ack echoes it. A table from before the incarnation is
  migrated on ``create_schema`` (its rows keep ``incarnation = ""``).
* ``alarm_raised`` records an alarm in ``HealthStore`` (``evidence["source"] == "edge"``, with the
  fault, confidence, model version and the edge's evidence text) and, at ``order_severity`` or worse,
  opens a work order as the cloud pipeline does (one open order per asset). Its id derives from the
  event's ``alarm_key``, so ``alarm_cleared`` finds it. A clear may arrive before its raise (two
  workers of the shared subscription, or a worker killed holding the raise, while the edge re-sends
  it): it is recorded and acked, and applied when the raise arrives. Each side writes before it reads
  the other (raise: the alarm, then the recorded clears; clear: its event row, then the alarm), so a
  raise and its clear recorded at the same moment by two workers cannot both miss each other. A
  clear without an ``alarm_key``, or of an alarm of another asset, is rejected for good
  (``unknown_alarm``), as is an asset outside the payload's mill (``wrong_mill``).
* ``model_commissioned`` / ``model_replaced`` are acked and kept in the idempotency table only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from spinline.cloud.ingest.service import UNVERIFIED_EDGE, unverified_detail
from spinline.cloud.maintenance.pipeline import open_work_order, severe_enough, stable_id, state_metadata
from spinline.cloud.maintenance.store import HealthStore, RecordConflict
from spinline.cloud.storage.base import Rejection, TimeSeriesStore
from spinline.core.errors import PayloadError, StorageError
from spinline.core.texts import render
from spinline.core.wire import MAX_EVENT_TS_NS, EdgeEvent, EventsAck, EventsPayload, UnverifiedPayload, decode_events
from spinline.health.alarms import Alarm, Severity

#: Who edge-raised alarms' steps are recorded as.
EDGE_ACTOR = "edge"

events_t = sa.Table(
    "health_edge_events", state_metadata,
    sa.Column("edge", sa.String(64), primary_key=True),
    sa.Column("incarnation", sa.String(64), primary_key=True, server_default=""),
    sa.Column("event_id", sa.BigInteger, primary_key=True),
    sa.Column("mill", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("ts_ns", sa.BigInteger, nullable=False),
    sa.Column("alarm_id", sa.String(64)),
    sa.Column("received_ns", sa.BigInteger, nullable=False),
)


def _dt(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).replace(tzinfo=None)


def alarm_id_of(mill: str, key: str) -> str:
    """The alarm id of an edge alarm key ``{asset}:{rule}:{raised ts_ns}`` (same for raise and clear).

    A key whose time is not a usable ns timestamp gets the epoch as the id's time (still unique: the
    hash covers the whole key and the mill).
    """
    ts = key.rpartition(":")[2]
    ok = ts.isascii() and ts.isdigit() and len(ts) <= 19 and 0 < int(ts) <= MAX_EVENT_TS_NS
    at = _dt(int(ts)) if ok else datetime(1970, 1, 1)
    return stable_id("AL", at, mill, EDGE_ACTOR, key)


class EdgeEvents:
    """Records edge events (see module docstring). Synchronous; the transports run it in a thread."""

    def __init__(self, health: HealthStore, store: TimeSeriesStore, edge_keys: Callable[[str], bytes | None],
                 edge_mill: Callable[[str], str | None], *, order_severity: Severity = Severity.CRITICAL,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.health = health
        self.store = store
        self.edge_keys = edge_keys
        self.edge_mill = edge_mill
        self.order_severity = order_severity
        self.clock = clock

    def create_schema(self) -> None:
        self.health.create_schema()
        try:
            engine = self.health.engine
            cols = {c["name"] for c in sa.inspect(engine).get_columns(events_t.name)} \
                if sa.inspect(engine).has_table(events_t.name) else None
            if cols is not None and "incarnation" not in cols:
                self._migrate_incarnation(engine)
            events_t.create(engine, checkfirst=True)
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"cannot create the edge events table: {exc}") from exc

    @staticmethod
    def _migrate_incarnation(engine: sa.Engine) -> None:
        """The table keyed by (edge, event id) becomes keyed by (edge, incarnation, event id): the old
        rows are copied with ``incarnation = ""`` (the key an edge without one still uses)."""
        old = f"{events_t.name}_pre_inc"
        names = ["edge", "event_id", "mill", "kind", "ts_ns", "alarm_id", "received_ns"]
        with engine.begin() as c:
            c.execute(sa.text(f"ALTER TABLE {events_t.name} RENAME TO {old}"))
            if engine.dialect.name == "postgresql":   # the key's index keeps its name: free it for the new one
                c.execute(sa.text(f"ALTER INDEX IF EXISTS {events_t.name}_pkey RENAME TO {old}_pkey"))
            events_t.create(c)
            c.execute(sa.text(f"INSERT INTO {events_t.name} (incarnation, {', '.join(names)}) "  # noqa: S608
                              f"SELECT '', {', '.join(names)} FROM {old}"))
            c.execute(sa.text(f"DROP TABLE {old}"))

    def handle(self, payload: bytes, *, topic: tuple[str, str] | None = None) -> EventsAck:
        """Verify and record a payload; its ack. Raises ``PayloadError`` when it is refused whole.

        ``topic``: the (mill, edge) of the MQTT topic it came on, which must match the payload.
        """
        now = self.clock()
        try:
            p = decode_events(payload, key_lookup=self.edge_keys, per_event=True)
        except UnverifiedPayload as exc:
            self.store.record_rejection(Rejection(UNVERIFIED_EDGE, exc.reason,
                                                  unverified_detail("events", exc.reason, len(payload)), now))
            raise
        except PayloadError as exc:   # signed by the edge it names, but unusable as a whole
            self.store.record_rejection(Rejection(self._verified_edge(payload), exc.reason,
                                                  f"events: {exc.detail}", now))
            raise
        if topic is not None and topic != (p.mill, p.edge):
            # A signed payload replayed on another topic: the sender on that topic is not proven.
            self.store.record_rejection(Rejection(UNVERIFIED_EDGE, "unauthorised",
                                                  unverified_detail("events", "published on another edge's topic",
                                                                    len(payload)), now))
            raise PayloadError("unauthorised", f"events of {p.mill}/{p.edge} published on the topic of "
                                               f"{topic[0]}/{topic[1]}")
        if self.edge_mill(p.edge) != p.mill:
            self.store.record_rejection(Rejection(p.edge, "unauthorised", f"events: edge {p.edge!r} may not "
                                                  f"send events for mill {p.mill[:64]!r}", now))
            raise PayloadError("unauthorised", f"edge {p.edge!r} may not send events for mill {p.mill!r}")
        return self._record(p, now)

    @staticmethod
    def _verified_edge(payload: bytes) -> str:
        """The edge of a payload whose signature ``decode_events`` verified."""
        try:
            d = json.loads(payload.rpartition(b"\n")[0] or payload)
            return str(d["edge"])[:64]
        except (ValueError, KeyError, TypeError, RecursionError):
            return UNVERIFIED_EDGE

    def _record(self, p: EventsPayload, now: int) -> EventsAck:
        acked: list[int] = []
        rejected: list[tuple[int, str]] = list(p.invalid)
        hs = self.health
        for ev in p.events:
            with hs.engine.connect() as c:
                seen = c.execute(sa.select(events_t.c.event_id).where(
                    events_t.c.edge == p.edge, events_t.c.incarnation == p.incarnation,
                    events_t.c.event_id == ev.id)).first()
            if seen is not None:
                acked.append(ev.id)
                continue
            if not ev.asset.startswith(p.mill + "/") or ev.asset.count("/") != 2:
                rejected.append((ev.id, "wrong_mill"))
                continue
            asset = ev.asset.partition("/")[2]
            alarm_id: str | None = None
            pending_clear = False
            try:
                if ev.kind == "alarm_raised":
                    alarm_id = self._raise(p, ev, asset)
                elif ev.kind == "alarm_cleared":
                    alarm_id = self._clear(p, ev, asset)
                    if alarm_id is None:
                        rejected.append((ev.id, "unknown_alarm"))
                        continue
                    pending_clear = True
            except (ValueError, OverflowError):
                # Values no record can hold (a time out of range ...): this event alone is refused for good.
                rejected.append((ev.id, "malformed"))
                continue
            except RecordConflict:
                # Its alarm id belongs to another mill's record (never overwritten): refused for good.
                rejected.append((ev.id, "conflict"))
                continue
            try:
                with hs.engine.begin() as c:
                    c.execute(sa.insert(events_t).values(edge=p.edge, incarnation=p.incarnation, event_id=ev.id,
                                                         mill=p.mill, kind=ev.kind,
                                                         ts_ns=ev.ts_ns, alarm_id=alarm_id, received_ns=now))
            except sa.exc.IntegrityError:
                pass  # another worker recorded it at the same moment: one copy is kept
            if pending_clear and alarm_id is not None:
                self._apply_recorded_clear(p.mill, asset, alarm_id)   # its raise may have been saved meanwhile
            acked.append(ev.id)
        return EventsAck(tuple(acked), tuple(rejected), p.incarnation)

    @staticmethod
    def _key(ev: EdgeEvent, asset_tag: str) -> str:
        return ev.alarm_key or f"{asset_tag}:{ev.rule or 'edge'}:{ev.ts_ns}"

    def _raise(self, p: EventsPayload, ev: EdgeEvent, asset: str) -> str:
        hs = self.health
        key = self._key(ev, ev.asset)
        aid = alarm_id_of(p.mill, key)
        if hs.get_alarm(aid) is not None:
            return aid
        at = _dt(ev.ts_ns)
        rule = ev.rule or "edge"
        value = ev.value if ev.value is not None else 0.0
        fault = ev.fault or "unknown"
        params = {"rule": rule, "asset": asset, "edge": p.edge, "model": str(ev.model_version)}
        msg = render("alarm.edge_event_fault", {**params, "fault": fault}) if ev.fault \
            else render("alarm.edge_event", params)
        explain = f"{fault} (confidence {ev.confidence:.2f})" if ev.confidence is not None else fault
        if ev.evidence:
            explain += "\n" + ev.evidence
        alarm = Alarm(asset=asset, rule=rule, severity=Severity(ev.severity), message=msg, raised_at=at, value=value,
                      id=aid, evidence={"source": EDGE_ACTOR, "edge": p.edge, "event_id": ev.id, "alarm_key": key,
                                        "fault": fault, "confidence": ev.confidence,
                                        "model_version": ev.model_version, "explain": explain})
        hs.save_alarm(p.mill, alarm)
        if severe_enough(alarm.severity, self.order_severity):
            open_work_order(hs, p.mill, alarm, None, by=EDGE_ACTOR)
        self._apply_recorded_clear(p.mill, asset, aid)     # its clear may have come first
        return aid

    def _apply_recorded_clear(self, mill: str, asset: str, aid: str) -> None:
        """Clear alarm ``aid`` if a clear of it was recorded (it arrived before the raise)."""
        hs = self.health
        with hs.engine.connect() as c:
            row = c.execute(sa.select(events_t.c.ts_ns).where(
                events_t.c.alarm_id == aid, events_t.c.mill == mill, events_t.c.kind == "alarm_cleared")
                .order_by(events_t.c.ts_ns).limit(1)).first()
        if row is None:
            return
        got = hs.get_alarm(aid)
        if got is None or got[0] != mill or got[1].asset != asset or not got[1].is_open:
            return
        alarm = got[1]
        alarm.clear(EDGE_ACTOR, _dt(int(row[0])), "condition returned to normal at the edge (its clear arrived "
                                                  "before the raise)")
        hs.save_alarm(mill, alarm)

    def _clear(self, p: EventsPayload, ev: EdgeEvent, asset: str) -> str | None:
        hs = self.health
        if ev.alarm_key is None:
            return None
        aid = alarm_id_of(p.mill, ev.alarm_key)
        got = hs.get_alarm(aid)
        if got is None:
            return aid          # not raised here yet: recorded, and applied when the raise arrives
        if got[0] != p.mill or got[1].asset != asset:
            return None
        alarm = got[1]
        if alarm.is_open:
            alarm.clear(EDGE_ACTOR, _dt(ev.ts_ns), ev.evidence or "condition returned to normal at the edge")
            hs.save_alarm(p.mill, alarm)
        return aid
