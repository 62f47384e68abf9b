"""Edge uplink over HTTPS: signed batches in, acks out; edge status messages.

Not behind a bearer token: a batch authenticates itself with the HMAC of its edge's secret, and the
ingest service checks that the edge belongs to the mill the batch claims and that every point is
one of that mill's. Answers: 200 ``{"seq", "status", "stored"}`` (stored or duplicate), or
``{"reason", "detail"}`` with 400 (malformed or invalid data), 401 (unknown, revoked or wrong
signature, or another mill's edge) or 413 (oversized).

A refusal is counted against an edge only when its signature proved the edge sent it; others are
counted under the neutral edge ``UNVERIFIED_EDGE`` with a fixed detail (no header value echoed).
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from spinline.cloud.api import schemas as s
from spinline.cloud.api.deps import CloudDep
from spinline.cloud.ingest.service import UNVERIFIED_EDGE, unverified_detail
from spinline.cloud.storage.base import Rejection
from spinline.core import wire
from spinline.core.errors import PayloadError

router = APIRouter(tags=["ingest"])

CONTENT_TYPE = wire.BATCH_CONTENT_TYPE
STATUS_OF_REASON = {"unauthorised": status.HTTP_401_UNAUTHORIZED,
                    "oversized": status.HTTP_413_CONTENT_TOO_LARGE,
                    "conflicting_duplicate": status.HTTP_409_CONFLICT}
_REFUSALS: dict[int | str, dict[str, Any]] = {code: {"model": s.IngestRefusal} for code in (400, 401, 409, 413)}


def refusal(reason: str, detail: str, *, key: bytes | None = None, ack: dict[str, Any] | None = None) -> JSONResponse:
    """A refusal; signed with the edge's key (plus its ack fields) when the payload's signature was verified,
    so the edge can tell it from a proxy's or a forger's answer."""
    code = STATUS_OF_REASON.get(reason, status.HTTP_400_BAD_REQUEST)
    body: dict[str, Any] = s.IngestRefusal(reason=reason, detail=detail, code=reason).model_dump()
    if key and ack is not None:
        body = wire.sign_ack(key, ack | body)
    return JSONResponse(body, status_code=code)


async def _read_limited(request: Request, limit: int) -> tuple[bytes, bool]:
    """The body, or as much as was read before it passed ``limit`` bytes (then True)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        async for chunk in request.stream():
            return chunk[:4096], True
        return b"", True
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return bytes(body[:4096]), True
    return bytes(body), False


@router.post(wire.INGEST_PATH.removeprefix(wire.API_PREFIX), response_model=s.IngestAck, responses=_REFUSALS,
             openapi_extra={
    "requestBody": {"required": True, "content": {CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}})
async def ingest(request: Request, cloud: CloudDep) -> Response:
    """Store one signed wire payload (``spinline.core.wire``) exactly once."""
    limit = cloud.settings.max_ingest_bytes
    body, too_big = await _read_limited(request, limit)
    if too_big:
        detail = f"payload is larger than {limit} bytes"
        await run_in_threadpool(cloud.store.record_rejection,
                                Rejection(UNVERIFIED_EDGE, "oversized", detail, time.time_ns()))
        return refusal("oversized", detail)
    result = await run_in_threadpool(cloud.ingest.handle, body)
    signed = cloud.ingest.signed_ack(result)
    if result.status == "rejected":
        key = cloud.ingest.edge_keys(result.edge) if result.verified and result.edge else None
        return refusal(result.reason or "malformed", result.detail, key=key,
                       ack={k: v for k, v in signed.items() if k != wire.ACK_SIG_FIELD})
    # The signed dict as it is: re-serialising through the schema could add or drop keys the signature covers.
    return JSONResponse(signed)


@router.post(wire.STATUS_PATH.removeprefix(wire.API_PREFIX), status_code=status.HTTP_204_NO_CONTENT,
             responses=_REFUSALS)
async def edge_status(request: Request, cloud: CloudDep,
                      x_spinline_edge: Annotated[str, Header()], x_spinline_mill: Annotated[str, Header()],
                      x_spinline_signature: Annotated[str | None, Header(
                          description="hex HMAC-SHA256 of the body with the edge's secret")] = None) -> Response:
    """Keep an edge's status message (JSON: buffer, uplink, devices ...) for the fleet view.

    Signed like a batch: ``X-Spinline-Signature`` is the hex HMAC-SHA256 of the body keyed with the
    edge's secret, so no one else can overwrite an edge's status. 204, or 200 with a signed
    ``{"edge", "requests": [asset, ...], "sig"}`` when users asked this edge for raw snapshots, with
    ``"federated": {...}`` when a federated run asks it to join (``spinline.core.fedjoin.Join``) and
    ``"diagnoses": [...]`` when the cloud model answered its uncertain snapshots (``wire.CloudAnswer``).
    """
    body, too_big = await _read_limited(request, 1024 * 1024)
    if too_big:
        return refusal("oversized", "status message is larger than 1 MiB")
    await run_in_threadpool(cloud.edges.sync)            # a revocation by another process counts at once
    key = await run_in_threadpool(cloud.edges.key, x_spinline_edge)
    good = key is not None and x_spinline_signature is not None and hmac.compare_digest(
        wire.sign_status(key, body), x_spinline_signature.strip().lower())
    if not good:
        # Unproven: counted under the neutral edge, and nothing from the headers is stored.
        await run_in_threadpool(cloud.store.record_rejection,
                                Rejection(UNVERIFIED_EDGE, "unauthorised",
                                          unverified_detail("status", "unsigned or bad signature", len(body)),
                                          time.time_ns()))
        return refusal("unauthorised", "the status is unsigned, the edge unknown or the signature does not match")
    ok = await run_in_threadpool(lambda: cloud.ingest.handle_status(body, x_spinline_mill, x_spinline_edge,
                                                                    verified=True))
    if not ok:
        return refusal("unauthorised", f"no edge {x_spinline_mill}/{x_spinline_edge} may report status")
    # Raw snapshots users asked this edge for ride on the answer (signed like an ack): the status is
    # posted at least every heartbeat, so a request reaches an HTTP edge within a minute.
    ev = getattr(request.app.state, "evidence", None)
    reqs = await run_in_threadpool(ev.take_requests, x_spinline_edge) if ev is not None else []
    # ... and the cloud model's answers to its uncertain snapshots (``cloud.evidence_answers``).
    answers = await run_in_threadpool(ev.take_answers, x_spinline_edge) if ev is not None and key else []
    # ... and so does a federated run's request that this edge join it (``core.fedjoin``).
    fl = cloud.federated
    join = await run_in_threadpool(fl.take, x_spinline_edge, _fl_run(body)) if fl is not None and key is not None \
        else None
    if (reqs or join or answers) and key is not None:
        return JSONResponse(wire.sign_ack(key, {"edge": x_spinline_edge, "requests": reqs}
                                          | ({"federated": join} if join else {})
                                          | ({"diagnoses": [a.to_json() for a in answers]} if answers else {})))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _fl_run(body: bytes) -> str | None:
    """The federated run an edge's status says it has (``federated.run``), if any."""
    if b'"federated"' not in body:
        return None
    try:
        fl = json.loads(body).get("federated")
    except (ValueError, AttributeError):
        return None
    run = fl.get("run") if isinstance(fl, dict) else None
    return run if isinstance(run, str) else None


@router.post(wire.EVENTS_PATH.removeprefix(wire.API_PREFIX), responses=_REFUSALS, openapi_extra={
    "requestBody": {"required": True,
                    "content": {wire.EVENTS_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}})
async def edge_events(request: Request, cloud: CloudDep) -> Response:
    """Record an edge's events (alarms raised and cleared, with the diagnosis) once each.

    The body is ``spinline.core.wire.encode_events`` (signed with the edge's secret in its trailer).
    Answers 200 with the ack ``{"acked": [ids], "rejected": [{"id", "reason"}]}``, or a refusal of the
    whole payload: 401 (signature, or not this edge's mill), 400 (malformed), 413 (oversized).
    """
    body, too_big = await _read_limited(request, wire.MAX_EVENTS_BYTES)
    if too_big:
        return refusal("oversized", f"events payload is larger than {wire.MAX_EVENTS_BYTES} bytes")
    events = request.app.state.edge_events
    await run_in_threadpool(cloud.edges.sync)
    try:
        ack = await run_in_threadpool(events.handle, body)
    except PayloadError as exc:
        return refusal(exc.reason, exc.detail)
    edge = wire.decode_events(body, per_event=True).edge  # verified by ``handle`` above
    if (ev := getattr(request.app.state, "evidence", None)) is not None:   # an order its answer waited for
        await run_in_threadpool(ev.note_pending, cloud.edges.mill_of(edge))
    return Response(wire.signed_events_ack(ack, edge, cloud.edges.key(edge)), media_type="application/json")


sign_status = wire.sign_status  # re-exported for tests; the edge imports it from spinline.core.wire
