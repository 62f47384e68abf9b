"""KPIs of a mill over a time range, from the store's rollups (use case; no HTTP).

For each window (the whole range, or each shift of it in the mill's time zone) the service reads
the 1 h rollups (1 min when a window edge is not on a whole hour) of the points the formulas need,
lines them up per machine (``formulas.Buckets``), turns each machine's buckets into additive
``Totals`` and adds those up per line and mill before taking any ratio (see docs/kpis.md).

What a group's output is: the output of its *output stage* — ring frames when it has any, else its
most downstream production stage (a preparation line's roving frames, a winding line's winders) —
so material is never counted twice as it passes from card to draw frame to roving frame. A group's
energy is the energy of all its machines except the energy meters (which measure the same kWh again).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

from spinline.cloud.kpis.formulas import DEFAULT_STANDARD_NE, Buckets, Kpis, Totals, kpis, machine_totals
from spinline.cloud.storage.base import RESOLUTION_NS, Rollup, TimeSeriesStore
from spinline.core.site import STAGE_ORDER, Line, Machine, MachineType, Mill, iter_machines

GroupBy = Literal["machine", "line", "mill", "shift"]


class Cancelled(Exception):
    """The caller went away; the work stopped part-way (nothing to answer)."""

#: Counter points read as increases per bucket, and gauges read as mean (and max).
COUNTERS = ("output", "run_hours", "spindle_hours", "breaks", "energy", "waste")
GAUGES = ("spindle_speed", "twist", "count_ne", "worst5_break_share")
HOUR_NS = RESOLUTION_NS["1h"]
MINUTE_NS = RESOLUTION_NS["1m"]
#: Longest window read at 1 min resolution; longer ragged windows are widened to whole hours.
MAX_MINUTE_SPAN_NS = 7 * 24 * HOUR_NS


@dataclass(frozen=True, slots=True)
class Window:
    start_ns: int
    end_ns: int
    shift: str | None = None     # shift name ("A")
    label: str | None = None     # "2024-05-01 A"

    @property
    def hours(self) -> float:
        return (self.end_ns - self.start_ns) / HOUR_NS


@dataclass(frozen=True, slots=True)
class KpiRow:
    group: str                   # machine | line | mill | shift
    id: str
    name: str
    mill: str
    line: str | None
    machine_type: str | None
    window: Window
    kpis: Kpis


def shift_windows(mill: Mill, start_ns: int, end_ns: int) -> list[Window]:
    """The shifts of ``mill`` (in its time zone) overlapping [start, end), clipped to it, in time order."""
    tz = ZoneInfo(mill.timezone)
    first = datetime.fromtimestamp(start_ns / 1e9, tz).date() - timedelta(days=1)
    last = datetime.fromtimestamp(end_ns / 1e9, tz).date()
    out: list[Window] = []
    d: date = first
    while d <= last:
        for sh in mill.shifts:
            hh, mm = (int(x) for x in sh.start.split(":"))
            s = datetime.combine(d, dtime(hh, mm), tzinfo=tz).astimezone(UTC)
            s_ns = int(s.timestamp()) * 10**9
            e_ns = s_ns + int(sh.hours * HOUR_NS)
            lo, hi = max(s_ns, start_ns), min(e_ns, end_ns)
            if lo < hi:
                out.append(Window(lo, hi, shift=sh.name, label=f"{d.isoformat()} {sh.name}"))
        d += timedelta(days=1)
    return sorted(out, key=lambda w: w.start_ns)


def pick_resolution(windows: Sequence[Window]) -> tuple[Literal["1m", "1h"], list[Window]]:
    """1 h when every window edge is a whole hour; else 1 min, or whole hours for long ranges."""
    if all(w.start_ns % HOUR_NS == 0 and w.end_ns % HOUR_NS == 0 for w in windows):
        return "1h", list(windows)
    span = max(w.end_ns for w in windows) - min(w.start_ns for w in windows)
    if span <= MAX_MINUTE_SPAN_NS:
        return "1m", [replace(w, start_ns=w.start_ns - w.start_ns % MINUTE_NS,
                              end_ns=-(-w.end_ns // MINUTE_NS) * MINUTE_NS) for w in windows]
    return "1h", [replace(w, start_ns=w.start_ns - w.start_ns % HOUR_NS,
                          end_ns=-(-w.end_ns // HOUR_NS) * HOUR_NS) for w in windows]


def output_stage(machines: Sequence[Machine]) -> MachineType | None:
    """Ring frames if any, else the most downstream production stage among ``machines``."""
    types = {m.type for m in machines}
    if MachineType.RING_FRAME in types:
        return MachineType.RING_FRAME
    for stage in reversed(STAGE_ORDER):
        if stage in types:
            return stage
    return None


class _Index:
    """Rollup rows of one query by point: bucket starts and aggregates, sorted by bucket."""

    def __init__(self, r: Rollup | None) -> None:
        self.rows: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        if r is None or not len(r):
            return
        order = np.lexsort((r.bucket_ns, r.point))
        p = r.point[order]
        cuts = np.flatnonzero(np.diff(p)) + 1
        for idx in np.split(order, cuts):
            self.rows[int(r.point[idx[0]])] = (r.bucket_ns[idx], r.mean[idx], r.max[idx], r.delta[idx])

    def within(self, start_ns: int, end_ns: int) -> _Index:
        """The rows with buckets in [start, end) only (what a job of windows there reads)."""
        out = _Index(None)
        for key, rows in self.rows.items():
            sel = (rows[0] >= start_ns) & (rows[0] < end_ns)
            out.rows[key] = (rows[0][sel], rows[1][sel], rows[2][sel], rows[3][sel])
        return out

    def top(self, key: int | None, start_ns: int, end_ns: int) -> float | None:
        """The highest bucket maximum of a point in [start, end); None without data."""
        rows = self.rows.get(key) if key is not None else None
        if rows is None:
            return None
        sel = (rows[0] >= start_ns) & (rows[0] < end_ns) & np.isfinite(rows[2])
        return float(rows[2][sel].max()) if sel.any() else None

    def aligned(self, key: int | None, w: Window, width: int, col: int) -> np.ndarray | None:
        n = (w.end_ns - w.start_ns) // width
        if key is None:
            return None
        out = np.full(n, np.nan)
        rows = self.rows.get(key)
        if rows is None:
            return out
        b = rows[0]
        sel = (b >= w.start_ns) & (b < w.end_ns)
        out[(b[sel] - w.start_ns) // width] = rows[col][sel]
        return out


@dataclass(frozen=True, slots=True)
class _Job:
    """One chunk of windows of one mill with the rollup rows it needs: all ``compute_rows`` reads.

    Plain data (picklable): it crosses to a worker process when the service has an executor.
    """

    mill: Mill
    by: GroupBy
    windows: tuple[Window, ...]
    index: _Index
    keys: dict[tuple[str, str], int]
    width: int
    standard_ne: float
    nominal: dict[str, float | None]


#: Windows computed per job: the caller checks ``cancelled`` between jobs, so this bounds the work
#: that still runs after the client has gone (a shift job of 24 windows takes tens of ms).
WINDOWS_PER_JOB = 24


class KpiService:
    """KPI rows from the store's rollups.

    The store is read in the calling thread (the database does that work, mostly without the GIL);
    the per-window arithmetic, which is Python and numpy on small arrays and holds the GIL, runs on
    ``executor`` when one is given (a process pool: there it cannot hold back the API's event loop
    and its cheap requests), else in the calling thread.
    """

    def __init__(self, store: TimeSeriesStore, executor: Executor | None = None) -> None:
        self.store = store
        self.executor = executor

    def mill_kpis(self, mill: Mill, start_ns: int, end_ns: int, *, by: GroupBy = "mill",
                  standard_ne: float = DEFAULT_STANDARD_NE,
                  cancelled: Callable[[], bool] | None = None) -> list[KpiRow]:
        """KPI rows of one mill over [start, end): per machine, line, the mill, or each shift.

        ``cancelled`` is asked before each job of ``WINDOWS_PER_JOB`` windows: when it says yes
        (nobody waits for the answer any more) the work stops with ``Cancelled``.
        """
        if end_ns <= start_ns:
            raise ValueError("the end must be after the start")
        windows = shift_windows(mill, start_ns, end_ns) if by == "shift" else [Window(start_ns, end_ns)]
        if not windows:
            return []
        res, windows = pick_resolution(windows)
        width = RESOLUTION_NS[res]
        keys = {(p.machine, p.name): p.key for p in self.store.points(mill.id)
                if p.name in COUNTERS or p.name in GAUGES}
        lo, hi = min(w.start_ns for w in windows), max(w.end_ns for w in windows)
        index = _Index(self.store.rollup(sorted(set(keys.values())), lo, hi, res) if keys else _empty_rollup())
        # OEE performance is measured against each frame's top speed over the whole range.
        nominal = {m.id: index.top((keys.get((m.id, "spindle_speed"))), lo, hi) for _, _, m in iter_machines(mill)}
        rows: list[KpiRow] = []
        for i in range(0, len(windows), WINDOWS_PER_JOB):
            if cancelled is not None and cancelled():
                raise Cancelled(f"KPIs of {mill.id} stopped: nobody waits for them")
            chunk = tuple(windows[i:i + WINDOWS_PER_JOB])
            job = _Job(mill, by, chunk, index.within(chunk[0].start_ns, chunk[-1].end_ns), keys, width,
                       standard_ne, nominal)
            rows += compute_rows(job) if self.executor is None else _wait(self.executor.submit(compute_rows, job),
                                                                          mill.id, cancelled)
        return rows


def _wait(job: Future[list[KpiRow]], mill: str, cancelled: Callable[[], bool] | None) -> list[KpiRow]:
    """A job's rows; asks ``cancelled`` while waiting, so a caller that went is let go within a tick
    (also while a worker process starts). A job not started yet is dropped; a running one ends on its own."""
    while True:
        try:
            return job.result(timeout=None if cancelled is None else 0.1)
        except FuturesTimeout:
            if cancelled is not None and cancelled():
                job.cancel()
                raise Cancelled(f"KPIs of {mill} stopped: nobody waits for them") from None


def compute_rows(job: _Job) -> list[KpiRow]:
    """The KPI rows of a job's windows (pure: no store, no I/O; runs in a worker process or inline)."""
    mill, rows = job.mill, []
    for w in job.windows:
        per_machine = {m.id: (line, m, _machine(job, line, m, w)) for _, line, m in iter_machines(mill)}
        if job.by == "machine":
            for line, m, tot in per_machine.values():
                rows.append(KpiRow("machine", m.id, m.name or m.id, mill.id, line.id, m.type.value, w,
                                   kpis(tot, w.hours)))
        elif job.by == "line":
            for ws in mill.workshops:
                for line in ws.lines:
                    group = [per_machine[m.id] for m in line.machines]
                    rows.append(KpiRow("line", line.id, line.name or line.id, mill.id, line.id, None, w,
                                       kpis(_group(group), w.hours)))
        else:
            group = list(per_machine.values())
            kind = "shift" if job.by == "shift" else "mill"
            rows.append(KpiRow(kind, w.label or mill.id, mill.name or mill.id, mill.id, None, None, w,
                               kpis(_group(group), w.hours)))
    return rows


def _machine(job: _Job, line: Line, m: Machine, w: Window) -> Totals:
    width = job.width

    def col(name: str, c: int) -> np.ndarray | None:
        return job.index.aligned(job.keys.get((m.id, name)), w, width, c)

    delta = {n: a for n in COUNTERS if (a := col(n, 3)) is not None}
    mean = {n: a for n in GAUGES if (a := col(n, 1)) is not None}
    mx = {n: a for n in ("spindle_speed",) if (a := col(n, 2)) is not None}
    b = Buckets(bucket_h=width / HOUR_NS, n=int((w.end_ns - w.start_ns) // width), delta=delta, mean=mean, max=mx)
    ring = m.type == MachineType.RING_FRAME
    return machine_totals(b, window_h=w.hours, spindles=m.spindles if ring else None,
                          count_ne=line.count_ne, standard_ne=job.standard_ne, nominal_rpm=job.nominal[m.id])


def _group(members: Sequence[tuple[Line, Machine, Totals]]) -> Totals:
    stage = output_stage([m for _, m, _ in members])
    producing = [t for _, m, t in members if m.type == stage]
    energy = sum(t.energy_kwh for _, m, t in members if m.type != MachineType.ENERGY_METER)
    return replace(Totals.sum(producing), energy_kwh=energy)


def _empty_rollup() -> Rollup:
    i, f = np.empty(0, np.int64), np.empty(0, np.float64)
    return Rollup(point=i, bucket_ns=i, min=f, max=f, mean=f, last=f, count=i, delta=f)

