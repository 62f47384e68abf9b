"""Injected faults: how far each has progressed, and the ground-truth log used to score detection.

A fault starts at ``start_s`` (simulated seconds after the simulation start), grows linearly to
full severity over ``ramp_s`` (the "failure" time) and then stays. A meter drop-out is the
exception: ``ramp_s`` is how long the meter is unreachable (0 = for good).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from spinline.core.site import Fault, FaultType, Machine
from spinline.sim.physics import bearing_frequencies, fault_progress
from spinline.sim.processes import F64

BEARING_FAULTS = (FaultType.BEARING_OUTER, FaultType.BEARING_INNER, FaultType.BEARING_BALL)
#: Faults that show in the vibration of a rotating machine.
VIBRATION_FAULTS = (*BEARING_FAULTS, FaultType.IMBALANCE, FaultType.MISALIGNMENT, FaultType.LOOSENESS,
                    FaultType.BELT_SLIP)


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """One injected fault as a detector would be scored against it."""

    mill: str
    machine: str
    type: str
    channel: str | None
    onset_ns: int
    failure_ns: int
    severity: float
    #: Kinematic defect frequency (Hz) at the channel's nominal shaft speed, for bearing faults.
    defect_hz: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def parse_fault(text: str) -> Fault:
    """``MACHINE:TYPE:START_S[:RAMP_S[:SEVERITY]]`` (the CLI's ``--fault``) into a Fault."""
    parts = text.split(":")
    if not 3 <= len(parts) <= 5:
        raise ValueError(f"fault {text!r}: expected MACHINE:TYPE:START_S[:RAMP_S[:SEVERITY]]")
    fields: dict[str, object] = {"machine": parts[0], "type": FaultType(parts[1]), "start_s": float(parts[2])}
    if len(parts) > 3:
        fields["ramp_s"] = float(parts[3])
    if len(parts) > 4:
        fields["severity"] = float(parts[4])
    return Fault.model_validate(fields)


class FaultSet:
    """The schedule of one mill, with fast per-machine lookups of fault level over a block of times."""

    def __init__(self, mill_id: str, faults: list[Fault], machines: dict[str, Machine], start_ns: int) -> None:
        unknown = [f.machine for f in faults if f.machine not in machines]
        if unknown:
            raise ValueError(f"fault on unknown machine(s): {', '.join(unknown)}")
        self.faults = list(faults)
        self.by_machine: dict[str, list[Fault]] = {}
        for f in self.faults:
            self.by_machine.setdefault(f.machine, []).append(f)
        self.ground_truth = [self._truth(mill_id, f, machines[f.machine], start_ns) for f in self.faults]

    @staticmethod
    def _truth(mill_id: str, f: Fault, m: Machine, start_ns: int) -> GroundTruth:
        channel = f.channel
        defect_hz = None
        if f.type in VIBRATION_FAULTS and m.vibration is not None:
            ch = next((c for c in m.vibration.channels if c.name == channel), m.vibration.channels[0])
            channel = ch.name
            bearing = next((b for b in m.bearings if b.name == ch.bearing), None)
            if bearing is not None and f.type in BEARING_FAULTS:
                fr = bearing_frequencies(bearing.n_balls, bearing.ball_diameter_mm, bearing.pitch_diameter_mm,
                                         bearing.contact_angle_deg, ch.shaft_rpm)
                key = {FaultType.BEARING_OUTER: "bpfo", FaultType.BEARING_INNER: "bpfi",
                       FaultType.BEARING_BALL: "bsf"}[f.type]
                defect_hz = float(fr[key]) * (2.0 if key == "bsf" else 1.0)
        onset = start_ns + int(round(f.start_s * 1e9))
        return GroundTruth(mill=mill_id, machine=f.machine, type=f.type.value, channel=channel, onset_ns=onset,
                           failure_ns=onset + int(round(f.ramp_s * 1e9)), severity=f.severity, defect_hz=defect_hz)

    def level(self, machine_id: str, types: tuple[FaultType, ...] | FaultType, t_s: F64,
              channel: str | None = None) -> F64:
        """Sum of severity * progress of the machine's faults of these types (0 when none)."""
        if isinstance(types, FaultType):
            types = (types,)
        out = np.zeros(len(t_s))
        for f in self.by_machine.get(machine_id, ()):
            if f.type in types and (channel is None or f.channel in (None, channel)):
                out += f.severity * fault_progress(t_s, f.start_s, f.ramp_s)
        return out

    def dropout(self, machine_id: str, t_s: F64) -> F64:
        """1 where a meter is unreachable, else 0."""
        out = np.zeros(len(t_s), dtype=bool)
        for f in self.by_machine.get(machine_id, ()):
            if f.type == FaultType.METER_DROPOUT:
                end = np.inf if f.ramp_s <= 0 else f.start_s + f.ramp_s
                out |= (t_s >= f.start_s) & (t_s < end)
        return out.astype(float)

    def write_jsonl(self, path: str | Path) -> None:
        Path(path).write_text("".join(g.to_json() + "\n" for g in self.ground_truth), encoding="utf-8")
