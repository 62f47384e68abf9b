"""A mill's Flower client for one federated training run (runs in ``.venv-fl`` on the mill's edge).

``python -m spinline.edge.fl_client --server 127.0.0.1:PORT --rows rows.json``

``rows.json`` is written by the edge (``spinline.edge.federated.write_rows``) into its own data directory
and never leaves the mill: the feature rows of the mill's assets of one machine type with their labels
(from the verified work orders' fault windows). What this process sends to the cloud's Flower server is
only what ``spinline.core.fedstats`` computes from them: pooled moments (round 1), a distance histogram
(round 2) and evaluation counts; a mill with too few healthy rows sends zeros.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import flwr
import numpy as np

from spinline.core import fedstats


class MillClient(flwr.client.NumPyClient):
    """One mill's side: its rows stay here; fit and evaluate answer with aggregates only."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.mill = str(doc["mill"])
        self.labels = [int(y) for y in doc["labels"]]
        self.z = fedstats.transform(doc["rows"], doc["features"], doc["log_keys"])
        self.healthy = self.z[np.asarray(self.labels, dtype=int) == 0] if self.labels else self.z

    def _trains(self, config: dict[str, Any]) -> bool:
        return self.mill in str(config.get("train_mills", "")).split(",")

    def get_parameters(self, config: dict[str, Any]) -> list[Any]:
        return []

    def fit(self, parameters: list[Any], config: dict[str, Any]) -> tuple[list[Any], int, dict[str, Any]]:
        d = self.z.shape[1]
        if int(config["round"]) == 1:
            n, mean, second = fedstats.moments(self.healthy) if self._trains(config) else \
                (0, np.zeros(d), np.zeros((d, d)))
            return [mean, second], n, {"mill": self.mill}
        centre, scale, prec = parameters[:3]
        h = fedstats.histogram(fedstats.distances(self.healthy, centre, scale, prec)) if self._trains(config) \
            else np.zeros(len(fedstats.EDGES) - 1)
        return [h], int(h.sum()), {"mill": self.mill}

    def evaluate(self, parameters: list[Any], config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        if len(parameters) < 4:      # after round 1 there is no threshold yet
            return 0.0, 0, {"mill": self.mill, "evaluated": False}
        centre, scale, prec, thr = parameters
        scores = fedstats.distances(self.z, centre, scale, prec) / float(thr[0])
        return 0.0, len(self.labels), {"mill": self.mill, "evaluated": True, **fedstats.evaluate(scores, self.labels)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True)
    p.add_argument("--rows", required=True, type=Path)
    a = p.parse_args(argv)
    client = MillClient(json.loads(a.rows.read_text()))
    flwr.client.start_client(server_address=a.server, client=client.to_client(), insecure=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
