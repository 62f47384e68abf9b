"""Default simulator parameters per machine type, and how a machine's ``sim:`` dict overrides them.

Kept apart from the model so docs/simulator.md can list them and a site file can tune any of them
per machine (``sim: {mean_run_h: 20}``) without touching code.
"""

from __future__ import annotations

from typing import Any

from spinline.core.site import Machine, MachineType
from spinline.sim.processes import DOFFING, FAULT, IDLE, STOPPED, StopModel

T = MachineType

#: Stop behaviour per type: mean running hours between stops, then (state, probability, mean minutes).
STOPS: dict[MachineType, StopModel] = {
    T.BLOWROOM: StopModel(60.0, ((STOPPED, 0.6, 15.0), (IDLE, 0.3, 10.0), (FAULT, 0.1, 60.0))),
    T.CARD: StopModel(30.0, ((STOPPED, 0.5, 15.0), (IDLE, 0.3, 10.0), (FAULT, 0.2, 60.0))),
    T.COMBER: StopModel(25.0, ((STOPPED, 0.5, 12.0), (IDLE, 0.3, 10.0), (FAULT, 0.2, 45.0))),
    T.DRAW_FRAME: StopModel(20.0, ((STOPPED, 0.6, 8.0), (IDLE, 0.3, 6.0), (FAULT, 0.1, 40.0))),
    T.ROVING_FRAME: StopModel(30.0, ((STOPPED, 0.5, 12.0), (IDLE, 0.35, 10.0), (FAULT, 0.15, 60.0))),
    T.RING_FRAME: StopModel(40.0, ((STOPPED, 0.55, 20.0), (IDLE, 0.30, 15.0), (FAULT, 0.15, 90.0))),
    T.WINDER: StopModel(50.0, ((STOPPED, 0.5, 15.0), (IDLE, 0.35, 10.0), (FAULT, 0.15, 60.0))),
    T.AIR_COMPRESSOR: StopModel(600.0, ((FAULT, 1.0, 120.0),)),
}

#: Capacity in kg/h when the machine has no ``sim: {rate_kg_h}``.
CAPACITY_KG_H: dict[MachineType, float] = {
    T.BLOWROOM: 600.0, T.CARD: 80.0, T.COMBER: 60.0, T.DRAW_FRAME: 180.0, T.ROVING_FRAME: 120.0,
    T.WINDER: 150.0,
}

#: Mass lost as waste at each stage (share of input): blowroom trash, card flat strips and fly,
#: comber noil (overridden by ``noil_pct``), draw/roving/ring/winding hard waste and clearer cuts.
WASTE: dict[MachineType, float] = {
    T.BLOWROOM: 0.04, T.CARD: 0.05, T.COMBER: 0.16, T.DRAW_FRAME: 0.005, T.ROVING_FRAME: 0.005,
    T.RING_FRAME: 0.02, T.WINDER: 0.005,
}

#: Running power of preparation machines: rated_kw * (NO_LOAD + LOAD * rate / capacity).
NO_LOAD = 0.35
LOAD = 0.5
#: Rated kW when the site file gives none.
RATED_KW: dict[MachineType, float] = {
    T.BLOWROOM: 90.0, T.CARD: 22.0, T.COMBER: 7.5, T.DRAW_FRAME: 11.0, T.ROVING_FRAME: 30.0,
    T.RING_FRAME: 80.0, T.WINDER: 40.0, T.AIR_COMPRESSOR: 75.0, T.HVAC: 200.0,
}


def param(machine: Machine, name: str, default: Any) -> Any:
    """A ``sim:`` override or the default, converted to the default's type."""
    v = machine.sim.get(name, default)
    if isinstance(default, bool):
        return bool(v)
    if isinstance(default, float):
        return float(v)
    if isinstance(default, int):
        return int(v)
    return v


def stop_model(machine: Machine) -> StopModel | None:
    base = STOPS.get(machine.type)
    if base is None:
        return None
    mean_run = param(machine, "mean_run_h", base.mean_run_h)
    return StopModel(mean_run, base.kinds)


def rated_kw(machine: Machine) -> float:
    return float(machine.rated_kw or RATED_KW.get(machine.type, 10.0))


__all__ = ["CAPACITY_KG_H", "DOFFING", "LOAD", "NO_LOAD", "RATED_KW", "STOPS", "WASTE", "param", "rated_kw",
           "stop_model"]
