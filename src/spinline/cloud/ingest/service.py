"""The ingest use case: payload bytes in, rows stored exactly once or a refusal with its reason.

The HTTP route (``POST /api/v1/ingest``) and the MQTT workers both call this. Steps:

1. decode with the edge's key (``spinline.core.wire.decode``: size limits, format, HMAC): refuses
   ``malformed``, ``unsupported_version``, ``oversized``, ``unauthorised``;
2. check the edge belongs to the mill it claims (and, over MQTT, to the topic it came on):
   ``unauthorised``;
3. screen rows against the mill's points (``validate.screen``): only the offending rows are
   refused, the rest go on; a batch whose every row is refused is ``rejected`` with the first reason;
4. write with idempotency key ``Envelope.idempotency_key`` (``edge:seq``, or ``edge:inc:seq`` when the
   edge sends an incarnation) and the digest of the whole payload's rows, in one transaction:
   ``stored``, ``duplicate`` (the key was stored before with the same rows), or ``rejected`` with
   reason ``conflicting_duplicate`` (the key was stored before with OTHER rows: a buffer restored from
   a snapshot reusing its sequence numbers; acking it as a duplicate would make the edge delete rows
   the cloud never stored, so it is refused, counted and logged once per edge).

The ack of a batch with refused rows says how many and why (``refused``: {reason: rows}) and, for
refusals caused by the cloud's state (``validate.CLOUD_STATE_REASONS``), which rows the edge may re-send
later (``retry``: ``validate.Retry``). Rows refused for their own data (``wrong_type``, ``non_finite``,
``clock_skew``) cost only themselves: the rest is stored. So do cloud-state refusals for an edge that
re-buffers the rows ``retry`` names (its batch meta says ``wire.META_REBUFFERS``): the edge keeps those
rows and re-sends them with backoff under a new seq. For an older edge a cloud-state refusal still
refuses the whole batch (``rejected``, key left free): storing the rest would let it delete rows the
cloud never took. What the first answer said is kept with the idempotency key, so the ack of a re-send
repeats it exactly (an edge that crashed before re-buffering learns the ``retry`` again).

Every refusal is counted (``store.record_rejection``) and returned, never raised, so a bad batch
cannot stop the caller's loop. A refusal of a payload whose signature was verified is counted
against its edge, with the reason's detail; one whose signature was not verified (unsigned, forged,
unknown edge, or unreadable before the check) proves nothing about who sent it, so it is counted
under the neutral edge ``UNVERIFIED_EDGE`` with a fixed detail, and its result says
``verified=False``: the MQTT worker sends no ack for it (an ack on an edge's topic would make that
edge dead-letter its real batch of that seq). Storage failures *are* raised (``StorageError``):
nothing is acknowledged, the edge keeps the batch and sends it again.

``prepare`` (steps 1-3) and ``commit`` (step 4, several batches in one transaction) are separate so a
worker can coalesce many payloads into one store write.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from spinline.cloud.ingest.validate import CLOUD_STATE_REASONS, MAX_FUTURE_NS, PointRules, Screened, screen
from spinline.cloud.storage.base import Rejection, TimeSeriesStore
from spinline.cloud.storage.shared import batch_digest
from spinline.core.batch import Batch
from spinline.core.errors import PayloadError
from spinline.core.wire import (
    MAX_PAYLOAD_BYTES,
    MAX_ROWS,
    META_REBUFFERS,
    Envelope,
    SignedPayloadError,
    UnverifiedPayload,
    decode,
    decode_status,
    sign_ack,
    verify_signed_status,
)

log = logging.getLogger(__name__)

Status = Literal["stored", "duplicate", "rejected"]
#: The refusal of a re-used idempotency key carrying other rows (see the module docstring).
CONFLICT = "conflicting_duplicate"
#: The edge refusals of unverified payloads are counted under (nothing they claim is proven).
UNVERIFIED_EDGE = "?"
UNKNOWN_EDGE = UNVERIFIED_EDGE


def unverified_detail(what: str, reason: str, size: int) -> str:
    """The detail recorded for an unverified refusal: nothing the sender chose is echoed."""
    return f"{what}: {reason}, refused before its signature was verified ({size} bytes)"


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to one payload; ``ack()`` is the JSON the edge receives."""

    status: Status
    edge: str | None = None
    mill: str | None = None
    seq: int | None = None
    stored: int = 0
    reason: str | None = None
    detail: str = ""
    #: The payload's signature was verified and it came on its own edge's topic: its ack may be sent.
    verified: bool = True
    #: The batch's incarnation (the edge buffer it came from), echoed in the ack.
    incarnation: str = ""
    #: Rows refused per reason (the rest stored); empty when every row passed.
    refused: dict[str, int] = field(default_factory=dict)
    #: Which refused rows the edge may re-send later (``validate.Retry.as_json``); None: none.
    retry: dict[str, Any] | None = None

    def ack(self) -> dict[str, Any]:
        """The ack's JSON object (``IngestService.signed_ack`` adds edge, incarnation and signature).

        ``refused`` and ``retry`` appear only when rows were refused (older edges ignore them)."""
        out: dict[str, Any] = {"seq": self.seq, "status": self.status, "reason": self.reason, "stored": self.stored}
        if self.refused:
            out["refused"] = dict(self.refused)
        if self.retry:
            out["retry"] = dict(self.retry)
        return out


@dataclass(frozen=True, slots=True)
class Accepted:
    """A payload that passed every check and waits for ``commit``."""

    envelope: Envelope
    batch: Batch
    #: The rows refused by ``validate.screen`` (``batch`` holds the others).
    screened: Screened | None = None

    def note(self) -> str | None:
        """What is kept with the idempotency key: the row refusals of this answer (JSON), or None."""
        s = self.screened
        if s is None or not s.refused:
            return None
        return json.dumps({"refused": s.refused, "retry": s.retry.as_json() if s.retry else None},
                          separators=(",", ":"))


class IngestService:
    """Decode, authenticate, validate and store edge batches.

    ``edge_keys(edge)``: the edge's HMAC secret, None when unknown or revoked.
    ``edge_mill(edge)``: the mill the edge is registered to, None when unknown.
    ``allowed_points(mill)``: keys of the points the mill declares (``all_points`` of its site).
    ``point_rules(mill)``: optional; by default built from ``allowed_points`` and the store's point
    kinds (state points must be whole numbers, counters not below 0), rebuilt when the set changes.
    """

    def __init__(self, store: TimeSeriesStore, edge_keys: Callable[[str], bytes | None],
                 edge_mill: Callable[[str], str | None], allowed_points: Callable[[str], set[int] | frozenset[int]],
                 *, point_rules: Callable[[str], PointRules] | None = None, max_future_ns: int = MAX_FUTURE_NS,
                 max_rows: int = MAX_ROWS, max_bytes: int = MAX_PAYLOAD_BYTES,
                 clock: Callable[[], int] = time.time_ns, sync_credentials: Callable[[], None] | None = None) -> None:
        self.store = store
        self.edge_keys = edge_keys
        self.edge_mill = edge_mill
        self.allowed_points = allowed_points
        self._point_rules = point_rules
        self.max_future_ns = max_future_ns
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.clock = clock
        #: Called before each request or group of payloads: a credential cache re-checks revocations.
        self.sync_credentials = sync_credentials or (lambda: None)
        self._rules: dict[str, tuple[frozenset[int], PointRules]] = {}
        self._rules_lock = threading.Lock()
        #: Edges whose conflicting re-use of a key was logged (once per edge; every one is counted).
        self._conflicts_logged: set[str] = set()

    # --- the one-call path (HTTP) ---------------------------------------------------------------

    def handle(self, payload: bytes, received_ns: int | None = None) -> IngestResult:
        return self.handle_many([payload], received_ns)[0]

    def handle_many(self, payloads: Sequence[bytes], received_ns: int | None = None,
                    topics: Sequence[tuple[str, str] | None] | None = None) -> list[IngestResult]:
        """Several payloads, the good ones stored in one transaction; results in input order."""
        now = self.clock() if received_ns is None else received_ns
        self.sync_credentials()
        prepared = [self.prepare(p, now, topic=None if topics is None else topics[i])
                    for i, p in enumerate(payloads)]
        done = iter(self.commit([p for p in prepared if isinstance(p, Accepted)]))
        return [next(done) if isinstance(p, Accepted) else p for p in prepared]

    # --- the two halves (workers coalescing payloads) -------------------------------------------

    def prepare(self, payload: bytes, received_ns: int, *, topic: tuple[str, str] | None = None) -> \
            Accepted | IngestResult:
        """Checks without writing: an ``Accepted`` batch, or a ``rejected`` result (already counted).

        ``topic``: the (mill, edge) of the MQTT topic it arrived on, which must match the payload.
        """
        env: Envelope | None = None
        try:
            env = decode(payload, key_lookup=self.edge_keys, max_bytes=self.max_bytes, max_rows=self.max_rows)
            if topic is not None and topic != (env.mill, env.edge):
                # A signed payload replayed on another edge's topic: nobody on that topic is proven.
                raise UnverifiedPayload("unauthorised", f"payload of {env.mill}/{env.edge} published on the "
                                                        f"topic of {topic[0]}/{topic[1]}")
            registered = self.edge_mill(env.edge)
            if registered != env.mill:
                raise PayloadError("unauthorised", f"edge {env.edge!r} belongs to mill {registered!r}, "
                                                   f"not {env.mill!r}")
            screened = screen(env, self.rules(env.mill), received_ns, max_future_ns=self.max_future_ns,
                              max_age_ns=getattr(self.store, "raw_retention_ns", None))
            cloud_state = [r for r in screened.refused if r in CLOUD_STATE_REASONS]
            rebuffers = env.meta.get(META_REBUFFERS) is True
            if screened.refused and (not len(screened.batch) or (cloud_state and not rebuffers)):
                # Every row refused, or rows refused for the cloud's own state from an edge that does not
                # re-buffer the rows an ack's ``retry`` names: nothing stored, the key stays free for a
                # re-send once fixed (storing the rest would let that edge delete rows never taken).
                err = (PayloadError(cloud_state[0], screened.detail[cloud_state[0]]) if cloud_state
                       else screened.first_error())
                assert err is not None
                result = self._reject(payload, env, err, received_ns)
                self._record_refused(env, screened, received_ns, skip=err.reason)
                return _with_refusals(result, screened)
        except SignedPayloadError as exc:
            return self._reject_signed(exc, received_ns, topic)
        except PayloadError as exc:
            return self._reject(payload, env, exc, received_ns)
        return Accepted(env, screened.batch, screened if screened.refused else None)

    def commit(self, accepted: Sequence[Accepted]) -> list[IngestResult]:
        """Store accepted batches in one transaction (idempotency key ``envelope.idempotency_key`` each).

        The digest kept with each key is of the payload's rows as sent (refused rows included), so a
        re-send of the same payload is a duplicate whatever the cloud's state does meanwhile.
        """
        if not accepted:
            return []
        results = self.store.write_many([(a.batch, a.envelope.idempotency_key) for a in accepted],
                                        digests=[batch_digest(a.envelope.batch) for a in accepted],
                                        notes=[a.note() for a in accepted])
        out: list[IngestResult] = []
        now = self.clock()
        for a, r in zip(accepted, results, strict=True):
            env = a.envelope
            if r.conflict:
                out.append(self._conflict(env, now))
                continue
            res = IngestResult("duplicate" if r.duplicate else "stored", env.edge, env.mill, env.seq, r.stored,
                               incarnation=env.incarnation)
            if r.duplicate:
                out.append(_with_note(res, r.note))
                continue
            if a.screened is not None:
                self._record_refused(env, a.screened, now)
                res = _with_refusals(res, a.screened)
            out.append(res)
        return out

    def signed_ack(self, result: IngestResult) -> dict[str, Any]:
        """The ack signed with its edge's secret (``core.wire.sign_ack``), so the edge can tell a real
        "rejected" from a forged one; unsigned only when the edge has no key (revoked meanwhile)."""
        ack = result.ack()
        key = self.edge_keys(result.edge) if result.edge is not None and result.verified else None
        if not key:
            return ack
        ack["edge"] = result.edge
        if result.incarnation:
            ack["inc"] = result.incarnation
        return sign_ack(key, ack)

    # --- edge status ----------------------------------------------------------------------------

    def handle_status(self, payload: bytes, mill: str, edge: str, received_ns: int | None = None, *,
                      verified: bool = False) -> bool:
        """Keep an edge's status message; False (and counted) when refused.

        Status messages are small JSON, kept only for a known edge of that mill and only when signed
        with its secret: ``verified`` when the transport checked the signature (the HTTP header), else
        the payload carries it as a trailer (``wire.encode_status(..., key=)``, the MQTT form). An
        unsigned or badly signed status is refused and counted under the neutral edge: anyone on the
        broker could publish it.
        """
        now = self.clock() if received_ns is None else received_ns
        key = self.edge_keys(edge)
        if not verified and (body := verify_signed_status(payload, key)) is not None:
            payload, verified = body, True
        if not verified and key is not None:
            self.store.record_rejection(Rejection(UNVERIFIED_EDGE, "unauthorised",
                                                  unverified_detail("status", "unsigned or bad signature",
                                                                    len(payload)), now))
            return False
        if key is None or self.edge_mill(edge) != mill:
            # Not one of ours: counted under the neutral edge, nothing of the claim echoed.
            self.store.record_rejection(Rejection(UNVERIFIED_EDGE, "unauthorised",
                                                  unverified_detail("status", "unknown edge or not this mill's",
                                                                    len(payload)), now))
            return False
        try:
            status = decode_status(payload)
            if not self._is_new(status, edge, mill, now):
                return True     # the status kept, delivered again: nothing to do, last-seen untouched
        except PayloadError as exc:
            self.store.record_rejection(Rejection(edge, exc.reason, f"status: {exc.detail}", now))
            return False
        self.store.record_edge_status(edge, mill, status, now)
        return True

    def _is_new(self, status: dict[str, Any], edge: str, mill: str, now: int) -> bool:
        """Whether a signed status is news; raises for one that is stale (a replay would fake the fleet view).

        Every status an edge sends carries ``ts_ns`` (its send time) and ``started_ns`` (its process
        start); only its key can make one without them (the MQTT Will has none: it is written at
        connect time). The very status kept, delivered again (the broker's retained copy to a restarted
        ingest worker, a QoS 1 re-delivery), is not news and must not refresh the edge's last-seen. Else
        fresh means within ``MAX_FUTURE_NS`` of the cloud's clock (the limit batches and signed requests
        live with) and newer than the status kept, unless it comes from a later process (a clock
        stepped back by NTP between runs).
        """
        ts = status.get("ts_ns")
        if ts is None:
            return True
        if not isinstance(ts, int) or isinstance(ts, bool):
            raise PayloadError("malformed", f"ts_ns must be integer nanoseconds, got {ts!r}")
        kept = self.store.edge_status(mill).get(edge)
        before = kept.status.get("ts_ns") if kept is not None else None
        started, started_before = status.get("started_ns"), kept.status.get("started_ns") if kept else None
        if ts == before and started == started_before:
            return False
        if abs(ts - now) > MAX_FUTURE_NS:
            raise PayloadError("stale_status", f"stamped {(ts - now) / 1e9:+.0f} s from the cloud's clock (limit "
                                               f"±{MAX_FUTURE_NS / 1e9:.0f} s): a replay, or the edge's clock is wrong")
        if isinstance(before, int) and ts <= before and not (
                isinstance(started, int) and isinstance(started_before, int) and started > started_before):
            raise PayloadError("stale_status", f"older than the status kept ({(ts - before) / 1e9:+.3f} s): "
                                               "a replay, or out of order")
        return True

    # --- internals ------------------------------------------------------------------------------

    def rules(self, mill: str) -> PointRules:
        if self._point_rules is not None:
            return self._point_rules(mill)
        got = self.allowed_points(mill)
        with self._rules_lock:
            cached = self._rules.get(mill)
        # The same set object as last time (the usual case: a cached lookup): no comparison at all.
        if cached is not None and cached[0] is got:
            return cached[1]
        if cached is not None and cached[0] == got:
            with self._rules_lock:      # a fresh copy of the same set: remember it, compare once
                self._rules[mill] = (frozenset(got) if not isinstance(got, frozenset) else got, cached[1])
            return cached[1]
        allowed = frozenset(got)
        rules = PointRules.build(allowed, self.store.points(mill))
        with self._rules_lock:
            self._rules[mill] = (allowed, rules)
        return rules

    def _record_refused(self, env: Envelope, screened: Screened, now: int, *, skip: str | None = None) -> None:
        """Count each reason of a batch's refused rows against its (verified) edge."""
        total = len(env.batch)
        for reason, n in screened.refused.items():
            if reason != skip:
                self.store.record_rejection(Rejection(env.edge, reason, f"batch {env.seq}: {n} of {total} rows "
                                                                        f"refused: {screened.detail[reason]}", now))

    def _conflict(self, env: Envelope, now: int) -> IngestResult:
        detail = (f"batch {env.seq} (incarnation {env.incarnation or '-'}) re-uses an idempotency key stored "
                  f"before with other rows: nothing stored (a buffer restored from a snapshot?)")
        self.store.record_rejection(Rejection(env.edge, CONFLICT, detail, now))
        if env.edge not in self._conflicts_logged:
            self._conflicts_logged.add(env.edge)
            log.error("edge %s: %s [counted as %s; logged once per edge]", env.edge, detail, CONFLICT)
        return IngestResult("rejected", env.edge, env.mill, env.seq, 0, CONFLICT, detail,
                            incarnation=env.incarnation)

    def _reject(self, payload: bytes, env: Envelope | None, exc: PayloadError, received_ns: int) -> IngestResult:
        if env is None or isinstance(exc, UnverifiedPayload):
            # Nothing it claims is proven: neutral bucket, fixed detail, no edge/seq to ack.
            self.store.record_rejection(Rejection(UNVERIFIED_EDGE, exc.reason,
                                                  unverified_detail("batch", exc.reason, len(payload)), received_ns))
            return IngestResult("rejected", None, None, None, 0, exc.reason, exc.detail, verified=False)
        self.store.record_rejection(Rejection(env.edge, exc.reason, exc.detail, received_ns))
        return IngestResult("rejected", env.edge, env.mill, env.seq, 0, exc.reason, exc.detail,
                            incarnation=env.incarnation)

    def _reject_signed(self, exc: SignedPayloadError, received_ns: int,
                       topic: tuple[str, str] | None) -> IngestResult:
        """A verified edge's payload that fails to decode: its own refusal, acked when it came on its topic."""
        on_own_topic = topic is None or topic == (exc.mill, exc.edge)
        if not on_own_topic or self.edge_mill(exc.edge) != exc.mill:
            self.store.record_rejection(Rejection(UNVERIFIED_EDGE, exc.reason,
                                                  unverified_detail("batch", exc.reason, 0), received_ns))
            return IngestResult("rejected", None, None, None, 0, exc.reason, exc.detail, verified=False)
        self.store.record_rejection(Rejection(exc.edge, exc.reason, exc.detail, received_ns))
        return IngestResult("rejected", exc.edge, exc.mill, exc.seq, 0, exc.reason, exc.detail)


def _with_refusals(result: IngestResult, screened: Screened) -> IngestResult:
    return replace(result, refused=dict(screened.refused),
                   retry=screened.retry.as_json() if screened.retry is not None else None)


def _with_note(result: IngestResult, note: str | None) -> IngestResult:
    """A duplicate's result carrying the row refusals of the first answer (kept with the key)."""
    if not note:
        return result
    try:
        kept = json.loads(note)
        return replace(result, refused={str(k): int(v) for k, v in kept.get("refused", {}).items()},
                       retry=kept.get("retry") or None)
    except (ValueError, TypeError, AttributeError):
        return result
