"""Starting a federated run from the product: the cloud's Flower server for a machine type, and a signed
join request to the edge of every federated mill that has that machine type.

``FederatedRuns.start`` picks the federated mills with assets of the machine type, splits them mill-wise
(``training.split_mills``), starts ``ServerRun`` and queues one join request (``core.fedjoin.Join``) per
active edge of each mill in ``federated_joins``. The request goes down the way snapshot requests do: on
the MQTT requests topic, signed with the edge's key (``publish``, when the cloud runs MQTT ingest), and in
the signed answer to an HTTP edge's status posts (``take``: re-sent with each answer until the edge's status
shows the run, since an answer the edge gave up waiting for is lost; the edge ignores a run it has). The
edge exports its feature log, runs
its Flower client and reports ``federated`` (joining, done, failed) in its status. ``finish`` waits for
the server, registers the result as a federated candidate (``federated.register``) and records the run
in ``federated_runs``; a run that fails (a mill's edge never joins: Flower waits for every mill until the
timeout) is recorded as failed with, per mill, whether its edge took the request.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from spinline.core.fedjoin import Join
from spinline.core.site import Mill, iter_machines
from spinline.health.anomaly import VIB_LOG_KEYS, VIB_MODEL_KEYS

from .federated import FederatedError, ServerRun, Spec, register
from .registry import ModelRegistry
from .training import fault_windows, split_mills

log = logging.getLogger(__name__)
metadata = sa.MetaData()
runs_t = sa.Table(
    "federated_runs", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("machine_type", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),     # running | done | failed
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("mills", sa.Text, nullable=False),            # JSON: {"train": [...], "test": [...]}
    sa.Column("server", sa.String(300), nullable=False),
    sa.Column("started_ns", sa.BigInteger, nullable=False),
    sa.Column("finished_ns", sa.BigInteger),
    sa.Column("version", sa.String(64)),
    sa.Column("detail", sa.Text, nullable=False, default=""),
)
joins_t = sa.Table(
    "federated_joins", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("mill", sa.String(64), nullable=False),
    sa.Column("edge", sa.String(64), nullable=False, index=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    #: First handed to the edge (a status answer or an MQTT message; either can be lost on the way) ...
    sa.Column("sent_ns", sa.BigInteger),
    #: ... and when the edge's status first showed the run (it has it): no more re-sends.
    sa.Column("taken_ns", sa.BigInteger),
)


@dataclass(slots=True)
class Started:
    """A run whose server listens and whose join requests are queued (``FederatedRuns.finish`` ends it)."""

    run_id: str
    machine_type: str
    spec: Spec
    server: ServerRun
    span: tuple[int, int]
    timeout_s: float
    actor: str


def assets_of(mill: Mill, machine_type: str) -> list[str]:
    """``mill/machine/channel`` of every vibration channel of the mill's machines of that type."""
    return [f"{mill.id}/{m.id}/{c.name}" for _ws, _line, m in iter_machines(mill)
            if m.type.value == machine_type and m.vibration is not None for c in m.vibration.channels]


class FederatedRuns:
    """Federated runs over the metadata database (synchronous; the API runs it in threads)."""

    def __init__(self, engine: sa.Engine, registry: ModelRegistry, *, mills: Callable[[], Mapping[str, Mill]],
                 edges_of: Callable[[str], Sequence[str]], orders_of: Callable[[str], Sequence[Any]],
                 workdir: Path, bind_host: str = "127.0.0.1", advertise_host: str | None = None,
                 publish: Callable[[str, list[str]], object] | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.engine, self.registry = engine, registry
        self.mills, self.edges_of, self.orders_of = mills, edges_of, orders_of
        self.workdir, self.bind_host, self.advertise_host = workdir, bind_host, advertise_host
        #: Hands queued requests of (mill, edges) to MQTT edges now (the ingest worker's ``publish_requests``).
        self.publish = publish
        self.clock = clock

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    def start(self, machine_type: str, *, actor: str, held_out: Sequence[str] | None = None, days: float = 90.0,
              timeout_s: float = 300.0) -> Started:
        """Start the server and queue the join requests; FederatedError when the run cannot start."""
        mills = {m: cfg for m, cfg in self.mills().items() if cfg.federated and assets_of(cfg, machine_type)}
        if len(mills) < 2:
            raise FederatedError(f"a federated run of {machine_type} needs two federated mills with such machines "
                                 f"or more; found {sorted(mills) or 'none'}")
        edges = {m: list(self.edges_of(m)) for m in mills}
        if missing := sorted(m for m, e in edges.items() if not e):
            raise FederatedError(f"federated mill(s) {', '.join(missing)} have no active edge to run the client")
        if held_out:
            if unknown := sorted(set(held_out) - set(mills)):
                raise FederatedError(f"held-out mill(s) {', '.join(unknown)} are not federated mills of "
                                     f"{machine_type}")
            test = sorted(set(held_out))
            train = sorted(set(mills) - set(test))
        else:
            train, test = split_mills(list(mills))
        feats = list(VIB_MODEL_KEYS)
        spec = Spec(mills=sorted(mills), train_mills=train, test_mills=test, features=feats,
                    log_keys=[k for k in VIB_LOG_KEYS if k in feats])
        run_id = f"fl-{uuid.uuid4().hex[:12]}"
        now = self.clock()
        span = (now - int(days * 86400e9), now)
        server = ServerRun(spec, self.workdir / run_id, round_timeout_s=timeout_s, host=self.bind_host)
        try:
            server.wait_ready()
        except FederatedError:
            server.stop()
            raise
        port = server.address.rsplit(":", 1)[1]
        address = f"{self.advertise_host}:{port}" if self.advertise_host else server.address
        with self.engine.begin() as con:
            con.execute(runs_t.insert().values(id=run_id, machine_type=machine_type, status="running",
                                               actor=actor[:128], mills=json.dumps({"train": train, "test": test}),
                                               server=address, started_ns=now, detail=""))
            for m in sorted(mills):
                windows = {a: [[s, e] for s, e in w] for a, w in fault_windows(self.orders_of(m)).items()}
                body = Join(run=run_id, server=address, machine_type=machine_type,
                            assets=assets_of(mills[m], machine_type), features=feats, log_keys=spec.log_keys,
                            start_ns=span[0], end_ns=span[1], windows=windows).to_dict()
                for e in edges[m]:
                    con.execute(joins_t.insert().values(run_id=run_id, mill=m, edge=e, body=json.dumps(body),
                                                        created_ns=now))
        log.info("federated run %s of %s started on %s: train %s, held out %s", run_id, machine_type, address,
                 train, test)
        if self.publish is not None:
            for m in sorted(mills):
                self.publish(m, edges[m])
        return Started(run_id, machine_type, spec, server, span, timeout_s, actor)

    def finish(self, run: Started) -> dict[str, Any]:
        """Wait for the server; register the candidate (done) or record why it failed. The run's record."""
        try:
            result = run.server.wait(run.timeout_s)
            cand = register(self.registry, run.machine_type, run.spec, result, actor=run.actor, span=run.span)
        except Exception as exc:   # any failure ends the run as failed, with the reason recorded
            run.server.stop()
            detail = f"{exc}. {self._joins_report(run.run_id)}"
            self._close(run.run_id, "failed", detail, None)
            log.warning("federated run %s failed: %s", run.run_id, detail)
        else:
            self._close(run.run_id, "done", f"candidate {cand.name} {cand.version}", cand.version)
        rec = self.get(run.run_id)
        assert rec is not None
        return rec

    def run(self, machine_type: str, **kw: Any) -> dict[str, Any]:
        """``start`` and ``finish`` in one call (the CLI)."""
        return self.finish(self.start(machine_type, **kw))

    def _joins_report(self, run_id: str) -> str:
        with self.engine.connect() as con:
            rows = con.execute(sa.select(joins_t.c.mill, joins_t.c.edge, joins_t.c.sent_ns, joins_t.c.taken_ns)
                               .where(joins_t.c.run_id == run_id).order_by(joins_t.c.mill)).all()
        never = [f"{m} (edge {e})" for m, e, s, _t in rows if s is None]
        lost = [f"{m} (edge {e})" for m, e, s, t in rows if s is not None and t is None]
        took = [f"{m} (edge {e})" for m, e, s, t in rows if t is not None]
        parts = []
        if never:
            parts.append(f"never took its join request (offline, or not reachable): {', '.join(never)}")
        if lost:
            parts.append(f"was sent it, but its status never showed the run: {', '.join(lost)}")
        if took:
            parts.append(f"took it (see the edge's status 'federated' for its client's outcome): {', '.join(took)}")
        return "; ".join(parts)

    def _close(self, run_id: str, state: str, detail: str, version: str | None) -> None:
        with self.engine.begin() as con:
            con.execute(runs_t.update().where(runs_t.c.id == run_id).values(
                status=state, detail=detail[:4000], version=version, finished_ns=self.clock()))
            con.execute(joins_t.update().where(joins_t.c.run_id == run_id, joins_t.c.taken_ns.is_(None))
                        .values(taken_ns=-1))

    def get(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as con:
            r = con.execute(sa.select(runs_t).where(runs_t.c.id == run_id)).mappings().first()
        if r is None:
            return None
        return {**dict(r), "mills": json.loads(r["mills"])}

    def take(self, edge: str, has_run: str | None = None) -> dict[str, Any] | None:
        """The oldest join request of a running run that ``edge`` has not shown it has (``has_run``: the
        run its status names): handed out again until it does."""
        now = self.clock()
        with self.engine.begin() as con:
            if has_run:
                con.execute(joins_t.update().where(joins_t.c.edge == edge, joins_t.c.run_id == has_run,
                                                   joins_t.c.taken_ns.is_(None)).values(taken_ns=now))
            row = con.execute(sa.select(joins_t.c.id, joins_t.c.body, joins_t.c.sent_ns)
                              .join(runs_t, runs_t.c.id == joins_t.c.run_id)
                              .where(joins_t.c.edge == edge, joins_t.c.taken_ns.is_(None),
                                     runs_t.c.status == "running").order_by(joins_t.c.id)).first()
            if row is None:
                return None
            if row[2] is None:
                con.execute(joins_t.update().where(joins_t.c.id == row[0]).values(sent_ns=now))
        body: dict[str, Any] = json.loads(row[1])
        return body
