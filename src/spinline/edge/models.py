"""Model slots: the per-asset model the edge scores with, persisted so a restart keeps it.

One ``ModelSlot`` per asset (vibration channel) holds a ``ModelRecord``: the model ``kind``, a
``version`` string, its parameters as plain JSON (``BaselineDetector.to_dict`` and friends: no
pickles), an optional ``signature`` and where it came from. The slot lives in one JSON file in the
edge's data dir (``models/<asset>.json``), written atomically (temp file, fsync, ``os.replace``,
fsync of the directory), so ``kill -9`` or a power cut leaves either the old record or the new
one, never half a file.

Two writers:

* **the edge itself, while commissioning**: the asset's baseline is learned from its first N
  healthy snapshots (``state="commissioning"``, the rows so far in ``params``, saved as they come,
  so a restart mid-way goes on where it stopped), then frozen (``state="frozen"``, the fitted
  model in ``params``, version ``local-<hash of params>``). A frozen model never learns again: a
  model that kept learning would slowly absorb a developing fault and call it normal.
* **the model registry (a later wave)**: the cloud trains on the fleet and ships versioned, signed
  models; it calls ``ModelSlot.replace(version, params, signature)``. The slot checks the record
  with its ``ModelVerifier`` (a Protocol) and its ``validate`` hook (can the scorer load these
  params?) *before* anything is written, then persists it and bumps ``generation`` so the scorer
  reloads. **There is no cryptography yet**: the default verifier, ``UnsignedAccepted``, accepts
  any record and only logs that it was not checked; a registry verifier (e.g. Ed25519 over
  ``canonical_bytes``) plugs in without changing the slot or the scorer.

File I/O happens in ``load`` / ``save`` / ``replace`` only (constructors do none); the agent calls
them off the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from spinline.core.errors import SpinlineError, StorageError

log = logging.getLogger(__name__)

SlotState = Literal["commissioning", "frozen"]
ModelSource = Literal["local", "registry"]
MODELS_DIR = "models"
RECORD_VERSION = 1


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    """How the edge learns and scores its assets' models (lives here, not in ``scoring``: the CLI builds one
    without importing the health models)."""

    #: Running snapshots learned (assumed healthy) before an asset's baseline freezes.
    commissioning_n: int = 24
    #: False-alarm rate of the anomaly score on healthy data.
    far: float = 0.001
    #: Health-index history kept per asset (for the RUL trend); older points are dropped.
    history_max: int = 5000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.commissioning_n < 8:
            raise ValueError("commissioning_n must be at least 8 snapshots (half of them calibrate the threshold)")


class ModelRejected(SpinlineError):
    """A model record that the verifier or the validation hook refused (nothing was written)."""


@dataclass(frozen=True, slots=True)
class ModelRecord:
    asset: str
    kind: str
    version: str
    params: dict[str, Any]
    state: SlotState = "commissioning"
    source: ModelSource = "local"
    signature: str | None = None
    updated_ns: int = field(default_factory=time.time_ns)

    def canonical_bytes(self) -> bytes:
        """What a signature covers: asset, kind, version and params as canonical JSON."""
        return canonical_json({"asset": self.asset, "kind": self.kind, "version": self.version,
                               "params": self.params})

    def to_dict(self) -> dict[str, Any]:
        return {"record_version": RECORD_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelRecord:
        if int(d.get("record_version", 0)) != RECORD_VERSION:
            raise ValueError(f"model record version {d.get('record_version')!r}, this edge reads {RECORD_VERSION}")
        state, source = str(d["state"]), str(d["source"])
        if state not in ("commissioning", "frozen") or source not in ("local", "registry"):
            raise ValueError(f"bad state/source {state!r}/{source!r}")
        params = d["params"]
        if not isinstance(params, dict):
            raise ValueError("params must be a JSON object")
        sig = d.get("signature")
        return cls(asset=str(d["asset"]), kind=str(d["kind"]), version=str(d["version"]), params=params,
                   state=state, source=source, signature=None if sig is None else str(sig),  # type: ignore[arg-type]
                   updated_ns=int(d["updated_ns"]))


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no spaces. NaN is written as Python's json does (a baseline row may miss a feature)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


def content_version(prefix: str, params: Mapping[str, Any]) -> str:
    """A version string derived from the parameters (same baseline, same version)."""
    return f"{prefix}-{hashlib.sha256(canonical_json(dict(params))).hexdigest()[:12]}"


class ModelVerifier(Protocol):
    """Decides whether a record from outside (the registry) may be installed; raises ``ModelRejected``."""

    def verify(self, record: ModelRecord) -> None: ...


class UnsignedAccepted:
    """The placeholder verifier: no cryptography yet; accepts every record, logs unsigned ones once per asset."""

    def __init__(self) -> None:
        self._warned: set[str] = set()

    def verify(self, record: ModelRecord) -> None:
        if record.asset not in self._warned:
            log.warning("model %s for %s installed WITHOUT signature verification (no verifier configured)",
                        record.version, record.asset)
            self._warned.add(record.asset)


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def slot_filename(asset: str) -> str:
    """A file name for an asset tag: readable, collision-free (hash suffix), no path separators."""
    return f"{_SAFE.sub('_', asset)[:80]}-{hashlib.sha256(asset.encode()).hexdigest()[:8]}.json"


def atomic_write(path: Path, data: bytes) -> None:
    """Write-then-rename with fsyncs: after a crash the file holds the old or the new bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageError(f"cannot write model slot {path}: {exc}") from exc


class ModelSlot:
    """The persisted model of one asset (see module docstring)."""

    def __init__(self, asset: str, directory: str | Path, *, verifier: ModelVerifier | None = None,
                 validate: Callable[[ModelRecord], None] | None = None) -> None:
        self.asset = asset
        self.path = Path(directory) / slot_filename(asset)
        self.verifier: ModelVerifier = verifier or UnsignedAccepted()
        self.validate = validate
        self.record: ModelRecord | None = None
        #: Bumped by every ``replace``: the scorer reloads its model when it changes.
        self.generation = 0

    @property
    def version(self) -> str | None:
        return None if self.record is None else self.record.version

    def load(self) -> ModelRecord | None:
        """Read the slot file; a missing file is an empty slot, an unreadable one is set aside (and logged)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read model slot {self.path}: {exc}") from exc
        try:
            rec = ModelRecord.from_dict(json.loads(raw))
            if rec.asset != self.asset:
                raise ValueError(f"slot file holds asset {rec.asset!r}")
            if self.validate is not None:
                self.validate(rec)
        except (ValueError, KeyError, TypeError, ModelRejected) as exc:
            bad = self.path.with_name(self.path.name + f".bad-{time.time_ns()}")
            with contextlib.suppress(OSError):
                os.replace(self.path, bad)
            log.error("model slot %s is unusable (%s): moved to %s, the asset starts commissioning again",
                      self.path, exc, bad.name)
            return None
        self.record = rec
        return rec

    def save(self, record: ModelRecord) -> None:
        """Persist a record the edge made itself (commissioning progress, frozen baseline)."""
        if record.asset != self.asset:
            raise ValueError(f"record for {record.asset!r} saved into the slot of {self.asset!r}")
        self.write(record)
        self.record = record

    def write(self, record: ModelRecord) -> None:
        """Write ``record`` to the slot's file only (I/O; atomic): for a caller that already holds it as
        ``record`` on its own thread (the edge's scoring, which keeps models on the event loop)."""
        if record.asset != self.asset:
            raise ValueError(f"record for {record.asset!r} saved into the slot of {self.asset!r}")
        atomic_write(self.path, json.dumps(record.to_dict(), separators=(",", ":"), allow_nan=True).encode())

    def replace(self, version: str, params: dict[str, Any], signature: str | None = None, *,
                kind: str | None = None) -> ModelRecord:
        """The registry's entry point: verify, validate, persist, then hand the new model to the scorer.

        ``kind`` defaults to the current one. Raises ``ModelRejected`` (nothing changes) when the
        verifier or the validation refuses it, ``StorageError`` when it cannot be written.
        """
        k = kind or (self.record.kind if self.record is not None else None)
        if k is None:
            raise ModelRejected(f"{self.asset}: the slot is empty, so the model kind must be given")
        try:
            canonical_json(params)
        except (TypeError, ValueError) as exc:
            raise ModelRejected(f"{self.asset}: params are not plain JSON: {exc}") from None
        rec = ModelRecord(asset=self.asset, kind=k, version=version, params=params, state="frozen",
                          source="registry", signature=signature)
        self.verifier.verify(rec)
        if self.validate is not None:
            try:
                self.validate(rec)
            except (ValueError, KeyError, TypeError) as exc:
                raise ModelRejected(f"{self.asset}: model {version} does not load: {exc!r}") from None
        self.save(rec)
        self.generation += 1
        log.info("model slot %s: installed %s %s from the registry", self.asset, k, version)
        return rec

    def with_params(self, **changes: Any) -> ModelRecord:
        """A copy of the current record with fields changed (the edge's own updates)."""
        if self.record is None:
            raise ValueError("empty slot")
        return replace(self.record, updated_ns=time.time_ns(), **changes)
