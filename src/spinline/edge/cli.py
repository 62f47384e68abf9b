"""``spinline edge SITE ...`` runs an edge agent; ``spinline edge status --data-dir DIR`` shows its state."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from spinline.core.errors import SiteConfigError
from spinline.core.site import load_site, rebind


class _RunByDefault(TyperGroup):
    """``spinline edge SITE`` means ``spinline edge run SITE`` (``status`` stays a sub-command)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_RunByDefault, help="Run the edge agent of one mill, or show its state.",
                  no_args_is_help=True, add_completion=False)


def read_secret(secret_file: Path | None, data_dir: Path) -> bytes:
    """The edge secret: --secret-file, else $SPINLINE_EDGE_SECRET, else one generated in the data dir."""
    if secret_file is not None:
        return secret_file.read_bytes().strip()
    env = os.environ.get("SPINLINE_EDGE_SECRET")
    if env:
        return env.encode()
    path = data_dir / "edge.secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        logging.getLogger(__name__).warning("no edge secret given: generated one in %s (register it with the cloud)",
                                            path)
    return path.read_bytes().strip()


@app.command()
def run(site: Path = typer.Argument(..., help="site YAML file"),
        mill: str | None = typer.Option(None, help="mill id (default: the site's only/first mill)"),
        cloud: str | None = typer.Option(None, help="mqtt://host:port or https://host (none: buffer only)"),
        edge_id: str = typer.Option("edge-1", help="this edge's id"),
        secret_file: Path | None = typer.Option(None, help="file holding the edge secret"),
        data_dir: Path = typer.Option(Path("edge-data"), help="buffer and status folder"),
        device_mqtt: str | None = typer.Option(None, help="broker of MQTT devices (default: the cloud broker)"),
        ports: str = typer.Option("", help="port remap for simulated devices, e.g. 5020:41234,4840:41235"),
        budget_mb: float = typer.Option(1024.0, help="disk budget of the buffer"),
        flush_s: float = typer.Option(0.25, help="commit interval"),
        log_level: str = typer.Option("INFO")) -> None:
    """Run the edge agent until interrupted (safe to kill -9: restart on the same data dir)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        s = load_site(site)
    except SiteConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if ports:
        s = rebind(s, {int(a): int(b) for a, b in (p.split(":") for p in ports.split(",") if p)})
    from .agent import EdgeAgent

    agent = EdgeAgent(s, mill or s.mills[0].id, edge_id=edge_id, secret=read_secret(secret_file, data_dir),
                      data_dir=data_dir, cloud_url=cloud, device_mqtt=device_mqtt,
                      budget_bytes=int(budget_mb * 1024 * 1024), flush_s=flush_s)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(agent.run())


def _fmt_status(st: dict[str, Any]) -> list[str]:
    age = (time.time_ns() - int(st.get("ts_ns", 0))) / 1e9
    b, u = st["buffer"], st["uplink"]
    lines = [f"edge {st['edge']} (mill {st['mill']}, pid {st.get('pid')}) status {age:.1f} s old",
             f"uplink  {u['state']} {u.get('url') or ''}  lag {u['lag_s']:.1f} s  sent {u['sent']}  acked {u['acked']}"
             f"  in-flight {u['inflight']}" + (f"  last error: {u['last_error']}" if u.get("last_error") else ""),
             f"buffer  {b['batches']} batches, {b['rows']} rows, {b['bytes'] / 1e6:.1f} MB of "
             f"{b['budget_bytes'] / 1e6:.0f} MB  dropped {b['dropped_rows']} rows  dead letters {b['dead_letters']}"
             + ("  FULL" if b["full"] else ""),
             f"points  collected {st['points_collected']}  stored {st['points_stored']}  "
             f"clock skew events {st['clock_skew_events']}",
             f"alarms  {', '.join(st['alarms']) or 'none'}", "devices:"]
    for m, d in st["devices"].items():
        lat = "-" if d["latency_ms"] is None else f"{d['latency_ms']:.1f} ms"
        err = f"  ({d['last_error']})" if d.get("last_error") and d["state"] != "up" else ""
        lines.append(f"  {m:<10} {d['state']:<9} errors {d['errors']:<5} latency {lat}{err}")
    return lines


@app.command()
def status(data_dir: Path = typer.Option(Path("edge-data"), help="the agent's data dir"),
           as_json: bool = typer.Option(False, "--json", help="print the raw status JSON")) -> None:
    """Show the running (or last) agent's devices, buffer depth, lag and uplink state."""
    path = data_dir / "status.json"
    try:
        st = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        typer.echo(f"no status in {data_dir}: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(st, indent=1))
        return
    for line in _fmt_status(st):
        typer.echo(line)
