"""``spinline edge SITE ...`` runs an edge agent; ``spinline edge status --data-dir DIR`` shows its state;
``spinline edge redrive --data-dir DIR`` sends dead letters again once their cause is fixed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from spinline.core.site_cli import load_site_or_exit, mill_or_exit


class _RunByDefault(TyperGroup):
    """``spinline edge SITE`` means ``spinline edge run SITE`` (``status`` stays a sub-command)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_RunByDefault, help="Run the edge agent of one mill, or show its state.",
                  no_args_is_help=True, add_completion=False)


_warned_modes: set[Path] = set()


def warn_if_exposed(path: Path) -> bool:
    """Warn (once per file and process) when a secret file is readable by its group or others; True if it is."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return False
    key = path.resolve()
    if key not in _warned_modes:
        _warned_modes.add(key)
        logging.getLogger(__name__).warning(
            "edge secret file %s is accessible by group or others (mode %s): anyone who reads it can sign batches "
            "as this edge; run chmod 600 %s", path, oct(stat.S_IMODE(mode)), path)
    return True


def read_secret(secret_file: Path | None, data_dir: Path) -> bytes:
    """The edge secret: --secret-file, else $SPINLINE_EDGE_SECRET, else one generated in the data dir."""
    if secret_file is not None:
        warn_if_exposed(secret_file)
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
        data_dir: Path = typer.Option(
            Path("edge-data"),
            help="the edge's state: buffer.sqlite, status.json, and models/ (one model slot per vibration "
                 "channel: <asset>.json with the commissioning rows or the frozen model, <asset>.alarms with its "
                 "open alarms; written atomically, kept across restarts; delete a slot to re-commission)"),
        device_mqtt: str | None = typer.Option(None, help="broker of MQTT devices (default: the cloud broker)"),
        ports: str = typer.Option("", help="port remap for simulated devices, e.g. 5020:41234,4840:41235"),
        budget_mb: float = typer.Option(1024.0, help="disk budget of the buffer"),
        flush_s: float = typer.Option(0.25, help="commit interval"),
        commissioning_n: int = typer.Option(
            24, min=8, help="running vibration snapshots learned (assumed healthy) before an asset's baseline "
                            "freezes; a slot already frozen keeps its model"),
        require_signed_acks: bool = typer.Option(
            True, "--require-signed-acks/--allow-unsigned-acks",
            help="act only on acks the cloud signed with the edge secret (the default); --allow-unsigned-acks "
                 "trusts unsigned acks until the first signed one arrives (a cloud older than signed acks)"),
        tuf_root: Path | None = typer.Option(None, help="the model repository's root.json (spinline models root): "
                                                        "turns on signed model updates from the registry"),
        models_url: str | None = typer.Option(None, help="http(s)://host of the cloud API for model updates "
                                                         "(default: --cloud when it is http(s))"),
        models_every_s: float = typer.Option(300.0, help="seconds between model update checks"),
        status_heartbeat_s: float = typer.Option(60.0, help="seconds between status posts when nothing "
                                                 "changed (an HTTP edge gets the cloud's requests with them)"),
        models_nudge: str | None = typer.Option(None, help="mqtt://host:port the cloud nudges model updates on "
                                                           "(default: --cloud when it is MQTT)"),
        held_retry_base_s: float = typer.Option(
            30.0, min=0.001, help="first re-send delay of rows the cloud refused for its own state (e.g. a point "
                                  "its site file lacks); doubles per attempt"),
        held_retry_cap_s: float = typer.Option(
            1800.0, min=0.001, help="longest re-send delay of such held rows (>= --held-retry-base-s)"),
        log_level: str = typer.Option("INFO")) -> None:
    """Run the edge agent until interrupted (safe to kill -9: restart on the same data dir)."""
    from spinline.core.logs import configure

    configure(log_level)
    s = load_site_or_exit(site, ports=ports)
    the_mill = mill_or_exit(s, mill)
    from .agent import EdgeAgent
    from .models import ScoringConfig
    from .settings import EdgeSettings

    try:
        settings = EdgeSettings(edge_id=edge_id, secret=read_secret(secret_file, data_dir), data_dir=data_dir,
                                cloud_url=cloud, device_mqtt=device_mqtt, budget_bytes=int(budget_mb * 1024 * 1024),
                                flush_s=flush_s, scoring=ScoringConfig(commissioning_n=commissioning_n),
                                require_signed_acks=require_signed_acks,
                                tuf_root=_read_root(tuf_root), models_url=models_url, models_every_s=models_every_s,
                                models_nudge=models_nudge, status_heartbeat_s=status_heartbeat_s,
                                held_retry_base_s=held_retry_base_s, held_retry_cap_s=held_retry_cap_s)
    except ValueError as exc:   # settings that contradict each other: refused before anything starts
        typer.echo(f"bad edge settings: {exc}", err=True)
        raise typer.Exit(2) from None
    agent = EdgeAgent(s, the_mill.id, settings)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(agent.run())


def _read_root(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        typer.echo(f"cannot read the model repository root {path}: {exc}", err=True)
        raise typer.Exit(2) from None
    if b'"_type":"root"' not in data.replace(b" ", b""):
        typer.echo(f"{path} is not a TUF root.json (spinline models root --out FILE)", err=True)
        raise typer.Exit(2)
    return data


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
             f"alarms  {', '.join(st['alarms']) or 'none'}"]
    dead = b.get("dead_letters_by_reason") or {}
    if dead:
        lines.append("dead letters kept: " + ", ".join(f"{r} {v['batches']} batch(es) {v['rows']} rows"
                                                       for r, v in dead.items()) + "  (spinline edge redrive)")
    held = b.get("held") or {}
    if held.get("rows"):
        lines.append(f"held for re-send (cloud refused for its state): {held['rows']} rows "
                     f"({', '.join(f'{k} {v}' for k, v in held.get('by_reason', {}).items())})")
    if st.get("refused_rows"):
        lines.append("refused at the edge: " + ", ".join(f"{k} {v}" for k, v in st["refused_rows"].items()))
    lines += _fmt_traffic(st)
    lines.append("devices:")
    for m, d in st["devices"].items():
        lat = "-" if d["latency_ms"] is None else f"{d['latency_ms']:.1f} ms"
        err = f"  ({d['last_error']})" if d.get("last_error") and d["state"] != "up" else ""
        lines.append(f"  {m:<10} {d['state']:<9} errors {d['errors']:<5} latency {lat}{err}")
        if d.get("bad_input"):
            causes = ", ".join(f"{k} {v}" for k, v in d["bad_input"].items())
            lines.append(f"  {'':<10} bad input: {causes}  (last: {d.get('last_bad_input')})")
    for conn, u in (st.get("unknown_devices") or {}).items():
        topics = ", ".join(list(u.get("topics", {}))[:5])
        lines.append(f"unknown devices on {conn}: {u.get('messages')} message(s) on {topics}")
    models = st.get("models") or {}
    if models:
        lines.append("models:")
    for asset, mdl in models.items():
        hi = "-" if mdl.get("health_index") is None else f"{mdl['health_index']:.0f}"
        score = "-" if mdl.get("anomaly_score") is None else f"{mdl['anomaly_score']:.2f}"
        learning = (f" ({mdl.get('learned')}/{mdl.get('commissioning_n', '?')} learned)"
                    if mdl.get("state") == "commissioning" else "")
        alarms = ", ".join(mdl.get("open_alarms") or []) or "none"
        lines.append(f"  {asset:<28} {mdl.get('state')}{learning} version {mdl.get('version')}  health {hi}  "
                     f"anomaly {score}  alarms {alarms}")
    cd = (st.get("evidence") or {}).get("cloud_diagnoses") or {}
    if cd.get("accepted") or cd.get("refused"):
        why = ", ".join(f"{k} {v}" for k, v in (cd.get("refused_by_reason") or {}).items() if v)
        lines.append(f"cloud diagnoses of uncertain snapshots  accepted {cd.get('accepted', 0)}  refused "
                     f"{cd.get('refused', 0)}" + (f" ({why})" if why else ""))
        for asset, d in (cd.get("by_asset") or {}).items():
            lines.append(f"  {asset:<28} {d.get('fault')} (confidence {float(d.get('confidence') or 0):.2f})  "
                         f"snapshot {d.get('snapshot')}" + ("  alarm open" if d.get("alarm_open") else ""))
    up = st.get("model_updates")
    if up:
        refused = ", ".join(f"{k} {v}" for k, v in (up.get("refusals") or {}).items() if v) or "none"
        last = up.get("last_refusal") or {}
        lines.append(f"model updates  {up.get('state')}  checks {up.get('checks')}  registry models "
                     f"{len(up.get('running') or {})}  refused: {refused}"
                     + (f"  (last: {last.get('reason')} {last.get('what')}: {str(last.get('detail'))[:80]})"
                        if last else ""))
    return lines


def _fmt_traffic(st: dict[str, Any]) -> list[str]:
    """The uplink byte ledger (``edge.traffic``) and how often the status message went up."""
    t = st.get("traffic")
    if not t:
        return []
    b, n = t["bytes"], t["messages"]
    parts = "  ".join(f"{k} {b[k] / 1e3:.1f} kB ({n[k]})" for k in b)
    sm = st.get("status_messages") or {}
    return [f"uplink bytes today ({t['day']} UTC): {t['up_bytes'] / 1e6:.3f} MB up  {parts}",
            f"status messages sent {sm.get('sent', 0)}, skipped unchanged {sm.get('skipped', 0)} "
            f"(heartbeat {sm.get('heartbeat_s', '?')} s)"]


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


@app.command()
def redrive(data_dir: Path = typer.Option(Path("edge-data"), help="the agent's data dir"),
            reason: list[str] = typer.Option([], help="only dead letters of this cause (repeatable; default all)"),
            dry_run: bool = typer.Option(False, "--dry-run", help="list dead letters per cause, move nothing")) -> None:
    """Send dead-lettered batches again once their cause is fixed (safe while the agent runs: it picks the
    re-queued batches up as new ones; the cloud stores each row once)."""
    from .agent import BUFFER_FILE
    from .buffer import EdgeBuffer

    path = data_dir / BUFFER_FILE
    if not path.exists():
        typer.echo(f"no edge buffer in {data_dir}", err=True)
        raise typer.Exit(1)
    with EdgeBuffer(path) as buf:
        picked = buf.redrive(set(reason) or None, dry_run=dry_run)
    if not picked:
        typer.echo("no dead letters" + (f" of cause {', '.join(reason)}" if reason else ""))
        return
    verb = "would re-send" if dry_run else "re-queued"
    for r, v in picked.items():
        typer.echo(f"{verb} {v['batches']} batch(es), {v['rows']} rows: {r}")
