"""``spinline models``: the model registry and its update repository from the command line.

    spinline models tuf-init --root-key /media/usb/spinline-root.pem --root-out root.json
    spinline models rotate-key --role targets --root-key /media/usb/spinline-root.pem
    spinline models list [--name ring_frame.mahalanobis] [--status active]
    spinline models show ring_frame.mahalanobis [v3-1a2b3c4d]
    spinline models train --machine-type ring_frame --days 90
    spinline models federated-run --machine-type ring_frame [--held-out mill-c] [--timeout-s 300]
    spinline models canary ring_frame.mahalanobis v3-1a2b3c4d --mill mill-a --share 0.25 --reason "retrained"
    spinline models promote ring_frame.mahalanobis v3-1a2b3c4d --mill mill-a --mill mill-b --reason "..."
    spinline models rollback ring_frame.mahalanobis --reason "too many alarms on rf07"
    spinline models retire ring_frame.mahalanobis v1-0e1f2a3b --reason "superseded"

The same database options as ``spinline cloud`` (``--db``, ``--data-dir``; ``SPINLINE_DB``). The root
key is read only by ``tuf-init`` and ``rotate-key``: keep it offline, the running cloud never needs it.
"""

from __future__ import annotations

import getpass
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="The model registry: versions, canary, promote, rollback, training, update keys.",
                  add_completion=False, no_args_is_help=True)

DbOpt = Annotated[str | None, typer.Option("--db", help="embedded | embedded:/folder | postgresql://...",
                                           envvar="SPINLINE_DB", show_envvar=True)]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="folder of the embedded files and the key")]
ByOpt = Annotated[str | None, typer.Option("--by", help="who does it (recorded; default: your login)")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="why (recorded with the transition)")]
MillsOpt = Annotated[list[str] | None, typer.Option("--mill", help="a mill it goes to (repeat for more)")]


def _open(db: str | None, data_dir: Path | None) -> tuple[Any, Any, Any]:
    from spinline.cloud.app import build_models
    from spinline.cloud.meta.store import MetaStore
    from spinline.cloud.settings import Settings

    settings = Settings.from_env(db=db, data_dir=data_dir)
    if settings.embedded:
        settings.folder.mkdir(parents=True, exist_ok=True)
    meta = MetaStore(settings.meta_url())
    meta.migrate()
    return settings, meta, build_models(settings, meta)


def _fail(msg: str) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(2)


def _run(fn: Any, *args: Any, **kw: Any) -> Any:
    from spinline.cloud.models.registry import RegistryError
    from spinline.cloud.models.tuf_repo import TufError

    try:
        return fn(*args, **kw)
    except (RegistryError, TufError) as exc:
        raise _fail(str(exc)) from None


def _print(m: Any) -> None:
    typer.echo(json.dumps(m.public(), indent=2, default=str))


@app.command("tuf-init")
def tuf_init(root_key: Annotated[Path, typer.Option(help="the offline root key (PEM); created if missing")],
             root_out: Annotated[Path | None, typer.Option(help="write root.json here (give it to each edge)")] = None,
             db: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Create the update repository: root v1 signed with the offline root key, fresh online keys."""
    from spinline.cloud.models.tuf_repo import generate_root_key, load_root_key

    _s, meta, reg = _open(db, data_dir)
    try:
        signer = load_root_key(root_key) if root_key.exists() else _run(generate_root_key, root_key)
        _run(reg.repo.init, signer)
        if root_out is not None:
            root_out.write_bytes(reg.repo.root())
        typer.echo(f"update repository initialised; root key {root_key} (keep it offline)"
                   + (f", root.json -> {root_out}" if root_out else ""))
    finally:
        meta.close()


@app.command("rotate-key")
def rotate_key(role: Annotated[str, typer.Option(help="targets | snapshot | timestamp")],
               root_key: Annotated[Path, typer.Option(help="the offline root key (PEM)")],
               reason: Annotated[str, typer.Option(help="why (logged)")] = "rotation",
               db: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Replace an online key: a new root version revokes the old key; every mill is re-signed."""
    from spinline.cloud.models.tuf_repo import load_root_key

    _s, meta, reg = _open(db, data_dir)
    try:
        keyid = _run(reg.repo.rotate, role, _run(load_root_key, root_key), reason=reason)
        typer.echo(f"{role} key rotated: new key {keyid[:16]}..., the old one is revoked")
    finally:
        meta.close()


@app.command("root")
def root(out: Annotated[Path, typer.Option(help="where to write the current root.json")],
         db: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Export the current root metadata (what a new edge is provisioned with, next to its secret)."""
    _s, meta, reg = _open(db, data_dir)
    try:
        data = reg.repo.root()
        if data is None:
            raise _fail("the update repository is not initialised (spinline models tuf-init)")
        out.write_bytes(data)
    finally:
        meta.close()


@app.command("list")
def list_(name: Annotated[str | None, typer.Option(help="one model line")] = None,
          status: Annotated[str | None, typer.Option(help="candidate | canary | active | retired")] = None,
          db: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Versions: name, version, status, scope, parent, held-out AUC."""
    _s, meta, reg = _open(db, data_dir)
    try:
        for m in reg.versions(name=name, status=status):
            typer.echo(f"{m.name:32} {m.version:14} {m.status:9} {m.scope_kind}={m.scope:24} "
                       f"parent={m.parent or '-':14} auc={m.metrics.get('auc', '-')}")
    finally:
        meta.close()


@app.command()
def show(name: str, version: Annotated[str | None, typer.Argument()] = None,
         db: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """One version (default: the active one) with its lineage, metrics, comparison and transitions."""
    _s, meta, reg = _open(db, data_dir)
    try:
        _print(_run(reg.get, name, version))
    finally:
        meta.close()


@app.command()
def train(machine_type: Annotated[str, typer.Option(help="e.g. ring_frame, card")],
          kind: Annotated[str, typer.Option(help="mahalanobis | robust_z | pca_t2q")] = "mahalanobis",
          days: Annotated[float, typer.Option(help="how far back to read features and work orders")] = 90.0,
          by: ByOpt = None, db: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Train a fleet model from every mill's features, labelled by verified work orders; propose it as a
    candidate only if it beats the active model on held-out mills."""
    from spinline.cloud.maintenance.store import HealthStore
    from spinline.cloud.models.training import load_rows
    from spinline.cloud.storage.factory import open_store

    settings, meta, reg = _open(db, data_dir)
    store = open_store(settings.store_url())
    try:
        hs = HealthStore(meta.engine)
        hs.create_schema()
        end = time.time_ns()
        span = (end - int(days * 86400e9), end)
        mills = {r.id: r.config for r in meta.mills()}
        data = load_rows(store, lambda m: hs.list_work_orders(m), mills, machine_type, *span)
        res, cand = _run(reg.train, machine_type, data, actor=by or getpass.getuser(), kind=kind, span=span)
        typer.echo(json.dumps(res.comparison, indent=2, default=str))
        typer.echo(f"candidate {cand.name} {cand.version} registered" if cand is not None
                   else "no candidate: " + res.comparison["why"])
    except ValueError as exc:
        raise _fail(str(exc)) from None
    finally:
        store.close()
        meta.close()


@app.command("federated-run")
def federated_run(machine_type: Annotated[str, typer.Option(help="e.g. ring_frame")],
                  held_out: Annotated[list[str] | None, typer.Option(
                      "--held-out", help="a mill that only evaluates (repeat; default: a mill-wise split)")] = None,
                  days: Annotated[float, typer.Option(help="span of feature rows the edges use")] = 90.0,
                  timeout_s: Annotated[float, typer.Option(help="how long to wait for every mill's edge")] = 300.0,
                  by: ByOpt = None, db: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Run federated training over the federated mills: the Flower server here, each mill's edge asked to
    join (in the signed answer to its next status post; MQTT edges when the cloud API starts the run).
    Waits for the end; registers the result as a federated candidate. Exit 1 when the run fails."""
    from spinline.cloud.app import build_federated
    from spinline.cloud.models.federated import FederatedError

    settings, meta, reg = _open(db, data_dir)
    try:
        runs = build_federated(settings, meta, reg)
        rec = runs.run(machine_type, actor=by or getpass.getuser(), held_out=held_out, days=days,
                       timeout_s=timeout_s)
    except FederatedError as exc:
        raise _fail(str(exc)) from None
    finally:
        meta.close()
    typer.echo(json.dumps(rec, indent=2, default=str))
    if rec["status"] != "done":
        raise typer.Exit(1)


@app.command()
def canary(name: str, version: str, reason: ReasonOpt, mill: MillsOpt = None,
           share: Annotated[float, typer.Option(help="share of the matching assets")] = 0.25,
           by: ByOpt = None, db: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Send a candidate to a share of the assets as a canary; the registry promotes or rolls it back."""
    _s, meta, reg = _open(db, data_dir)
    try:
        _print(_run(reg.canary, name, version, mills=mill, actor=by or getpass.getuser(), reason=reason,
                    share=share))
    finally:
        meta.close()


@app.command()
def promote(name: str, version: str, reason: ReasonOpt, mill: MillsOpt = None, by: ByOpt = None,
            db: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Make a version active (the one it supersedes is retired and kept for a rollback)."""
    _s, meta, reg = _open(db, data_dir)
    try:
        _print(_run(reg.promote, name, version, mills=mill, actor=by or getpass.getuser(), reason=reason))
    finally:
        meta.close()


@app.command()
def rollback(name: str, reason: ReasonOpt,
             version: Annotated[str | None, typer.Option(help="default: the canary, else the active")] = None,
             by: ByOpt = None, db: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Retire the canary or active version and restore the one it superseded."""
    _s, meta, reg = _open(db, data_dir)
    try:
        _print(_run(reg.rollback, name, actor=by or getpass.getuser(), reason=reason, version=version))
    finally:
        meta.close()


@app.command()
def retire(name: str, version: str, reason: ReasonOpt, by: ByOpt = None,
           db: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Retire a version (it is no longer deployed anywhere)."""
    _s, meta, reg = _open(db, data_dir)
    try:
        _print(_run(reg.retire, name, version, actor=by or getpass.getuser(), reason=reason))
    finally:
        meta.close()


@app.command()
def register(name: Annotated[str, typer.Option(help="model line, e.g. ring_frame.mahalanobis")],
             params: Annotated[Path, typer.Option(help="JSON parameters ({detector, baseline})")],
             kind: Annotated[str, typer.Option(help="e.g. asset_monitor/mahalanobis")],
             machine_type: Annotated[str | None, typer.Option(help="a fleet model of this machine type")] = None,
             asset: Annotated[str | None, typer.Option(help="a model of one asset: mill/machine/channel")] = None,
             reason: Annotated[str, typer.Option(help="why")] = "imported", by: ByOpt = None,
             db: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Import a model trained elsewhere as a candidate (JSON parameters only: never a pickle)."""
    if (machine_type is None) == (asset is None):
        raise _fail("give exactly one of --machine-type or --asset")
    try:
        p = json.loads(params.read_text())
    except (OSError, ValueError) as exc:
        raise _fail(f"{params}: {exc}") from None
    _s, meta, reg = _open(db, data_dir)
    try:
        scope_kind, scope = ("machine_type", machine_type) if machine_type else ("asset", asset)
        assert scope is not None
        _print(_run(reg.register, name=name, scope_kind=scope_kind, scope=scope, kind=kind, params=p,
                    actor=by or getpass.getuser(), reason=reason,
                    mill=scope.split("/")[0] if scope_kind == "asset" else None))
    finally:
        meta.close()
