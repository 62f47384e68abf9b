"""The ``spinline`` command: one entry point, one sub-command per part of the platform.

Each part owns its sub-command in ``spinline/<part>/cli.py``; this module only assembles them, so
importing it stays cheap and a part's heavy dependencies load only when its command runs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from spinline import __version__
from spinline.core.site_cli import load_site_or_exit

app = typer.Typer(help="spinline: end-edge-cloud platform for spinning mills.", no_args_is_help=True,
                  add_completion=False)


@app.command()
def validate(site: Path = typer.Argument(..., help="site YAML file")) -> None:
    """Check a site file and print what it describes."""
    s = load_site_or_exit(site)
    for mill in s.mills:
        pts = s.points(mill.id)
        machines = {p.machine.id for p in pts}
        typer.echo(f"{mill.id}: {len(machines)} machines with points, {len(pts)} points")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def _register() -> None:
    # Sub-command modules are registered here explicitly (no plugin scanning); each imports its
    # heavy dependencies inside its commands, so ``spinline --help`` stays fast.
    from importlib import import_module

    # ``carbon`` reads the cloud's store, so its command lives on the cloud side (spinline.cloud.carbon).
    for name, module in (("sim", "sim"), ("edge", "edge"), ("cloud", "cloud"), ("health", "health"),
                         ("carbon", "cloud.carbon")):
        app.add_typer(import_module(f"spinline.{module}.cli").app, name=name)
    app.add_typer(import_module("spinline.cloud.models.cli").app, name="models")
    app.command("demo")(import_module("spinline.demo.cli").app)


_register()


def main() -> None:
    app(prog_name="spinline")


if __name__ == "__main__":  # pragma: no cover
    main()
