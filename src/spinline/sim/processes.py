"""Random processes the mill model is built from, all evaluable over a block of time steps.

Why blocks: ``history.generate`` asks for a day of one-minute steps at once and the servers ask
for one step at a time. Every process here draws its random numbers in time order from its own
generator, so the values at a given time are the same whichever way the time axis is cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

F64 = npt.NDArray[np.float64]

#: State codes shared by every machine template (the templates' ``states`` say the same).
RUNNING, IDLE, STOPPED, FAULT, DOFFING = 0, 1, 2, 3, 4


def stream(seed: int, *key: int) -> np.random.Generator:
    """An independent generator per (seed, component, machine ...): adding a machine or a draw in one
    component never shifts the random numbers of another."""
    return np.random.default_rng([seed, *key])


@dataclass(frozen=True, slots=True)
class StopModel:
    """Alternating renewal process: running spells, then a stop of a drawn kind.

    ``mean_run_h``: mean hours between stops; ``kinds``: (state code, probability, mean minutes).
    Durations are gamma(shape 2): rarely near zero, a long right tail, like real stop logs.
    """

    mean_run_h: float
    kinds: tuple[tuple[int, float, float], ...]

    @property
    def mean_down_h(self) -> float:
        return sum(p * m for _, p, m in self.kinds) / 60.0

    @property
    def availability(self) -> float:
        return self.mean_run_h / (self.mean_run_h + self.mean_down_h)


@dataclass(slots=True)
class Episodes:
    """The lazily drawn stop episodes of one machine: [start_s, end_s) with a state code."""

    model: StopModel
    rng: np.random.Generator
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)
    horizon_s: float = 0.0
    _arr: tuple[F64, F64, npt.NDArray[np.int64]] | None = None

    def __post_init__(self) -> None:
        # Start somewhere inside a running spell so machines are not all in phase at t = 0.
        self.horizon_s = -self.rng.uniform(0.0, self.model.mean_run_h * 3600.0)

    def _extend(self, until_s: float) -> None:
        probs = np.array([p for _, p, _ in self.model.kinds])
        probs = probs / probs.sum()
        while self.horizon_s <= until_s:
            start = self.horizon_s + self.rng.gamma(2.0, self.model.mean_run_h * 3600.0 / 2.0)
            k = int(self.rng.choice(len(probs), p=probs))
            code, _, mean_min = self.model.kinds[k]
            end = start + self.rng.gamma(2.0, mean_min * 60.0 / 2.0)
            self.starts.append(start)
            self.ends.append(end)
            self.codes.append(code)
            self.horizon_s = end
        self._arr = None

    def state(self, t_s: F64) -> npt.NDArray[np.int64]:
        """State code at each time (RUNNING outside episodes)."""
        self._extend(float(t_s[-1]))
        if self._arr is None:
            # Forget episodes that ended long ago; state queries only move forward.
            keep = max(0, len(self.ends) - 64)
            self.starts, self.ends, self.codes = self.starts[keep:], self.ends[keep:], self.codes[keep:]
            self._arr = (np.asarray(self.starts), np.asarray(self.ends), np.asarray(self.codes, dtype=np.int64))
        starts, ends, codes = self._arr
        idx = np.searchsorted(starts, t_s, side="right") - 1
        ok = idx >= 0
        idx_c = np.maximum(idx, 0)
        inside = ok & (t_s < ends[idx_c])
        return np.where(inside, codes[idx_c], RUNNING)


class Ewma:
    """Exponentially weighted mean over time (time constant tau_s), column-wise, state carried."""

    def __init__(self, tau_s: float, initial: F64) -> None:
        self.tau_s = tau_s
        self.y = np.asarray(initial, dtype=float).copy()

    def __call__(self, x: F64, dt_s: float) -> F64:
        a = 1.0 - np.exp(-dt_s / self.tau_s)
        out, zf = lfilter([a], [1.0, -(1.0 - a)], x, axis=0, zi=((1.0 - a) * self.y)[None, :])
        self.y = out[-1].copy()
        return np.asarray(out)


class Ar1:
    """Stationary AR(1) noise with standard deviation sigma and correlation time tau_s."""

    def __init__(self, tau_s: float, sigma: F64 | float, n: int, rng: np.random.Generator) -> None:
        self.tau_s = tau_s
        self.sigma = np.broadcast_to(np.asarray(sigma, dtype=float), (n,)).copy()
        self.rng = rng
        self.y = self.rng.standard_normal(n) * self.sigma

    def __call__(self, steps: int, dt_s: float) -> F64:
        phi = np.exp(-dt_s / self.tau_s)
        e = self.rng.standard_normal((steps, len(self.y))) * self.sigma * np.sqrt(1.0 - phi * phi)
        out, _ = lfilter([1.0], [1.0, -phi], e, axis=0, zi=(phi * self.y)[None, :])
        self.y = out[-1].copy()
        return np.asarray(out)


def periodic_phase(t_s: F64, period_s: F64, phase_s: F64) -> F64:
    """Position (0..1) inside a repeating cycle, per machine column."""
    return np.asarray(np.mod(t_s[:, None] + phase_s[None, :], period_s[None, :]) / period_s[None, :])


def cycles_started(t_s: F64, period_s: F64, phase_s: F64, at_frac: F64) -> F64:
    """How many cycle points at fraction ``at_frac`` of the period have passed since t = 0."""
    x = (t_s[:, None] + phase_s[None, :]) / period_s[None, :] - at_frac[None, :]
    x0 = phase_s / period_s - at_frac
    return np.asarray(np.floor(x) - np.floor(x0)[None, :])
