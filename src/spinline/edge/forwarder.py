"""Store-and-forward: moves committed batches from the buffer to the cloud and retires them on ack.

Order after (re)connecting, so the dashboard is current at once:

1. **live** - batches committed after the session started, oldest first, as soon as they exist;
2. **re-sends** - batches whose ack did not arrive within ``ack_timeout_s``;
3. **backlog** - batches that were waiting when the session started, **newest first** (or
   oldest first with ``backlog_order="oldest_first"``), at most ``backlog_rows_per_s`` rows/s,
   only while live traffic leaves room in the in-flight window.

Each payload carries the batch seq assigned at commit, so a re-send has the same idempotency key
``(edge, seq)`` and the cloud stores it once. A batch leaves the buffer only on the cloud's ack
(stored / duplicate; rejected ones go to the dead letters). Acks are trusted per ``AckTrust``
(``uplink.base``: signatures) and a ``rejected`` ack moves a batch to the dead letters only when
its reason is final and the batch is in flight in this session; other rejections are ignored
(counted in ``acks_ignored``) and a non-final one leaves the batch in flight, so it is re-sent
after the ack timeout. Each dead-letter cause is counted (``dead_lettered``) and logged once.

Rows refused for the cloud's state (``wire.CLOUD_STATE_REASONS``: its site file lags, its clock, its
retention) are never dead-lettered with the rest: every batch says it re-buffers them
(``wire.META_REBUFFERS``), so the cloud stores the rest and names them in the ack's ``retry``; the
forwarder holds exactly those rows (``EdgeBuffer.settle``) and re-sends them under new seqs with
backoff (``RetryPolicy``; ``rows_held``, the ``cloud_refusing_rows`` alarm), dead-lettering them with
their cause only after ``max_attempts``. A ``rejected`` batch with a ``retry`` keeps its held rows
and dead-letters only the others. A stored batch above ``max_batch_rows`` (the cloud's row and byte limits) is
split in the buffer into parts with new seqs before it is sent (counted in ``split``).

Events (``wire.EdgeEvent``, committed to the buffer's ``events`` table) travel beside the
batches in the same session: oldest first, at most ``events_window`` in flight, re-sent after
``ack_timeout_s`` without an ack, deleted only on the cloud's ``EventsAck``.

Raw evidence snapshots (``edge.evidence``, table ``evidence_snapshots`` of the buffer file) go last:
one at a time, only while no live batch is waiting to be sent (a 100 kB waveform must not delay the
dashboard), signed with the edge's key (``wire.encode_snapshot_upload``), re-sent after
``ack_timeout_s``, deleted only on the cloud's signed snapshot ack. Only over an uplink that carries
them (``SnapshotUplink``); assets the cloud asks a snapshot of (``uplink.requests``) go to
``on_request`` (the agent's ``EvidenceKeeper.request``); answers carrying the cloud model's diagnoses of
uncertain snapshots (``uplink.diagnoses``) to ``on_diagnoses`` (the agent's ``CloudAnswers.offer``).

Size: one session's whole send/ack state machine (batches, re-sends, backlog, held rows, events,
snapshots) in one place, so the rule "a row leaves the buffer only on a trusted ack for what is in
flight" is checked in one module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from spinline.core import wire
from spinline.core.aio import wait_event
from spinline.core.batch import Batch
from spinline.core.errors import PayloadError, UplinkError

from .buffer import StoredBatch
from .buffer_io import AsyncBuffer as AsyncBuffer  # re-exported: it lived here
from .buffer_retry import RetryPolicy
from .evidence import ack_snapshots, pending_snapshots
from .uplink.base import Ack, AckTrust, SnapshotUplink, Uplink

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class UplinkStats:
    state: Literal["connected", "disconnected"] = "disconnected"
    since_ns: int = field(default_factory=time.time_ns)
    sessions: int = 0
    sent: int = 0
    resent: int = 0
    acked: int = 0
    duplicates: int = 0
    rejected: int = 0
    last_ack_ns: int | None = None
    last_error: str | None = None
    inflight: int = 0
    events_sent: int = 0
    events_acked: int = 0
    events_rejected: int = 0
    #: Stored batches above ``max_batch_rows`` split in the buffer before sending.
    split: int = 0
    #: Acks not acted on: bad or missing signature, or a rejection for a batch/event not in flight.
    acks_ignored: int = 0
    snapshots_sent: int = 0
    snapshots_acked: int = 0
    snapshots_rejected: int = 0
    snapshot_requests: int = 0
    #: Rows the cloud refused, per reason, as its acks said (the rest of their batches stored).
    rows_refused: dict[str, int] = field(default_factory=dict)
    #: Rows held for a re-send after a cloud-state refusal, and held rows sent again.
    rows_held: int = 0
    held_released: int = 0
    #: Batches (or their refused parts) moved to the dead letters, per cause.
    dead_lettered: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


class Forwarder:
    def __init__(self, buffer: AsyncBuffer, *, edge: str, mill: str, secret: bytes | None, window: int = 32,
                 ack_timeout_s: float = 10.0, backlog_rows_per_s: float = 200_000.0,
                 backlog_order: Literal["newest_first", "oldest_first"] = "newest_first",
                 events_window: int = 100, require_signed_acks: bool = True,
                 max_batch_rows: int | None = None, retry: RetryPolicy | None = None) -> None:
        self.buffer = buffer
        #: When rows refused for the cloud's state are sent again (and when they are given up).
        self.retry = retry if retry is not None else RetryPolicy()
        self._dead_logged: set[str] = set()
        self._released_at = 0.0
        #: A stored batch above this many rows is split in the buffer before it is sent (``_send_some``).
        self.max_batch_rows = max_batch_rows if max_batch_rows is not None else wire.max_batch_rows()
        #: Shared by every uplink session of this process (``make_uplink(..., trust=)``).
        # Signed acks are required by default; an edge without a secret (authentication off, tests of
        # the format) has nothing to verify with and trusts what it gets.
        self.trust = AckTrust(secret, edge, required=require_signed_acks and bool(secret))
        # Read from the buffer itself: an uplink's ack reader runs before ``run_session`` starts.
        self.trust.incarnation_of = lambda: buffer.incarnation
        #: Called whenever an ack was processed (the agent logs "uplink restored" on the first one).
        self.on_ack: Callable[[], None] | None = None
        self._ignored_logged: set[str] = set()
        self._ignored = 0
        self.events_window = events_window
        self._events_wake = asyncio.Event()
        self._ev_inflight: dict[int, float] = {}
        self._snap_inflight: dict[int, float] = {}
        self._snap_wake = asyncio.Event()
        #: Called with an asset the cloud asked a raw snapshot of (the agent: ``EvidenceKeeper.request``).
        self.on_request: Callable[[str], object] | None = None
        #: Called with each federated join request the cloud sends (the agent's ``federated.Joiner.offer``).
        self.on_federated: Callable[[dict[str, Any]], object] | None = None
        #: Called with each answer carrying the cloud model's diagnoses, unverified (the agent's
        #: ``cloud_answers.CloudAnswers.offer`` checks the signature).
        self.on_diagnoses: Callable[[dict[str, Any]], object] | None = None
        self.edge, self.mill, self.secret = edge, mill, secret
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.backlog_rows_per_s = backlog_rows_per_s
        self.backlog_order = backlog_order
        self._stats = UplinkStats()
        self._wake = asyncio.Event()
        self._inflight: dict[int, float] = {}
        self._boundary = 0
        self._live_next = 1
        self._backlog_cursor = 0
        self._backlog_lo = 1
        self._resend: list[int] = []
        self._tokens = 0.0
        self._tok_t = 0.0

    def notify(self) -> None:
        """A batch was committed: wake the sender."""
        self._wake.set()

    def notify_events(self) -> None:
        """Events were committed: wake the events sender."""
        self._events_wake.set()

    # --- one session -------------------------------------------------------------------------------

    async def run_session(self, uplink: Uplink) -> None:
        """Forward until the uplink closes (raises ``UplinkError``) or the task is cancelled."""
        last = await self.buffer.last_seq()
        pending = await self.buffer.seqs(order="asc", limit=1)
        self._boundary = last
        self._live_next = last + 1
        self._backlog_lo = pending[0] if pending else last + 1
        self._backlog_cursor = last if self.backlog_order == "newest_first" else self._backlog_lo
        self._inflight.clear()
        self._resend.clear()
        self._tokens, self._tok_t = 0.0, time.monotonic()
        self.stats.sessions += 1
        self._set_state("connected")
        acks = asyncio.create_task(self._consume_acks(uplink), name="uplink-ack-consumer")
        ev_acks = asyncio.create_task(self._consume_event_acks(uplink), name="uplink-event-ack-consumer")
        events = asyncio.create_task(self._send_events_loop(uplink), name="uplink-events")
        tasks = [acks, ev_acks, events]
        if getattr(uplink, "snapshot_acks", None) is not None and hasattr(uplink, "send_snapshot"):
            snap: SnapshotUplink = uplink  # type: ignore[assignment]
            tasks += [asyncio.create_task(self._send_snapshots_loop(snap), name="uplink-snapshots"),
                      asyncio.create_task(self._consume_snapshot_acks(snap), name="uplink-snapshot-acks")]
            if getattr(uplink, "requests", None) is not None:
                tasks.append(asyncio.create_task(self._consume_requests(snap), name="uplink-snapshot-requests"))
        if (answers := getattr(uplink, "diagnoses", None)) is not None:
            tasks.append(asyncio.create_task(self._consume_diagnoses(answers), name="uplink-cloud-diagnoses"))
        if (joins := getattr(uplink, "federated", None)) is not None:
            tasks.append(asyncio.create_task(self._consume_joins(joins), name="uplink-federated-joins"))
        try:
            while True:
                if uplink.closed.done():
                    exc = uplink.closed.exception()
                    raise exc if exc else UplinkError("uplink session closed")
                for t in tasks:
                    if t.done():
                        t.result()
                # Cleared before looking: a commit or ack that lands while this round awaits the buffer or
                # the uplink wakes the next round at once (cleared after, it waited out the 0.2 s).
                self._wake.clear()
                sent = await self._send_some(uplink)
                if not sent:
                    await wait_event(self._wake, 0.2)
        finally:
            for t in tasks:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self._set_state("disconnected")
            self.stats.inflight = 0

    def _set_state(self, s: Literal["connected", "disconnected"]) -> None:
        if s != self.stats.state:
            self.stats.state = s
            self.stats.since_ns = time.time_ns()

    async def _consume_acks(self, uplink: Uplink) -> None:
        while True:
            first = await uplink.acks.get()
            batch = [first]
            while not uplink.acks.empty():
                batch.append(uplink.acks.get_nowait())
            done: list[int] = []
            for a in batch:
                if a.status == "rejected":
                    if a.seq not in self._inflight:
                        self._ignore("not_in_flight", f"rejected ack ({a.reason}) for batch {a.seq}, which this "
                                                      "session has not in flight, ignored")
                        continue
                    cloud_state = a.reason in wire.CLOUD_STATE_REASONS
                    if not a.final and not cloud_state:  # stays in flight: re-sent after the ack timeout
                        self.stats.last_error = f"batch {a.seq} refused: {a.reason} (kept, will retry)"
                        continue
                    self._inflight.pop(a.seq, None)
                    self._count_refused(a)
                    self.stats.rejected += 1
                    if a.retry or cloud_state:
                        await self._settle(a)
                    elif await self.buffer.dead_letter(a.seq, a.reason or "rejected"):
                        self._dead(a.reason or "rejected", f"batch {a.seq}")
                    continue
                if a.seq not in self._inflight:
                    # Only a batch this session sent may be deleted: a forged (or very late) "stored" ack
                    # for any other seq would delete rows the cloud never received.
                    self._ignore("stored_not_in_flight", f"{a.status} ack for batch {a.seq}, which this session "
                                                         "has not in flight, ignored (re-sent if still buffered)")
                    continue
                self._inflight.pop(a.seq, None)
                self._count_refused(a)
                if a.status == "duplicate":
                    self.stats.duplicates += 1
                if a.retry:   # stored but for rows the cloud cannot take yet: hold those, the rest is done
                    await self._settle(a)
                    self.stats.acked += 1
                    continue
                done.append(a.seq)
            if done:
                await self.buffer.ack(done)
                self.stats.acked += len(done)
            self.stats.last_ack_ns = time.time_ns()
            self.stats.inflight = len(self._inflight)
            if self.on_ack is not None:
                self.on_ack()
            self._wake.set()

    def _count_refused(self, a: Ack) -> None:
        for r, n in (a.refused or {}).items():
            self.stats.rows_refused[r] = self.stats.rows_refused.get(r, 0) + n

    async def _settle(self, a: Ack) -> None:
        """Retire batch ``a.seq`` after an ack naming refused rows: hold the rows ``retry`` selects (all of a
        batch rejected for the cloud's state without a selector), dead-letter the rest of a rejected one."""
        cloud = sorted(r for r in (a.refused or {}) if r in wire.CLOUD_STATE_REASONS) or \
            ([a.reason] if a.reason in wire.CLOUD_STATE_REASONS else ["retry"])
        reason = "+".join(cloud)
        retry = a.retry

        def select(b: Batch) -> npt.NDArray[np.bool_]:
            if retry is not None:
                try:
                    return wire.retry_rows(b, retry)
                except PayloadError:
                    pass
            return np.full(len(b), a.status == "rejected", dtype=bool)

        dead_reason = None
        if a.status == "rejected":
            own = [r for r in (a.refused or {}) if r not in wire.CLOUD_STATE_REASONS]
            dead_reason = own[0] if own else (a.reason or "rejected")
        res = await self.buffer.settle(a.seq, select, reason, dead_reason=dead_reason, policy=self.retry)
        self.stats.rows_held += res.held
        if res.held:
            msg = (f"cloud refused {res.held} row(s) of batch {a.seq} for its own state ({reason}): held, "
                   f"re-sent with backoff")
            self.stats.last_error = msg
            if "held" not in self._dead_logged:
                self._dead_logged.add("held")
                log.warning("%s [counted in rows_held; logged once]", msg)
        if res.gave_up:
            self._dead(reason, f"{res.dead - res.dead_rest} row(s) of batch {a.seq} after "
                               f"{self.retry.max_attempts} attempts")
        if res.dead_rest and dead_reason is not None:
            self._dead(dead_reason, f"the other rows of batch {a.seq}")

    def _dead(self, reason: str, what: str) -> None:
        """Count a dead letter by cause; log each cause once (``spinline edge redrive`` sends them again)."""
        self.stats.dead_lettered[reason] = self.stats.dead_lettered.get(reason, 0) + 1
        if reason not in self._dead_logged:
            self._dead_logged.add(reason)
            hint = (" (a buffer restored from a snapshot re-used this seq: the cloud holds other rows under its "
                    "key)" if reason == "conflicting_duplicate" else "")
            log.error("cloud refused %s for good: %s%s; kept in dead_letters, counted in dead_lettered "
                      "(spinline edge redrive re-sends them once the cause is fixed) [logged once per cause]",
                      what, reason, hint)

    @property
    def stats(self) -> UplinkStats:
        """The uplink's figures, ``acks_ignored`` read at the time: the uplink's ``AckTrust`` refuses unsigned
        and mis-signed acks before any reaches the forwarder, so a sum copied at the last ack went stale."""
        self._stats.acks_ignored = self._ignored + self.trust.ignored
        return self._stats

    def _ignore(self, kind: str, msg: str) -> None:
        self._ignored += 1
        if kind not in self._ignored_logged:
            self._ignored_logged.add(kind)
            log.warning("%s [counted in acks_ignored; logged once]", msg)

    # --- events ------------------------------------------------------------------------------------

    async def _consume_event_acks(self, uplink: Uplink) -> None:
        while True:
            ack = await uplink.event_acks.get()
            if ack.incarnation and ack.incarnation != self.buffer.incarnation:
                # The ack of another buffer's events (this gateway before a wipe): its ids are not ours.
                self._ignore("events_other_incarnation", "an events ack for another buffer incarnation ignored")
                continue
            for i in ack.acked:
                self._ev_inflight.pop(i, None)
            rejected = [(i, r) for i, r in ack.rejected if i in self._ev_inflight]
            if len(rejected) < len(ack.rejected):
                self._ignore("events_not_in_flight", f"{len(ack.rejected) - len(rejected)} event rejection(s) for "
                                                     "events not in flight ignored")
            for i, _ in rejected:
                self._ev_inflight.pop(i, None)
            if ack.acked:
                await self.buffer.ack_events(ack.acked)
                self.stats.events_acked += len(ack.acked)
            if rejected:
                self.stats.events_rejected += await self.buffer.reject_events(rejected)
            self._events_wake.set()

    async def _send_events_loop(self, uplink: Uplink) -> None:
        self._ev_inflight.clear()
        while True:
            self._events_wake.clear()
            now = time.monotonic()
            pending = await self.buffer.pending_events(limit=self.events_window)
            due = [e for e in pending
                   if e.id not in self._ev_inflight or now - self._ev_inflight[e.id] > self.ack_timeout_s]
            if due:
                payload = wire.encode_events(self.edge, self.mill, due, key=self.secret,
                                             incarnation=self.buffer.incarnation)
                for e in due:
                    self._ev_inflight[e.id] = now
                await uplink.send_events(payload)
                self.stats.events_sent += len(due)
            await wait_event(self._events_wake, min(1.0, self.ack_timeout_s))

    # --- raw evidence snapshots ---------------------------------------------------------------------

    def notify_snapshots(self) -> None:
        """Snapshots were committed to the buffer: wake the snapshot sender."""
        self._snap_wake.set()

    async def _live_waiting(self) -> bool:
        return bool(await self.buffer.seqs(order="asc", min_seq=self._live_next, limit=1))

    async def _send_snapshots_loop(self, uplink: SnapshotUplink) -> None:
        self._snap_inflight.clear()
        db = self.buffer.buffer.db
        while True:
            self._snap_wake.clear()
            now = time.monotonic()
            if not await self._live_waiting() and not self._snap_inflight:
                for ident, _asset, _reason, body in await self.buffer.call(pending_snapshots, db, 4):
                    t = self._snap_inflight.get(ident)
                    if t is not None and now - t <= self.ack_timeout_s:
                        continue
                    payload = wire.encode_snapshot_upload(self.edge, self.mill, ident, body, key=self.secret)
                    self._snap_inflight[ident] = now
                    await uplink.send_snapshot(payload)
                    self.stats.snapshots_sent += 1
                    break
            else:
                for i, t in list(self._snap_inflight.items()):
                    if now - t > self.ack_timeout_s:
                        del self._snap_inflight[i]   # re-sent on a later round
            await wait_event(self._snap_wake, min(1.0, self.ack_timeout_s))

    async def _consume_snapshot_acks(self, uplink: SnapshotUplink) -> None:
        while True:
            ack = await uplink.snapshot_acks.get()
            rejected = [i for i, _ in ack.rejected if i in self._snap_inflight]
            if len(rejected) < len(ack.rejected):
                self._ignore("snapshots_not_in_flight", "snapshot rejection(s) for snapshots not in flight ignored")
            done = [*ack.acked, *rejected]
            for i in done:
                self._snap_inflight.pop(i, None)
            if done:
                await self.buffer.call(ack_snapshots, self.buffer.buffer.db, done)
                self.stats.snapshots_acked += len(ack.acked)
                self.stats.snapshots_rejected += len(rejected)
                if rejected:
                    log.warning("cloud refused raw snapshot(s) %s for good: %s", rejected, ack.rejected)
            self._snap_wake.set()

    async def _consume_requests(self, uplink: SnapshotUplink) -> None:
        while True:
            asset = await uplink.requests.get()
            self.stats.snapshot_requests += 1
            if self.on_request is not None:
                self.on_request(asset)
            self._snap_wake.set()

    async def _consume_diagnoses(self, answers: asyncio.Queue[dict[str, Any]]) -> None:
        """The cloud model's answers to uncertain snapshots (unverified: ``on_diagnoses`` checks them)."""
        while True:
            answer = await answers.get()
            if self.on_diagnoses is not None:
                self.on_diagnoses(answer)

    async def _consume_joins(self, joins: asyncio.Queue[dict[str, Any]]) -> None:
        """A federated run's join requests (signed, already checked by the uplink's ``AckTrust``)."""
        while True:
            join = await joins.get()
            if self.on_federated is not None:
                self.on_federated(join)

    def _expire(self) -> None:
        now = time.monotonic()
        for seq, t in list(self._inflight.items()):
            if now - t > self.ack_timeout_s:
                del self._inflight[seq]
                self._resend.append(seq)

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.backlog_rows_per_s, self._tokens + (now - self._tok_t) * self.backlog_rows_per_s)
        self._tok_t = now

    async def _next(self) -> tuple[StoredBatch, Literal["live", "backlog"]] | None:
        # 1. live
        seqs = await self.buffer.seqs(order="asc", min_seq=self._live_next, limit=1)
        if seqs:
            self._live_next = seqs[0] + 1
            sb = await self.buffer.get(seqs[0])
            if sb is not None:
                return sb, "live"
        # 2. re-sends
        while self._resend:
            s = self._resend.pop(0)
            sb = await self.buffer.get(s)
            if sb is not None:
                self.stats.resent += 1
                return sb, ("live" if s > self._boundary else "backlog")
        # 3. backlog, rate-limited
        self._refill()
        if self._tokens <= 0:
            return None
        if self.backlog_order == "newest_first":
            if self._backlog_cursor < self._backlog_lo:
                return None
            seqs = await self.buffer.seqs(order="desc", min_seq=self._backlog_lo,
                                          max_seq=self._backlog_cursor, limit=1)
            if not seqs:
                self._backlog_cursor = self._backlog_lo - 1
                return None
            self._backlog_cursor = seqs[0] - 1
        else:
            if self._backlog_cursor > self._boundary:
                return None
            seqs = await self.buffer.seqs(order="asc", min_seq=self._backlog_cursor,
                                          max_seq=self._boundary, limit=1)
            if not seqs:
                self._backlog_cursor = self._boundary + 1
                return None
            self._backlog_cursor = seqs[0] + 1
        if seqs[0] in self._inflight:
            return None
        sb = await self.buffer.get(seqs[0])
        if sb is None:
            return None
        self._tokens -= len(sb.batch)
        return sb, "backlog"

    async def _release_held(self) -> None:
        """Held rows whose backoff passed go back into the buffer as new batches (sent as live ones)."""
        now = time.monotonic()
        if now - self._released_at < 1.0:
            return
        self._released_at = now
        released = await self.buffer.release_held()
        self.stats.held_released += len(released)

    async def _send_some(self, uplink: Uplink) -> int:
        self._expire()
        await self._release_held()
        n = 0
        while len(self._inflight) < self.window:
            nxt = await self._next()
            if nxt is None:
                break
            sb, kind = nxt
            if len(sb.batch) > self.max_batch_rows:
                # Above the cloud's limits (committed before the split at commit, or under a larger
                # cap): never sent as is, where it would be dead-lettered (MQTT) or re-sent forever
                # (HTTP). Its parts get new seqs past the live cursor, so they go out as live batches.
                await self.buffer.split(sb.seq, self.max_batch_rows)
                self.stats.split += 1
                continue
            env = wire.Envelope(edge=self.edge, mill=self.mill, seq=sb.seq, batch=sb.batch,
                                created_ns=sb.created_ns, kind=kind, meta=sb.meta | {wire.META_REBUFFERS: True},
                                incarnation=self.buffer.incarnation)
            payload = wire.encode(env, key=self.secret)
            self._inflight[sb.seq] = time.monotonic()
            await uplink.send(sb.seq, payload)
            self.stats.sent += 1
            n += 1
        self.stats.inflight = len(self._inflight)
        return n

    def backlog_remaining(self) -> bool:
        return self._backlog_cursor >= self._backlog_lo if self.backlog_order == "newest_first" \
            else self._backlog_cursor <= self._boundary

