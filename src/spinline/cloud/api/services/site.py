"""Register a site file with the cloud: its mills into the metadata store, its points into the store."""

from __future__ import annotations

import time

from spinline.cloud.meta.store import MetaStore
from spinline.cloud.storage.base import TimeSeriesStore
from spinline.cloud.storage.catalog import point_infos
from spinline.core.site import Site, all_points


def register_site(site: Site, store: TimeSeriesStore, meta: MetaStore, *, now_ns: int | None = None) -> dict[str, int]:
    """Upsert every mill and its points (idempotent); returns the number of points per mill."""
    now = time.time_ns() if now_ns is None else now_ns
    out: dict[str, int] = {}
    for mill in site.mills:
        meta.upsert_mill(mill, zone=site.zone.id, now_ns=now)
        infos = point_infos(site, mill.id)
        store.register_points(infos)
        meta.set_point_display(mill.id, {r.tag: {
            "description": r.point.description, "min": r.point.min, "max": r.point.max,
            "states": {str(k): v for k, v in (r.point.states or {}).items()} or None,
        } for r in all_points(site, mill.id)})
        out[mill.id] = len(infos)
    return out
