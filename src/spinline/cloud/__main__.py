"""``python -m spinline.cloud``: the same as ``spinline cloud``."""

from spinline.cloud.cli import app

if __name__ == "__main__":  # pragma: no cover
    app(prog_name="spinline cloud")
