"""The canary judge: promote or roll back a canary model on measured evidence, no human in the loop.

Pure arithmetic over counters the edges report per (asset, model version): snapshots scored, those
scored at alarm level (anomaly score above 1: more telling than alarms raised, which hysteresis and
repeat suppression hold to one per episode), scoring errors, inference time; plus alarms later closed
as no fault found (``nff``) where the maintenance record says so. The canary's counters are compared
with the **current model on the same machine type in the same mills over the same period** (the
baseline), because "many alarms" means nothing without knowing how many the current model raises on
the same machines.

Rules (any one rolls back; the reasons are all recorded):

* **alarm rate**: at least ``min_alarms`` canary alarms and a rate above ``alarm_ratio`` times the
  baseline's (the baseline rate is floored at ``alarm_rate_floor``, so a quiet fleet does not make
  one alarm look infinite);
* **scoring errors**: at least ``min_errors`` and an error share above ``max_error_share``;
* **inference latency**: mean above ``latency_ratio`` times the baseline's and above
  ``latency_floor_s`` (a 2x of microseconds is not a problem);
* **no fault found**: at least ``max_nff`` of the canary's alarms closed as no fault found.

Otherwise it is promoted once it has scored ``promote_after`` snapshots; before that: wait.

>>> judge(Counts(scored=300, alarms=0), Counts(scored=3000, alarms=3)).decision
'promote'
>>> v = judge(Counts(scored=40, alarms=12), Counts(scored=3000, alarms=3))
>>> v.decision, v.reasons[0].split(':')[0]
('rollback', 'alarm rate')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class Counts:
    scored: int = 0
    alarms: int = 0
    errors: int = 0
    latency_s_sum: float = 0.0
    nff: int = 0

    def __add__(self, o: Counts) -> Counts:
        return Counts(self.scored + o.scored, self.alarms + o.alarms, self.errors + o.errors,
                      self.latency_s_sum + o.latency_s_sum, self.nff + o.nff)

    @property
    def alarm_rate(self) -> float:
        return self.alarms / self.scored if self.scored else 0.0

    @property
    def mean_latency_s(self) -> float:
        return self.latency_s_sum / self.scored if self.scored else 0.0


@dataclass(frozen=True, slots=True)
class Policy:
    min_alarms: int = 3
    alarm_ratio: float = 3.0
    alarm_rate_floor: float = 0.01
    min_errors: int = 3
    max_error_share: float = 0.02
    latency_ratio: float = 3.0
    latency_floor_s: float = 0.005
    max_nff: int = 2
    promote_after: int = 200


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Literal["promote", "rollback", "wait"]
    reasons: list[str] = field(default_factory=list)


def judge(canary: Counts, baseline: Counts, policy: Policy | None = None) -> Verdict:
    """Promote, roll back or wait (see module docstring)."""
    p = policy or Policy()
    reasons: list[str] = []
    base_rate = max(baseline.alarm_rate, p.alarm_rate_floor)
    seen = canary.scored
    if canary.alarms >= p.min_alarms and seen and canary.alarms / seen > p.alarm_ratio * base_rate:
        reasons.append(f"alarm rate: {canary.alarms}/{seen} = {canary.alarms / seen:.3f} per snapshot vs "
                       f"{baseline.alarm_rate:.4f} for the current model ({baseline.alarms}/{baseline.scored})")
    total = seen + canary.errors
    if canary.errors >= p.min_errors and total and canary.errors / total > p.max_error_share:
        reasons.append(f"scoring errors: {canary.errors} of {total} snapshots")
    if seen and canary.mean_latency_s > max(p.latency_floor_s, p.latency_ratio * baseline.mean_latency_s):
        reasons.append(f"inference latency: {canary.mean_latency_s * 1e3:.1f} ms mean vs "
                       f"{baseline.mean_latency_s * 1e3:.1f} ms for the current model")
    if canary.nff >= p.max_nff:
        reasons.append(f"no fault found: {canary.nff} of its alarms were closed as no fault found")
    if reasons:
        return Verdict("rollback", reasons)
    if canary.scored >= p.promote_after:
        return Verdict("promote", [f"{canary.scored} snapshots scored, alarm rate {canary.alarm_rate:.4f} vs "
                                   f"{baseline.alarm_rate:.4f}, {canary.errors} errors"])
    return Verdict("wait", [f"{canary.scored}/{p.promote_after} snapshots scored"])
