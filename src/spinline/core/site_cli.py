"""Loading the site file for a command: one helper for every CLI (validate, sim, edge, cloud, carbon).

A bad site file is the commonest mistake at a mill; every command reports it the same way: the
``SiteConfigError`` message (file, path such as ``mills[0].lines[1]``, YAML line, problem) on
stderr and exit status 2, before anything starts. An unknown ``--mill`` is reported the same way,
naming the mills the file has.
"""

from __future__ import annotations

from pathlib import Path

import typer

from spinline.core.errors import SiteConfigError
from spinline.core.site import Mill, Site, load_site, rebind


def load_site_or_exit(path: Path, *, ports: str = "") -> Site:
    """The site of ``path``; ``ports`` ("5020:41234,4840:41235") remaps simulated devices' ports."""
    try:
        site = load_site(path)
    except SiteConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if ports:
        try:
            site = rebind(site, {int(a): int(b) for a, b in (p.split(":") for p in ports.split(",") if p)})
        except ValueError:
            typer.echo(f"--ports {ports!r}: expected FROM:TO[,FROM:TO...] port numbers", err=True)
            raise typer.Exit(2) from None
    return site


def mill_or_exit(site: Site, mill: str | None) -> Mill:
    """The mill ``mill`` of ``site`` (None: its first); an unknown id exits 2 naming the known ones."""
    if mill is None:
        return site.mills[0]
    try:
        return site.mill(mill)
    except KeyError:
        typer.echo(f"mill {mill!r} is not in the site (it has: {', '.join(m.id for m in site.mills)})", err=True)
        raise typer.Exit(2) from None
