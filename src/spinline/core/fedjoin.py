"""The cloud's request that a federated mill's edge join a Flower run, as it travels down (both sides).

The request rides the signed downlink that already carries snapshot requests: the ``federated`` field of
the signed object on ``spinline/down/{mill}/{edge}/requests`` (MQTT edges) or of the signed answer to an
HTTP edge's status post. It names the run, the Flower server's address, the assets of the machine type,
the features, the span of rows and the fault windows of the mill's verified work orders (the cloud's own
records) that label them; it carries no row. ``Join.parse`` checks an incoming one field by field.

``fl_python`` finds Flower's own interpreter (``.venv-fl``, ``scripts/setup``), which both the cloud's
server and the edge's client run in.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import SpinlineError


class FlowerEnvMissing(SpinlineError):
    """No Flower interpreter where ``SPINLINE_FL_PYTHON`` or the checkout's ``.venv-fl`` points."""


def fl_python() -> Path:
    """The Flower virtualenv's interpreter: ``SPINLINE_FL_PYTHON``, else ``.venv-fl`` beside the checkout."""
    env = os.environ.get("SPINLINE_FL_PYTHON")
    p = Path(env) if env else Path(__file__).resolve().parents[3] / ".venv-fl" / "bin" / "python"
    if not p.exists():
        raise FlowerEnvMissing(f"no Flower environment at {p}: run scripts/setup (it makes .venv-fl with flwr)")
    return p


@dataclass(frozen=True, slots=True)
class Join:
    """One mill's part in one run: what its edge exports from its feature log and where it connects."""

    run: str
    server: str
    machine_type: str
    assets: list[str]
    features: list[str]
    log_keys: list[str]
    start_ns: int
    end_ns: int
    #: ``machine/channel`` -> [[start_ns, end_ns), ...]: the verified fault windows (labels).
    windows: dict[str, list[list[int]]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, d: object) -> Join:
        """A join request from the downlink; ValueError names the first field that is wrong."""
        if not isinstance(d, dict):
            raise ValueError("a federated join request is a JSON object")
        strs = {"run": 64, "server": 300, "machine_type": 64}
        for k, n in strs.items():
            if not isinstance(d.get(k), str) or not 0 < len(d[k]) <= n:
                raise ValueError(f"federated join: {k} must be a string of 1..{n} characters")
        for k in ("assets", "features", "log_keys"):
            v = d.get(k)
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v) or len(v) > 1000:
                raise ValueError(f"federated join: {k} must be a list of strings")
        if not d["assets"] or not d["features"]:
            raise ValueError("federated join: no asset or no feature")
        for k in ("start_ns", "end_ns"):
            if not isinstance(d.get(k), int):
                raise ValueError(f"federated join: {k} must be an integer")
        w = d.get("windows", {})
        if not isinstance(w, dict) or not all(isinstance(a, str) and isinstance(v, list) and all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(x, int) for x in p) for p in v)
                for a, v in w.items()):
            raise ValueError("federated join: windows must map an asset to [[start_ns, end_ns], ...]")
        return cls(run=d["run"], server=d["server"], machine_type=d["machine_type"], assets=list(d["assets"]),
                   features=list(d["features"]), log_keys=list(d["log_keys"]), start_ns=d["start_ns"],
                   end_ns=d["end_ns"], windows={a: [list(p) for p in v] for a, v in w.items()})
