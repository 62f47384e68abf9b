"""Raw evidence: edges post signed vibration snapshots; users read the latest per channel and ask for one.

* ``POST /api/v1/edge-snapshots`` (edge, signed with its key like events; no bearer token): 200 with the
  signed ack ``{"acked": [id], "rejected": [...], "requests": [asset, ...], "diagnoses": [...]}``;
  ``requests`` are the assets users asked this edge for since its last post, ``diagnoses`` the cloud
  model's answers to its uncertain snapshots (``wire.CloudAnswer``; this very snapshot's among them).
  401/400/413 refuse the message whole.
* ``GET /api/v1/mills/{mill}/machines/{machine}/snapshots/latest`` (``read`` on the mill): per channel
  the newest snapshot's time, reason, rate, waveform (downsampled to ``max_points``) and spectra; for an
  ``uncertain`` one the edge's diagnosis and the cloud model's answer.
* ``POST /api/v1/mills/{mill}/machines/{machine}/snapshot-requests`` (``manage_maintenance`` on the
  mill: maintenance engineers, mill managers, zone operators): 202; every active edge of the mill is
  asked for the machine's vibration channels (or the one named), over MQTT ``TOPIC_REQUESTS`` when the
  cloud runs MQTT ingest, and in the answer to its next HTTP snapshot or events post.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field

from spinline.cloud.api.deps import CloudDep, CurrentUser, ReadableMill, not_found
from spinline.cloud.api.routes.ingest import _REFUSALS, _read_limited, refusal
from spinline.cloud.api.routes.maintenance import MaintainableMill
from spinline.cloud.api.schemas import ErrorPublic
from spinline.cloud.evidence import EvidenceStore, waveform_view
from spinline.cloud.ingest.service import UNVERIFIED_EDGE, unverified_detail
from spinline.cloud.storage.base import Rejection
from spinline.core import wire
from spinline.core.errors import PayloadError
from spinline.core.site import iter_machines

router = APIRouter(tags=["evidence"])
MachinePath = Annotated[str, Path(max_length=64, description="machine id, e.g. rf01")]


class EdgeDiagnosisPublic(BaseModel):
    fault: str
    confidence: float


class CloudDiagnosisPublic(BaseModel):
    fault: str
    confidence: float
    band_hz: list[float] | None = Field(None, description="the envelope band (lo, hi) the diagnosis came from")
    explain: str = Field(description="the diagnosis with its evidence lines (English)")
    work_order: str | None = Field(None, description="the work order it was noted on (none yet, or none open)")
    fault_updated: bool = Field(description="the work order's fault was changed to it")
    computed_ns: int


class SnapshotChannel(BaseModel):
    channel: str
    edge: str
    reason: str = Field(description="alarm, request, sample or uncertain")
    edge_diagnosis: EdgeDiagnosisPublic | None = Field(
        None, description="uncertain snapshots: the edge's diagnosis that was too weak to act on")
    cloud_diagnosis: CloudDiagnosisPublic | None = Field(
        None, description="uncertain snapshots: the cloud model's diagnosis of the raw waveform")
    time: datetime
    ts_ns: int
    fs_hz: float
    n: int = Field(description="samples in the snapshot")
    step: int = Field(description="every step-th sample is in samples (1: all)")
    samples: list[float]
    spectrum: dict[str, list[float]] = Field(description="amplitude spectrum: freq_hz, amplitude (peak-pooled)")
    envelope_spectrum: dict[str, list[float]]


class LatestSnapshots(BaseModel):
    mill: str
    machine: str
    channels: list[SnapshotChannel]


class SnapshotRequest(BaseModel):
    channel: str | None = Field(None, max_length=64, description="one vibration channel; default: all of them")


class SnapshotRequested(BaseModel):
    mill: str
    machine: str
    assets: list[str]
    edges: int


def _evidence(request: Request) -> EvidenceStore:
    ev: EvidenceStore | None = getattr(request.app.state, "evidence", None)
    if ev is None:
        raise not_found("raw evidence store")
    return ev


@router.post(wire.SNAPSHOTS_PATH.removeprefix(wire.API_PREFIX), responses=_REFUSALS, openapi_extra={
    "requestBody": {"required": True,
                    "content": {wire.SNAPSHOT_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}})
async def edge_snapshot(request: Request, cloud: CloudDep) -> Response:
    """Keep one signed raw vibration snapshot of an edge (``spinline.core.wire.snapshots``) once."""
    body, too_big = await _read_limited(request, wire.MAX_SNAPSHOT_BYTES)
    ev = _evidence(request)
    if too_big:
        await run_in_threadpool(ev.store.record_rejection, Rejection(
            UNVERIFIED_EDGE, "oversized", unverified_detail("snapshot", "oversized", len(body)), time.time_ns()))
        return refusal("oversized", f"snapshot message is larger than {wire.MAX_SNAPSHOT_BYTES} bytes")
    await run_in_threadpool(cloud.edges.sync)
    try:
        edge, ack = await run_in_threadpool(ev.handle, body)
    except PayloadError as exc:
        return refusal(exc.reason, exc.detail)
    reqs = await run_in_threadpool(ev.take_requests, edge)
    key = cloud.edges.key(edge)
    answers = await run_in_threadpool(ev.take_answers, edge) if key else []
    return Response(signed_answer(ack, edge, key, reqs, answers), media_type="application/json")


def signed_answer(ack: wire.EventsAck, edge: str, key: bytes | None, requests: list[str],
                  answers: list[wire.CloudAnswer] | None = None) -> bytes:
    """The snapshot ack, with ``requests`` and the cloud model's ``diagnoses`` when there are any, signed for
    ``edge`` (answers only go out signed: the caller takes them only when the edge has a key)."""
    obj: dict[str, Any] = json.loads(wire.encode_events_ack(ack)) | ({"requests": requests} if requests else {})
    if answers:
        obj["diagnoses"] = [a.to_json() for a in answers]
    if key:
        obj = wire.sign_ack(key, obj | {"edge": edge})
    return json.dumps(obj, separators=(",", ":")).encode()


def _machine(mill: Any, machine: str) -> Any:
    config = next((m for _, _, m in iter_machines(mill.config) if m.id == machine), None)
    if config is None:
        raise not_found("machine", repr(machine))
    return config


@router.get("/mills/{mill}/machines/{machine}/snapshots/latest", responses={404: {"model": ErrorPublic}})
async def latest_snapshots(
    mill: ReadableMill, machine: MachinePath, request: Request,
    max_points: Annotated[int, Query(ge=16, le=200_000, description="samples and spectrum bins per channel, "
                                                                      "at most")] = 4096,
    spectrum_max_hz: Annotated[float | None, Query(gt=0, le=1_000_000, description=(
        "end the amplitude spectrum at this frequency (default: half the sampling rate), so its bins are "
        "pooled over that span only: 1000 shows running-speed harmonics of slow shafts 1 Hz apart"))] = None,
) -> LatestSnapshots:
    """The newest raw snapshot of each vibration channel of a machine, with its spectra (404: none yet)."""
    _machine(mill, machine)
    ev = _evidence(request)
    snaps = await run_in_threadpool(ev.latest, mill.id, machine)
    if not snaps:
        raise not_found("raw snapshot", machine=repr(machine))
    views = [waveform_view(s, max_points, spectrum_max_hz) for s in snaps]
    return LatestSnapshots(mill=mill.id, machine=machine, channels=[
        SnapshotChannel(**v, time=datetime.fromtimestamp(v["ts_ns"] / 1e9, UTC)) for v in views])


@router.post("/mills/{mill}/machines/{machine}/snapshot-requests", status_code=status.HTTP_202_ACCEPTED,
             responses={404: {"model": ErrorPublic}})
async def request_snapshot(mill: MaintainableMill, machine: MachinePath, body: SnapshotRequest,
                           user: CurrentUser, request: Request, cloud: CloudDep) -> SnapshotRequested:
    """Ask the mill's edges for the latest raw waveform of a machine's vibration channels (202: queued;
    the snapshot arrives within the edge's daily evidence budget, see ``GET .../snapshots/latest``)."""
    config = _machine(mill, machine)
    channels = [c.name for c in (config.vibration.channels if config.vibration else [])]
    if body.channel is not None:
        if body.channel not in channels:
            raise not_found("vibration channel", repr(body.channel), machine=repr(machine))
        channels = [body.channel]
    if not channels:
        raise not_found("vibration channel", machine=repr(machine))
    edges = [e.id for e in await run_in_threadpool(cloud.meta.edges, [mill.id]) if e.active]
    ev = _evidence(request)
    assets = [f"{mill.id}/{machine}/{c}" for c in channels]
    for a in assets:
        await run_in_threadpool(ev.request, mill.id, a, edges, user.username)
    if cloud.publish_requests is not None:      # MQTT edges get them now; HTTP ones with their next status
        await run_in_threadpool(cloud.publish_requests, mill.id, edges)
    return SnapshotRequested(mill=mill.id, machine=machine, assets=assets, edges=len(edges))
