"""The update repository of the model registry, as The Update Framework (TUF) defines it (python-tuf).

Why TUF and not one signature per model: a signature alone says *who* made a file, not whether it is
the file the edge should run *now*. TUF's four roles add what an attacker on the link (or in the
cloud's web tier) would otherwise exploit: ``timestamp`` (short-lived: an edge fed old metadata notices
the freeze), ``snapshot`` (a consistent view: no mixing old and new targets), ``targets`` (the hash and
length of every file: a tampered model is refused) and ``root`` (which keys may sign each role: a
revoked key's signature no longer counts). Versions only go up: old, validly signed metadata replayed
to an edge (a rollback) is refused by the edge's ``tuf.ngclient.Updater``.

Layout here:

* **One root for every mill** (scope ``''``): signed by the **root key, which the running cloud never
  holds**: a PEM file the operator keeps offline (``spinline models tuf-init`` / ``rotate-key`` read it
  and nothing else does). Root lists the online keys of targets, snapshot and timestamp.
* **Per mill** a chain of targets / snapshot / timestamp metadata, signed with the **online keys**
  (stored in ``models_tuf_keys`` sealed with the server key, like edge secrets). An edge is served its
  own mill's chain only (the HTTP route picks it from the edge's credentials), so a mill never sees
  another's models or desired state.
* **Targets** of a mill are the model artefacts its edges should hold (``models/<name>/<version>.<fmt>``)
  and one desired-state file per edge (``desired/<edge>.json``); ``publish(mill, files)`` replaces
  the set and signs new targets, snapshot and timestamp versions.
* **Expiry**: timestamp 1 day, snapshot 7 days, targets 30 days, root 1 year (``EXPIRY``).
  ``refresh_expiring`` re-signs any online role past half its life; the app runs it periodically.
  Root past half its life needs the operator (``rotate-key`` re-signs it).
* **Rotation** (``rotate``): a new key for an online role, the old one revoked in a new root version
  (signed with the offline root key), every mill's chain re-signed with the new key. Edges follow the
  root chain (``<n>.root.json``) on their next refresh; anything still signed by the old key is refused.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Signer, SSlibKey
from sqlalchemy.engine import Engine
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from spinline.core.errors import SpinlineError, StorageError

from . import tables as t

log = logging.getLogger(__name__)

ONLINE_ROLES = ("targets", "snapshot", "timestamp")
ROLES = ("root", *ONLINE_ROLES)
#: How long each role's metadata stays valid (the freeze-attack window of the timestamp).
EXPIRY: dict[str, timedelta] = {"root": timedelta(days=365), "targets": timedelta(days=30),
                                "snapshot": timedelta(days=7), "timestamp": timedelta(days=1)}
ROOT_SCOPE = ""
_SERIALIZER = JSONSerializer(compact=True)


class TufError(SpinlineError):
    """The repository cannot do what was asked (not initialised, wrong root key, bad role)."""


class Sealer(Protocol):
    """Encrypts the online private keys at rest (``spinline.cloud.auth.sealing.SecretBox`` fits)."""

    def seal(self, edge_id: str, secret: str) -> str: ...

    def open(self, edge_id: str, sealed: str) -> str: ...


# --- the offline root key ------------------------------------------------------------------------------

def generate_root_key(path: Path) -> CryptoSigner:
    """Create the offline root key (Ed25519, PEM, mode 0600). Refuses to overwrite an existing file."""
    signer = CryptoSigner.generate_ed25519()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise TufError(f"{path} exists: the root key is never overwritten (use it, or move it away)") from None
    with os.fdopen(fd, "wb") as f:
        f.write(signer.private_bytes)
    return signer


def load_root_key(path: Path) -> CryptoSigner:
    """The operator's root key from its PEM file."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise TufError(f"cannot read the root key {path}: {exc}") from None
    return _signer_from_pem(pem, str(path))


def _signer_from_pem(pem: bytes, what: str) -> CryptoSigner:
    try:
        return CryptoSigner(load_pem_private_key(pem, None))  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise TufError(f"{what} is not a PEM Ed25519 private key: {exc}") from None


def _dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC).replace(microsecond=0)


def _ns(d: datetime) -> int:
    return int(d.timestamp()) * 10**9


class TufRepository:
    """The TUF metadata and targets of every mill, in the metadata database (see module docstring)."""

    def __init__(self, engine: Engine, sealer: Sealer, *, clock: Callable[[], int] = time.time_ns,
                 expiry: Mapping[str, timedelta] | None = None) -> None:
        self.engine = engine
        self.sealer = sealer
        self.clock = clock
        self.expiry = {**EXPIRY, **(expiry or {})}
        self._lock = threading.RLock()
        self._signers: dict[str, CryptoSigner] = {}

    # --- reading (what the HTTP routes serve) ------------------------------------------------------------

    def initialised(self) -> bool:
        return self._latest(ROOT_SCOPE, "root") is not None

    def root(self, version: int | None = None) -> bytes | None:
        """The root metadata: the latest, or a given version (edges walk ``1.root.json``, ``2.root.json`` ...)."""
        with self.engine.connect() as con:
            q = sa.select(t.tuf_metadata.c.data).where(t.tuf_metadata.c.scope == ROOT_SCOPE,
                                                       t.tuf_metadata.c.role == "root")
            q = (q.where(t.tuf_metadata.c.version == version) if version is not None
                 else q.order_by(t.tuf_metadata.c.version.desc()).limit(1))
            row = con.execute(q).first()
        return None if row is None else bytes(row[0])

    def metadata(self, mill: str, role: str) -> bytes | None:
        """The latest targets / snapshot / timestamp of a mill (None before its first publish)."""
        if role not in ONLINE_ROLES:
            raise TufError(f"no role {role!r} per mill (one of {', '.join(ONLINE_ROLES)})")
        got = self._latest(mill, role)
        return None if got is None else got[1]

    def target(self, mill: str, path: str) -> bytes | None:
        with self.engine.connect() as con:
            row = con.execute(sa.select(t.tuf_targets.c.data).where(
                t.tuf_targets.c.mill == mill, t.tuf_targets.c.path == path)).first()
        return None if row is None else bytes(row[0])

    def target_paths(self, mill: str) -> list[str]:
        with self.engine.connect() as con:
            return [r[0] for r in con.execute(sa.select(t.tuf_targets.c.path).where(t.tuf_targets.c.mill == mill))]

    def root_keyids(self) -> dict[str, list[str]]:
        """The key ids each role trusts now (from the latest root)."""
        raw = self.root()
        if raw is None:
            return {}
        root = Metadata[Root].from_bytes(raw).signed
        return {name: list(role.keyids) for name, role in root.roles.items()}

    # --- setting up and rotating (operator, with the offline root key) ------------------------------------

    def init(self, root_signer: Signer) -> int:
        """Create root v1 with fresh online keys; the root key is only used to sign it. Returns 1."""
        with self._lock:
            if self.initialised():
                raise TufError("the update repository is initialised already (rotate keys instead)")
            now = self.clock()
            root = Root(version=1, expires=_dt(now) + self.expiry["root"], consistent_snapshot=False)
            root.add_key(root_signer.public_key, "root")
            self._store_key("root", root_signer.public_key, None, now)
            for role in ONLINE_ROLES:
                signer = CryptoSigner.generate_ed25519()
                root.add_key(signer.public_key, role)
                self._store_key(role, signer.public_key, signer.private_bytes.decode(), now)
            self._write(ROOT_SCOPE, "root", self._sign(Metadata(root), root_signer), root.expires)
            self._signers.clear()
            log.info("update repository initialised: root v1, online keys for %s", ", ".join(ONLINE_ROLES))
            return 1

    def rotate(self, role: str, root_signer: Signer, *, reason: str = "rotation") -> str:
        """Replace the online key of ``role``: new root version (old key revoked), every mill re-signed.

        Returns the new key id. ``root_signer`` must be the key the current root trusts.
        """
        if role not in ONLINE_ROLES:
            raise TufError(f"only the online keys rotate here ({', '.join(ONLINE_ROLES)}), not {role!r}")
        with self._lock:
            raw = self.root()
            if raw is None:
                raise TufError("the update repository is not initialised (spinline models tuf-init)")
            md = Metadata[Root].from_bytes(raw)
            root = md.signed
            if root_signer.public_key.keyid not in root.roles["root"].keyids:
                raise TufError("this root key is not the one the current root trusts")
            now = self.clock()
            new = CryptoSigner.generate_ed25519()
            for old in list(root.roles[role].keyids):
                root.revoke_key(old, role)
                with self.engine.begin() as con:
                    con.execute(t.tuf_keys.update().where(t.tuf_keys.c.keyid == old).values(revoked_ns=now))
            root.add_key(new.public_key, role)
            self._store_key(role, new.public_key, new.private_bytes.decode(), now)
            root.version += 1
            root.expires = _dt(now) + self.expiry["root"]
            self._write(ROOT_SCOPE, "root", self._sign(Metadata(root), root_signer), root.expires)
            self._signers.clear()
            for mill in self._mills():
                self._resign(mill, role)
            log.warning("update repository: %s key rotated (%s); root is now v%d", role, reason, root.version)
            return new.public_key.keyid

    # --- publishing (the running cloud, online keys) --------------------------------------------------------

    def publish(self, mill: str, files: Mapping[str, bytes]) -> int:
        """Make ``files`` the mill's target set and sign new targets, snapshot and timestamp. Returns the
        new targets version."""
        for path in files:
            if not path or path.startswith("/") or ".." in path.split("/"):
                raise TufError(f"bad target path {path!r}")
        with self._lock:
            if not self.initialised():
                raise TufError("the update repository is not initialised (spinline models tuf-init)")
            now = self.clock()
            prev = self._latest(mill, "targets")
            version = 1 if prev is None else prev[0] + 1
            targets = Targets(version=version, expires=_dt(now) + self.expiry["targets"])
            for path, data in sorted(files.items()):
                targets.targets[path] = TargetFile.from_data(path, data, ["sha256"])
            with self.engine.begin() as con:
                con.execute(t.tuf_targets.delete().where(t.tuf_targets.c.mill == mill))
                if files:
                    con.execute(t.tuf_targets.insert(), [{"mill": mill, "path": p, "data": d, "current": True}
                                                         for p, d in files.items()])
            self._write(mill, "targets", self._sign(Metadata(targets), self._online("targets")), targets.expires)
            self._chain_from_targets(mill, version, now)
            return version

    def refresh_expiring(self) -> int:
        """Re-sign every online role past half its life (and the roles that list it). Returns how many."""
        n = 0
        with self._lock:
            if not self.initialised():
                return 0
            now = self.clock()
            for mill in self._mills():
                for role in ONLINE_ROLES:
                    got = self._latest(mill, role, with_expiry=True)
                    if got is None:
                        continue
                    expires_ns = got[2]
                    if expires_ns - now < self.expiry[role].total_seconds() * 1e9 / 2:
                        self._resign(mill, role)
                        n += 1
                        break   # _resign re-signed the roles below it too
        return n

    # --- internals -----------------------------------------------------------------------------------

    def _chain_from_targets(self, mill: str, targets_version: int, now: int) -> None:
        prev = self._latest(mill, "snapshot")
        snap = Snapshot(version=1 if prev is None else prev[0] + 1, expires=_dt(now) + self.expiry["snapshot"],
                        meta={"targets.json": MetaFile(version=targets_version)})
        self._write(mill, "snapshot", self._sign(Metadata(snap), self._online("snapshot")), snap.expires)
        self._timestamp(mill, snap.version, now)

    def _timestamp(self, mill: str, snapshot_version: int, now: int) -> None:
        prev = self._latest(mill, "timestamp")
        ts = Timestamp(version=1 if prev is None else prev[0] + 1, expires=_dt(now) + self.expiry["timestamp"],
                       snapshot_meta=MetaFile(version=snapshot_version))
        self._write(mill, "timestamp", self._sign(Metadata(ts), self._online("timestamp")), ts.expires)

    def _resign(self, mill: str, role: str) -> None:
        """A new version of ``role`` with the same content and a fresh expiry, then the roles below it."""
        now = self.clock()
        got = self._latest(mill, role)
        if got is None:
            return
        md: Metadata[Any] = Metadata.from_bytes(got[1])
        if role == "targets":
            md.signed.version += 1
            md.signed.expires = _dt(now) + self.expiry["targets"]
            self._write(mill, "targets", self._sign(md, self._online("targets")), md.signed.expires)
            self._chain_from_targets(mill, md.signed.version, now)
        elif role == "snapshot":
            tv = self._latest(mill, "targets")
            self._chain_from_targets(mill, tv[0] if tv is not None else 1, now)
        else:
            sv = self._latest(mill, "snapshot")
            self._timestamp(mill, sv[0] if sv is not None else 1, now)

    def _sign(self, md: Metadata[Any], signer: Signer) -> bytes:
        md.sign(signer)
        return md.to_bytes(_SERIALIZER)

    def _online(self, role: str) -> CryptoSigner:
        """The current (not revoked) online signer of ``role``, unsealed once per process."""
        signer = self._signers.get(role)
        if signer is not None:
            return signer
        with self.engine.connect() as con:
            row = con.execute(sa.select(t.tuf_keys.c.keyid, t.tuf_keys.c.private_sealed).where(
                t.tuf_keys.c.role == role, t.tuf_keys.c.revoked_ns.is_(None),
                t.tuf_keys.c.private_sealed.is_not(None)).order_by(t.tuf_keys.c.created_ns.desc()).limit(1)).first()
        if row is None:
            raise TufError(f"no online {role} key (spinline models tuf-init)")
        signer = _signer_from_pem(self.sealer.open(f"tuf:{row[0]}", row[1]).encode(), f"the online {role} key")
        self._signers[role] = signer
        return signer

    def _store_key(self, role: str, key: SSlibKey | Any, private_pem: str | None, now: int) -> None:
        import json

        sealed = None if private_pem is None else self.sealer.seal(f"tuf:{key.keyid}", private_pem)
        with self.engine.begin() as con:
            con.execute(t.tuf_keys.insert().values(keyid=key.keyid, role=role, public=json.dumps(key.to_dict()),
                                                   private_sealed=sealed, created_ns=now, revoked_ns=None))

    def _write(self, scope: str, role: str, data: bytes, expires: datetime) -> None:
        md: Metadata[Any] = Metadata.from_bytes(data)
        try:
            with self.engine.begin() as con:
                con.execute(t.tuf_metadata.insert().values(scope=scope, role=role, version=md.signed.version,
                                                           data=data, expires_ns=_ns(expires),
                                                           created_ns=self.clock()))
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"cannot store {role} v{md.signed.version} of {scope or 'root'}: {exc}") from exc

    def _latest(self, scope: str, role: str, *, with_expiry: bool = False) -> tuple[int, bytes, int] | None:
        with self.engine.connect() as con:
            row = con.execute(sa.select(t.tuf_metadata.c.version, t.tuf_metadata.c.data, t.tuf_metadata.c.expires_ns)
                              .where(t.tuf_metadata.c.scope == scope, t.tuf_metadata.c.role == role)
                              .order_by(t.tuf_metadata.c.version.desc()).limit(1)).first()
        return None if row is None else (int(row[0]), bytes(row[1]), int(row[2]))

    def _mills(self) -> list[str]:
        with self.engine.connect() as con:
            return sorted(r[0] for r in con.execute(sa.select(t.tuf_metadata.c.scope).distinct().where(
                t.tuf_metadata.c.scope != ROOT_SCOPE)))
