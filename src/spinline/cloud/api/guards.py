"""The ASGI guard in front of the JSON API: what one request may cost the process, checked once.

``RequestGuard`` wraps the whole app (pure ASGI, no per-route code):

- **Body size**: a body declared (``Content-Length``) or streamed past ``max_body_bytes`` is refused
  with 413 ``body_too_large`` before the rest is read. The ingest routes (``exempt_prefixes``) read
  their own bodies against their own, larger limits and answer the edge protocol's refusals.
- **NUL characters**: a NUL in the path, the query string or a JSON body (``\\u0000``) is refused with
  422 ``nul_character``: PostgreSQL cannot store it in text, and no name, message or id needs it.
- **Client address**: a client address that is not an IP address (uvicorn takes it from
  ``X-Forwarded-For`` behind a trusted proxy) is refused with 400 ``bad_client_address``.
- **The client going away**: the request runs in its own task while the guard listens for
  ``http.disconnect``; when the client hangs up before the answer is complete, the guard lets go of
  the task at once (its later sends are dropped) and sets ``scope[GONE]``, a ``threading.Event``
  that long work checks between steps (``api.deps.Gone``; the KPI loop stops before its next job of
  windows, or while waiting for it).
  The task itself is not cancelled: blocking storage calls in a worker thread cannot be stopped
  half-way, and the request keeps its per-user slot until its work has really ended, so hanging
  up and asking again cannot pile up work past the user's limit. ``request.is_disconnected()``
  answers true from then on.
- **Deadline**: a request with no answer started after ``deadline_s`` gets 503 ``timeout`` with
  ``Retry-After`` (a hung database must not hold the client for the whole hang) and is abandoned
  the same way. Streams (whose answer starts at once) are not bound by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

from spinline.cloud.api.errors import RETRY_AFTER_STORAGE_S, error_body

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The scope key of the ``threading.Event`` set when nobody waits for the answer any more.
GONE = "spinline.gone"

#: ``\u0000`` preceded by an even number of backslashes (an odd number escapes the escape).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _has_nul_query(raw: bytes) -> bool:
    return b"\x00" in raw or b"%00" in raw.lower() or b"\x00" in unquote_to_bytes(raw.replace(b"+", b" "))


class _Refused(Exception):
    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


async def _answer(send: Send, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(status, detail, code)).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """See the module docstring. ``deadline_s`` 0 disables the deadline."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, deadline_s: float,
                 exempt_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.deadline_s = deadline_s
        self.exempt_prefixes = exempt_prefixes
        #: Requests given up on (client gone or deadline passed) whose tasks have not ended yet.
        self.abandoned: set[asyncio.Task[None]] = set()
        self.abandoned_total = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check_head(scope)
        except _Refused as r:
            await _answer(send, r.status, r.code, r.detail, r.headers)
            return
        path: str = scope.get("path", "")
        if path.startswith(self.exempt_prefixes):
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read_body(scope, receive)
        except _Refused as r:
            await _answer(send, r.status, r.code, r.detail, r.headers)
            return
        except _ClientGone:
            return
        await self._run(scope, body, receive, send)

    # --- checks before the app sees the request ------------------------------------------------

    def _check_head(self, scope: Scope) -> None:
        raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
        if b"\x00" in unquote_to_bytes(raw_path) or "\x00" in scope.get("path", ""):
            raise _Refused(422, "nul_character", "the path contains a NUL character")
        if _has_nul_query(scope.get("query_string", b"")):
            raise _Refused(422, "nul_character", "the query string contains a NUL character")
        client = scope.get("client")
        if client and client[0]:
            host = str(client[0])
            try:
                ipaddress.ip_address(host)
            except ValueError:
                shown = host[:64].encode("unicode_escape").decode("ascii")
                raise _Refused(400, "bad_client_address",
                               f"the client address {shown!r}{'...' if len(host) > 64 else ''} (from "
                               f"X-Forwarded-For) is not an IP address") from None
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and not value.strip().isdigit():
                raise _Refused(400, "bad_request", "Content-Length is not a number")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and int(value) > limit:
                raise _Refused(413, "body_too_large", f"the body is {int(value)} bytes; at most {limit} are accepted")
        chunks = bytearray()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _ClientGone
            chunks += msg.get("body", b"")
            if len(chunks) > limit:
                raise _Refused(413, "body_too_large", f"the body is larger than {limit} bytes")
            if not msg.get("more_body", False):
                break
        body = bytes(chunks)
        if body and _JSON_NUL.search(body) is not None:
            raise _Refused(422, "nul_character", "the body contains a NUL character (\\u0000)")
        return body

    # --- running the app, letting go when nobody waits ----------------------------------------

    async def _run(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()
        abandoned = threading.Event()
        scope[GONE] = abandoned
        state = {"started": False, "closed": False, "replayed": False}

        async def replay() -> Message:
            if not state["replayed"]:
                state["replayed"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def guarded_send(msg: Message) -> None:
            if state["closed"]:
                return                       # abandoned: the answer goes nowhere
            if msg["type"] == "http.response.start":
                state["started"] = True
            await send(msg)

        task = asyncio.ensure_future(self.app(scope, replay, guarded_send))

        async def watch() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            deadline = self.deadline_s if self.deadline_s > 0 else None
            done, _ = await asyncio.wait({task, watcher}, timeout=deadline, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()
                return
            if watcher not in done and state["started"]:
                # A stream (or a slow body) that has begun answering: no deadline, only the client.
                await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    task.result()
                    return
            if not gone.is_set() and not state["started"]:
                state["closed"] = True
                await _answer(send, 503, "timeout", f"no answer within {self.deadline_s:g} s; try again later",
                              {"Retry-After": str(RETRY_AFTER_STORAGE_S)})
            state["closed"] = True
            abandoned.set()
            self._abandon(task, scope)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    def _abandon(self, task: asyncio.Task[None], scope: Scope) -> None:
        logger.debug("abandoning %s %s", scope.get("method"), scope.get("path"))
        self.abandoned.add(task)
        self.abandoned_total += 1
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.debug("an abandoned request ended with %r", task.exception())

    async def shutdown(self) -> None:
        """Cancel what is still running of abandoned requests (at the app's shutdown)."""
        for t in list(self.abandoned):
            t.cancel()


class _ClientGone(Exception):
    pass
