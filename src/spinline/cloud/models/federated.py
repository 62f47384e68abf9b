"""Federated training for mills that keep their rows: the cloud runs Flower's server, each mill's edge a
Flower client, and only aggregates cross (``spinline.core.fedstats``); the result becomes a candidate.

Flower lives in its own virtualenv (``.venv-fl``, made by ``scripts/setup``: ``flwr`` pins a protobuf,
FastAPI, Starlette, Typer and Uvicorn older than spinline's). Spinline talks to it through a narrow,
typed interface: a spec JSON in, a result JSON out, the process's exit status (``fl_server``). The mills'
clients (``spinline.edge.federated``) connect to it over gRPC.

The result is registered like any fleet model (``ModelRegistry.register``: a candidate with its held-out
metrics, the mills that contributed and its parent) and marked ``federated`` in its metrics and
comparison; from there it goes the normal way (TUF, desired state, canary, promote or rollback).
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spinline.core import fedjoin
from spinline.core.errors import SpinlineError
from spinline.health.anomaly import Mahalanobis

from .registry import KIND_PREFIX, ModelRegistry, ModelVersion

KIND = "mahalanobis"


class FederatedError(SpinlineError):
    """The federated run could not start or did not finish (no Flower venv, a mill missing, a crash)."""


def fl_python() -> Path:
    """The Flower virtualenv's interpreter (``spinline.core.fedjoin.fl_python``)."""
    try:
        return fedjoin.fl_python()
    except fedjoin.FlowerEnvMissing as exc:
        raise FederatedError(str(exc)) from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Spec:
    """What the cloud asks of a run: which mills take part and which of them are held out for evaluation."""

    mills: list[str]
    train_mills: list[str]
    test_mills: list[str]
    features: list[str]
    log_keys: list[str]
    far: float = 0.001

    def __post_init__(self) -> None:
        if set(self.train_mills) & set(self.test_mills):
            raise FederatedError("a mill is either trained on or held out, not both")
        if not self.train_mills or set(self.train_mills) | set(self.test_mills) != set(self.mills):
            raise FederatedError("every mill must be a training or a held-out mill, with one training mill at least")


class ServerRun:
    """The cloud's Flower server process for one run (start it, let the mills connect, ``wait``)."""

    def __init__(self, spec: Spec, workdir: Path, *, port: int | None = None, round_timeout_s: float = 120.0,
                 host: str = "127.0.0.1") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.spec, self.out = spec, workdir / "fl-result.json"
        self.address = f"{host}:{port or free_port()}"
        (workdir / "fl-spec.json").write_text(json.dumps(asdict(spec)))
        self.log = workdir / "fl-server.log"
        with self.log.open("wb") as lf:
            self.proc = subprocess.Popen([str(fl_python()), "-m", "spinline.cloud.models.fl_server", "--address",
                                          self.address, "--spec", str(workdir / "fl-spec.json"), "--out",
                                          str(self.out), "--round-timeout", str(round_timeout_s)],
                                         stdout=lf, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Return once the server accepts connections (the mills' clients can then be started)."""
        host, port = self.address.rsplit(":", 1)
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host   # noqa: S104 - the wildcard is probed on loopback
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise FederatedError(f"the Flower server exited with {self.proc.returncode}: "
                                     f"{self.log.read_text(errors='replace')[-800:]}")
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise FederatedError(f"the Flower server did not listen on {self.address} within {timeout_s:.0f} s")

    def wait(self, timeout_s: float = 300.0) -> dict[str, Any]:
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise FederatedError(f"the federated run took over {timeout_s:.0f} s (log: {self.log})") from None
        if rc != 0 or not self.out.exists():
            tail = self.log.read_text(errors="replace")[-800:]
            raise FederatedError(f"the Flower server exited with {rc}: {tail}")
        res: dict[str, Any] = json.loads(self.out.read_text())
        return res

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def to_params(spec: Spec, result: dict[str, Any]) -> dict[str, Any]:
    """The pooled statistics as the edge's JSON Mahalanobis detector (no baseline rows: there are none)."""
    det = Mahalanobis(far=spec.far, features=spec.features, log_keys=spec.log_keys, min_samples=8).to_dict()
    d = len(spec.features)
    centre = [float(x) for x in result["centre"]]
    det["seen"] = int(result["n"])
    det["state"] = {"centre": centre, "scale": result["scale"], "slope": [0.0] * d, "s_ref": 0.0, "med0": centre,
                    "mu": [0.0] * d, "prec": result["prec"], "cal": [], "threshold": float(result["threshold"])}
    base = {k: (math.exp(c) if k in spec.log_keys else c) for k, c in zip(spec.features, centre, strict=True)}
    return {"detector": det, "baseline": base, "commissioning_n": int(result["n"]), "iso_class": "I"}


def register(registry: ModelRegistry, machine_type: str, spec: Spec, result: dict[str, Any], *, actor: str,
             span: tuple[int, int] | None = None) -> ModelVersion:
    """Register the run's model as a candidate of the ``machine_type`` fleet line, marked federated."""
    name = f"{machine_type}.{KIND}"
    if sorted(result.get("mills", [])) != sorted(spec.mills):
        raise FederatedError(f"mills {result.get('mills')} answered, {spec.mills} were asked")
    active = next(iter(registry.versions(name=name, status="active")), None)
    held = result["held_out"]
    comparison = {"federated": True, "held_out_mills": spec.test_mills, "train_mills": result["contributors"],
                  "candidate": held, "active": None, "flwr": result.get("flwr"),
                  "why": "federated run: held-out counts from the mills' own evaluation (the active model "
                         "is not re-scored: that would need the mills' rows)"}
    metrics = {**held, "federated": True, "train": result["train"], "n_train": result["n"]}
    return registry.register(name=name, scope_kind="machine_type", scope=machine_type, kind=KIND_PREFIX + KIND,
                             params=to_params(spec, result), actor=actor, reason="trained: federated (Flower)",
                             train_mills=result["contributors"], train_start_ns=span[0] if span else None,
                             train_end_ns=span[1] if span else None, metrics=metrics, comparison=comparison,
                             parent=active.version if active is not None else None)
