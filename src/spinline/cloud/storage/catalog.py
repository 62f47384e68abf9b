"""Point metadata for the store from the site model (what ``register_points`` wants)."""

from __future__ import annotations

from spinline.cloud.storage.base import PointInfo
from spinline.core.site import Site, all_points


def point_infos(site: Site, mill_id: str | None = None) -> list[PointInfo]:
    """Every point the cloud accepts for a mill (device and derived points), as ``PointInfo``."""
    return [PointInfo(key=r.key, tag=r.tag, mill=r.mill.id, machine=r.machine.id, name=r.point.name,
                      unit=r.point.unit, kind=r.point.kind.value, interval_s=r.point.interval_s,
                      line=r.line.id, workshop=r.workshop.id, machine_type=r.machine.type.value,
                      deadband=r.point.deadband, rollover=r.point.rollover)
            for r in all_points(site, mill_id)]
