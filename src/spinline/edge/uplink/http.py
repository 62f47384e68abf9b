"""HTTP(S) uplink: ``POST {base}/api/v1/ingest`` with the signed wire payload as the body.

The response is the ack: 200 ``{"seq", "status", "stored"}``. A 4xx is a refusal of that batch
(``rejected``) only when its body is a JSON object whose ``reason`` is one of ``wire.REASONS``
(the cloud's own refusal); anything else - a 404 from a wrong path prefix, a proxy's 413, a WAF's
HTML 400 - says nothing about the batch: it ends the session with ``UplinkError`` (logged once
per kind of answer here; the agent logs the outage once) and the batch stays in the buffer and is
re-sent after the reconnect. So do 401/403 (credentials), 408/429 (try later), 5xx and transport
errors. A signed answer (``"sig"``, see ``base``) is checked by ``AckTrust``; a 200 whose ack is not
trusted is ignored (the batch is re-sent after the ack timeout).

Events: ``POST {base}/api/v1/edge-events`` (``wire.EVENTS_PATH``) with the signed events payload;
200 with an ``EventsAck`` body is the ack. Any other answer (a cloud without the route yet: 404)
leaves the events in the buffer for a later re-send, logged once per kind of failure; it does not
end the session, so batches keep flowing. Transport errors end it like a batch's would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Any, Self

import httpx

from spinline.core import wire
from spinline.core.errors import PayloadError, UplinkError

from .base import Ack, AckTrust, ack_object, parse_ack

log = logging.getLogger(__name__)
CONTENT_TYPE = wire.BATCH_CONTENT_TYPE
INGEST_PATH = wire.INGEST_PATH
STATUS_PATH = wire.STATUS_PATH
#: (base URL, answer) already logged: once per process, not once per session (a new uplink per reconnect).
_ODD_ANSWERS_LOGGED: set[tuple[str, str]] = set()


class HttpUplink:
    def __init__(self, url: str, *, edge: str, mill: str, secret: bytes, timeout_s: float = 10.0,
                 verify: bool = True, trust: AckTrust | None = None) -> None:
        self.base = url.rstrip("/")
        self.edge, self.mill = edge, mill
        self.secret = secret
        self.timeout_s = timeout_s
        self.verify = verify
        self.acks: asyncio.Queue[Ack] = asyncio.Queue()
        self.event_acks: asyncio.Queue[wire.EventsAck] = asyncio.Queue()
        self.snapshot_acks: asyncio.Queue[wire.EventsAck] = asyncio.Queue()
        #: Assets the cloud asked a raw snapshot of (in a snapshot or events answer's ``requests``).
        self.requests: asyncio.Queue[str] = asyncio.Queue()
        #: A federated run's join requests (``core.fedjoin``; in a status answer's ``federated``).
        self.federated: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        #: Answers carrying the cloud model's ``diagnoses`` (whole, unverified: ``edge.cloud_answers`` checks them).
        self.diagnoses: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._snapshots_failing: str | None = None
        self._events_failing: str | None = None
        self.trust = trust if trust is not None else AckTrust(secret, edge)
        #: Completes when the session ends; created in ``__aenter__``.
        self.closed: asyncio.Future[None] = None  # type: ignore[assignment]
        self._client: httpx.AsyncClient | None = None
        #: Response bytes received from the cloud (acks), for the uplink budget (``edge.traffic``).
        self.rx_bytes = 0

    async def _count_rx(self, r: httpx.Response) -> None:
        self.rx_bytes += len(await r.aread())

    async def __aenter__(self) -> Self:
        self.closed = asyncio.get_running_loop().create_future()
        self._client = httpx.AsyncClient(base_url=self.base, timeout=httpx.Timeout(self.timeout_s),
                                         verify=self.verify, event_hooks={"response": [self._count_rx]},
                                         headers={"X-Spinline-Edge": self.edge, "X-Spinline-Mill": self.mill})
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)

    def _fail(self, msg: str) -> UplinkError:
        err = UplinkError(msg)
        if self.closed is not None and not self.closed.done():
            self.closed.set_exception(err)
            self.closed.exception()  # retrieved: the forwarder reads it from send()'s raise
        return err

    async def send(self, seq: int, payload: bytes) -> None:
        if self._client is None:
            raise UplinkError("HTTP uplink is not open")
        try:
            r = await self._client.post(INGEST_PATH, content=payload, headers={"Content-Type": CONTENT_TYPE})
        except httpx.HTTPError as exc:
            raise self._fail(f"POST batch {seq}: {type(exc).__name__}: {exc}") from None
        if r.status_code == 200:
            try:
                d = ack_object(r.content)
                if not self.trust.accept(d, "ingest response"):
                    return  # stays in flight: re-sent after the ack timeout
                ack = parse_ack(d if "seq" in d else d | {"seq": seq})
            except UplinkError as exc:
                raise self._fail(f"bad ingest response for batch {seq}: {exc}") from None
            self.acks.put_nowait(ack)
            return
        if r.status_code in (401, 403, 408, 429) or r.status_code >= 500:
            raise self._fail(f"POST batch {seq}: HTTP {r.status_code} {r.text[:200]}")
        reason = _refusal_reason(r)
        if reason is None:
            kind = f"HTTP {r.status_code}"
            if (self.base, kind) not in _ODD_ANSWERS_LOGGED and len(_ODD_ANSWERS_LOGGED) < 64:
                _ODD_ANSWERS_LOGGED.add((self.base, kind))
                log.warning("POST %s%s answered %s %r, not a spinline refusal (wrong URL prefix? a proxy?): batch "
                            "kept, session ended, retrying [logged once]", self.base, INGEST_PATH, kind,
                            r.text[:120])
            raise self._fail(f"POST batch {seq}: {kind} {r.text[:200]!r} is not a spinline refusal (kept, retrying)")
        try:
            body = ack_object(r.content)
        except UplinkError:
            body = {}
        if not self.trust.accept(body, "ingest refusal"):
            return
        try:   # a signed refusal carries the ack's fields: which rows to re-send later (``retry``)
            ack = parse_ack(body | {"seq": seq, "status": "rejected", "reason": reason})
        except UplinkError:
            ack = Ack(seq, "rejected", reason, 0)
        self.acks.put_nowait(ack)

    async def publish_status(self, payload: bytes) -> int | None:
        if self._client is None:
            raise UplinkError("HTTP uplink is not open")
        try:
            r = await self._client.post(STATUS_PATH, content=payload, headers={
                "Content-Type": "application/json",
                wire.STATUS_SIGNATURE_HEADER: wire.sign_status(self.secret, payload)})
        except httpx.HTTPError as exc:
            raise UplinkError(f"status POST failed: {exc}") from None
        if r.status_code == 200 and r.content:   # raw snapshots users asked for (signed like an ack)
            with contextlib.suppress(UplinkError):
                d = ack_object(r.content)
                self._take_diagnoses(d)
                if self.trust.accept(d, "snapshot requests"):
                    self._take_requests(d)
        return None   # the body is the payload as given (the signature travels in a header)

    async def send_events(self, payload: bytes) -> None:
        if self._client is None:
            raise UplinkError("HTTP uplink is not open")
        try:
            r = await self._client.post(wire.EVENTS_PATH, content=payload,
                                        headers={"Content-Type": wire.EVENTS_CONTENT_TYPE})
        except httpx.HTTPError as exc:
            raise self._fail(f"POST events: {type(exc).__name__}: {exc}") from None
        problem: str | None = None
        if r.status_code == 200:
            try:
                d = ack_object(r.content)
                self._take_diagnoses(d)
                if self.trust.accept(d, "events ack"):
                    self.event_acks.put_nowait(wire.decode_events_ack(d))
                    self._take_requests(d)
            except (UplinkError, PayloadError) as exc:
                problem = f"bad events response: {exc}"
        else:
            problem = f"HTTP {r.status_code}"
        if problem is None:
            if self._events_failing is not None:
                log.info("cloud accepts edge events again")
            self._events_failing = None
        elif problem != self._events_failing:
            log.warning("cloud did not ack edge events (%s): kept in the buffer, re-sent later", problem)
            self._events_failing = problem

    def _take_diagnoses(self, d: dict[str, Any]) -> None:
        """An answer with the cloud model's diagnoses goes to their own, stricter check (signed or refused)."""
        if "diagnoses" in d:
            self.diagnoses.put_nowait(d)

    def _take_requests(self, d: dict[str, object]) -> None:
        """Queue the assets a (trusted) answer asks a raw snapshot of."""
        reqs = d.get("requests")
        if isinstance(reqs, list):
            for a in reqs:
                self.requests.put_nowait(str(a)[:300])
        if isinstance(join := d.get("federated"), dict):
            self.federated.put_nowait(join)

    async def send_snapshot(self, payload: bytes) -> None:
        """POST one raw evidence snapshot; a 200's signed ack goes to ``snapshot_acks``. Any other answer
        leaves it in the buffer (logged once per kind); transport errors end the session."""
        if self._client is None:
            raise UplinkError("HTTP uplink is not open")
        try:
            r = await self._client.post(wire.SNAPSHOTS_PATH, content=payload,
                                        headers={"Content-Type": wire.SNAPSHOT_CONTENT_TYPE})
        except httpx.HTTPError as exc:
            raise self._fail(f"POST snapshot: {type(exc).__name__}: {exc}") from None
        problem: str | None = None
        if r.status_code == 200:
            try:
                d = ack_object(r.content)
                self._take_diagnoses(d)
                if self.trust.accept(d, "snapshot ack"):
                    self.snapshot_acks.put_nowait(wire.decode_events_ack(d))
                    self._take_requests(d)
            except (UplinkError, PayloadError) as exc:
                problem = f"bad snapshot response: {exc}"
        else:
            problem = f"HTTP {r.status_code} {r.text[:120]!r}"
        if problem is not None and problem != self._snapshots_failing:
            log.warning("cloud did not ack a raw snapshot (%s): kept in the buffer, re-sent later", problem)
        self._snapshots_failing = problem


def _refusal_reason(r: httpx.Response) -> str | None:
    """The reason of a cloud's refusal: a JSON object whose ``reason`` is in ``wire.REASONS``; else None."""
    try:
        d = r.json()
    except (ValueError, RecursionError):
        return None
    reason = d.get("reason") if isinstance(d, dict) else None
    return reason if isinstance(reason, str) and reason in wire.REASONS else None
