"""The mill's side of federated training: write the mill's labelled rows where only this edge reads them,
and run the Flower client (``spinline.edge.fl_client``, in ``.venv-fl``) against the cloud's server.

The rows come from the edge's ``FeatureLog`` (``export``: the rows of the assets asked for, labelled by
the verified fault windows the cloud sends down; the work orders are the cloud's records already). The
rows file sits in the edge's own data directory with mode 0600; the client reads it and sends only
aggregates (``spinline.core.fedstats``).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .feature_log import FeatureLog


def write_rows(path: Path, mill: str, features: Sequence[str], log_keys: Sequence[str],
               rows: Sequence[Sequence[float]], labels: Sequence[int]) -> Path:
    """The mill's rows for one run, readable by the edge's user only."""
    if len(rows) != len(labels):
        raise ValueError(f"{len(rows)} rows but {len(labels)} labels")
    if any(len(r) != len(features) for r in rows):
        raise ValueError(f"every row needs {len(features)} values ({', '.join(features)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"mill": mill, "features": list(features), "log_keys": list(log_keys),
                   "rows": [list(map(float, r)) for r in rows], "labels": [int(y) for y in labels]}, f)
    return path


def export(log: FeatureLog, path: Path, mill: str, assets: Sequence[str], features: Sequence[str],
           log_keys: Sequence[str], windows: Mapping[str, list[tuple[int, int]]], span: tuple[int, int]) -> Path:
    """The rows file of one run from the edge's own feature log."""
    rows, labels = log.labelled(assets, features, windows, *span)
    return write_rows(path, mill, features, log_keys, rows, labels)


def start_client(fl_python: Path, server: str, rows: Path, log: Path) -> subprocess.Popen[bytes]:
    """The mill's Flower client process (it exits when the server ends the run)."""
    with log.open("wb") as lf:
        return subprocess.Popen([str(fl_python), "-m", "spinline.edge.fl_client", "--server", server,
                                 "--rows", str(rows)], stdout=lf, stderr=subprocess.STDOUT)
