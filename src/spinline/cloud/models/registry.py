"""The model registry: versions, their status and its history, the desired state per mill, the edges'
reports, and the canary judge acting on their evidence.

Status of a version (``TRANSITIONS``; anything else raises ``InvalidModelTransition``)::

    candidate --canary--> canary --promote--> active --retire/superseded--> retired
        |                   +--rollback--> retired        ^--rollback (restore)--+
        +--promote (no canary)--> active

Every change writes a ``models_transitions`` row (from, to, who, when, why). A model line (``name``)
has at most one active and one canary version; promoting one retires the active one it supersedes,
and a rollback retires the bad one and restores the version it superseded (the edges then get a
desired state with ``allow_rollback``: a rollback they were asked for).

**Desired state.** Rows of ``models_desired`` say, per mill, which version runs for a selector (the
whole mill, a machine type, an edge, or one asset), as ``active`` or ``canary`` (with the share of
matching assets that get the canary, chosen by a stable hash of the asset: the same assets stay in
the canary). ``desired_doc(mill, edge)`` resolves them per asset (most specific selector wins; a
canary beats the active model on the assets in its share) and ``publish(mill)`` signs every edge's
document and the artefacts they name into the mill's TUF repository.

**Artefacts** are JSON (``spinline.core.modelspec``); the registry checks that an ``asset_monitor/*``
model loads (``BaselineDetector.from_dict``) before storing it: a model that cannot run is refused
here, not discovered on 40 edges.

Size: the status machine, the desired state and the canary judge share one transaction boundary and
one history table (every change of what runs where is one recorded row); split apart they would each
re-read the same version rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from spinline.core.errors import SpinlineError
from spinline.core.modelspec import DESIRED_FORMAT, artefact_bytes, artefact_path, canonical, desired_path
from spinline.core.site import Mill, iter_machines
from spinline.health.anomaly import MODEL_KINDS, BaselineDetector

from . import tables as t
from .canary import Counts, Policy, Verdict, judge
from .training import MillRows, TrainResult
from .training import train as train_model
from .tuf_repo import TufRepository

log = logging.getLogger(__name__)

STATUSES = ("candidate", "canary", "active", "retired")
TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({"candidate"}),
    "candidate": frozenset({"canary", "active", "retired"}),
    "canary": frozenset({"active", "retired"}),
    "active": frozenset({"retired"}),
    "retired": frozenset({"active"}),
}
SELECTORS = ("asset", "edge", "machine_type", "mill")   # most specific first
SCOPE_KINDS = ("machine_type", "asset")
KIND_PREFIX = "asset_monitor/"
JUDGE = "canary-judge"
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,119}")


class RegistryError(SpinlineError):
    """A request the registry refuses (unknown model, bad artefact, wrong scope)."""


class InvalidModelTransition(RegistryError):
    pass


class UnknownModel(RegistryError):
    pass


@dataclass(frozen=True, slots=True)
class Transition:
    from_status: str | None
    to_status: str
    actor: str
    reason: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class ModelVersion:
    id: int
    name: str
    seq: int
    version: str
    scope_kind: str
    scope: str
    mill: str | None
    kind: str
    format: str
    sha256: str
    size: int
    features: list[str]
    train_mills: list[str]
    train_start_ns: int | None
    train_end_ns: int | None
    metrics: dict[str, Any]
    comparison: dict[str, Any]
    parent: str | None
    status: str
    created_ns: int
    created_by: str
    transitions: tuple[Transition, ...] = ()

    @property
    def target(self) -> str:
        return artefact_path(self.name, self.version)   # JSON either way (ONNX bytes travel base64 inside)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "seq": self.seq, "scope_kind": self.scope_kind,
                "scope": self.scope, "mill": self.mill, "kind": self.kind, "format": self.format,
                "sha256": self.sha256, "size": self.size, "features": self.features,
                "train_mills": self.train_mills, "train_start_ns": self.train_start_ns,
                "train_end_ns": self.train_end_ns, "metrics": self.metrics, "comparison": self.comparison,
                "parent": self.parent, "status": self.status, "created_ns": self.created_ns,
                "created_by": self.created_by,
                "transitions": [{"from": x.from_status, "to": x.to_status, "actor": x.actor, "reason": x.reason,
                                 "ts_ns": x.ts_ns} for x in self.transitions]}


@dataclass(frozen=True, slots=True)
class AssetRef:
    """An asset the registry can target: ``{mill}/{machine}/{channel}`` and its machine type."""

    asset: str
    machine_type: str


def mill_assets(mill: Mill) -> list[AssetRef]:
    """Every vibration channel of a mill's site model (what its edges score)."""
    out: list[AssetRef] = []
    for _ws, _line, m in iter_machines(mill):
        if m.vibration is not None:
            out += [AssetRef(f"{mill.id}/{m.id}/{ch.name}", m.type.value) for ch in m.vibration.channels]
    return out


def validate_params(kind: str, params: Mapping[str, Any]) -> list[str]:
    """Refuse parameters the edge's scorer could not run; returns the detector's feature names."""
    if not kind.startswith(KIND_PREFIX) or kind[len(KIND_PREFIX):] not in MODEL_KINDS:
        raise RegistryError(f"unknown model kind {kind!r} (one of {', '.join(KIND_PREFIX + k for k in MODEL_KINDS)})")
    try:
        det = BaselineDetector.from_dict(params["detector"])
        base = params["baseline"]
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryError(f"the parameters do not load as {kind}: {exc!r}") from None
    if det.kind != kind[len(KIND_PREFIX):]:
        raise RegistryError(f"detector kind {det.kind!r} does not match model kind {kind!r}")
    if not isinstance(base, dict) or not base:
        raise RegistryError("a model needs its baseline medians (params.baseline)")
    try:
        canonical(dict(params))
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"parameters are not plain JSON: {exc}") from None
    return list(det.features or ())


def without_rows(params: Mapping[str, Any]) -> dict[str, Any]:
    """A fleet model without its baseline buffer: the fitted state scores; the rows would carry the training
    mills' feature rows to every other mill's edges. Refuses a detector that is not fitted."""
    det = dict(params["detector"])
    det["rows"], det["speeds"] = [], []
    if not BaselineDetector.from_dict(det)._ready():  # noqa: SLF001 - fitted state present and clean
        raise RegistryError("the detector is not fitted (no state): train it before registering")
    return {**params, "detector": det}


def in_share(asset: str, version: str, share: float) -> bool:
    """Stable choice of canary assets: the same asset stays in (or out of) a version's canary."""
    if share >= 1.0:
        return True
    h = int(hashlib.sha256(f"{version}|{asset}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < share


def _j(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


class ModelRegistry:
    """Versions, status, desired state, reports (see module docstring). Synchronous (SQLAlchemy Core)."""

    def __init__(self, engine: Engine, repo: TufRepository | None = None, *,
                 mills: Callable[[str], Mill | None] | None = None, edges_of: Callable[[str], list[str]] | None = None,
                 clock: Callable[[], int] = time.time_ns, policy: Policy | None = None) -> None:
        self.engine = engine
        self.repo = repo
        self.mill_of_id = mills or (lambda _m: None)
        self.edges_of = edges_of or (lambda _m: [])
        self.clock = clock
        self.policy = policy or Policy()
        #: Alarms of (version, mills) closed as no fault found (``HealthQueries.no_fault_found``; the app wires
        #: it): the canary judge's false-alarm evidence. None: not counted.
        self.nff: Callable[[str, Sequence[str]], int] | None = None
        #: Called after a mill's repository changed: (mill, its edges, targets version); the MQTT nudge.
        self.notify: Callable[[str, list[str], int], None] | None = None
        self._lock = threading.RLock()

    def create_schema(self) -> None:
        t.metadata.create_all(self.engine)

    # --- versions ------------------------------------------------------------------------------------------

    def register(self, *, name: str, scope_kind: str, scope: str, kind: str, params: dict[str, Any],
                 actor: str, reason: str = "trained", mill: str | None = None, train_mills: Sequence[str] = (),
                 train_start_ns: int | None = None, train_end_ns: int | None = None,
                 metrics: Mapping[str, Any] | None = None, comparison: Mapping[str, Any] | None = None,
                 parent: str | None = None) -> ModelVersion:
        """Store a new candidate version (seq = last + 1). Refuses parameters the edge could not load."""
        if scope_kind not in SCOPE_KINDS:
            raise RegistryError(f"scope_kind must be one of {SCOPE_KINDS}")
        if scope_kind == "asset" and (mill is None or not scope.startswith(f"{mill}/")):
            raise RegistryError("a per-asset model belongs to the asset's mill (scope = mill/machine/channel)")
        if not _NAME.fullmatch(name) or ".." in name:
            raise RegistryError(f"bad model name {name!r}: lower-case letters, digits, '_', '-', '.' "
                                "(e.g. ring_frame.mahalanobis)")
        features = validate_params(kind, params)
        if scope_kind == "machine_type":
            params = without_rows(params)
        with self._lock, self.engine.begin() as con:
            last = con.execute(sa.select(sa.func.max(t.versions.c.seq)).where(t.versions.c.name == name)).scalar()
            seq = int(last or 0) + 1
            digest = hashlib.sha256(canonical(params)).hexdigest()
            version = f"v{seq}-{digest[:8]}"
            data = artefact_bytes(name, version, seq, kind, params)
            now = self.clock()
            mid = con.execute(t.versions.insert().values(
                name=name, seq=seq, version=version, scope_kind=scope_kind, scope=scope, mill=mill, kind=kind,
                format="onnx" if kind.endswith("/onnx") else "json",
                artefact=data, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                features=_j(features), train_mills=_j(sorted(train_mills)), train_start_ns=train_start_ns,
                train_end_ns=train_end_ns, metrics=_j(dict(metrics or {})), comparison=_j(dict(comparison or {})),
                parent=parent, status="candidate", created_ns=now, created_by=actor)).inserted_primary_key
            assert mid is not None
            mid = mid[0]
            con.execute(t.transitions.insert().values(model_id=mid, from_status=None, to_status="candidate",
                                                      actor=actor, reason=reason, ts_ns=now))
        return self.get(name, version)

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """A version, or (``version=None``) the line's active one (else its newest)."""
        with self.engine.connect() as con:
            q = sa.select(t.versions).where(t.versions.c.name == name)
            if version is not None:
                row = con.execute(q.where(t.versions.c.version == version)).first()
            else:
                row = con.execute(q.where(t.versions.c.status == "active")).first() or \
                    con.execute(q.order_by(t.versions.c.seq.desc()).limit(1)).first()
            if row is None:
                raise UnknownModel(f"no model {name}{' ' + version if version else ''}")
            return self._version(con, row)

    def by_id(self, model_id: int) -> ModelVersion:
        with self.engine.connect() as con:
            row = con.execute(sa.select(t.versions).where(t.versions.c.id == model_id)).first()
            if row is None:
                raise UnknownModel(f"no model id {model_id}")
            return self._version(con, row)

    def artefact(self, model: ModelVersion) -> bytes:
        with self.engine.connect() as con:
            data = con.execute(sa.select(t.versions.c.artefact).where(t.versions.c.id == model.id)).scalar_one()
        return bytes(data)

    def versions(self, *, mills: Iterable[str] | None = None, name: str | None = None,
             status: str | None = None) -> list[ModelVersion]:
        """Versions visible to a caller who sees ``mills`` (None: all): fleet models and their own mills'."""
        q = sa.select(t.versions).order_by(t.versions.c.name, t.versions.c.seq)
        if mills is not None:
            q = q.where(sa.or_(t.versions.c.mill.is_(None), t.versions.c.mill.in_(list(mills))))
        if name is not None:
            q = q.where(t.versions.c.name == name)
        if status is not None:
            q = q.where(t.versions.c.status == status)
        with self.engine.connect() as con:
            return [self._version(con, r) for r in con.execute(q).all()]

    def _version(self, con: sa.Connection, r: Any) -> ModelVersion:
        tr = con.execute(sa.select(t.transitions).where(t.transitions.c.model_id == r.id)
                         .order_by(t.transitions.c.id)).all()
        return ModelVersion(
            id=r.id, name=r.name, seq=r.seq, version=r.version, scope_kind=r.scope_kind, scope=r.scope, mill=r.mill,
            kind=r.kind, format=r.format, sha256=r.sha256, size=r.size, features=json.loads(r.features),
            train_mills=json.loads(r.train_mills), train_start_ns=r.train_start_ns, train_end_ns=r.train_end_ns,
            metrics=json.loads(r.metrics), comparison=json.loads(r.comparison), parent=r.parent, status=r.status,
            created_ns=r.created_ns, created_by=r.created_by,
            transitions=tuple(Transition(x.from_status, x.to_status, x.actor, x.reason, x.ts_ns) for x in tr))

    def _set_status(self, con: sa.Connection, m: ModelVersion, to: str, actor: str, reason: str) -> None:
        cur = con.execute(sa.select(t.versions.c.status).where(t.versions.c.id == m.id)).scalar_one()
        if to not in TRANSITIONS.get(cur, frozenset()):
            raise InvalidModelTransition(f"{m.name} {m.version} is {cur}; it cannot become {to}")
        con.execute(t.versions.update().where(t.versions.c.id == m.id).values(status=to))
        con.execute(t.transitions.insert().values(model_id=m.id, from_status=cur, to_status=to, actor=actor,
                                                  reason=reason, ts_ns=self.clock()))

    def _note(self, con: sa.Connection, m: ModelVersion, actor: str, reason: str) -> None:
        """A desired-state change that leaves the status as it is: recorded like a transition."""
        con.execute(t.transitions.insert().values(model_id=m.id, from_status=m.status, to_status=m.status,
                                                  actor=actor, reason=reason, ts_ns=self.clock()))

    # --- lifecycle -----------------------------------------------------------------------------------------

    def _selector(self, m: ModelVersion) -> tuple[str, str]:
        return ("machine_type", m.scope) if m.scope_kind == "machine_type" else ("asset", m.scope)

    def _target_mills(self, m: ModelVersion, mills: Sequence[str] | None) -> list[str]:
        if m.mill is not None:
            if mills is not None and list(mills) != [m.mill]:
                raise RegistryError(f"{m.name} is a model of {m.mill} only")
            return [m.mill]
        if not mills:
            raise RegistryError("say which mills the fleet model goes to")
        return list(mills)

    def canary(self, name: str, version: str, *, mills: Sequence[str] | None, actor: str, reason: str,
               share: float = 0.25) -> ModelVersion:
        """Send a candidate to a share of the matching assets of ``mills`` as a canary."""
        if not 0.0 < share <= 1.0:
            raise RegistryError("share must be in (0, 1]")
        m = self.get(name, version)
        targets = self._target_mills(m, mills)
        with self._lock:
            with self.engine.begin() as con:
                if con.execute(sa.select(t.versions.c.id).where(t.versions.c.name == name,
                                                                t.versions.c.status == "canary")).first():
                    raise InvalidModelTransition(f"{name} already has a canary; promote or roll it back first")
                self._set_status(con, m, "canary", actor, f"{reason} (share {share:.0%} of {', '.join(targets)})")
                kind, sel = self._selector(m)
                for mill in targets:
                    self._desire(con, mill, kind, sel, "canary", m.id, share, actor)
            self._publish_all(targets)
        return self.get(name, version)

    def promote(self, name: str, version: str, *, mills: Sequence[str] | None, actor: str,
                reason: str) -> ModelVersion:
        """Make a version active in ``mills`` (the active one it supersedes is retired there)."""
        m = self.get(name, version)
        targets = self._target_mills(m, mills)
        with self._lock:
            with self.engine.begin() as con:
                old = con.execute(sa.select(t.versions).where(t.versions.c.name == name,
                                                              t.versions.c.status == "active",
                                                              t.versions.c.id != m.id)).first()
                self._set_status(con, m, "active", actor, reason)
                if old is not None:
                    self._set_status(con, self._version(con, old), "retired", actor,
                                     f"superseded by {m.version}: {reason}")
                kind, sel = self._selector(m)
                for mill in self._all_mills_of(con, m, targets):
                    con.execute(t.desired.delete().where(t.desired.c.mill == mill, t.desired.c.role == "canary",
                                                         t.desired.c.model_id.in_(self._ids(con, name))))
                    if mill in targets or old is not None:
                        self._desire(con, mill, kind, sel, "active", m.id, 1.0, actor)
            self._publish_all(self._mills_with(name) | set(targets))
        return self.get(name, version)

    def rollback(self, name: str, *, actor: str, reason: str, version: str | None = None) -> ModelVersion:
        """Retire the canary (or the active version) and restore the version it superseded, recorded with
        ``reason``; the edges get a desired state that allows the step back. Returns the restored or still
        active version."""
        with self._lock:
            with self.engine.begin() as con:
                q = sa.select(t.versions).where(t.versions.c.name == name)
                bad_row = (con.execute(q.where(t.versions.c.version == version)).first() if version is not None
                           else con.execute(q.where(t.versions.c.status == "canary")).first()
                           or con.execute(q.where(t.versions.c.status == "active")).first())
                if bad_row is None:
                    raise UnknownModel(f"{name}: no canary or active version to roll back")
                bad = self._version(con, bad_row)
                if bad.status not in ("canary", "active"):
                    raise InvalidModelTransition(f"{name} {bad.version} is {bad.status}: nothing runs to roll back")
                mills = self._mills_with(name, con)
                self._set_status(con, bad, "retired", actor, f"rollback: {reason}")
                con.execute(t.desired.delete().where(t.desired.c.model_id == bad.id))
                restored: ModelVersion | None = None
                if bad.status == "active":
                    prev = con.execute(q.where(t.versions.c.status == "retired", t.versions.c.seq < bad.seq)
                                       .order_by(t.versions.c.seq.desc()).limit(1)).first()
                    if prev is not None:
                        restored = self._version(con, prev)
                        self._set_status(con, restored, "active", actor, f"restored by rollback of {bad.version}: "
                                                                          f"{reason}")
                        kind, sel = self._selector(restored)
                        for mill in mills:
                            self._desire(con, mill, kind, sel, "active", restored.id, 1.0, actor)
            self._publish_all(mills)
            log.warning("model %s %s rolled back by %s: %s", name, bad.version, actor, reason)
            return self.get(name, restored.version) if restored is not None else self.get(name, bad.version)

    def retire(self, name: str, version: str, *, actor: str, reason: str) -> ModelVersion:
        m = self.get(name, version)
        with self._lock:
            with self.engine.begin() as con:
                mills = self._mills_with(name, con)
                self._set_status(con, m, "retired", actor, reason)
                con.execute(t.desired.delete().where(t.desired.c.model_id == m.id))
            self._publish_all(mills)
        return self.get(name, version)

    def train(self, machine_type: str, data: Mapping[str, MillRows], *, actor: str, kind: str = "mahalanobis",
              span: tuple[int, int] | None = None, seed: int = 0) -> tuple[TrainResult, ModelVersion | None]:
        """Train a fleet model of ``machine_type`` mill-wise; register it as a candidate only when it beats
        the active model on the held-out mills (the comparison is stored with it)."""
        name = f"{machine_type}.{kind}"
        fed = sorted(m for m in data if (cfg := self.mill_of_id(m)) is not None and cfg.federated)
        if fed:
            raise RegistryError(f"mill(s) {', '.join(fed)} are federated: their rows are not used for training in "
                                "the cloud (they take part through a federated run)")
        active = next(iter(self.versions(name=name, status="active")), None)
        active_params = json.loads(self.artefact(active))["params"] if active is not None else None
        res = train_model(data, active_params=active_params, kind=kind, seed=seed)
        if not res.propose:
            log.info("training %s: no candidate (%s)", name, res.comparison["why"])
            return res, None
        m = self.register(name=name, scope_kind="machine_type", scope=machine_type, kind=KIND_PREFIX + kind,
                          params=res.params, actor=actor, reason=f"trained: {res.comparison['why']}",
                          train_mills=res.train_mills, train_start_ns=span[0] if span else None,
                          train_end_ns=span[1] if span else None, metrics=res.metrics, comparison=res.comparison,
                          parent=active.version if active is not None else None)
        return res, m

    # --- desired state -------------------------------------------------------------------------------------

    def desire(self, mill: str, selector_kind: str, selector: str, model: ModelVersion, *, actor: str,
               role: str = "active", share: float = 1.0) -> None:
        """Pin a version for a selector in one mill (e.g. one asset or one edge), and publish."""
        if selector_kind not in SELECTORS:
            raise RegistryError(f"selector must be one of {SELECTORS}")
        if model.status not in ("active", "canary"):
            raise InvalidModelTransition(f"{model.name} {model.version} is {model.status}: only an active or "
                                         "canary version is deployed")
        if model.mill is not None and model.mill != mill:
            raise RegistryError(f"{model.name} belongs to {model.mill}")
        with self._lock:
            with self.engine.begin() as con:
                self._desire(con, mill, selector_kind, selector, role, model.id, share, actor)
                self._note(con, model, actor, f"desired as {role} for {selector_kind} {selector} in {mill}")
            self._publish_all([mill])

    def _desire(self, con: sa.Connection, mill: str, kind: str, sel: str, role: str, model_id: int, share: float,
                actor: str) -> None:
        key = (t.desired.c.mill == mill) & (t.desired.c.selector_kind == kind) & (t.desired.c.selector == sel) \
            & (t.desired.c.role == role)
        con.execute(t.desired.delete().where(key))
        con.execute(t.desired.insert().values(mill=mill, selector_kind=kind, selector=sel, role=role,
                                              model_id=model_id, share=share, updated_ns=self.clock(),
                                              updated_by=actor))

    def _ids(self, con: sa.Connection, name: str) -> list[int]:
        return [r[0] for r in con.execute(sa.select(t.versions.c.id).where(t.versions.c.name == name))]

    def _mills_with(self, name: str, con: sa.Connection | None = None) -> set[str]:
        q = sa.select(t.desired.c.mill).distinct().join(t.versions, t.versions.c.id == t.desired.c.model_id) \
            .where(t.versions.c.name == name)
        if con is not None:
            return {r[0] for r in con.execute(q)}
        with self.engine.connect() as c:
            return {r[0] for r in c.execute(q)}

    def _all_mills_of(self, con: sa.Connection, m: ModelVersion, targets: Sequence[str]) -> list[str]:
        return sorted(self._mills_with(m.name, con) | set(targets))

    def resolve(self, mill: str, edge: str, assets: Sequence[AssetRef]) -> dict[str, tuple[ModelVersion, str, bool]]:
        """Per asset: (version, role, allow_rollback) the edge should run; assets with nothing desired are left out."""
        with self.engine.connect() as con:
            rows = con.execute(sa.select(t.desired).where(t.desired.c.mill == mill)).all()
            models = {r.model_id: self._version(con, con.execute(sa.select(t.versions).where(
                t.versions.c.id == r.model_id)).one()) for r in rows}
        out: dict[str, tuple[ModelVersion, str, bool]] = {}
        lines: dict[str, list[ModelVersion]] = {}
        for a in assets:
            keys = {"asset": a.asset, "edge": edge, "machine_type": a.machine_type, "mill": mill}
            chosen: dict[str, tuple[ModelVersion, float]] = {}
            for role in ("active", "canary"):
                for kind in SELECTORS:
                    hit = [r for r in rows if r.role == role and r.selector_kind == kind and r.selector == keys[kind]]
                    hit = [r for r in hit if _fits(models[r.model_id], a)]
                    if hit:
                        chosen[role] = (models[hit[0].model_id], hit[0].share)
                        break
            canary = chosen.get("canary")
            if canary is not None and in_share(a.asset, canary[0].version, canary[1]):
                out[a.asset] = (canary[0], "canary", False)
            elif "active" in chosen:
                m = chosen["active"][0]
                if m.name not in lines:
                    lines[m.name] = self.versions(name=m.name)
                out[a.asset] = (m, "active", _stepped_back(m, lines[m.name]))
        return out

    def desired_doc(self, mill: str, edge: str, assets: Sequence[AssetRef]) -> dict[str, Any]:
        res = self.resolve(mill, edge, assets)
        return {"format": DESIRED_FORMAT, "edge": edge, "mill": mill, "issued_ns": self.clock(),
                "assets": {a: {"name": m.name, "version": m.version, "seq": m.seq, "kind": m.kind, "target": m.target,
                               "sha256": m.sha256, "role": role, "allow_rollback": back}
                           for a, (m, role, back) in sorted(res.items())}}

    def assets(self, mill: str) -> list[AssetRef]:
        rec = self.mill_of_id(mill)
        return mill_assets(rec) if rec is not None else []

    def publish(self, mill: str) -> int | None:
        """Sign every edge's desired state and the artefacts it names into the mill's TUF repository."""
        if self.repo is None:
            return None
        assets = self.assets(mill)
        files: dict[str, bytes] = {}
        edges = self.edges_of(mill)
        for edge in edges:
            doc = self.desired_doc(mill, edge, assets)
            files[desired_path(edge)] = canonical(doc)
            for want in doc["assets"].values():
                if want["target"] not in files:
                    files[want["target"]] = self.artefact(self.get(want["name"], want["version"]))
        version = self.repo.publish(mill, files)
        if self.notify is not None and edges:
            self.notify(mill, edges, version)
        return version

    def _publish_all(self, mills: Iterable[str]) -> None:
        for mill in sorted(set(mills)):
            self.publish(mill)

    # --- what the edges report -----------------------------------------------------------------------------

    def record_report(self, edge: str, mill: str, report: Mapping[str, Any]) -> None:
        """Keep an edge's update report and fold its evidence counters in (cumulative per version)."""
        now = self.clock()
        with self.engine.begin() as con:
            con.execute(t.reports.delete().where(t.reports.c.edge == edge))
            con.execute(t.reports.insert().values(edge=edge, mill=mill, report=_j(dict(report)), received_ns=now))
            for e in report.get("evidence") or []:
                if not isinstance(e, dict):
                    continue
                asset, version = str(e.get("asset", "")), str(e.get("version", ""))
                if not asset.startswith(f"{mill}/"):
                    continue   # an edge reports evidence for its own mill's assets only
                vals = {k: max(0, int(e.get(k) or 0)) for k in ("scored", "alarms", "errors")}
                lat = {"latency_s_sum": max(0.0, float(e.get("latency_s_sum") or 0.0)),
                       "latency_s_max": max(0.0, float(e.get("latency_s_max") or 0.0))}
                key = (t.evidence.c.mill == mill) & (t.evidence.c.asset == asset) & (t.evidence.c.version == version)
                con.execute(t.evidence.delete().where(key))
                con.execute(t.evidence.insert().values(mill=mill, asset=asset, version=version, edge=edge,
                                                       first_ns=int(e.get("first_ns") or now), updated_ns=now,
                                                       **vals, **lat))

    def reports(self, mills: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        q = sa.select(t.reports)
        if mills is not None:
            q = q.where(t.reports.c.mill.in_(list(mills)))
        with self.engine.connect() as con:
            return {r.edge: {**json.loads(r.report), "received_ns": r.received_ns} for r in con.execute(q)}

    def fleet(self, mill: str, edges: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Per edge and asset: desired version (and role) beside the running one, and the edge's refusals."""
        reports = self.reports([mill])
        assets = self.assets(mill)
        out: dict[str, dict[str, Any]] = {}
        for edge in edges:
            rep = reports.get(edge, {})
            desired = self.resolve(mill, edge, assets)
            slots: dict[str, Any] = rep.get("slots") or {}
            names = sorted(set(desired) | set(slots))
            out[edge] = {
                "assets": {a: {"desired": desired[a][0].version if a in desired else None,
                               "role": desired[a][1] if a in desired else None,
                               "running": slots.get(a),
                               "converged": a not in desired or slots.get(a) == desired[a][0].version}
                           for a in names},
                "refusals": rep.get("refusals") or {}, "last_refusal": rep.get("last_refusal"),
                "state": rep.get("state"), "reported_ns": rep.get("received_ns")}
        return out

    def counts(self, version: str, mills: Iterable[str], machine_type: str | None = None) -> Counts:
        with self.engine.connect() as con:
            rows = con.execute(sa.select(t.evidence).where(t.evidence.c.version == version,
                                                          t.evidence.c.mill.in_(list(mills)))).all()
        c = Counts(nff=self.nff(version, list(mills)) if self.nff is not None else 0)
        for r in rows:
            c = c + Counts(r.scored, r.alarms, r.errors, r.latency_s_sum)
        return c

    def evaluate_canaries(self) -> list[tuple[ModelVersion, Verdict]]:
        """Judge every canary on its evidence against the active version; promote or roll back on the spot."""
        out = []
        for m in self.versions(status="canary"):
            mills = sorted(self._mills_with(m.name))
            if not mills:
                continue
            active = next(iter(self.versions(name=m.name, status="active")), None)
            base = self.counts(active.version, mills) if active is not None else Counts()
            verdict = judge(self.counts(m.version, mills), base, self.policy)
            if verdict.decision == "rollback":
                self.rollback(m.name, version=m.version, actor=JUDGE, reason="; ".join(verdict.reasons))
            elif verdict.decision == "promote":
                self.promote(m.name, m.version, mills=mills if m.mill is None else None, actor=JUDGE,
                             reason="canary evidence: " + "; ".join(verdict.reasons))
            out.append((m, verdict))
        return out


def _fits(m: ModelVersion, a: AssetRef) -> bool:
    return (m.scope_kind == "machine_type" and m.scope == a.machine_type) or (m.scope_kind == "asset"
                                                                              and m.scope == a.asset)


def _stepped_back(m: ModelVersion, line: Sequence[ModelVersion]) -> bool:
    """True when a later version of the line was rolled back: the edges may step back to ``m``."""
    return any(o.seq > m.seq and o.status == "retired" and any(x.reason.startswith("rollback:")
                                                                for x in o.transitions) for o in line)

