"""The cloud's Flower server for one federated training run (runs in ``.venv-fl``, not in spinline's venv).

``python -m spinline.cloud.models.fl_server --address 127.0.0.1:PORT --spec spec.json --out result.json``

Flower (``flwr``) pins an older API stack (protobuf, FastAPI, Starlette, Typer, Uvicorn) than spinline
runs, so it lives in its own virtualenv and this process talks to spinline only through two JSON files:
``spec`` in (features, log keys, false-alarm rate, which mills train and which are held out) and
``result`` out (pooled centre, scale, precision, threshold and the held-out counts). It uses Flower's
gRPC server (``flwr.server.start_server``; no simulation engine, no Ray) and waits for every mill.

Two rounds of the strategy (``spinline.core.fedstats``): moments, then calibration; after the second,
every mill evaluates the model on its own rows and sends counts. No row, score or snapshot is asked for.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import flwr
import numpy as np
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAvg

from spinline.core import fedstats


class FederatedMahalanobis(FedAvg):
    """FedAvg's plumbing with the aggregation of ``fedstats``: exact pooled moments, summed histograms."""

    def __init__(self, spec: dict[str, Any]) -> None:
        n = len(spec["mills"])
        super().__init__(fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=n, min_evaluate_clients=n,
                         min_available_clients=n, on_fit_config_fn=self._config,
                         on_evaluate_config_fn=self._config,
                         initial_parameters=ndarrays_to_parameters([np.zeros(1)]))
        self.spec = spec
        self.model: dict[str, Any] = {}
        self.evaluation: dict[str, dict[str, Any]] = {}
        self.seen_mills: list[str] = []

    def _config(self, server_round: int) -> dict[str, Any]:
        return {"round": server_round, "train_mills": ",".join(self.spec["train_mills"])}

    def aggregate_fit(self, server_round: int, results: list[Any], failures: list[Any]) -> tuple[Any, dict[str, Any]]:
        if failures:
            raise RuntimeError(f"{len(failures)} mill(s) failed in round {server_round}")
        parts = [(r.metrics["mill"], r.num_examples, parameters_to_ndarrays(r.parameters)) for _c, r in results]
        self.seen_mills = sorted(m for m, _n, _a in parts)
        feats, logs = self.spec["features"], self.spec["log_keys"]
        if server_round == 1:
            n, centre, scale, prec = fedstats.pool([(k, a[0], a[1]) for _m, k, a in parts], feats, logs)
            self.model = {"n": n, "centre": centre, "scale": scale, "prec": prec,
                          "contributors": sorted(m for m, k, _a in parts if k > 0)}
            return ndarrays_to_parameters([centre, scale, prec]), {}
        counts = sum(a[0] for _m, _k, a in parts)
        self.model["threshold"] = fedstats.threshold(np.asarray(counts), float(self.spec["far"]))
        m = self.model
        return ndarrays_to_parameters([m["centre"], m["scale"], m["prec"], np.array([m["threshold"]])]), {}

    def aggregate_evaluate(self, server_round: int, results: list[Any],
                           failures: list[Any]) -> tuple[float | None, dict[str, Any]]:
        for _c, r in results:
            if r.metrics.get("evaluated"):
                self.evaluation[str(r.metrics["mill"])] = {k: v for k, v in r.metrics.items() if k != "mill"}
        return None, {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True)
    p.add_argument("--spec", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--round-timeout", type=float, default=120.0)
    a = p.parse_args(argv)
    spec = json.loads(a.spec.read_text())
    strategy = FederatedMahalanobis(spec)
    flwr.server.start_server(server_address=a.address, strategy=strategy,
                             config=flwr.server.ServerConfig(num_rounds=2, round_timeout=a.round_timeout))
    if "threshold" not in strategy.model:
        print("federated run did not complete both rounds", file=sys.stderr)   # noqa: T201 - a CLI's error
        return 1
    m = strategy.model
    held = [strategy.evaluation[x] for x in spec["test_mills"] if x in strategy.evaluation]
    trained = [strategy.evaluation[x] for x in spec["train_mills"] if x in strategy.evaluation]
    out = {"n": m["n"], "centre": m["centre"].tolist(), "scale": m["scale"].tolist(), "prec": m["prec"].tolist(),
           "threshold": m["threshold"], "contributors": m["contributors"], "mills": strategy.seen_mills,
           "evaluated": sorted(strategy.evaluation), "held_out": fedstats.combine(held),
           "train": fedstats.combine(trained), "flwr": flwr.__version__}
    a.out.write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
