"""Historical data in bulk: a month of one-minute steps for a whole mill in well under a second.

``generate`` runs ``MillSim`` in blocks (a day per chunk by default) and yields one ``Batch`` per
block, rows ordered time-major. Because every random stream is drawn in time order, the rows are
the same as stepping ``MillSim.step(step_s)`` one step at a time with the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from spinline.core.batch import Batch
from spinline.core.site import Fault, Site
from spinline.sim.mill import DEFAULT_START_NS, MillSim


def generate(site: Site, mill_id: str, start_ns: int = DEFAULT_START_NS, duration_s: float = 86400.0,
             step_s: float = 60.0, seed: int | None = None, *, chunk_s: float = 86400.0,
             faults: Sequence[Fault] = ()) -> Iterator[Batch]:
    """Yield Batches covering ``(start_ns, start_ns + duration_s]`` at ``step_s`` spacing.

    The first row is one step after ``start_ns`` (values are reported at the end of each step).
    """
    if step_s <= 0 or duration_s <= 0:
        raise ValueError("duration_s and step_s must be positive")
    sim = MillSim(site, mill_id, seed=seed, start_ns=start_ns, faults=faults)
    total = int(math.floor(duration_s / step_s + 1e-9))
    per_chunk = max(1, int(chunk_s // step_s))
    done = 0
    while done < total:
        n = min(per_chunk, total - done)
        yield sim.block_batch(n, step_s)
        done += n
