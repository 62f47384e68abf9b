"""The mill's side of federated training: write the mill's labelled rows where only this edge reads them,
and run the Flower client (``spinline.edge.fl_client``, in ``.venv-fl``) against the cloud's server.

``Joiner`` does it when the cloud asks (a signed join request on the downlink, ``core.fedjoin.Join``):
one run at a time, its state (joining, done, failed with the reason) in the edge's status under
``federated``; the rows file is removed when the client ends.

The rows come from the edge's ``FeatureLog`` (``export``: the rows of the assets asked for, labelled by
the verified fault windows the cloud sends down; the work orders are the cloud's records already). The
rows file sits in the edge's own data directory with mode 0600; the client reads it and sends only
aggregates (``spinline.core.fedstats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from spinline.core import fedjoin
from spinline.core.fedjoin import Join

from .feature_log import FeatureLog

log = logging.getLogger(__name__)


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


class Joiner:
    """Runs this mill's part of the federated runs the cloud asks for, one at a time (``offer``)."""

    def __init__(self, feature_log: FeatureLog, data_dir: Path, mill: str, *, max_s: float = 3600.0,
                 fl_python: Callable[[], Path] = fedjoin.fl_python) -> None:
        self.log, self.dir, self.mill, self.max_s = feature_log, data_dir, mill, max_s
        self.fl_python = fl_python
        self.state: dict[str, Any] = {}
        self.counts = {"asked": 0, "done": 0, "failed": 0, "refused": 0}
        self._task: asyncio.Task[None] | None = None

    def status(self) -> dict[str, Any]:
        """What the edge's status shows: the last run's state and the counters ({} before any request)."""
        return {**self.state, **self.counts} if self.counts["asked"] or self.counts["refused"] else {}

    def offer(self, d: dict[str, Any]) -> None:
        """A join request from the downlink: start the client, or refuse it with the reason in the status."""
        try:
            job = Join.parse(d)
            if bad := [a for a in job.assets if not a.startswith(f"{self.mill}/")]:
                raise ValueError(f"asset(s) of another mill asked: {', '.join(bad[:3])}")
        except ValueError as exc:
            self.counts["refused"] += 1
            self.state = {"run": str(d.get("run", ""))[:64], "state": "refused", "error": str(exc)}
            log.warning("federated join request refused: %s", exc)
            return
        if self.state.get("run") == job.run:    # the cloud re-sends until our status shows the run
            return
        if self._task is not None and not self._task.done():
            if self.state.get("run") != job.run:
                self.counts["refused"] += 1
                log.warning("federated run %s asked while %s runs: refused", job.run, self.state.get("run"))
            return
        self.counts["asked"] += 1
        self.state = {"run": job.run, "state": "joining", "server": job.server, "since_ns": time.time_ns()}
        self._task = asyncio.get_running_loop().create_task(self._run(job), name=f"federated-{job.run}")

    async def _run(self, job: Join) -> None:
        rows_path = self.dir / f"fl-rows-{job.run}.json"
        client_log = self.dir / "fl-client.log"
        proc: subprocess.Popen[bytes] | None = None
        try:
            py = self.fl_python()
            windows = {a: [(int(s), int(e)) for s, e in w] for a, w in job.windows.items()}
            rows, labels = self.log.labelled(job.assets, job.features, windows, job.start_ns, job.end_ns)
            write_rows(rows_path, self.mill, job.features, job.log_keys, rows, labels)
            self.state |= {"rows": len(rows), "faults": sum(labels)}
            proc = start_client(py, job.server, rows_path, client_log)
            try:
                rc = await asyncio.wait_for(asyncio.to_thread(proc.wait), self.max_s)
            except TimeoutError:
                raise RuntimeError(f"the Flower client ran over {self.max_s:.0f} s") from None
            if rc != 0:
                tail = client_log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
                raise RuntimeError(f"the Flower client exited with {rc}: {tail[0][:300]}")
        except asyncio.CancelledError:
            self.state |= {"state": "failed", "error": "the edge stopped during the run"}
            raise
        except Exception as exc:   # any failure is the run's outcome here, shown in the status
            self.counts["failed"] += 1
            self.state |= {"state": "failed", "error": f"{type(exc).__name__}: {exc}"[:500],
                           "finished_ns": time.time_ns()}
            log.warning("federated run %s failed at this edge: %s", job.run, exc)
        else:
            self.counts["done"] += 1
            self.state |= {"state": "done", "finished_ns": time.time_ns()}
            log.info("federated run %s done: %d rows stayed here, aggregates sent", job.run, self.state["rows"])
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                with contextlib.suppress(Exception):
                    proc.wait(5)
            with contextlib.suppress(OSError):
                rows_path.unlink()

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
