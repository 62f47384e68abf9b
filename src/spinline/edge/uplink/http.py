"""HTTP(S) uplink: ``POST {base}/api/v1/ingest`` with the signed wire payload as the body.

The response is the ack: 200 ``{"seq", "status", "stored"}``; a 4xx ``{"reason", "detail"}`` is a
refusal of that batch (``rejected``), except 401/403 (credentials: the batch is fine, keep it) and
408/429 (try later). 5xx and transport errors end the session with ``UplinkError``; the batch
stays in the buffer and is re-sent.

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
from typing import Self

import httpx

from spinline.core import wire
from spinline.core.errors import PayloadError, UplinkError

from .base import Ack, parse_ack

log = logging.getLogger(__name__)
CONTENT_TYPE = "application/x-spinline-batch"
INGEST_PATH = "/api/v1/ingest"
STATUS_PATH = "/api/v1/edge-status"


class HttpUplink:
    def __init__(self, url: str, *, edge: str, mill: str, secret: bytes, timeout_s: float = 10.0,
                 verify: bool = True) -> None:
        self.base = url.rstrip("/")
        self.edge, self.mill = edge, mill
        self.secret = secret
        self.timeout_s = timeout_s
        self.verify = verify
        self.acks: asyncio.Queue[Ack] = asyncio.Queue()
        self.event_acks: asyncio.Queue[wire.EventsAck] = asyncio.Queue()
        self._events_failing: str | None = None
        #: Completes when the session ends; created in ``__aenter__``.
        self.closed: asyncio.Future[None] = None  # type: ignore[assignment]
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        self.closed = asyncio.get_running_loop().create_future()
        self._client = httpx.AsyncClient(base_url=self.base, timeout=httpx.Timeout(self.timeout_s),
                                         verify=self.verify,
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
                ack = parse_ack(r.json() | {"seq": r.json().get("seq", seq)})
            except (ValueError, UplinkError) as exc:
                raise self._fail(f"bad ingest response for batch {seq}: {exc}") from None
            self.acks.put_nowait(ack)
            return
        if r.status_code in (401, 403, 408, 429) or r.status_code >= 500:
            raise self._fail(f"POST batch {seq}: HTTP {r.status_code} {r.text[:200]}")
        try:
            reason = str(r.json().get("reason") or f"http_{r.status_code}")
        except ValueError:
            reason = f"http_{r.status_code}"
        self.acks.put_nowait(Ack(seq, "rejected", reason, 0))

    async def publish_status(self, payload: bytes) -> None:
        if self._client is None:
            raise UplinkError("HTTP uplink is not open")
        try:
            await self._client.post(STATUS_PATH, content=payload, headers={
                "Content-Type": "application/json",
                wire.STATUS_SIGNATURE_HEADER: wire.sign_status(self.secret, payload)})
        except httpx.HTTPError as exc:
            raise UplinkError(f"status POST failed: {exc}") from None

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
                self.event_acks.put_nowait(wire.decode_events_ack(r.content))
            except PayloadError as exc:
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
