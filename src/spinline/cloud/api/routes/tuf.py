"""The TUF repository served to the edges, and the edges' update reports.

Not behind a bearer token: each request is signed by an edge with its secret
(``spinline.core.request_auth``: edge id, time, HMAC over method, path, time and body). The edge's
mill comes from its credential, never from the request: ``/tuf/timestamp.json`` is the caller's
mill's timestamp, so an edge cannot ask for another mill's models or desired states. Root metadata
(``root.json``, ``<n>.root.json``) is the same for every mill.

An unsigned, stale or forged request is counted as a refusal under the neutral edge (nothing of the
headers echoed) and answered 401; an unknown file 404.
"""

from __future__ import annotations

import json
import re
import time
from typing import Annotated

from fastapi import APIRouter, Header, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from spinline.cloud.api.deps import CloudDep
from spinline.cloud.ingest.service import UNVERIFIED_EDGE, unverified_detail
from spinline.cloud.storage.base import Rejection
from spinline.core.request_auth import check_request

router = APIRouter(prefix="/tuf", tags=["tuf"])

_ROOT_N = re.compile(r"^(\d{1,9})\.root\.json$")
_ROLE = re.compile(r"^(timestamp|snapshot|targets)\.json$")
MAX_REPORT_BYTES = 1024 * 1024
JSON = "application/json"


async def _edge_mill(request: Request, cloud: CloudDep, body: bytes = b"") -> str | None:
    """The mill of the edge that signed this request; None (and counted) when it is not proven."""
    edge = request.headers.get("x-spinline-edge", "")
    key = await run_in_threadpool(cloud.edges.key, edge) if edge else None
    raw = request.scope.get("raw_path") or request.url.path.encode()
    why = "unknown edge" if key is None else check_request(
        key, request.method, raw.decode("latin-1"), request.headers.get("x-spinline-time"),
        request.headers.get("x-spinline-request-signature"), time.time_ns(), body)
    if why is not None:
        await run_in_threadpool(cloud.store.record_rejection, Rejection(
            UNVERIFIED_EDGE, "unauthorised", unverified_detail("model update request", why, len(body)),
            time.time_ns()))
        return None
    return await run_in_threadpool(cloud.edges.mill_of, edge)


def _refused() -> JSONResponse:
    return JSONResponse({"reason": "unauthorised", "detail": "the request is unsigned, stale, or the edge unknown"},
                        status_code=status.HTTP_401_UNAUTHORIZED)


@router.get("/targets/{path:path}", responses={401: {}, 404: {}})
async def target(path: str, request: Request, cloud: CloudDep) -> Response:
    """A target file of the caller's mill (a model artefact or a desired state); TUF checks its hash."""
    mill = await _edge_mill(request, cloud)
    if mill is None:
        return _refused()
    if cloud.models is None or cloud.models.repo is None:
        return Response(status_code=status.HTTP_404_NOT_FOUND)
    data = await run_in_threadpool(cloud.models.repo.target, mill, path)
    if data is None:
        return Response(status_code=status.HTTP_404_NOT_FOUND)
    return Response(data, media_type="application/octet-stream")


@router.get("/{file}", responses={401: {}, 404: {}})
async def metadata(file: str, request: Request, cloud: CloudDep) -> Response:
    """``root.json``, ``<n>.root.json``, or the caller's mill's ``timestamp|snapshot|targets.json``."""
    mill = await _edge_mill(request, cloud)
    if mill is None:
        return _refused()
    repo = cloud.models.repo if cloud.models is not None else None
    data = None
    if repo is not None:
        if file == "root.json":
            data = await run_in_threadpool(repo.root)
        elif (m := _ROOT_N.match(file)) is not None:
            data = await run_in_threadpool(repo.root, int(m.group(1)))
        elif (m := _ROLE.match(file)) is not None:
            data = await run_in_threadpool(repo.metadata, mill, m.group(1))
    if data is None:
        return Response(status_code=status.HTTP_404_NOT_FOUND)
    return Response(data, media_type=JSON)


@router.post("/report", status_code=status.HTTP_204_NO_CONTENT, responses={401: {}, 413: {}, 400: {}})
async def report(request: Request, cloud: CloudDep,
                 content_length: Annotated[int | None, Header()] = None) -> Response:
    """An edge's update report: what runs on each asset, what it refused, evidence per model version."""
    if content_length is not None and content_length > MAX_REPORT_BYTES:
        return JSONResponse({"reason": "oversized", "detail": f"larger than {MAX_REPORT_BYTES} bytes"}, 413)
    body = await request.body()
    if len(body) > MAX_REPORT_BYTES:
        return JSONResponse({"reason": "oversized", "detail": f"larger than {MAX_REPORT_BYTES} bytes"}, 413)
    mill = await _edge_mill(request, cloud, body)
    if mill is None:
        return _refused()
    try:
        rep = json.loads(body)
        if not isinstance(rep, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        return JSONResponse({"reason": "malformed", "detail": f"report is not a JSON object: {exc}"}, 400)
    if cloud.models is not None:
        await run_in_threadpool(cloud.models.record_report, request.headers["x-spinline-edge"], mill, rep)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
