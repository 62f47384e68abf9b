"""The two files a model update consists of, shared by the cloud (writes them) and the edge (reads them).

* **artefact** (``models/<name>/<version>.json``): ``{"format": 1, "name", "version", "seq", "kind",
  "params"}`` in canonical JSON (sorted keys, no spaces); ``params`` are what the edge's scorer loads
  (``BaselineDetector.to_dict`` and the baseline medians for ``asset_monitor/*`` kinds). Plain JSON,
  never a pickle: a model from the network is data, not code.
* **desired state** (``desired/<edge>.json``): ``{"format": 1, "edge", "mill", "issued_ns", "assets":
  {asset: {"name", "version", "seq", "kind", "target", "sha256", "role", "allow_rollback"}}}``.

Both travel as TUF targets: their hashes and lengths are in the signed targets metadata.
"""

from __future__ import annotations

import json
from typing import Any

ARTEFACT_FORMAT = 1
DESIRED_FORMAT = 1


def canonical(obj: Any) -> bytes:
    """Sorted keys, no spaces; NaN as Python's json writes it (a baseline may lack a feature)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


def artefact_bytes(name: str, version: str, seq: int, kind: str, params: dict[str, Any]) -> bytes:
    return canonical({"format": ARTEFACT_FORMAT, "name": name, "version": version, "seq": seq, "kind": kind,
                      "params": params})


def artefact_path(name: str, version: str, fmt: str = "json") -> str:
    return f"models/{name}/{version}.{fmt}"


def desired_path(edge: str) -> str:
    return f"desired/{edge}.json"


#: MQTT downlink nudge: "your desired state or its metadata changed, check now". It carries nothing an
#: edge trusts (the check goes through TUF over HTTP); it only saves the wait until the next poll.
TOPIC_MODELS = "spinline/down/{mill}/{edge}/models"
