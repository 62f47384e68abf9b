"""Status reporting: every ``status_every_s`` the agent's state as a dict, a file, a message and points.

``StatusReporter.status`` gathers devices, buffer, uplink, collection counters, clock events, bad
input and models into one JSON-able dict; the loop writes it atomically to ``status.json`` in the
data dir (``spinline edge status`` reads it), publishes it on ``TOPIC_STATUS`` / ``STATUS_PATH``
when an uplink session is open, and feeds the link-health points per machine and the edge's own
``_edge`` points back through the collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from spinline.connectors.base import LinkHealth, LinkState
from spinline.core import wire
from spinline.core.batch import Batch
from spinline.core.errors import StorageError, UplinkError
from spinline.core.site import EDGE_MACHINE_ID, point_key

from .buffer_io import AsyncBuffer
from .collector import Collector
from .forwarder import Forwarder
from .uplink.base import Uplink

log = logging.getLogger(__name__)
STATUS_FILE = "status.json"
#: The edge's own points (``{mill}/_edge/{name}``).
EDGE_POINTS = ("buffer_rows", "buffer_bytes", "buffer_dropped", "uplink_state", "uplink_lag_s", "points_collected",
               "clock_skew_events")


@dataclass(frozen=True, slots=True)
class StatusSources:
    """What the status is read from, each owned elsewhere (the agent wires them)."""

    healths: Callable[[], Mapping[str, LinkHealth]]
    unknown_devices: Callable[[], dict[str, Any]]
    models: Callable[[], dict[str, Any]]
    #: The open uplink session, if any (status goes up only through one).
    uplink: Callable[[], Uplink | None]
    #: The model update client's state: what runs, what was refused per reason (None: updates off).
    model_updates: Callable[[], dict[str, Any]] | None = None


class StatusReporter:
    def __init__(self, *, edge_id: str, mill: str, data_dir: Path, cloud_url: str | None, every_s: float,
                 collector: Collector, buffer: AsyncBuffer, forwarder: Forwarder, sources: StatusSources) -> None:
        self.edge_id, self.mill = edge_id, mill
        self.path = data_dir / STATUS_FILE
        self.cloud_url = cloud_url
        self.every_s = every_s
        self.collector = collector
        self.buffer = buffer
        self.forwarder = forwarder
        self.sources = sources
        self.started_ns = 0
        self.last: dict[str, Any] = {}
        self.edge_keys = {name: point_key(f"{mill}/{EDGE_MACHINE_ID}/{name}") for name in EDGE_POINTS}

    def self_points(self, stats: dict[str, Any]) -> Batch:
        """Link health per machine and the edge's own points, from a ``status`` dict."""
        now = time.time_ns()
        keys, vals = [], []
        mill = self.mill
        for mid, h in self.sources.healths().items():
            keys += [point_key(f"{mill}/{mid}/link_state"), point_key(f"{mill}/{mid}/link_errors"),
                     point_key(f"{mill}/{mid}/link_latency_ms")]
            vals += [float(h.state), float(h.link_errors), h.latency_ms if h.state != LinkState.DOWN else float("nan")]
        e = self.edge_keys
        up = stats["uplink"]
        c = self.collector
        for name, v in (("buffer_rows", stats["buffer"]["rows"]), ("buffer_bytes", stats["buffer"]["bytes"]),
                        ("buffer_dropped", stats["buffer"]["dropped_rows"] + c.memory_dropped_rows),
                        ("uplink_state", 0.0 if up["state"] == "connected" else 2.0),
                        ("uplink_lag_s", up["lag_s"]), ("points_collected", c.points_collected),
                        ("clock_skew_events", c.clock.events)):
            keys.append(e[name])
            vals.append(float(v))
        v = np.asarray(vals, dtype=np.float64)
        return Batch.of(keys, now, v, np.where(np.isnan(v), 0x80, 0).astype(np.uint8))

    async def status(self) -> dict[str, Any]:
        bs = await self.buffer.stats()
        now = time.time_ns()
        lag = 0.0 if bs.oldest_created_ns is None else max(0.0, (now - bs.oldest_created_ns) / 1e9)
        up = self.forwarder.stats.as_dict() | {"lag_s": round(lag, 3), "url": redact(self.cloud_url)}
        c = self.collector
        healths = self.sources.healths()
        return {"edge": self.edge_id, "mill": self.mill, "ts_ns": now, "pid": os.getpid(),
                "started_ns": self.started_ns,
                "devices": {m: h.snapshot() for m, h in sorted(healths.items())},
                "buffer": bs.as_dict(), "uplink": up, "points_collected": c.points_collected,
                "points_stored": c.points_stored, "batches_committed": c.batches_committed,
                "pending_rows": c.pending_rows,
                "memory_dropped_rows": c.memory_dropped_rows,
                "clock_skew_events": c.clock.events,
                "bad_input_total": sum(h.bad_input_total for h in healths.values()),
                "unknown_devices": self.sources.unknown_devices(),
                "models": self.sources.models(),
                "model_updates": self.sources.model_updates() if self.sources.model_updates is not None else None,
                "alarms": (["buffer_full"] if bs.full else []) + (["uplink_down"] if up["state"] != "connected"
                                                                  else [])}

    def write(self, status: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=1, default=str))
        os.replace(tmp, self.path)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                st = await self.status()
                self.last = st
                self.collector.ingest(self.self_points(st))
                await asyncio.to_thread(self.write, st)
                up = self.sources.uplink()
                if up is not None:
                    with contextlib.suppress(UplinkError):
                        await asyncio.wait_for(up.publish_status(wire.encode_status(wire.public_status(st))), 2.0)
            except (OSError, StorageError, TimeoutError) as exc:
                log.warning("status update failed: %s", exc)


def redact(url: str | None) -> str | None:
    """``url`` with its password (if any) replaced by ``***``: status and logs never show it."""
    if not url:
        return url
    u = urlsplit(url)
    if u.password:
        return url.replace(f":{u.password}@", ":***@")
    return url
