"""``Backoff``: the one exponential backoff of spinline (device polls, connector reconnects, the uplink).

Pure and deterministic per seed, so tests can reason about delays: ``fail()`` records a failure
and returns the delay before the next attempt, ``min(cap_s, base_s * factor ** (failures - 1))``,
with full jitter in [0.5, 1] of that step unless ``jitter=False``; ``reset()`` after a success.
The exponent stops growing once the cap is reached, so a link that stays down for days never
overflows the float arithmetic.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with jitter in [0.5, 1] of the step, capped (deterministic per seed)."""

    base_s: float = 0.5
    cap_s: float = 30.0
    factor: float = 2.0
    seed: int = 0
    jitter: bool = True
    failures: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _max_exp: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.base_s > 0 and self.cap_s >= self.base_s and self.factor >= 1):
            raise ValueError(f"backoff needs 0 < base_s <= cap_s and factor >= 1, got {self.base_s}, "
                             f"{self.cap_s}, {self.factor}")
        self._rng = random.Random(self.seed)
        # Past this exponent every step is the cap: never compute factor ** (a huge number).
        self._max_exp = 0 if self.factor == 1 else math.ceil(math.log(self.cap_s / self.base_s, self.factor)) + 1

    def step(self) -> float:
        """The un-jittered delay for the current failure count."""
        exp = min(max(self.failures - 1, 0), self._max_exp)
        return min(self.cap_s, self.base_s * self.factor ** exp)

    def fail(self) -> float:
        """Record a failure; the delay before the next attempt."""
        self.failures += 1
        step = self.step()
        return step * (0.5 + 0.5 * self._rng.random()) if self.jitter else step

    def reset(self) -> None:
        self.failures = 0
