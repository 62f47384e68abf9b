"""Machine models: each group evaluates all its machines over a block of time steps at once.

Every ``block`` returns ``{point_name: array (steps, machines)}`` with the template's point names,
and leaves in ``Ctx`` what later groups need (power for meters and HVAC heat, air demand for the
compressors, the hall climate for the ring frames). Order in ``MillSim``: climate, ring frames,
preparation, winders, compressors, HVAC power, meters.

Size: one vectorised model per machine family, side by side so their shared ``Ctx`` and output
layout stay consistent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spinline.core.site import FaultType, Machine, MachineType
from spinline.sim import params as P
from spinline.sim import physics as ph
from spinline.sim.faults import BEARING_FAULTS, FaultSet
from spinline.sim.processes import (
    DOFFING,
    F64,
    FAULT,
    IDLE,
    RUNNING,
    STOPPED,
    Ar1,
    Episodes,
    Ewma,
    cycles_started,
    periodic_phase,
    stream,
)

Out = dict[str, F64]

# Random-stream ids: one generator per (component, machine), see processes.stream.
S_STATE, S_NOISE, S_BREAKS, S_PHASE, S_CLIMATE = 1, 2, 3, 4, 5


@dataclass
class Ctx:
    """What one block shares between the groups."""

    t: F64                       # simulated seconds since start, one per step (end of the step)
    dt: float
    faults: FaultSet
    ambient_c: F64
    power: dict[str, F64] = field(default_factory=dict)   # machine id -> kW per step
    climate: dict[str, tuple[F64, F64, float]] = field(default_factory=dict)  # workshop -> (T, RH, RH target)
    air_m3_min: F64 | None = None

    @property
    def n(self) -> int:
        return len(self.t)

    @property
    def dt_h(self) -> float:
        return self.dt / 3600.0


def _states(episodes: list[Episodes], t: F64) -> F64:
    if not episodes:
        return np.zeros((len(t), 0))
    return np.stack([e.state(t) for e in episodes], axis=1).astype(float)


def _machine_faults(ctx: Ctx, machines: list[Machine], types: tuple[FaultType, ...] | FaultType) -> F64:
    return np.stack([ctx.faults.level(m.id, types, ctx.t) for m in machines], axis=1) if machines \
        else np.zeros((ctx.n, 0))


class Counter:
    """Cumulative totals carried across blocks."""

    def __init__(self, m: int) -> None:
        self.total = np.zeros(m)

    def __call__(self, increments: F64) -> F64:
        # Sequential sums from the carried total, so a day in one block adds up bit for bit like
        # a day of single steps (the determinism tests compare both).
        out = np.cumsum(np.concatenate([self.total[None, :], increments], axis=0), axis=0)[1:]
        self.total = out[-1].copy()
        return np.asarray(out)


# --- ring frames ------------------------------------------------------------------------------------

class RingFrames:
    """Ring frames: speed with the cop-build profile, twist, count, breaks, doffs, power."""

    def __init__(self, machines: list[Machine], counts: list[float], workshops: list[str], seed: int) -> None:
        self.machines = machines
        self.workshops = workshops
        m = len(machines)
        self.spindles = np.array([float(x.spindles or 1000) for x in machines])
        self.ne = np.array(counts, dtype=float)
        self.tex = ph.tex_from_ne(self.ne)
        self.compact = np.array([float(P.param(x, "compact", False)) for x in machines])
        self.rpm_set = np.array([P.param(x, "spindle_rpm", float(ph.default_spindle_rpm(c)))
                                 for x, c in zip(machines, counts, strict=True)])
        self.alpha = np.array([P.param(x, "twist_multiplier", 3.7 if P.param(x, "compact", False) else 4.0)
                               for x in machines])
        self.tpm = ph.tpm(self.alpha, self.ne)
        self.kw_per_spindle = np.array([P.param(x, "kw_per_spindle", ph.KW_PER_SPINDLE_REF) for x in machines])
        self.ends_base = np.array([P.param(x, "ends_down_base", 22.0 * float(np.sqrt(c / 30.0)))
                                   for x, c in zip(machines, counts, strict=True)])
        self.patrol_h = np.array([P.param(x, "patrol_h", 0.4) for x in machines])
        self.life_s = np.array([P.param(x, "traveller_life_days", 14.0) * 86400.0 for x in machines])
        cop_g = np.array([P.param(x, "cop_g", 2.2 * float(t) + 25.0) for x, t in zip(machines, self.tex, strict=True)])
        g_h = ph.g_per_spindle_h(ph.delivery_m_min(self.rpm_set, self.tpm), self.tex)
        self.doff_s = np.array([P.param(x, "doff_min", 3.0) * 60.0 for x in machines])
        self.cycle_s = cop_g / g_h * 3600.0 + self.doff_s
        self.fill_frac = 1.0 - self.doff_s / self.cycle_s
        rng = stream(seed, S_PHASE, 0)
        self.phase_s = rng.uniform(0, 1, m) * self.cycle_s
        self.life_phase_s = rng.uniform(0, 1, m) * self.life_s
        self.episodes = [Episodes(P.stop_model(x) or P.STOPS[MachineType.RING_FRAME], stream(seed, S_STATE, 100 + i))
                         for i, x in enumerate(machines)]
        self.rng_breaks = stream(seed, S_BREAKS, 0)
        self.noise = Ar1(120.0, 0.002, m, stream(seed, S_NOISE, 100))
        self.rh_offset = stream(seed, S_PHASE, 1).normal(0.0, 0.5, m)
        self.supply = np.ones(m)   # set by MillSim when the preparation cannot keep up
        nominal = self.spindles * ph.delivery_m_min(self.rpm_set, self.tpm) * 60.0 * self.tex / 1e6
        self.theoretical_kg_h = nominal
        self.ew_prod = Ewma(3600.0, nominal * 0.93)
        exp_breaks = self.ends_base / 1000.0 * self.spindles
        self.ew_breaks = Ewma(3600.0, exp_breaks)
        self.ew_sph = Ewma(3600.0, self.spindles.copy())
        self.ew_bad = Ewma(8 * 3600.0, exp_breaks * ph.bad_spindle_break_share())
        self.ew_all = Ewma(8 * 3600.0, exp_breaks)
        self.c_breaks, self.c_output, self.c_sph = Counter(m), Counter(m), Counter(m)
        self.c_run, self.c_energy = Counter(m), Counter(m)

    def expected_kg_h(self) -> F64:
        """Long-run mean output per frame: availability, doffs, cop-build speed and ends-down loss."""
        avail = np.array([e.model.availability for e in self.episodes]) * self.fill_frac
        idle = ph.idle_pct(self.ends_base * 1.3, self.patrol_h) / 100.0
        return np.asarray(self.theoretical_kg_h * avail * 0.985 * (1.0 - idle) * self.supply)

    def block(self, ctx: Ctx) -> Out:
        t, n = ctx.t, ctx.n
        state = _states(self.episodes, t)
        u = periodic_phase(t, self.cycle_s, self.phase_s)                 # position in the doff cycle
        doffing = u >= self.fill_frac[None, :]
        state = np.where((state == RUNNING) & doffing, float(DOFFING), state)
        running = (state == RUNNING).astype(float)
        build = np.clip(u / self.fill_frac[None, :], 0.0, 1.0)
        # Cop-build profile: reduced start (first 8 %) and finish (last 8 %) [U].
        profile = (0.88 + 0.12 * np.minimum(build / 0.08, 1.0)) * (1.0 - 0.04 * np.clip((build - 0.92) / 0.08, 0, 1))
        slip = np.minimum(_machine_faults(ctx, self.machines, FaultType.BELT_SLIP), 3.0)
        wear = _machine_faults(ctx, self.machines, (*BEARING_FAULTS, FaultType.IMBALANCE, FaultType.MISALIGNMENT,
                                                    FaultType.LOOSENESS))
        shaft_rpm = self.rpm_set[None, :] * profile * (1.0 + self.noise(n, ctx.dt))
        spindle_rpm = shaft_rpm * (1.0 - 0.02 * slip)                    # tape slip: rpm -2 % (domain (a))
        delivery = shaft_rpm / self.tpm[None, :]                          # front roller is geared to the shaft
        rh = np.stack([ctx.climate[w][1] for w in self.workshops], axis=1) + self.rh_offset[None, :]
        rh_target = np.array([ctx.climate[w][2] for w in self.workshops])
        age = np.mod(t[:, None] + self.life_phase_s[None, :], self.life_s[None, :]) / self.life_s[None, :]
        rate = (self.ends_base[None, :] * ph.speed_break_multiplier(spindle_rpm, self.rpm_set[None, :])
                * ph.rh_break_multiplier(rh, rh_target[None, :]) * ph.wear_break_multiplier(age)
                * (1.0 + 0.5 * slip))
        idle_frac = np.minimum(ph.idle_pct(rate, self.patrol_h[None, :]) / 100.0, 0.5)
        sp_run = running * np.round(self.spindles[None, :] * (1.0 - idle_frac))
        good, bad = ph.split_break_rate(rate)
        n_bad = sp_run * ph.BAD_SPINDLE_SHARE
        lam_bad = bad * n_bad * ctx.dt_h
        lam_good = good * (sp_run - n_bad) * ctx.dt_h
        draws = self.rng_breaks.poisson(np.stack([lam_good, lam_bad], axis=2))
        b_good, b_bad = draws[..., 0].astype(float), draws[..., 1].astype(float)
        breaks = b_good + b_bad
        slipping = running * np.round(self.spindles[None, :] * (0.0005 + 0.02 * slip))
        prod = sp_run * delivery * 60.0 * self.tex[None, :] / 1e6 * self.supply[None, :]
        kw_run = ph.ring_frame_kw(self.spindles[None, :], spindle_rpm, kw_per_spindle=self.kw_per_spindle[None, :],
                                  compact=self.compact[None, :]) * (1.0 + 0.03 * np.minimum(wear, 3.0))
        power = np.select([state == RUNNING, state == DOFFING, state == FAULT], [kw_run, 4.0, 0.5], 1.2)
        ctx.power.update({x.id: power[:, i] for i, x in enumerate(self.machines)})
        ew_b = self.ew_breaks(breaks / ctx.dt_h, ctx.dt)
        ew_s = self.ew_sph(sp_run, ctx.dt)
        ew_bad = self.ew_bad(b_bad / ctx.dt_h, ctx.dt)
        ew_all = self.ew_all(breaks / ctx.dt_h, ctx.dt)
        doffs = cycles_started(t, self.cycle_s, self.phase_s, self.fill_frac)
        return {
            "state": state,
            "spindle_speed": running * spindle_rpm,
            "front_roller_delivery": running * delivery,
            "twist": np.where(running > 0, spindle_rpm / np.maximum(delivery, 1e-9), self.tpm[None, :]),
            "count_ne": np.broadcast_to(self.ne, (n, len(self.ne))).copy(),
            "efficiency": np.minimum(100.0 * self.ew_prod(prod, ctx.dt) / self.theoretical_kg_h[None, :], 100.0),
            "production_rate": prod,
            "output": self.c_output(prod * ctx.dt_h),
            "ends_down_rate": 1000.0 * ew_b / np.maximum(ew_s, 1e-9),
            "breaks": self.c_breaks(breaks),
            "spindles_running": sp_run,
            "spindle_hours": self.c_sph(sp_run * ctx.dt_h),
            "run_hours": self.c_run(running * ctx.dt_h),
            "doffs": doffs,
            "power": power,
            "energy": self.c_energy(power * ctx.dt_h),
            "motor_current": ph.motor_current_a(power),
            "worst5_break_share": 100.0 * ew_bad / np.maximum(ew_all, 1e-9),
            "slipping_spindles": slipping,
            "hall_rh": rh,
        }


# --- preparation and winding ----------------------------------------------------------------------

class Flow:
    """Machines of one type whose set rate the mill balances against downstream demand."""

    def __init__(self, machines: list[Machine], seed: int, key: int) -> None:
        self.machines = machines
        m = len(machines)
        self.type = machines[0].type
        self.capacity = np.array([P.param(x, "rate_kg_h", P.CAPACITY_KG_H[x.type]) for x in machines])
        self.rated = np.array([P.rated_kw(x) for x in machines])
        self.set_rate = self.capacity * 0.7
        #: Machines the line does not need are left idle (a mill runs fewer machines, not all slowly).
        self.spare = np.zeros(m, dtype=bool)
        self.episodes = [Episodes(P.stop_model(x) or P.STOPS[self.type], stream(seed, S_STATE, key * 1000 + i))
                         for i, x in enumerate(machines)]
        self.noise = Ar1(300.0, 0.01, m, stream(seed, S_NOISE, key))
        self.rng = stream(seed, S_BREAKS, key)
        self.c_output, self.c_energy, self.c_run = Counter(m), Counter(m), Counter(m)
        self.c_events = Counter(m)
        # Roving frames doff full bobbins (1.5 kg x spindles) every few hours [U].
        self.doffs = self.type == MachineType.ROVING_FRAME
        self.rov_spindles = np.array([P.param(x, "spindles", 120.0) for x in machines])
        self.doff_s = np.array([P.param(x, "doff_min", 5.0) * 60.0 for x in machines])
        self.phase_u = stream(seed, S_PHASE, key).uniform(0, 1, m)

    @property
    def availability(self) -> F64:
        a = np.array([e.model.availability for e in self.episodes])
        if self.doffs:
            a = a * (1.0 - self.doff_s / self._cycle_s())
        return a

    def _cycle_s(self) -> F64:
        return np.asarray(1.5 * self.rov_spindles / np.maximum(self.set_rate, 1e-6) * 3600.0 + self.doff_s)

    def base(self, ctx: Ctx) -> tuple[F64, F64, F64, F64]:
        """state, running (0/1), production kg/h, power kW."""
        state = _states(self.episodes, ctx.t)
        state = np.where(self.spare[None, :] & (state == RUNNING), float(IDLE), state)
        if self.doffs:
            cyc = self._cycle_s()
            u = periodic_phase(ctx.t, cyc, self.phase_u * cyc)
            fill = 1.0 - self.doff_s / cyc
            state = np.where((state == RUNNING) & (u >= fill[None, :]), float(DOFFING), state)
        running = (state == RUNNING).astype(float)
        self.nz = self.noise(ctx.n, ctx.dt)       # per-step noise, reused by the type-specific points
        prod = running * self.set_rate[None, :] * (1.0 + self.nz)
        wear = _machine_faults(ctx, self.machines, (*BEARING_FAULTS, FaultType.IMBALANCE, FaultType.MISALIGNMENT,
                                                    FaultType.LOOSENESS))
        kw_run = self.rated[None, :] * (P.NO_LOAD + P.LOAD * prod / self.capacity[None, :]) * (1 + 0.03 * wear)
        power = np.select([state == RUNNING, state == DOFFING, state == FAULT],
                          [kw_run, 0.2 * self.rated[None, :], 0.02 * self.rated[None, :]], 0.05 * self.rated[None, :])
        ctx.power.update({x.id: power[:, i] for i, x in enumerate(self.machines)})
        return state, running, prod, power

    def common(self, ctx: Ctx, state: F64, running: F64, prod: F64, power: F64) -> Out:
        return {"state": state, "production_rate": prod, "output": self.c_output(prod * ctx.dt_h), "power": power,
                "energy": self.c_energy(power * ctx.dt_h), "run_hours": self.c_run(running * ctx.dt_h)}

    def events(self, running: F64, per_h: float, ctx: Ctx) -> F64:
        return self.c_events(self.rng.poisson(running * per_h * ctx.dt_h).astype(float))

    def block(self, ctx: Ctx) -> Out:
        state, running, prod, power = self.base(ctx)
        out = self.common(ctx, state, running, prod, power)
        n, m = prod.shape
        shape = (n, m)
        if self.type == MachineType.BLOWROOM:
            out["duct_pressure"] = running * (350.0 + 150.0 * prod / self.capacity[None, :])
        elif self.type == MachineType.CARD:
            ktex = np.array([P.param(x, "sliver_ktex", 5.0) for x in self.machines])
            cyl = np.array([float(x.vibration.channels[0].shaft_rpm) if x.vibration else 500.0 for x in self.machines])
            out["delivery_speed"] = prod * 1000.0 / 60.0 / ktex[None, :]
            out["sliver_ktex"] = np.broadcast_to(ktex, shape) * (1.0 + 0.3 * self.nz)
            out["sliver_cv"] = np.broadcast_to(2.8 + 0.2 * np.tanh(10 * self.nz), shape).copy()
            out["cylinder_speed"] = (state != STOPPED) * (state != FAULT) * cyl[None, :]
            bearing = _machine_faults(ctx, self.machines, BEARING_FAULTS)
            out["bearing_temp"] = (ctx.ambient_c[:, None] * 0.3 + 22.0 + 18.0 * prod / self.capacity[None, :]
                                   + 25.0 * np.minimum(bearing, 2.0))
        elif self.type == MachineType.DRAW_FRAME:
            ktex = np.array([P.param(x, "sliver_ktex", 4.5) for x in self.machines])
            out["delivery_speed"] = prod * 1000.0 / 60.0 / ktex[None, :]
            out["sliver_breaks"] = self.events(running, 0.3, ctx)
        elif self.type == MachineType.COMBER:
            nips = np.array([P.param(x, "nips", 400.0) for x in self.machines])
            noil = np.array([P.param(x, "noil_pct", 16.0) for x in self.machines])
            out["nips"] = running * nips[None, :]
            out["noil"] = np.broadcast_to(noil, shape) + 20.0 * self.nz
        elif self.type == MachineType.ROVING_FRAME:
            ktex = np.array([P.param(x, "roving_ktex", 0.6) for x in self.machines])
            tpm = np.array([P.param(x, "roving_tpm", 40.0) for x in self.machines])
            delivery = prod * 1000.0 / (60.0 * ktex[None, :] * self.rov_spindles[None, :])
            out["delivery_speed"] = delivery
            out["flyer_speed"] = delivery * tpm[None, :]
            out["roving_breaks"] = self.events(running, 0.5, ctx)
        return out


class Winders(Flow):
    """Autoconers: package output, splices per km, clearer cuts and compressed air."""

    def __init__(self, machines: list[Machine], seed: int, key: int) -> None:
        super().__init__(machines, seed, key)
        self.tex_mix = 20.0     # set by MillSim from the ring lines it winds
        self.speed = np.array([P.param(x, "winding_speed", 1400.0) for x in machines])
        self.air = np.array([P.param(x, "air_nm3_h", 60.0) for x in machines])
        self.cuts = Ar1(3600.0, 10.0, len(machines), stream(seed, S_NOISE, key + 50))

    def block(self, ctx: Ctx) -> Out:
        state, running, prod, power = self.base(ctx)
        out = self.common(ctx, state, running, prod, power)
        cuts = np.maximum(75.0 + self.cuts(ctx.n, ctx.dt), 10.0)
        km_h = prod * 1e6 / self.tex_mix / 1000.0       # kg/h -> km/h of yarn
        # About one splice per km: clearer cuts plus cop changes (UQ3 handbook [S]).
        lam = km_h * ctx.dt_h * (cuts / 100.0 + 0.45)
        out["splices"] = self.c_events(self.rng.poisson(lam).astype(float))
        out["cuts_per_100km"] = cuts
        out["winding_speed"] = running * self.speed[None, :] * (1.0 + self.nz)
        air = running * self.air[None, :] + (1.0 - running) * 5.0
        out["air_flow"] = air
        ctx.air_m3_min = (ctx.air_m3_min if ctx.air_m3_min is not None else 0.0) + air.sum(axis=1) / 60.0
        return out


# --- utilities --------------------------------------------------------------------------------------

class Compressors:
    """Lead/lag screw compressors with load/unload control on the mill's air demand."""

    def __init__(self, machines: list[Machine], seed: int, base_m3_min: float) -> None:
        self.machines = sorted(machines, key=lambda x: x.id)
        m = len(machines)
        self.rated = np.array([P.rated_kw(x) for x in self.machines])
        self.fad = np.array([P.param(x, "fad_m3_min", P.rated_kw(x) / 6.5) for x in self.machines])
        default = P.STOPS[MachineType.AIR_COMPRESSOR]
        self.episodes = [Episodes(P.stop_model(x) or default, stream(seed, S_STATE, 9000 + i))
                         for i, x in enumerate(self.machines)]
        self.base = base_m3_min
        self.noise = Ar1(600.0, 0.03, 1, stream(seed, S_NOISE, 9000))
        self.pnoise = Ar1(60.0, 0.015, 1, stream(seed, S_NOISE, 9001))
        self.c_energy, self.c_run = Counter(m), Counter(m)

    def block(self, ctx: Ctx, prep_running: F64, ring_doffing: F64) -> Out:
        n, m = ctx.n, len(self.machines)
        leak = sum((ctx.faults.level(x.id, FaultType.AIR_LEAK, ctx.t) for x in self.machines), np.zeros(n))
        demand = (self.base * (1.0 + self.noise(n, ctx.dt)[:, 0]) + 0.1 * prep_running + 0.8 * ring_doffing
                  + (ctx.air_m3_min if ctx.air_m3_min is not None else 0.0) + 3.0 * leak)
        fault = _states(self.episodes, ctx.t) == FAULT
        avail_cap = np.where(fault, 0.0, self.fad[None, :])
        remaining = demand.copy()
        flow = np.zeros((n, m))
        for i in range(m):       # lead first, lag takes the rest
            flow[:, i] = np.minimum(remaining, avail_cap[:, i])
            remaining -= flow[:, i]
        load = flow / self.fad[None, :]
        first = np.cumsum(~fault, axis=1) == 1                    # the lead among the healthy ones
        state = np.where(fault, FAULT, np.where(load > 0, 0, np.where(first, 1, 2))).astype(float)
        power = np.where(state == 0, self.rated * (0.3 + 0.7 * load) * 0.95,
                         np.where(state == 1, 0.3 * 0.95 * self.rated, 0.0))
        total_cap = np.maximum(avail_cap.sum(axis=1), 1e-9)
        short = np.maximum(remaining, 0.0) / total_cap
        pressure = 6.9 - 0.3 * np.minimum(demand / total_cap, 1.0) - 2.0 * short + self.pnoise(n, ctx.dt)[:, 0]
        ctx.power.update({x.id: power[:, i] for i, x in enumerate(self.machines)})
        running = (state <= 1).astype(float)
        return {
            "state": state, "pressure": np.broadcast_to(pressure[:, None], (n, m)).copy(), "air_flow": flow,
            "load": 100.0 * load, "power": power, "energy": self.c_energy(power * ctx.dt_h),
            "discharge_temp": running * (70.0 + 15.0 * load) + (1.0 - running) * (ctx.ambient_c[:, None] + 5.0)
            + 0.2 * ctx.ambient_c[:, None],
            "run_hours": self.c_run(running * ctx.dt_h),
        }


class Hvac:
    """Air conditioning per served workshop: controlled T/RH (with drift faults) and the power to hold them.

    Power = supply fan (~45 % of rated, ~ speed^3) + (machine heat in the served halls + envelope gain) / COP.
    Machine heat is the halls' electric load, so HVAC energy follows production like a real mill's.
    """

    def __init__(self, machines: list[Machine], serves: list[list[str]], seed: int) -> None:
        self.machines = machines
        self.serves = serves
        m = len(machines)
        self.rated = np.array([P.rated_kw(x) for x in machines])
        spinning = ["spinning" in s or "winding" in s for s in serves]
        self.t_set = np.array([P.param(x, "temp_setpoint", 26.0 if sp else 24.0)
                               for x, sp in zip(machines, spinning, strict=True)])
        self.rh_set = np.array([P.param(x, "rh_setpoint", 57.0 if sp else 60.0)
                                for x, sp in zip(machines, spinning, strict=True)])
        self.cop = np.array([P.param(x, "cop", 4.0) for x in machines])
        self.fan_share = np.array([P.param(x, "fan_share", 0.45) for x in machines])
        self.ua = np.array([P.param(x, "envelope_kw_per_k", 8.0) for x in machines])
        self.fan_rpm = np.array([float(x.vibration.channels[0].shaft_rpm) if x.vibration else 980.0 for x in machines])
        self.t_noise = Ar1(1200.0, 0.25, m, stream(seed, S_CLIMATE, 1))
        self.rh_noise = Ar1(1800.0, 1.0, m, stream(seed, S_CLIMATE, 2))
        self.c_energy = Counter(m)
        self.last: tuple[F64, F64] | None = None

    def climate(self, ctx: Ctx) -> tuple[F64, F64]:
        drift = _machine_faults(ctx, self.machines, FaultType.HVAC_DRIFT)
        self.tn = self.t_noise(ctx.n, ctx.dt)
        temp = self.t_set[None, :] + self.tn + 2.0 * drift
        rh = np.clip(self.rh_set[None, :] + self.rh_noise(ctx.n, ctx.dt) + 0.15 * (ctx.ambient_c[:, None] - 18.0)
                     + 10.0 * drift, 20.0, 95.0)
        for i, ws in enumerate(self.serves):
            for w in ws:
                ctx.climate[w] = (temp[:, i], rh[:, i], float(self.rh_set[i]))
        self.last = (temp, rh)
        return temp, rh

    def block(self, ctx: Ctx, machine_workshop: dict[str, str]) -> Out:
        assert self.last is not None
        temp, rh = self.last
        n, m = ctx.n, len(self.machines)
        heat = np.zeros((n, m))
        for mid, kw in ctx.power.items():
            ws = machine_workshop.get(mid)
            for i, served in enumerate(self.serves):
                if ws in served:
                    heat[:, i] += kw
        slip = _machine_faults(ctx, self.machines, FaultType.BELT_SLIP)
        speed = 1.0 - 0.05 * np.minimum(slip, 3.0)
        fan_kw = self.fan_share[None, :] * self.rated[None, :] * speed**3
        gain = heat + self.ua[None, :] * (ctx.ambient_c[:, None] - temp)
        cooling = np.maximum(gain, 0.0) / self.cop[None, :]
        power = np.minimum(fan_kw + cooling, 1.3 * self.rated[None, :])
        ctx.power.update({x.id: power[:, i] for i, x in enumerate(self.machines)})
        return {
            "state": np.zeros((n, m)), "hall_temp": temp, "hall_rh": rh,
            "temp_setpoint": np.broadcast_to(self.t_set, (n, m)).copy(),
            "rh_setpoint": np.broadcast_to(self.rh_set, (n, m)).copy(),
            "supply_air_temp": temp - 3.0 - 5.0 * np.minimum(cooling / (0.5 * self.rated[None, :]), 1.5),
            "fan_speed": self.fan_rpm[None, :] * speed * (1.0 + 0.004 * self.tn),
            "power": power, "energy": self.c_energy(power * ctx.dt_h),
        }


class Meters:
    """Energy meters: the sum of what they feed plus a small distribution loss; drop-out faults."""

    def __init__(self, machines: list[Machine], seed: int, nominal_kw: dict[str, float]) -> None:
        ids = {x.id for x in machines}
        order: list[Machine] = []
        done: set[str] = set()

        def visit(x: Machine) -> None:
            if x.id in done:
                return
            for f in x.feeds:
                if f in ids:
                    visit(next(y for y in machines if y.id == f))
            done.add(x.id)
            order.append(x)

        for x in machines:
            visit(x)
        self.machines = order
        m = len(order)
        self.loss = np.array([P.param(x, "loss_pct", 0.8) / 100.0 for x in order])
        self.extra = np.array([P.param(x, "unmetered_kw", 0.0) for x in order])
        self.v_noise = Ar1(600.0, 1.5, m, stream(seed, S_NOISE, 8000))
        nominal: dict[str, float] = dict(nominal_kw)
        for x in order:
            nominal[x.id] = sum(nominal.get(f, 0.0) for f in x.feeds)
        self.nominal = np.array([max(nominal[x.id], 1.0) for x in order])
        self.c_energy = Counter(m)

    def block(self, ctx: Ctx) -> Out:
        n, m = ctx.n, len(self.machines)
        power = np.zeros((n, m))
        for i, x in enumerate(self.machines):
            fed = sum((ctx.power[f] for f in x.feeds if f in ctx.power), np.zeros(n))
            power[:, i] = fed * (1.0 + self.loss[i]) + self.extra[i]
            ctx.power[x.id] = power[:, i]
        pf = 0.90 + 0.05 * np.minimum(power / self.nominal[None, :], 1.0)
        return {"power": power, "energy": self.c_energy(power * ctx.dt_h), "voltage": 400.0 + self.v_noise(n, ctx.dt),
                "power_factor": pf}


__all__ = ["DOFFING", "FAULT", "IDLE", "RUNNING", "STOPPED", "Compressors", "Ctx", "Flow", "Hvac", "Meters",
           "RingFrames", "Winders"]
