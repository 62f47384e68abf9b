"""``spinline demo``: the whole platform on a simulated mill, no server to install."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Annotated

import typer


def app(site: Annotated[Path, typer.Argument(help="site YAML")] = Path("examples/mill.yaml"),
        mill: Annotated[str | None, typer.Option(help="run only this mill (default: every mill in the file)")] = None,
        data_dir: Annotated[Path, typer.Option(help="where the cloud, edge and credentials live")] = Path(
            ".spinline/demo"),
        port: Annotated[int, typer.Option(help="cloud API port (0: any free port)")] = 8000,
        broker: Annotated[str | None, typer.Option(help="mqtt://host:port; default: an embedded broker and "
                                                        "the HTTP uplink")] = None,
        speed: Annotated[float, typer.Option(help="simulated seconds per wall second (1 keeps device clocks "
                                                  "true; faster runs are flagged as clock skew at the edge)")] = 1.0,
        seed: Annotated[int, typer.Option(help="simulator seed")] = 42,
        duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
        report_every: Annotated[float, typer.Option(help="seconds between progress lines")] = 10.0,
        history_days: Annotated[float, typer.Option(
            "--history-days", min=0.0, max=90.0,
            help="days of simulated past written first through edge encoding and cloud ingest (once per "
                 "data dir; 0: none)")] = 21.0) -> None:
    """Back-fill weeks of history, then run simulated mill -> edge -> cloud live on embedded defaults (Ctrl-C stops)."""
    from spinline.core.errors import SiteConfigError
    from spinline.demo.runner import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The simulated PLCs run OPC UA without security on loopback; asyncua warns about it at every start.
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    try:
        summary = asyncio.run(run_demo(site, mill=mill, data_dir=data_dir, port=port, broker=broker, speed=speed,
                                       seed=seed, duration_s=duration, report_every_s=report_every,
                                       report=typer.echo, history_days=history_days))
    except SiteConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            typer.echo("stopped")
        return
    collected = sum(e.get("points_collected", 0) for e in summary.edges.values())
    typer.echo(f"done after {summary.wall_s:.0f}s: cloud has values for {summary.points_with_values}/"
               f"{summary.points_total} device points of {', '.join(summary.mills)} {summary.by_protocol}; "
               f"edges collected {collected:,} points")
