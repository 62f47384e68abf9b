"""``python -m spinline.edge SITE ...`` (same as ``spinline edge``)."""

from spinline.edge.cli import app

app(prog_name="spinline edge")
