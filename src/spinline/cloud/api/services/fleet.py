"""Edge fleet status: each edge's registration, its last status message and its refused batches."""

from __future__ import annotations

from typing import Any

from spinline.cloud.api import schemas as s
from spinline.cloud.meta.store import EdgeRecord
from spinline.cloud.models.registry import ModelRegistry
from spinline.cloud.storage.base import EdgeStatus, TimeSeriesStore


def _get(d: dict[str, Any], *path: str) -> Any:
    cur: Any = d
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def edge_public(rec: EdgeRecord, status: EdgeStatus | None, rejected: dict[str, int],
                models: dict[str, Any] | None = None) -> s.EdgePublic:
    st = status.status if status is not None else {}
    versions = {k: str(v) for k, v in (st.get("versions") or {}).items()} if isinstance(st.get("versions"), dict) \
        else ({"agent": str(st["version"])} if "version" in st else {})
    for asset, m in ((models or {}).get("assets") or {}).items():
        if m.get("running") is not None:
            versions[asset] = str(m["running"])
    num = _get(st, "buffer", "rows")
    nbytes = _get(st, "buffer", "bytes")
    lag = _get(st, "uplink", "lag_s")
    state = _get(st, "uplink", "state")
    return s.EdgePublic(
        id=rec.id, mill=rec.mill, description=rec.description, active=rec.active,
        created_at=s.ts(rec.created_ns), created_by=rec.created_by, revoked_at=s.ts(rec.revoked_ns),
        last_seen=s.ts(status.received_ns) if status is not None else None,
        buffer_rows=int(num) if isinstance(num, int | float) else None,
        buffer_bytes=int(nbytes) if isinstance(nbytes, int | float) else None,
        lag_s=float(lag) if isinstance(lag, int | float) else None,
        uplink_state=str(state) if state is not None else None,
        versions=versions, alarms=[str(a) for a in st.get("alarms") or []],
        rejected=rejected, models=models or {}, status=st)


def fleet(store: TimeSeriesStore, edges: list[EdgeRecord], registry: ModelRegistry | None = None) -> list[s.EdgePublic]:
    """Each edge's registration, last status and refusals; with the registry, desired vs running models."""
    mills = sorted({e.mill for e in edges})
    statuses: dict[str, EdgeStatus] = {}
    models: dict[str, dict[str, Any]] = {}
    for m in mills:
        statuses.update(store.edge_status(m))
        if registry is not None:
            models.update(registry.fleet(m, [e.id for e in edges if e.mill == m]))
    rejected = store.rejections()
    return [edge_public(e, statuses.get(e.id), rejected.get(e.id, {}), models.get(e.id)) for e in edges]
