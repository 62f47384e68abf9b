"""``spinline cloud``: run the API (the default command) and manage users and edge credentials.

    spinline cloud --db embedded --site examples/zone.yaml          # serve (same as ``serve``)
    spinline cloud serve --db postgresql://postgres@127.0.0.1/spinline --port 8000 --mqtt mqtt://127.0.0.1:1883
    spinline cloud add-user --username ops --role zone_operator     # password from a prompt or $SPINLINE_PASSWORD
    spinline cloud add-edge --mill mill-a --id edge-a1              # prints the secret once
    spinline cloud revoke-edge --id edge-a1
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import typer

from spinline.cloud.auth.roles import Role

app = typer.Typer(help="The cloud: API server, users and edge credentials. Without a command: serve.",
                  invoke_without_command=True, add_completion=False)

DbOpt = Annotated[str | None, typer.Option("--db", help="embedded | embedded:/folder | postgresql://...",
                                           envvar="SPINLINE_DB", show_envvar=True)]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="folder of the embedded files and the key "
                                                                     "(default: spinline-data)")]
SiteOpt = Annotated[Path | None, typer.Option("--site", help="site YAML whose mills and points to register")]


@dataclass
class _Common:
    db: str | None = None
    data_dir: Path | None = None
    site: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _settings(common: _Common, db: str | None = None, data_dir: Path | None = None,
              site: Path | None = None) -> Any:
    from spinline.cloud.settings import Settings

    return Settings.from_env(db=db or common.db, data_dir=data_dir or common.data_dir, site=site or common.site)


@app.callback()
def main(ctx: typer.Context, db: DbOpt = None, data_dir: DataDirOpt = None, site: SiteOpt = None,
         host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
         port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
         mqtt: Annotated[str | None, typer.Option(help="mqtt://host:port of the broker to ingest from")] = None,
         log_level: Annotated[str, typer.Option(help="debug | info | warning")] = "info") -> None:
    """Run the cloud API (the default) or manage users and edges."""
    ctx.obj = _Common(db=db, data_dir=data_dir, site=site)
    if ctx.invoked_subcommand is None:
        _serve(_settings(ctx.obj), host=host, port=port, mqtt=mqtt, log_level=log_level)


@app.command()
def serve(ctx: typer.Context, db: DbOpt = None, data_dir: DataDirOpt = None, site: SiteOpt = None,
          host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
          mqtt: Annotated[str | None, typer.Option(help="mqtt://host:port of the broker to ingest from")] = None,
          log_level: Annotated[str, typer.Option(help="debug | info | warning")] = "info") -> None:
    """Serve the API with uvicorn (registers --site's mills and points first)."""
    _serve(_settings(ctx.obj, db, data_dir, site), host=host, port=port, mqtt=mqtt, log_level=log_level)


def _serve(settings: Any, *, host: str, port: int, mqtt: str | None, log_level: str) -> None:
    import uvicorn

    from spinline.cloud.app import create_app
    from spinline.core.logs import configure, library_levels

    configure(log_level)
    access = "uvicorn.access" in library_levels(os.environ.get("SPINLINE_LOG_LIBRARIES"))
    on_ready = _mqtt_workers(mqtt) if mqtt else None
    app_ = create_app(settings, on_ready=on_ready)
    typer.echo(f"spinline cloud on http://{host}:{port}/api/docs (db: {_redact(settings.db)})", err=True)
    # uvicorn's per-request lines only when asked (SPINLINE_LOG_LIBRARIES=uvicorn.access=INFO).
    uvicorn.run(app_, host=host, port=port, log_level=log_level.lower(), access_log=access)


def _redact(url: str) -> str:
    p = urlparse(url)
    if p.password:
        return url.replace(f":{p.password}@", ":***@")
    return url


def _mqtt_workers(url: str) -> Any:
    p = urlparse(url)
    if p.scheme not in ("mqtt", "tcp") or not p.hostname:
        raise typer.BadParameter(f"--mqtt must be mqtt://host:port, got {url!r}")
    host, port = p.hostname, p.port or 1883

    def start(cloud: Any) -> Any:
        try:
            from spinline.cloud.ingest.mqtt_worker import IngestWorker
        except ModuleNotFoundError:
            logging.getLogger(__name__).warning("no MQTT ingest worker in this build; ingest over HTTP only")
            return None
        import threading

        worker = IngestWorker(cloud.ingest, host, port, events=cloud.edge_events, evidence=cloud.evidence)
        cloud.publish_requests = worker.publish_requests
        if cloud.federated is not None:
            worker.federated_take = cloud.federated.take
        stopping = threading.Event()
        # The API serves while the broker is still down; the worker subscribes when it comes up.
        starter = threading.Thread(target=worker.start_when_reachable, args=(stopping,), name="mqtt-ingest-start",
                                   daemon=True)
        starter.start()
        cloud.broker_connected = lambda: worker.connected
        nudger = None
        if cloud.models is not None:
            from spinline.cloud.models.nudge import MqttNudger

            nudger = MqttNudger(host, port)
            nudger.start()
            cloud.models.notify = nudger

        def stop() -> None:
            stopping.set()
            starter.join(15)
            worker.stop()
            if nudger is not None:
                nudger.stop()

        return stop

    return start


def _open(common: _Common, db: str | None, data_dir: Path | None, site: Path | None = None) -> Any:
    from spinline.cloud.app import build_cloud, open_stores

    settings = _settings(common, db, data_dir, site)
    store, meta = open_stores(settings)
    return build_cloud(settings, store, meta)


def _accounts(common: _Common, db: str | None, data_dir: Path | None, site: Path | None = None) -> Any:
    """Users and edge credentials only: opens the metadata database, not the time-series store, so it
    works while an embedded server holds the DuckDB file (``--site`` registers the site first)."""
    from types import SimpleNamespace

    from spinline.cloud.app import open_stores
    from spinline.cloud.auth.passwords import Passwords
    from spinline.cloud.auth.sealing import SecretBox
    from spinline.cloud.auth.service import Accounts, EdgeCredentials
    from spinline.cloud.meta.store import MetaStore

    settings = _settings(common, db, data_dir, site)
    if settings.site is not None:
        store, meta = open_stores(settings)
        store.close()
    else:
        meta = MetaStore(settings.meta_url())
        meta.migrate()
    passwords = Passwords(time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib,
                          parallelism=settings.argon2_parallelism)
    return SimpleNamespace(meta=meta, accounts=Accounts(meta, passwords),
                           edges=EdgeCredentials(meta, SecretBox(settings.load_secret_key())),
                           store=SimpleNamespace(close=lambda: None))


def _close(cloud: Any) -> None:
    cloud.store.close()
    cloud.meta.close()


@app.command("register")
def register(ctx: typer.Context, site: Annotated[Path, typer.Option("--site", help="site YAML")],
             db: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Register a site's mills and points (also done by ``serve --site``)."""
    from spinline.cloud.api.services.site import register_site
    from spinline.core.site_cli import load_site_or_exit

    the_site = load_site_or_exit(site)
    cloud = _open(ctx.obj, db, data_dir)
    try:
        for mill, n in register_site(the_site, cloud.store, cloud.meta).items():
            typer.echo(f"{mill}: {n} points")
    finally:
        _close(cloud)


@app.command("add-user")
def add_user(ctx: typer.Context,
             username: Annotated[str, typer.Option("--username", "-u", help="login name")],
             role: Annotated[Role, typer.Option("--role", help="what the user may do")] = Role.VIEWER,
             mill: Annotated[list[str] | None, typer.Option("--mill", "-m", help="a mill in scope (repeat)")] = None,
             full_name: Annotated[str, typer.Option(help="display name")] = "",
             db: DbOpt = None, data_dir: DataDirOpt = None, site: SiteOpt = None) -> None:
    """Create a user. The password comes from $SPINLINE_PASSWORD or a prompt (never an argument)."""
    from spinline.cloud.auth.service import InvalidRequest
    from spinline.cloud.meta.store import ConflictError

    password = os.environ.get("SPINLINE_PASSWORD") or typer.prompt("password", hide_input=True,
                                                                  confirmation_prompt=True)
    cloud = _accounts(ctx.obj, db, data_dir, site)
    try:
        user = cloud.accounts.create_user(username=username, password=password, role=role, mills=mill or [],
                                          full_name=full_name)
    except (InvalidRequest, ConflictError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        _close(cloud)
    scope = "all mills" if role == Role.ZONE_OPERATOR else ", ".join(sorted(user.mills))
    typer.echo(f"user {user.username} ({user.role}; {scope}) created")


@app.command("add-edge")
def add_edge(ctx: typer.Context,
             mill: Annotated[str, typer.Option("--mill", help="the mill the edge belongs to")],
             edge_id: Annotated[str, typer.Option("--id", help="edge id (lower-case, unique)")],
             description: Annotated[str, typer.Option(help="where it is, what it reads")] = "",
             secret_file: Annotated[Path | None, typer.Option(help="also write the secret here (mode 0600)")] = None,
             db: DbOpt = None, data_dir: DataDirOpt = None, site: SiteOpt = None) -> None:
    """Create an edge credential and print its secret (shown this once; configure the edge with it)."""
    from spinline.cloud.auth.service import InvalidRequest
    from spinline.cloud.meta.store import ConflictError

    cloud = _accounts(ctx.obj, db, data_dir, site)
    try:
        rec, secret = cloud.edges.create(edge_id=edge_id, mill=mill, description=description, created_by="cli")
    except (InvalidRequest, ConflictError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        _close(cloud)
    if secret_file is not None:
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)          # the mode above applies to a new file only; tighten an existing one
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
    typer.echo(f"edge {rec.id} of {rec.mill} created; its secret (shown once):", err=True)
    typer.echo(secret)


@app.command("revoke-edge")
def revoke_edge(ctx: typer.Context, edge_id: Annotated[str, typer.Option("--id", help="edge id")],
                db: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Revoke an edge: its batches are refused from now on."""
    cloud = _accounts(ctx.obj, db, data_dir)
    try:
        ok = cloud.edges.revoke(edge_id)
    finally:
        _close(cloud)
    if not ok:
        typer.echo(f"error: no active edge {edge_id!r}", err=True)
        raise typer.Exit(2)
    typer.echo(f"edge {edge_id} revoked")


@app.command("edges")
def list_edges(ctx: typer.Context, db: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """The edge fleet: state, last seen, buffer, lag, refused batches."""
    from spinline.cloud.api.services.fleet import fleet

    cloud = _open(ctx.obj, db, data_dir)
    try:
        rows = fleet(cloud.store, cloud.meta.edges())
    finally:
        _close(cloud)
    for e in rows:
        state = "active" if e.active else "revoked"
        seen = e.last_seen.isoformat(timespec="seconds") if e.last_seen else "never"
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(e.rejected.items())) or "none"
        typer.echo(f"{e.mill}/{e.id}  {state}  last seen {seen}  buffer {e.buffer_rows}  lag {e.lag_s}  "
                   f"rejected: {rejected}")


@app.command("report")
def report(ctx: typer.Context,
           mill: Annotated[str, typer.Option("--mill", help="mill id")],
           period: Annotated[str, typer.Option("--period", help="2026-W47 (ISO week) or 2026-10 (month)")],
           site: Annotated[Path, typer.Option("--site", help="site YAML of the mill")],
           out: Annotated[Path, typer.Option("--out", help="folder for the HTML and CSV")] = Path("reports"),
           standard_ne: Annotated[float, typer.Option(help="standard count for comparisons")] = 40.0,
           lang: Annotated[str, typer.Option("--lang", help="language of the PDF: zh-CN | en")] = "en",
           pdf: Annotated[bool, typer.Option("--pdf/--no-pdf", help="also write the PDF (with charts)")] = True,
           db: DbOpt = None, data_dir: DataDirOpt = None) -> None:
    """Write a weekly or monthly production report (KPIs per line, shift, ring frame and day): HTML, CSV, PDF."""
    from spinline.cloud import reports
    from spinline.core.site_cli import load_site_or_exit, mill_or_exit

    if lang not in ("zh-CN", "en"):
        typer.echo(f"error: --lang must be zh-CN or en, not {lang!r}", err=True)
        raise typer.Exit(2)
    the_mill = mill_or_exit(load_site_or_exit(site), mill)
    cloud = _open(ctx.obj, db, data_dir)
    try:
        r = reports.build(cloud.kpis, the_mill, period, standard_ne=standard_ne)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        _close(cloud)
    for path in reports.write(r, out, lang=lang, pdf=pdf):
        typer.echo(str(path))
