"""Point metadata for the store from the site model (what ``register_points`` wants)."""

from __future__ import annotations

from spinline.cloud.storage.base import PointInfo
from spinline.core.site import Machine, Site, all_points


def point_infos(site: Site, mill_id: str | None = None) -> list[PointInfo]:
    """Every point the cloud accepts for a mill (device and derived points), as ``PointInfo``."""
    out = []
    for r in all_points(site, mill_id):
        report, keepalive = r.report()
        out.append(PointInfo(key=r.key, tag=r.tag, mill=r.mill.id, machine=r.machine.id, name=r.point.name,
                             unit=r.point.unit, kind=r.point.kind.value, interval_s=r.point.interval_s,
                             line=r.line.id, workshop=r.workshop.id, machine_type=r.machine.type.value,
                             deadband=r.point.deadband, rollover=r.point.rollover,
                             iso_class=_iso_class(site, r.machine), report=report, keepalive_s=keepalive))
    return out


def _iso_class(site: Site, machine: Machine) -> str | None:
    """The ISO 20816 machine class of the machine's template (None: no template, or no class given)."""
    tpl = site.templates.get(machine.template) if machine.template is not None else None
    return tpl.iso_class if tpl is not None else None
