"""``spinline sim SITE``: run the simulated mill behind its Modbus, OPC UA and MQTT faces."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import typer

from spinline.core.site import Fault
from spinline.core.site_cli import load_site_or_exit, mill_or_exit

app = typer.Typer(help="The simulated spinning mill.", invoke_without_command=True, add_completion=False)


def _mqtt(url: str | None) -> tuple[str, int] | None:
    if not url:
        return None
    rest = url.removeprefix("mqtt://")
    host, _, port = rest.partition(":")
    return host or "127.0.0.1", int(port or 1883)


@app.callback(context_settings={"allow_interspersed_args": True})
def sim(site: Path = typer.Argument(..., help="site YAML file"),
        mill: str | None = typer.Option(None, help="mill id (default: the first mill)"),
        speed: float = typer.Option(1.0, help="simulated seconds per wall-clock second"),
        seed: int | None = typer.Option(None, help="random seed (default: the mill's sim.seed)"),
        mqtt: str | None = typer.Option(None, help="publish to this broker, mqtt://host:port"),
        ephemeral: bool = typer.Option(False, help="bind every server to a free port"),
        fault: list[str] = typer.Option([], help="MACHINE:TYPE:START_S[:RAMP_S[:SEVERITY]] (repeatable)"),
        ground_truth: Path | None = typer.Option(None, help="write injected faults as JSON lines here"),
        duration: float | None = typer.Option(None, help="stop after this many wall-clock seconds"),
        tick: float = typer.Option(1.0, help="wall-clock seconds between updates"),
        ) -> None:
    """Serve a mill's points as real devices do, in (warped) real time, until Ctrl-C or --duration."""
    from spinline.sim.faults import parse_fault
    from spinline.sim.server import SimServer

    logging.basicConfig(level=logging.WARNING)
    s = load_site_or_exit(site)
    mill_id = mill_or_exit(s, mill).id
    try:
        faults: list[Fault] = [parse_fault(f) for f in fault]
    except ValueError as exc:
        typer.echo(f"--fault: {exc}", err=True)
        raise typer.Exit(2) from None

    async def main() -> None:
        async with SimServer(s, mill_id, speed=speed, seed=seed, ephemeral=ephemeral, mqtt=_mqtt(mqtt),
                             tick_s=tick, faults=faults, ground_truth_path=ground_truth) as srv:
            typer.echo(f"simulating {mill_id} at {speed:g}x, {len(srv.sim.points)} points")
            for line in srv.endpoints():
                typer.echo(f"  {line}")
            for g in srv.sim.ground_truth:
                typer.echo(f"  fault {g.machine} {g.type} onset {g.onset_ns} failure {g.failure_ns}")
            if duration is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(duration)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
