"""The cloud's health pipeline: vibration features in the store -> alarms, work orders, health index.

The edge emits per vibration channel the points ``vib_<channel>_<feature>`` (``core.site.VIB_FEATURES``).
Each run of ``HealthPipeline.run_once`` reads, per asset (``<machine>/<channel>``, the naming the
maintenance routes use), the samples written since the asset's **watermark**, and feeds them in time
order to the alarm rules of ``spinline.health.alarms`` (``cloud_rules``: anomaly score, ISO zone
change, health index low, health index falling fast; with hysteresis and repeat suppression).

* A raised alarm is recorded in ``HealthStore`` with the diagnosis as evidence (the dominant
  envelope line env_bpfo/env_bpfi/env_bsf, velocity RMS and ISO zone, what drove the health index).
* An alarm of severity ``order_severity`` or worse opens a work order (one open order per asset:
  later alarms of the same asset are noted on it), priority from the severity.
* The condition clearing (past the rule's hysteresis, for its off delay) clears the alarm.
* The health index of each sample is the edge's ``health_index`` where it sent one, else computed
  here (``spinline.health.health_index``); ``latest_health`` gives the current one per asset, which
  the ``/health`` route shows and the work-order ``verify`` step checks (a repair is verified by the
  machine, not by the fitter's word).

Restart safety: the watermark, the rules' hysteresis counters and the asset's best ISO zone are
kept per asset in the metadata database (table ``health_pipeline_state``), and the open alarms are
re-adopted from ``HealthStore``, so a restarted pipeline neither re-reads old samples nor raises an
alarm that is already open. Alarm and order ids derive from (mill, asset, rule, sample time), so
re-processing a sample after a crash between saving an alarm and saving the watermark rewrites
nothing.

Known limit: a sample older than its asset's watermark when it arrives (an edge's backlog sent
after newer live data was already evaluated) is stored and charted but not evaluated by the rules;
``settle_s`` holds back the newest seconds so the features of one snapshot arrive together.

Size: the asset model, the health assessment and the restart-safe run of one asset belong together:
the run's order (alarms, then work orders, then the watermark) is the pipeline's correctness, and it
reads as one story here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from spinline.cloud.maintenance.store import HealthStore
from spinline.cloud.settings import Settings
from spinline.cloud.storage.base import PointInfo, TimeSeriesStore
from spinline.core.errors import StorageError
from spinline.core.site import VIB_FEATURES
from spinline.core.texts import Text
from spinline.health.alarms import (
    Alarm,
    AlarmEngine,
    Rule,
    Severity,
    Step,
    ThresholdRule,
    default_rules,
    state_from_counters,
)
from spinline.health.diagnosis import diagnose
from spinline.health.features import ISO_ZONES
from spinline.health.health_index import HealthIndex, health_index
from spinline.health.workorders import WorkOrder

logger = logging.getLogger(__name__)

#: Who the pipeline's alarm and order steps are recorded as.
ACTOR = "health-pipeline"
#: ``evidence["source"]`` of the alarms this pipeline raises (edge-raised ones say "edge").
SOURCE = "cloud"
FEATURES: tuple[str, ...] = tuple(sorted((n for n, _ in VIB_FEATURES), key=len, reverse=True))
ENVELOPE: tuple[tuple[str, str], ...] = (("env_bpfo", "outer race (BPFO)"), ("env_bpfi", "inner race (BPFI)"),
                                         ("env_bsf", "rolling element (BSF)"))
_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
#: Window of the "health falling" rate (one-sided: a repair raising the index is no alarm).
FALL_WINDOW_S = 3600.0

state_metadata = sa.MetaData()
state_t = sa.Table(
    "health_pipeline_state", state_metadata,
    sa.Column("mill", sa.String(64), primary_key=True),
    sa.Column("asset", sa.String(255), primary_key=True),
    sa.Column("watermark_ns", sa.BigInteger, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("updated_ns", sa.BigInteger, nullable=False),
)


def cloud_rules() -> list[Rule]:
    """The edge's rule set (``default_rules``) plus a one-sided rate rule on the health index."""
    return [*default_rules(),
            ThresholdRule("health_falling", "health_drop_per_h", high=20.0, hysteresis=5.0, on_delay=2, off_delay=2,
                          severity=Severity.WARNING)]


# --- assets and their current health ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Asset:
    """One vibration channel of a machine, with the keys of its feature points."""

    mill: str
    line: str
    machine: str
    channel: str
    points: Mapping[str, int]  # feature -> point key
    #: ISO 20816 machine class registered with the points (from the machine's template); None: unknown.
    iso_class: str | None = None

    @property
    def id(self) -> str:
        return f"{self.machine}/{self.channel}"


_ISO_CLASSES = ("I", "II", "III", "IV")
_unknown_class_noted: set[tuple[str, str]] = set()


def asset_class(asset: Asset, override: Callable[[str, str], str] | None = None) -> str:
    """The ISO 20816 class to judge ``asset``'s velocity by: ``override(mill, machine)`` when given, else
    the class registered with its points; class I (the strictest) with a note logged once when unknown."""
    if override is not None:
        return override(asset.mill, asset.machine)
    if asset.iso_class in _ISO_CLASSES:
        return asset.iso_class
    key = (asset.mill, asset.machine)
    if key not in _unknown_class_noted:
        _unknown_class_noted.add(key)
        logger.info("health: ISO 20816 class of %s/%s not known (%r), judging it as class I",
                    asset.mill, asset.machine, asset.iso_class)
    return "I"


def split_feature(name: str) -> tuple[str, str] | None:
    """``vib_main_motor_velocity_rms`` -> ("main_motor", "velocity_rms"); None for other points."""
    if not name.startswith("vib_"):
        return None
    for feat in FEATURES:
        if name.endswith("_" + feat) and len(name) > len("vib_") + len(feat) + 1:
            return name[len("vib_"):-len(feat) - 1], feat
    return None


def assets_of(points: Iterable[PointInfo], mill: str | None = None) -> list[Asset]:
    """The vibration assets among registered points (of one mill), sorted by mill and id."""
    found: dict[tuple[str, str, str], tuple[str, dict[str, int]]] = {}
    classes: dict[tuple[str, str], str] = {}
    for p in points:
        if mill is not None and p.mill != mill:
            continue
        if p.iso_class is not None:
            classes.setdefault((p.mill, p.machine), p.iso_class)
        split = split_feature(p.name)
        if split is None:
            continue
        channel, feat = split
        found.setdefault((p.mill, p.machine, channel), (p.line, {}))[1][feat] = p.key
    return [Asset(m, line, machine, ch, keys, classes.get((m, machine)))
            for (m, machine, ch), (line, keys) in sorted(found.items())]


@dataclass(frozen=True, slots=True)
class AssetHealth:
    """The health of one asset at one sample, with what drove it."""

    index: HealthIndex
    #: "edge" when the edge computed the index, "cloud" when it was computed here.
    source: str
    features: dict[str, float]
    dominant_envelope: tuple[str, float] | None
    iso_zone: str | None

    @property
    def value(self) -> float:
        return self.index.value

    def texts(self) -> list[Text]:
        """The parts of ``explain`` as message keys and parameters (the console's languages)."""
        parts = [self.index.text()]
        if self.dominant_envelope is not None:
            feat, v = self.dominant_envelope
            others = ", ".join(f"{f} {self.features[f]:.1f}x" for f, _ in ENVELOPE
                               if f != feat and f in self.features)
            p = {"feature": feat, "defect": dict(ENVELOPE)[feat], "ratio": f"{v:.1f}"}
            parts.append(Text("health.envelope_line_others", {**p, "others": others}) if others
                         else Text("health.envelope_line", p))
        vel = self.features.get("velocity_rms")
        if vel is not None:
            parts.append(Text("health.velocity_zone", {"velocity": f"{vel:.2f}", "zone": self.iso_zone})
                         if self.iso_zone else Text("health.velocity", {"velocity": f"{vel:.2f}"}))
        return parts

    def explain(self) -> str:
        return "; ".join(t.en for t in self.texts())


def _finite(x: Mapping[str, float], k: str) -> float | None:
    v = x.get(k)
    return float(v) if v is not None and math.isfinite(v) else None


def assess(x: Mapping[str, float], machine_class: str = "I") -> AssetHealth:
    """Health of one sample of an asset's features (``vib_<channel>_<feature>`` values by feature)."""
    feats = {k: float(v) for k, v in x.items() if math.isfinite(v)}
    computed = health_index(anomaly_score=_finite(feats, "anomaly_score"), velocity_rms=_finite(feats, "velocity_rms"),
                            machine_class=machine_class)
    edge_hi = _finite(feats, "health_index")
    index = computed if edge_hi is None else HealthIndex(round(min(max(edge_hi, 0.0), 100.0), 2), computed.driver,
                                                         computed.penalties)
    env = [(f, feats[f]) for f, _ in ENVELOPE if f in feats]
    zone = _finite(feats, "iso_zone")
    return AssetHealth(index, "cloud" if edge_hi is None else "edge", feats,
                       max(env, key=lambda kv: kv[1]) if env else None,
                       ISO_ZONES[int(min(max(zone, 0), 3))] if zone is not None else None)


@dataclass(frozen=True, slots=True)
class LatestHealth:
    asset: Asset
    at: datetime
    health: AssetHealth


def latest_health(store: TimeSeriesStore, mill: str, machine_class: Callable[[str], str] | None = None,
                  ) -> list[LatestHealth]:
    """The latest health of every asset of ``mill`` with data (from the latest value of each feature)."""
    return latest_health_of(store, assets_of(store.points(mill), mill), machine_class).get(mill, [])


def latest_health_of(store: TimeSeriesStore, assets: Sequence[Asset],
                     machine_class: Callable[[str], str] | None = None) -> dict[str, list[LatestHealth]]:
    """``latest_health`` of ``assets`` (any number of mills) with ONE ``latest`` read, by mill."""
    keys = [k for a in assets for k in a.points.values()]
    if not keys:
        return {}
    b = store.latest(keys)
    by_key = {int(p): (int(t), float(v)) for p, t, v in zip(b.point, b.ts_ns, b.value, strict=True)}
    out: dict[str, list[LatestHealth]] = {}
    for a in assets:
        got = {f: by_key[k] for f, k in a.points.items() if k in by_key}
        if not got:
            continue
        ts = max(t for t, _ in got.values())
        cls = machine_class(a.machine) if machine_class is not None else asset_class(a)
        out.setdefault(a.mill, []).append(LatestHealth(a, _dt(ts), assess({f: v for f, (_, v) in got.items()}, cls)))
    return out


def measured_health(store: TimeSeriesStore, mill: str, asset: str) -> float | None:
    """The latest health index of ``asset`` ("machine/channel", or a machine: its worst channel); None: no data."""
    vals = [h.health.value for h in latest_health(store, mill)
            if h.asset.id == asset or (h.asset.machine == asset and "/" not in asset)]
    return min(vals) if vals else None


# --- the pipeline -----------------------------------------------------------------------------------

def _dt(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).replace(tzinfo=None)


def _iso(d: datetime) -> str:
    return d.isoformat()


def stable_id(prefix: str, at: datetime, *parts: str) -> str:
    """An id that the same inputs always give (so re-processing a sample rewrites nothing)."""
    h = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=6).hexdigest()
    return f"{prefix}-{at:%Y%m%d%H%M%S}-{h}"


@dataclass
class RunReport:
    """What one run did (for logs and tests)."""

    samples: int = 0
    raised: list[Alarm] = field(default_factory=list)
    cleared: list[Alarm] = field(default_factory=list)
    orders: list[WorkOrder] = field(default_factory=list)
    #: Assets ("mill/machine/channel") whose evaluation failed in this run (logged, retried next run).
    failed: list[str] = field(default_factory=list)


class HealthPipeline:
    """Evaluates the alarm rules over new feature samples (see module docstring). Synchronous."""

    def __init__(self, store: TimeSeriesStore, health: HealthStore, *, rules: Callable[[], list[Rule]] = cloud_rules,
                 rearm_s: float = 3600.0, order_severity: Severity = Severity.CRITICAL, lookback_s: float = 86400.0,
                 settle_s: float = 5.0, machine_class: Callable[[str, str], str] | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.store = store
        self.health = health
        self.rules = rules
        self.rearm_s = rearm_s
        self.order_severity = order_severity
        self.lookback_s = lookback_s
        self.settle_s = settle_s
        self.machine_class = machine_class
        self.clock = clock
        #: (mill, asset) whose last evaluation failed: logged once, and once when it recovers.
        self._failing_assets: set[tuple[str, str]] = set()

    @property
    def engine(self) -> Engine:
        return self.health.engine

    def create_schema(self) -> None:
        self.health.create_schema()
        try:
            state_metadata.create_all(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"cannot create the health pipeline table: {exc}") from exc

    def watermark(self, mill: str, asset: str) -> int | None:
        with self.engine.connect() as c:
            return c.execute(sa.select(state_t.c.watermark_ns).where(state_t.c.mill == mill,
                                                                      state_t.c.asset == asset)).scalar()

    def run_once(self, mill: str | None = None) -> RunReport:
        """Evaluate every asset (of ``mill``) up to now minus ``settle_s``."""
        report = RunReport()
        end_ns = self.clock() - int(self.settle_s * 1e9)
        try:
            assets = assets_of(self.store.points(mill), mill)
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"health pipeline: {exc}") from exc
        failing = self._failing_assets
        for a in assets:
            # One asset failing (bad data, a store error on its rows) must not stop the others.
            key = (a.mill, a.id)
            try:
                self._run_asset(a, end_ns, report)
            except Exception:
                report.failed.append(f"{a.mill}/{a.id}")
                if key not in failing:
                    logger.exception("health pipeline: asset %s/%s failed; the others go on", a.mill, a.id)
                failing.add(key)
                continue
            if key in failing:
                failing.discard(key)
                logger.info("health pipeline: asset %s/%s recovered", a.mill, a.id)
        return report

    # --- one asset ---------------------------------------------------------------------------

    def _load_state(self, a: Asset) -> tuple[int | None, dict[str, Any]]:
        with self.engine.connect() as c:
            r = c.execute(sa.select(state_t.c.watermark_ns, state_t.c.state).where(
                state_t.c.mill == a.mill, state_t.c.asset == a.id)).first()
        return (None, {}) if r is None else (int(r[0]), json.loads(r[1]))

    def _save_state(self, a: Asset, watermark_ns: int, state: dict[str, Any]) -> None:
        row = {"watermark_ns": watermark_ns, "state": json.dumps(state), "updated_ns": self.clock()}
        with self.engine.begin() as c:
            n = c.execute(sa.update(state_t).where(state_t.c.mill == a.mill, state_t.c.asset == a.id)
                          .values(**row)).rowcount
            if not n:
                c.execute(sa.insert(state_t).values(mill=a.mill, asset=a.id, **row))

    def _samples(self, a: Asset, start_ns: int, end_ns: int) -> list[tuple[int, dict[str, float]]]:
        rows: dict[int, dict[str, float]] = {}
        for feat, key in a.points.items():
            s = self.store.range(key, start_ns, end_ns, resolution="raw")
            for t, v in zip(s.ts_ns.tolist(), s.value.tolist(), strict=True):
                rows.setdefault(int(t), {})[feat] = float(v)
        return sorted(rows.items())

    def _run_asset(self, a: Asset, end_ns: int, report: RunReport) -> None:
        wm, state = self._load_state(a)
        start_ns = wm + 1 if wm is not None else end_ns - int(self.lookback_s * 1e9)
        if start_ns >= end_ns:
            return
        samples = self._samples(a, start_ns, end_ns)
        if not samples:
            return
        hs = self.health
        engine = AlarmEngine(self.rules(), rearm_s=self.rearm_s)
        mine = [al for al in hs.list_alarms(a.mill, asset=a.id) if al.evidence.get("source") == SOURCE]
        cleared_at: dict[str, datetime] = {}
        for al in mine:
            if not al.is_open:
                cleared_at[al.rule] = max(cleared_at.get(al.rule, al.history[-1].at), al.history[-1].at)
        adopted = [al for al in mine if al.is_open]
        # The alarm store is the record of alarms and clear times; the saved state holds the counters.
        saved = state.get("alarm_state") or state_from_counters(a.id, state.get("rules", {}))
        engine.restore_state(saved, open_alarms=adopted, cleared_at=cleared_at)
        counts = {x.id: x.count for x in adopted}
        best_zone = state.get("best_zone")
        falls: list[tuple[float, float]] = [(float(t), float(v)) for t, v in state.get("falls", [])]
        cls = asset_class(a, self.machine_class)
        raised: list[tuple[Alarm, AssetHealth]] = []
        for ts, x in samples:
            at = _dt(ts)
            h = assess(x, cls)
            zone = _finite(x, "iso_zone")
            if zone is not None:
                best_zone = zone if best_zone is None else min(best_zone, zone)
            t_s = ts / 1e9
            falls = [(t, v) for t, v in falls if t_s - t <= FALL_WINDOW_S] + [(t_s, h.value)]
            dt_h = (falls[-1][0] - falls[0][0]) / 3600.0
            drop = max(0.0, (max(v for _, v in falls) - h.value) / max(dt_h, 1 / 60)) if len(falls) > 1 else 0.0
            values = {**h.features, "health_index": h.value, "health_drop_per_h": drop,
                      "iso_zone_baseline": best_zone if best_zone is not None else -math.inf}
            for alarm in engine.evaluate(a.id, at, values, self._evidence(a, h)):
                alarm.id = stable_id("AL", at, a.mill, a.id, alarm.rule)
                raised.append((alarm, h))
        last_health = assess(samples[-1][1], cls)
        # Persist: alarms first (idempotent ids), then the orders, then the watermark.
        for alarm in engine.alarms:
            if alarm.id in counts and alarm.is_open and alarm.count == counts[alarm.id]:
                continue  # adopted and unchanged
            if any(alarm is r for r, _ in raised):
                if hs.get_alarm(alarm.id) is not None:
                    continue  # already recorded by an interrupted run
                hs.save_alarm(a.mill, alarm)
                report.raised.append(alarm)
            else:
                self._merge_adopted(a.mill, alarm, report)
        for alarm, h in raised:
            if severe_enough(alarm.severity, self.order_severity):
                wo = open_work_order(hs, a.mill, alarm, h.value)
                if wo is not None:
                    report.orders.append(wo)
        self._save_state(a, samples[-1][0], {
            "alarm_state": engine.export_state(a.id), "best_zone": best_zone, "falls": [[t, v] for t, v in falls],
            "health": last_health.value, "driver": last_health.index.driver, "at": _iso(_dt(samples[-1][0]))})
        report.samples += len(samples)

    def _merge_adopted(self, mill: str, alarm: Alarm, report: RunReport) -> None:
        """Save an adopted alarm's new count or clearing over its current record (a person may have acted)."""
        got = self.health.get_alarm(alarm.id)
        if got is None:
            return
        cur = got[1]
        cur.count = max(cur.count, alarm.count)
        if not alarm.is_open and cur.is_open:
            step = alarm.history[-1]
            cur.clear(step.by, step.at, step.comment)
            report.cleared.append(cur)
        self.health.save_alarm(mill, cur)

    @staticmethod
    def _evidence(a: Asset, h: AssetHealth) -> dict[str, Any]:
        diag = diagnose(h.features)
        ev: dict[str, Any] = {
            "source": SOURCE, "fault": diag.fault, "confidence": diag.confidence,
            "health_index": h.value, "health_source": h.source, "driver": h.index.driver,
            "penalties": {k: round(v, 1) for k, v in h.index.penalties.items()},
            "velocity_rms": h.features.get("velocity_rms"), "iso_zone": h.iso_zone,
            "explain": diag.explain() + "\n" + h.explain(),
        }
        if h.dominant_envelope is not None:
            ev["dominant_envelope"] = {"feature": h.dominant_envelope[0], "value": round(h.dominant_envelope[1], 2)}
        return ev


def open_work_order(hs: HealthStore, mill: str, alarm: Alarm, hi: float | None, by: str = ACTOR) -> WorkOrder | None:
    """A work order for ``alarm``; None when its asset already has one open (the alarm is noted on that one)."""
    open_orders = [w for w in hs.list_work_orders(mill, asset=alarm.asset) if not w.is_done()]
    if open_orders:
        w = open_orders[-1]
        if alarm.id not in w.description and all(alarm.id not in s.comment for s in w.history):
            w.history.append(Step(w.state.value, alarm.raised_at, by, f"also alarm {alarm.id}: {alarm.message}"))
            hs.save_work_order(mill, w)
        return None
    wo = WorkOrder.from_alarm(alarm, at=alarm.raised_at, by=by, hi=hi)
    wo.id = stable_id("WO", alarm.raised_at, alarm.id)
    wo.description = f"alarm {alarm.id}: " + wo.description
    if hs.get_work_order(wo.id) is not None:
        return None
    hs.save_work_order(mill, wo)
    return wo


def severe_enough(severity: Severity, least: Severity) -> bool:
    return _SEVERITY_RANK[severity] >= _SEVERITY_RANK[least]


async def run_periodically(pipeline: HealthPipeline, every_s: float) -> None:
    """Run the pipeline every ``every_s`` seconds in a worker thread; log a failure once and its recovery once."""
    from fastapi.concurrency import run_in_threadpool

    failing = False
    while True:
        await asyncio.sleep(every_s)
        try:
            report = await run_in_threadpool(pipeline.run_once)
            if report.raised or report.cleared:
                logger.info("health pipeline: %d samples, %d alarms raised, %d cleared, %d work orders",
                            report.samples, len(report.raised), len(report.cleared), len(report.orders))
            if failing:
                logger.info("health pipeline recovered")
            failing = False
        except Exception:  # any failure: the loop must outlive it (asyncio.CancelledError is no Exception)
            if not failing:
                logger.exception("health pipeline failed")
            failing = True



def build(settings: Settings, store: TimeSeriesStore, meta_engine: Engine) -> HealthPipeline:
    """The app's pipeline over its stores, with the tables created (blocking: run it in a thread)."""
    pipeline = HealthPipeline(store, HealthStore(meta_engine), lookback_s=settings.health_lookback_s,
                              settle_s=settings.health_settle_s,
                              order_severity=Severity(settings.health_order_severity))
    pipeline.create_schema()
    return pipeline
