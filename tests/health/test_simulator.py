"""End to end on the mill simulator: each injected fault detected before failure, diagnosed as the
right type and turned into a work order; a healthy simulated week raises no alarm."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinline.core.site import FaultType, load_site
from spinline.demo import simcheck
from spinline.health.workorders import WOState

pytestmark = pytest.mark.slow

FAULTS = [FaultType.BEARING_OUTER, FaultType.BEARING_INNER, FaultType.BEARING_BALL, FaultType.IMBALANCE,
          FaultType.MISALIGNMENT, FaultType.LOOSENESS, FaultType.BELT_SLIP]


@pytest.mark.parametrize(("fault", "machine", "channel"),
                         [(f, "ac01", "motor") for f in FAULTS]
                         + [(FaultType.BEARING_INNER, "rf01", "main_motor"),  # a ring frame: speed changes
                            (FaultType.LOOSENESS, "ca01", "cylinder")])        # a slow (500 rpm) shaft
def test_injected_fault_detected_diagnosed_and_ordered(mill_yaml: Path, fault: FaultType, machine: str,
                                                       channel: str) -> None:
    site = load_site(mill_yaml)
    r = simcheck.run_fault(site, site.mills[0].id, machine, channel, fault)
    assert r.false_alarms_before_onset == 0
    assert r.detected_before_failure, f"{fault.value} not detected before failure"
    assert r.lead_time_h is not None and r.lead_time_h > 12, "detected too late to plan the repair"
    assert r.work_order is not None and r.work_order.state == WOState.OPEN
    assert r.work_order.alarm_id is not None and r.work_order.asset == f"{machine}/{channel}"
    assert r.diagnosis == fault.value, f"diagnosed {r.diagnosis}, votes {r.diagnoses[:20]}"


def test_healthy_week_raises_no_alarm(mill_yaml: Path) -> None:
    site = load_site(mill_yaml)
    alarms = simcheck.run_healthy(site, site.mills[0].id, days=7.7)  # 16 h baseline + 7 days watched
    assert len(alarms) >= 4 and sum(alarms.values()) == 0, alarms
