"""End-to-end check of the health pipeline on the mill simulator (``spinline.sim``).

``run_fault`` injects one fault into one machine of a simulated mill, runs the edge's per-channel
pipeline (``featurize`` -> ``AssetMonitor``) on a snapshot every ``every_s`` seconds, turns the first
alarm into a work order (refining its fault as the diagnosis firms up) and reports when the fault
was detected relative to its onset and its failure (end of the ramp), and what it was diagnosed as.
``run_healthy`` runs every vibration channel of a mill with no fault and counts alarms.

The simulator is someone else's code with its own signal model, so this is a check that the
pipeline works on signals it was not written against, not a benchmark of accuracy.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from spinline.core.site import Fault, FaultType, MachineType, Site
from spinline.health.features import bearing_frequencies, featurize
from spinline.health.monitor import AssetMonitor
from spinline.health.rul import RulEstimate
from spinline.health.workorders import WorkOrder


@dataclass(slots=True)
class FaultResult:
    machine: str
    fault: str
    onset: datetime
    failure: datetime
    detected: datetime | None = None
    first_rule: str | None = None
    diagnosis: str | None = None
    work_order: WorkOrder | None = None
    alarms: int = 0
    false_alarms_before_onset: int = 0
    diagnoses: list[str] = field(default_factory=list)
    #: RUL (to health ``failure_hi``) estimated when the health index first falls below ``rul_at_hi``,
    #: and the time it then really took to get there (hours): a check of the trend extrapolation that
    #: does not depend on what the simulator calls "failure".
    rul: RulEstimate | None = None
    rul_true_h: float | None = None
    _rul_made: datetime | None = None

    @property
    def rul_in_band(self) -> bool | None:
        if self.rul is None or self.rul_true_h is None:
            return None
        return self.rul.lower_s / 3600 <= self.rul_true_h <= self.rul.upper_s / 3600

    @property
    def lead_time_h(self) -> float | None:
        return None if self.detected is None else (self.failure - self.detected).total_seconds() / 3600.0

    @property
    def detected_before_failure(self) -> bool:
        return self.detected is not None and self.detected < self.failure


def _monitor(site: Site, machine_id: str, mill_id: str, channel: str, baseline_n: int, far: float) -> AssetMonitor:
    m = next(mm for ws in site.mill(mill_id).workshops for ln in ws.lines for mm in ln.machines if mm.id == machine_id)
    assert m.vibration is not None
    ch = next(c for c in m.vibration.channels if c.name == channel)
    bearing = next((b for b in m.bearings if b.name == ch.bearing), None)
    fd = {k: float(v) for k, v in bearing_frequencies(bearing, ch.shaft_rpm / 60).items()} if bearing else {}
    nominal = None if m.type == MachineType.RING_FRAME else ch.shaft_rpm / 60.0  # ring frames change speed by design
    cls = site.templates[m.template].iso_class if m.template and m.template in site.templates else None
    return AssetMonitor(f"{machine_id}/{channel}", machine_class=cls or "I", far=far, baseline_n=baseline_n,
                        defect_hz=fd, nominal_speed=nominal)


def _features(sim: object, machine_id: str, channel: str, site: Site, mill_id: str,
              snapshot_s: float) -> dict[str, float]:
    x, fs, rpm = sim.vibration_snapshot(machine_id, channel, snapshot_s)  # type: ignore[attr-defined]
    m = sim.machines[machine_id]  # type: ignore[attr-defined]
    ch = next(c for c in m.vibration.channels if c.name == channel)
    bearing = next((b for b in m.bearings if b.name == ch.bearing), None)
    cls = site.templates[m.template].iso_class if m.template and m.template in site.templates else None
    shaft = rpm / 60.0
    if shaft <= 0:
        return {"shaft_hz": 0.0}
    f = featurize(x, fs, shaft, bearing, machine_class=cls or "I", extended=True)
    d = {k: float(v[0]) for k, v in f.items()}
    d["shaft_hz"] = shaft
    return d


def run_fault(site: Site, mill_id: str, machine_id: str, channel: str, fault: FaultType, *,
              start_s: float = 86400.0, ramp_s: float = 2 * 86400.0, severity: float = 1.0,
              every_s: float = 600.0, baseline_n: int = 96, far: float = 0.001, snapshot_s: float = 1.0,
              seed: int = 1, rul_at_hi: float = 60.0, failure_hi: float = 20.0) -> FaultResult:
    from spinline.sim.mill import MillSim  # the simulator is optional at import time

    f = Fault(machine=machine_id, type=fault, start_s=start_s, ramp_s=ramp_s, severity=severity, channel=channel)
    sim = MillSim(site, mill_id, seed=seed, faults=[f])
    t0 = datetime.fromtimestamp(sim.start_ns / 1e9, UTC).replace(tzinfo=None)
    res = FaultResult(machine_id, fault.value, t0 + timedelta(seconds=start_s),
                      t0 + timedelta(seconds=start_s + ramp_s))
    mon = _monitor(site, machine_id, mill_id, channel, baseline_n, far)
    steps = int((start_s + ramp_s) / every_s)
    for _ in range(steps):
        sim.step(every_s)
        now = t0 + timedelta(seconds=sim.t_s)
        st = mon.update(now, _features(sim, machine_id, channel, site, mill_id, snapshot_s))
        if st is None:
            continue
        if res.rul is None and res.detected is not None and st.health.value < rul_at_hi:
            res.rul, res._rul_made = mon.rul(failure_hi=failure_hi), now
        if res._rul_made is not None and res.rul_true_h is None and st.health.value <= failure_hi:
            res.rul_true_h = (now - res._rul_made).total_seconds() / 3600.0
        if st.raised:
            res.alarms += len(st.raised)
            if now < res.onset:
                res.false_alarms_before_onset += len(st.raised)
            elif res.work_order is None:
                res.detected, res.first_rule = now, st.raised[0].rule
                res.work_order = WorkOrder.from_alarm(st.raised[0], at=now, hi=st.health.value)
        if st.diagnosis is not None and now >= res.onset:
            res.diagnoses.append(st.diagnosis.fault)
            wo = res.work_order
            if wo is not None and st.diagnosis.fault != "unknown":
                # The order carries the majority of the diagnoses since detection: one noisy
                # snapshot must not flip what the fitter is sent to fix.
                votes = Counter(d for d in res.diagnoses if d != "unknown")
                top = votes.most_common(1)[0][0]
                if top != wo.fault:
                    wo.update_fault(top, by="system", at=now, comment=st.diagnosis.explain())
    res.diagnosis = res.work_order.fault if res.work_order is not None else None
    return res


def run_healthy(site: Site, mill_id: str, *, days: float = 7.0, every_s: float = 600.0, baseline_n: int = 96,
                far: float = 0.001, snapshot_s: float = 1.0, seed: int = 2) -> dict[str, int]:
    """Alarms raised per channel over ``days`` of fault-free simulated running (after the baseline)."""
    from spinline.sim.mill import MillSim

    sim = MillSim(site, mill_id, seed=seed)
    t0 = datetime.fromtimestamp(sim.start_ns / 1e9, UTC).replace(tzinfo=None)
    chans = [(m.id, c.name) for m in sim.machines.values() if m.vibration is not None for c in m.vibration.channels]
    mons = {mc: _monitor(site, mc[0], mill_id, mc[1], baseline_n, far) for mc in chans}
    alarms = {f"{a}/{b}": 0 for a, b in chans}
    for _ in range(int(days * 86400 / every_s)):
        sim.step(every_s)
        now = t0 + timedelta(seconds=sim.t_s)
        for mc, mon in mons.items():
            st = mon.update(now, _features(sim, mc[0], mc[1], site, mill_id, snapshot_s))
            if st is not None and st.raised:
                alarms[f"{mc[0]}/{mc[1]}"] += len(st.raised)
    return alarms
