"""Simulated data per second of one core for examples/mill.yaml, and the simulated-to-wall-clock ratio.

Two modes are timed in the same run: stepping ``MillSim.step(1.0)`` (what the servers do, one
second of mill time per call) and ``history.generate`` at 60 s steps (what carbon/KPI tests use).
The baseline is real time (ratio 1); the issue asks for >= 60x when stepping. A naive baseline,
a per-point Python loop that only copies each point's value into a dict, is timed too, to show
what the vectorised model saves. Prints one JSON line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from spinline.core.site import load_site
from spinline.sim.history import generate
from spinline.sim.mill import MillSim

SITE = Path(__file__).resolve().parents[1] / "examples" / "mill.yaml"


def main() -> None:
    site = load_site(SITE)
    sim = MillSim(site, "mill-a")
    n_points = len(sim.points)
    steps = 2000
    t0 = time.process_time()
    for _ in range(steps):
        sim.step(1.0)
    step_cpu = time.process_time() - t0
    step_ratio = steps * 1.0 / step_cpu

    t0 = time.process_time()
    rows = sum(len(b) for b in generate(site, "mill-a", duration_s=7 * 86400, step_s=60.0))
    hist_cpu = time.process_time() - t0

    # Baseline: a per-point Python loop over the same rows (no model at all, just touching each value).
    b = sim.step(1.0)
    t0 = time.process_time()
    for _ in range(200):
        d = {}
        for k, v in zip(b.point.tolist(), b.value.tolist(), strict=True):
            d[k] = v
    naive_cpu = (time.process_time() - t0) / 200
    print(json.dumps({
        "points": n_points,
        "step_1s_points_per_s": round(steps * n_points / step_cpu),
        "step_1s_sim_to_wall_ratio": round(step_ratio, 1),
        "step_1s_ratio_vs_required_60x": round(step_ratio / 60.0, 2),
        "history_60s_points_per_s": round(rows / hist_cpu),
        "history_sim_to_wall_ratio": round(7 * 86400 / hist_cpu),
        "naive_dict_loop_points_per_s": round(n_points / naive_cpu),
        "history_vs_naive_loop": round((rows / hist_cpu) / (n_points / naive_cpu), 1),
    }))


if __name__ == "__main__":
    main()
