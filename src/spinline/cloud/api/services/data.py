"""Reading a mill's data: the tree, latest values, ranges and rollups, always within one mill.

Every function takes the mill (already checked by the caller's dependency) or resolves a point to
its mill and lets the caller check it; nothing here reads across mills.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from spinline.cloud.api import schemas as s
from spinline.cloud.meta.store import MillRecord
from spinline.cloud.storage.base import PointInfo, TimeSeriesStore
from spinline.core.site import EDGE_MACHINE_ID, iter_machines


def _floats(a: np.ndarray) -> list[float | None]:
    """JSON numbers, None for NaN or infinity (one pass in numpy when every value is finite, as usual)."""
    if np.isfinite(a).all():
        return a.astype(np.float64).tolist()  # type: ignore[no-any-return]
    return [None if not np.isfinite(v) else float(v) for v in a.tolist()]


def mill_public(rec: MillRecord) -> s.MillPublic:
    m = rec.config
    machines = [mc for _, _, mc in iter_machines(m)]
    return s.MillPublic(id=rec.id, name=rec.name, names=m.names,
                        zone=rec.zone, timezone=rec.timezone, province=m.province,
                        shifts=[s.ShiftPublic(name=x.name, start=x.start, hours=x.hours) for x in m.shifts],
                        machines=len(machines), spindles=sum(mc.spindles or 0 for mc in machines))


def tree(rec: MillRecord, points: Sequence[PointInfo]) -> s.MillTree:
    """workshops -> lines -> machines -> points, in site-file order, with the store's point keys."""
    by_machine: dict[str, list[s.PointPublic]] = {}
    for p in points:
        by_machine.setdefault(p.machine, []).append(s.PointPublic(key=str(p.key), tag=p.tag, name=p.name, unit=p.unit,
                                                                  kind=p.kind, interval_s=p.interval_s))
    workshops = []
    for ws in rec.config.workshops:
        lines = []
        for line in ws.lines:
            machines = [s.MachineNode(id=m.id, name=m.name or m.id, names=m.names,
                                      type=m.type.value, spindles=m.spindles,
                                      rated_kw=m.rated_kw, points=by_machine.get(m.id, []))
                        for m in line.machines]
            lines.append(s.LineNode(id=line.id, name=line.name or line.id, names=line.names, count_ne=line.count_ne,
                                    machines=machines))
        workshops.append(s.WorkshopNode(id=ws.id, name=ws.name or ws.id, names=ws.names, lines=lines))
    edge_points = by_machine.get(EDGE_MACHINE_ID)
    if edge_points:
        workshops.append(s.WorkshopNode(id=EDGE_MACHINE_ID, name="edge agent", lines=[s.LineNode(
            id=EDGE_MACHINE_ID, name="edge agent", count_ne=None, machines=[s.MachineNode(
                id=EDGE_MACHINE_ID, name="edge agent", type="edge", spindles=None, rated_kw=None,
                points=edge_points)])]))
    return s.MillTree(zone=rec.zone, id=rec.id, name=rec.name or rec.id, names=rec.config.names, workshops=workshops)


def select_points(points: Sequence[PointInfo], wanted: Iterable[str] | None) -> list[PointInfo]:
    """The points named in ``wanted`` (tags, keys, or ``machine/point`` within the mill); all if None.

    Names that match nothing are ignored, so a name of another mill's point simply selects nothing.
    """
    if wanted is None:
        return list(points)
    names = {w.strip() for w in wanted if w.strip()}
    out = []
    for p in points:
        if p.tag in names or str(p.key) in names or f"{p.machine}/{p.name}" in names:
            out.append(p)
    return out


def latest(store: TimeSeriesStore, points: Sequence[PointInfo]) -> list[s.LatestValue]:
    if not points:
        return []
    by_key = {p.key: p for p in points}
    b = store.latest(list(by_key))
    out = []
    for k, t, v, q in zip(b.point.tolist(), b.ts_ns.tolist(), b.value.tolist(), b.quality.tolist(), strict=True):
        p = by_key.get(int(k))
        if p is None:
            continue
        out.append(s.LatestValue(tag=p.tag, key=str(p.key), ts=s.ts(int(t)), value=v if np.isfinite(v) else None,
                                 quality=int(q)))
    return sorted(out, key=lambda x: x.tag)


def find_point(store: TimeSeriesStore, ref: str, mills: Iterable[str] | None) -> PointInfo | None:
    """A point by tag (``mill/machine/point``) or key, looked up only among ``mills`` (None: all)."""
    ref = ref.strip()
    if "/" in ref:
        mill = ref.split("/", 1)[0]
        if mills is not None and mill not in set(mills):
            return None
        return next(iter(store.points(mill, tag=ref)), None)
    try:
        key = int(ref)
    except ValueError:
        return None
    pools = [store.points()] if mills is None else [store.points(m) for m in mills]
    return next((p for pool in pools for p in pool if p.key == key), None)


def series(store: TimeSeriesStore, p: PointInfo, start_ns: int, end_ns: int, max_points: int | None,
           resolution: str) -> s.SeriesPublic:
    r = store.range(p.key, start_ns, end_ns, max_points=max_points, resolution=resolution)  # type: ignore[arg-type]
    return s.SeriesPublic(tag=p.tag, key=str(p.key), unit=p.unit, resolution=r.resolution, reduced=r.reduced,
                          ts_ms=(r.ts_ns // 1_000_000).tolist(), value=_floats(r.value))


def rollup(store: TimeSeriesStore, p: PointInfo, start_ns: int, end_ns: int, resolution: str) -> s.RollupPublic:
    r = store.rollup([p.key], start_ns, end_ns, resolution)  # type: ignore[arg-type]
    order = np.argsort(r.bucket_ns, kind="stable")
    return s.RollupPublic(tag=p.tag, key=str(p.key), unit=p.unit, kind=p.kind, resolution=resolution,  # type: ignore[arg-type]
                          bucket_ms=(r.bucket_ns[order] // 1_000_000).tolist(), min=_floats(r.min[order]),
                          max=_floats(r.max[order]), mean=_floats(r.mean[order]), last=_floats(r.last[order]),
                          count=r.count[order].tolist(), delta=_floats(r.delta[order]))
