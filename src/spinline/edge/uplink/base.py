"""The uplink interface: send signed wire payloads, receive the cloud's acks.

An uplink is an async context manager holding one session to the cloud. ``send`` hands a
payload over (raising ``UplinkError`` when the session is broken); the cloud's verdict for each
batch seq arrives later as an ``Ack`` on ``acks`` (MQTT: on TOPIC_ACK; HTTP: in the response).
Events (``spinline.core.wire`` events contract) go the same way: ``send_events`` hands a signed
events payload over, and the cloud's ``EventsAck`` arrives on ``event_acks``. A cloud that does not
answer events yet only makes them wait in the buffer: event failures other than a broken transport
never end the session, so batches keep flowing.
``closed`` completes (with the cause) when the session ends, so the forwarder can reconnect.
Reconnection is the caller's job (aiomqtt's rule): one session per ``async with``.

Trusting acks (anyone who can publish on the edge's ack topic could otherwise make it delete or
dead-letter its batches):

* A ``rejected`` ack is final (the batch goes to the dead letters) only when its ``reason`` is one
  of ``FINAL_REASONS`` (``wire.REASONS`` less ``unauthorised`` and ``duplicate``); any other
  reason leaves the batch in the buffer. The forwarder also acts on a ``rejected`` ack only for a
  batch it has in flight (same for rejected events).
* Signed acks. The cloud signs an ack (batch ack or events ack, MQTT or HTTP body) by adding a
  field ``"sig"``: lowercase hex HMAC-SHA256, keyed with the edge's secret, of
  ``ack_signing_bytes(ack)`` = the ack object without ``"sig"`` serialised as
  ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)``
  (UTF-8). ``sign_ack(secret, ack)`` does exactly that. A signed ack may carry ``"edge"`` (must be
  this edge) and ``"inc"`` (the incarnation of the batch it answers; must be this buffer's).
  ``AckTrust`` ignores acks whose signature (or edge / inc) does not check out, and once one
  signed ack verified - or from the start with ``required=True`` (``--require-signed-acks``) -
  ignores unsigned acks too. Ignored acks are counted and logged once per kind; the batch stays in
  the buffer and is re-sent after the ack timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from spinline.core.errors import UplinkError

# The ack-signing contract lives in core.wire (the cloud signs, the edge verifies); re-exported here.
from spinline.core.wire import ACK_SIG_FIELD as ACK_SIG_FIELD
from spinline.core.wire import REASONS, EventsAck
from spinline.core.wire import ack_signing_bytes as ack_signing_bytes
from spinline.core.wire import sign_ack as sign_ack
from spinline.core.wire import verify_ack as verify_ack

AckStatus = Literal["stored", "duplicate", "rejected"]
#: Rejections that say nothing about the batch itself (fix the credentials, the batch is fine):
#: the batch stays in the buffer and is re-sent later instead of going to the dead letters.
RETRYABLE_REASONS = frozenset({"unauthorised"})
#: Reasons that make a ``rejected`` ack final (dead letters). Anything else (an unknown reason, a
#: proxy's answer, ``unauthorised``) leaves the batch in the buffer for a re-send.
FINAL_REASONS = frozenset(REASONS) - RETRYABLE_REASONS - {"duplicate"}
#: The ack field holding the signature (see the module docstring).
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    status: AckStatus
    reason: str | None = None
    stored: int = 0
    #: Rows the cloud refused, per reason (the rest of the batch stored); None: none.
    refused: dict[str, int] | None = None
    #: Which refused rows to re-send later (``wire.retry_rows``); None: none.
    retry: dict[str, Any] | None = None

    @property
    def final(self) -> bool:
        """The batch can leave the buffer (stored, duplicate, or refused for good)."""
        return self.status != "rejected" or self.reason in FINAL_REASONS


def ack_object(data: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """The JSON object of an ack; raises ``UplinkError`` for anything else."""
    try:
        d = data if isinstance(data, dict) else json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise UplinkError(f"bad ack: {exc}") from None
    if not isinstance(d, dict):
        raise UplinkError(f"bad ack: a JSON object expected, got {type(d).__name__}")
    return d


class AckTrust:
    """Decides which acks the edge acts on (see the module docstring); one per edge process, shared by
    its uplink sessions, so "the cloud signs its acks" is remembered across reconnects."""

    def __init__(self, secret: bytes | None, edge: str, *, required: bool = False) -> None:
        self.secret = secret or b""
        self.edge = edge
        self.required = required
        #: Where this buffer's incarnation is read (set by the forwarder at construction, so it holds
        #: before any uplink's ack reader starts); a signed ack naming another incarnation is ignored.
        self.incarnation_of: Callable[[], str] | None = None
        self._incarnation: str | None = None
        self.signed_seen = False
        self.ignored = 0
        self._logged: set[str] = set()

    @property
    def incarnation(self) -> str | None:
        return self.incarnation_of() if self.incarnation_of is not None else self._incarnation

    @incarnation.setter
    def incarnation(self, value: str | None) -> None:
        self._incarnation = value

    def accept(self, ack: Mapping[str, Any], where: str = "ack") -> bool:
        ok = verify_ack(self.secret, ack)
        if ok is None:
            if self.required or self.signed_seen:
                return self._ignore("unsigned", f"unsigned {where} ignored: this edge only trusts signed acks "
                                                f"({'required' if self.required else 'the cloud signs its acks'})")
            return True
        if not ok:
            return self._ignore("bad_signature", f"{where} with a bad signature ignored (forged, or signed with "
                                                 "another secret)")
        if "edge" in ack and ack["edge"] != self.edge:
            return self._ignore("other_edge", f"signed {where} for edge {str(ack['edge'])[:60]!r} ignored")
        if self.incarnation is not None and "inc" in ack and ack["inc"] != self.incarnation:
            return self._ignore("other_incarnation", f"signed {where} for buffer incarnation "
                                                     f"{str(ack['inc'])[:70]!r} ignored (not this buffer's)")
        if not self.signed_seen:
            self.signed_seen = True
            if not self.required:
                log.info("the cloud signs its acks: unsigned acks are ignored from now on")
        return True

    def _ignore(self, kind: str, msg: str) -> bool:
        self.ignored += 1
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning("%s [counted in acks_ignored; logged once]", msg)
        return False


def parse_ack(data: bytes | str | dict[str, Any]) -> Ack:
    """An ack from its JSON form ``{"seq", "status", "reason", "stored"}`` plus, when rows were refused,
    ``refused`` ({reason: rows}) and ``retry`` (a ``wire.retry_rows`` selector); raises ``UplinkError``."""
    try:
        d = ack_object(data)
        status = str(d["status"])
        if status not in ("stored", "duplicate", "rejected"):
            raise ValueError(f"unknown ack status {status!r}")
        reason = d.get("reason")
        refused, retry = d.get("refused"), d.get("retry")
        if refused is not None:
            if not isinstance(refused, dict):
                raise TypeError("refused must be an object")
            refused = {str(k)[:40]: int(v) for k, v in refused.items()}
        if retry is not None and not isinstance(retry, dict):
            raise TypeError("retry must be an object")
        return Ack(int(d["seq"]), status, None if reason is None else str(reason),  # type: ignore[arg-type]
                   int(d.get("stored") or 0), refused or None, retry or None)
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        raise UplinkError(f"bad ack: {exc}") from None


class Uplink(Protocol):
    acks: asyncio.Queue[Ack]
    event_acks: asyncio.Queue[EventsAck]
    closed: asyncio.Future[None]

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None: ...

    async def send(self, seq: int, payload: bytes) -> None: ...

    async def publish_status(self, payload: bytes) -> int | None:
        """Send the status JSON; the bytes that went on the wire when the transport adds to them
        (a signature trailer), else None (exactly ``payload``)."""
        ...

    async def send_events(self, payload: bytes) -> None: ...


class SnapshotUplink(Uplink, Protocol):
    """An uplink that also carries raw evidence snapshots (``wire.snapshots``) and the cloud's requests."""

    snapshot_acks: asyncio.Queue[EventsAck]
    requests: asyncio.Queue[str]
    #: Answers carrying the cloud model's diagnoses of uncertain snapshots (``edge.cloud_answers``).
    diagnoses: asyncio.Queue[dict[str, Any]]

    async def send_snapshot(self, payload: bytes) -> None: ...
