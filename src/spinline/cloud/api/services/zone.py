"""The zone overview: every mill in scope on one screen, in one call.

Per mill: status from its edges' last status messages, today's KPIs (local midnight to now, from
the 1 h rollups through ``KpiService``), the carbon intensity of today's electricity, the health
index with the worst asset, open alarms by severity and overdue work orders, and edges online.
Nothing here reads raw rows, and a call costs a handful of queries whatever the number of mills:
one ``latest`` read for the health of every asset (``health_pipeline.latest_health_of``), one
grouped SQL query each for alarms and work orders, one read of the edges' status.

Today's KPIs come from the rollups, which change only when they are refreshed (every
``rollup_refresh_s``); computing them costs tens of milliseconds of numpy per mill, so they are
kept per mill for ``kpi_max_age_s`` and recomputed by the app in the background
(``refresh``, every ``zone_refresh_s``): a request pays for a mill's KPIs only when nothing fresh
is kept (the first call after start). Each row says when its KPIs were computed (``kpis_at``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from spinline.carbon.factors import FactorError, FactorLibrary, grid_regions
from spinline.cloud.api import schemas as s
from spinline.cloud.api.services.fleet import edge_public
from spinline.cloud.kpis.formulas import Kpis
from spinline.cloud.kpis.service import KpiService
from spinline.cloud.maintenance.pipeline import Asset, assets_of, latest_health_of
from spinline.cloud.maintenance.store import HealthQueries
from spinline.cloud.meta.store import EdgeRecord, MillRecord
from spinline.cloud.storage.base import EdgeStatus, TimeSeriesStore
from spinline.core.site import MachineType, iter_machines
from spinline.health.health_index import status

#: An edge whose last status message is older than this is offline. An edge sends its status on change
#: and otherwise every 60 s (``EdgeSettings.status_heartbeat_s``, the uplink budget): two missed heartbeats
#: and a margin, so a healthy edge never flaps offline between heartbeats.
EDGE_ONLINE_S = 150.0
#: A mill whose edges lag more than this behind (buffered, not yet delivered) is degraded.
LAG_DEGRADED_S = 300.0
CARBON_BASIS = ("today: kWh/kg of today x the location-based grid emission factor of the mill's province "
                "(Scope 2 electricity only; the month's full inventory is GET /mills/{mill}/carbon/{month})")


def day_start_ns(timezone: str, now_ns: int) -> int:
    """Local midnight of ``now`` in ``timezone``, in UTC nanoseconds."""
    tz = ZoneInfo(timezone)
    local = datetime.fromtimestamp(now_ns / 1e9, tz)
    midnight = datetime(local.year, local.month, local.day, tzinfo=tz)
    return int(midnight.astimezone(UTC).timestamp()) * 10**9


def mill_status(edges: Sequence[s.EdgePublic], now_ns: int) -> tuple[str, str]:
    """running / degraded / offline from the mill's active edges, and why."""
    active = [e for e in edges if e.active]
    if not active:
        return "offline", "no active edge"
    cutoff = datetime.fromtimestamp((now_ns - EDGE_ONLINE_S * 1e9) / 1e9, UTC)
    online = [e for e in active if e.last_seen is not None and e.last_seen >= cutoff]
    if not online:
        return "offline", f"no edge reported in the last {EDGE_ONLINE_S:.0f} s"
    if len(online) < len(active):
        return "degraded", f"{len(active) - len(online)} of {len(active)} edges silent"
    lag = max((e.lag_s or 0.0) for e in online)
    if lag > LAG_DEGRADED_S:
        return "degraded", f"edge data {lag:.0f} s behind"
    return "running", "every edge reporting"


def _num(x: float | None, nd: int = 3) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, nd)


@dataclass(frozen=True, slots=True)
class _Kept:
    day_start_ns: int
    standard_ne: float
    computed_ns: int
    kpis: Kpis


@dataclass
class ZoneOverview:
    """The use case (no HTTP): built once per app; keeps today's KPIs per mill, the point list and the
    emission-factor library."""

    store: TimeSeriesStore
    kpis: KpiService
    queries: HealthQueries
    #: Today's KPIs of a mill older than this are recomputed in the request.
    kpi_max_age_s: float = 60.0
    #: The registered points (for the vibration assets) are re-read at most this often.
    points_ttl_s: float = 10.0
    _library: FactorLibrary | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, float], _Kept] = {}
        self._assets: tuple[float, list[Asset]] | None = None

    def assets(self) -> list[Asset]:
        """The vibration assets of every mill (from the registered points, re-read every ``points_ttl_s``)."""
        now = time.monotonic()
        with self._lock:
            hit = self._assets
        if hit is not None and now - hit[0] < self.points_ttl_s:
            return hit[1]
        found = assets_of(self.store.points())
        with self._lock:
            self._assets = (now, found)
        return found

    def today_kpis(self, m: MillRecord, now_ns: int, standard_ne: float, *, fresh: bool = False) -> tuple[Kpis, int]:
        """Today's KPIs of a mill and when they were computed: kept ones when fresh enough (same day and count)."""
        start = day_start_ns(m.timezone, now_ns)
        with self._lock:
            kept = self._kept.get((m.id, standard_ne))
        if not fresh and kept is not None and kept.day_start_ns == start and kept.standard_ne == standard_ne \
                and now_ns - kept.computed_ns < self.kpi_max_age_s * 1e9:
            return kept.kpis, kept.computed_ns
        # up to now, as the mill's own KPIs of today are asked for: production efficiency's base is every
        # planned hour of the window, so a window to the end of the current hour counted the minutes
        # still to come as time the frames stood (83 % in the zone beside 94 % in the mill view)
        end = max(now_ns, start + 60 * 10**9)
        k = self.kpis.mill_kpis(m.config, start, end, by="mill", standard_ne=standard_ne)[0].kpis
        with self._lock:
            self._kept[(m.id, standard_ne)] = _Kept(start, standard_ne, now_ns, k)
        return k, now_ns

    def refresh(self, mills: Sequence[MillRecord], standard_ne: float) -> None:
        """Recompute today's KPIs of every mill (the app runs this in the background)."""
        now = time.time_ns()
        for m in mills:
            self.today_kpis(m, now, standard_ne, fresh=True)

    def library(self) -> FactorLibrary:
        with self._lock:
            if self._library is None:
                self._library = FactorLibrary.load()
            return self._library

    def grid_factor(self, mill: MillRecord, year: int) -> tuple[float, str] | None:
        try:
            sel = self.library().select("grid_location", grid_regions(mill.config.province, mill.config.grid_region),
                                        year)
        except FactorError:
            return None
        return sel.factor.value, sel.factor.id

    def overview(self, mills: Sequence[MillRecord], edges: Sequence[EdgeRecord], *, standard_ne: float,
                 now_ns: int | None = None) -> s.ZoneOverviewPublic:
        now = time.time_ns() if now_ns is None else now_ns
        ids = [m.id for m in mills]
        statuses: dict[str, EdgeStatus] = self.store.edge_status() if ids else {}
        rejected = self.store.rejections() if ids else {}
        by_mill: dict[str, list[s.EdgePublic]] = {}
        for e in edges:
            by_mill.setdefault(e.mill, []).append(edge_public(e, statuses.get(e.id), rejected.get(e.id, {})))
        now_naive = datetime.fromtimestamp(now / 1e9, UTC).replace(tzinfo=None)
        alarms = self.queries.open_alarm_counts(ids) if ids else {}
        orders = self.queries.order_counts(ids, now_naive) if ids else {}
        year = datetime.fromtimestamp(now / 1e9, UTC).year
        wanted = set(ids)
        healths = latest_health_of(self.store, [a for a in self.assets() if a.mill in wanted]) if ids else {}
        rows = []
        for m in mills:
            start = day_start_ns(m.timezone, now)
            k, kpis_at = self.today_kpis(m, now, standard_ne)
            health = healths.get(m.id, [])
            hp = None
            if health:
                # the mill's index is its worst asset's (the rollup of /health takes the minimum at each level)
                worst = min(health, key=lambda h: h.health.value)
                hp = s.ZoneHealthPublic(value=round(worst.health.value, 1), status=status(worst.health.value),
                                        worst_asset=worst.asset.id, worst_machine=worst.asset.machine,
                                        driver=worst.health.index.driver, assets=len(health))
            mine = by_mill.get(m.id, [])
            st, why = mill_status(mine, now)
            cutoff = datetime.fromtimestamp((now - EDGE_ONLINE_S * 1e9) / 1e9, UTC)
            online = [e for e in mine if e.active and e.last_seen is not None and e.last_seen >= cutoff]
            lags = [e.lag_s for e in online if e.lag_s is not None]
            seen = [e.last_seen for e in mine if e.last_seen is not None]
            sev = alarms.get(m.id, {})
            factor = self.grid_factor(m, year)
            sec = k.sec_kwh_per_kg
            co2 = sec * factor[0] if sec is not None and factor is not None else None
            n_open, n_late = orders.get(m.id, (0, 0))
            rows.append(s.MillOverviewPublic(
                id=m.id, name=m.name or m.id, names=m.config.names, zone=m.zone, timezone=m.timezone, status=st,  # type: ignore[arg-type]
                status_reason=why, day_start=s.ts(start), kpis_at=s.ts(kpis_at), output_today_kg=round(k.output_kg, 1),
                std_output_today_kg=_num(k.std_output_kg, 1), count_ne=_num(k.count_ne, 2),
                spindles=sum(mc.spindles or 0 for _, _, mc in iter_machines(m.config)
                             if mc.type == MachineType.RING_FRAME),
                std_gps_g=_num(k.std_gps_g, 1), efficiency_pct=_num(k.efficiency_pct, 1),
                ends_down_per_1000_spindle_h=_num(k.ends_down_per_1000_spindle_h, 1),
                energy_today_kwh=round(k.energy_kwh, 1), kwh_per_kg=_num(sec), kgco2e_per_kg_today=_num(co2),
                carbon_factor=factor[1] if factor else None, health=hp,
                alarms_open=s.AlarmCounts(info=sev.get("info", 0), warning=sev.get("warning", 0),
                                          critical=sev.get("critical", 0), total=sum(sev.values())),
                work_orders_open=n_open, work_orders_overdue=n_late,
                edges=s.EdgeCounts(online=len(online), total=len([e for e in mine if e.active]),
                                   max_lag_s=_num(max(lags), 1) if lags else None,
                                   last_seen=max(seen) if seen else None)))
        return s.ZoneOverviewPublic(generated_at=s.ts(now), standard_ne=standard_ne, carbon_basis=CARBON_BASIS,
                                    edge_online_within_s=EDGE_ONLINE_S, mills=rows)
