"""Status reporting: every ``status_every_s`` the agent's state as a dict, a file, a message and points.

``StatusReporter.status`` gathers devices, buffer, uplink, collection counters, clock events, bad
input, models and the uplink byte ledger (``traffic``) into one JSON-able dict; the loop writes it
atomically to ``status.json`` in the data dir (``spinline edge status`` reads it) and feeds the
link-health points per machine and the edge's own ``_edge`` points back through the collector, every
``status_every_s``.

The status *message* (``TOPIC_STATUS`` / ``STATUS_PATH``) is a few KB; sent every second it would be
most of an edge's uplink (~600 MB a day). It goes up only when ``status_digest`` changes (states,
alarms, models, refusal counters; levels such as buffer depth and lag in coarse buckets, so noise
does not count as change), at the start of each uplink session, and otherwise every
``status_heartbeat_s`` (``StatusGate``), so the cloud still knows the edge is alive.
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
    #: The uplink byte ledger (``edge.traffic``), {} when there is none.
    traffic: Callable[[], dict[str, Any]] = dict
    #: Raw-evidence snapshots (``edge.evidence``), {} when there is none.
    evidence: Callable[[], dict[str, Any]] = dict
    #: The model update client's state: what runs, what was refused per reason (None: updates off).
    model_updates: Callable[[], dict[str, Any]] | None = None
    #: A federated mill's part in the cloud's Flower runs (``edge.federated.Joiner``), {} when none.
    federated: Callable[[], dict[str, Any]] = dict


def _bucket(v: Any, edges: tuple[float, ...]) -> int:
    """Index of the first edge ``v`` is below (len(edges) past the last); None/NaN -> -1."""
    if not isinstance(v, int | float) or v != v:
        return -1
    return next((i for i, e in enumerate(edges) if v < e), len(edges))


def _log2(v: Any) -> int:
    """0 for 0, else 1 + floor(log2 n): a counter that keeps rising changes the digest ever more rarely."""
    n = int(v) if isinstance(v, int | float) and v == v and v > 0 else 0
    return n.bit_length()


def status_digest(st: Mapping[str, Any]) -> dict[str, Any]:
    """The meaningful part of a status: a change here sends the message at once. Pure.

    Kept: every state (uplink, devices, models, alarms, buffer full), refusal counters (dead letters,
    rejected batches/events, snapshots refused, cloud diagnoses refused), the cloud's diagnosis per asset and
    bad input, and levels in coarse buckets (buffer
    rows by decade from 10k, lag 10 s / 1 min / 10 min / 1 h). Left out: what changes all the time
    (timestamps, collected/sent counters, latencies, latest scores, the byte ledger).
    """
    up, buf = st.get("uplink") or {}, st.get("buffer") or {}
    models = st.get("models") or {}
    ev = st.get("evidence") or {}
    mu = st.get("model_updates") or {}
    fl = st.get("federated") or {}
    return {
        "federated": [fl.get("run"), fl.get("state")],
        "model_updates": [mu.get("state"), {a: (r or {}).get("version") for a, r in (mu.get("running") or {}).items()},
                          mu.get("refusals")],
        "alarms": sorted(st.get("alarms") or []),
        "uplink": up.get("state"),
        "devices": {m: (d or {}).get("state") for m, d in (st.get("devices") or {}).items()},
        "buffer_full": bool(buf.get("full")),
        "buffer_rows": _bucket(buf.get("rows"), (1e4, 1e5, 1e6, 1e7)),
        "lag": _bucket(up.get("lag_s"), (10.0, 60.0, 600.0, 3600.0)),
        "held": _log2((buf.get("held") or {}).get("rows")),
        "dead_letter_causes": sorted(buf.get("dead_letters_by_reason") or {}),
        "refused_at_edge": {k: _log2(v) for k, v in (st.get("refused_rows") or {}).items()},
        "refused": [buf.get("dead_letters"), buf.get("dead_events"), _log2(buf.get("dropped_rows")),
                    up.get("rejected"), up.get("events_rejected"), _log2(up.get("acks_ignored")),
                    _log2(ev.get("refused"))],
        "bad_input": _log2(st.get("bad_input_total")),
        "clock": _log2(st.get("clock_skew_events")),
        "memory_dropped": _log2(st.get("memory_dropped_rows")),
        "unknown_devices": sorted(st.get("unknown_devices") or {}),
        "models": {a: [(m or {}).get("kind"), (m or {}).get("version"), (m or {}).get("state"),
                       sorted((m or {}).get("open_alarms") or [])] for a, m in models.items()},
        # the cloud model's answers to uncertain snapshots: a new verdict, or forged answers, show at once
        "cloud_diagnoses": [{a: (d or {}).get("fault") for a, d in ((ev.get("cloud_diagnoses") or {}).get("by_asset")
                                                                     or {}).items()},
                            _log2((ev.get("cloud_diagnoses") or {}).get("refused"))],
    }


class StatusGate:
    """Decides when the status message goes up: on a digest change, a new session, or the heartbeat."""

    def __init__(self, heartbeat_s: float) -> None:
        self.heartbeat_s = heartbeat_s
        self._digest: dict[str, Any] | None = None
        self._at = float("-inf")
        self._session: object = None
        self.sent = 0
        self.skipped = 0

    def due(self, status: Mapping[str, Any], now_s: float, session: object) -> str | None:
        """Why the status should go up now (``change`` / ``session`` / ``heartbeat``), or None."""
        if session is not self._session:
            return "session"
        if status_digest(status) != self._digest:
            return "change"
        if now_s - self._at >= self.heartbeat_s:
            return "heartbeat"
        self.skipped += 1
        return None

    def done(self, status: Mapping[str, Any], now_s: float, session: object) -> None:
        """The message went up: the next one waits for a change or the heartbeat."""
        self._digest = status_digest(status)
        self._at = now_s
        self._session = session
        self.sent += 1


class StatusReporter:
    def __init__(self, *, edge_id: str, mill: str, data_dir: Path, cloud_url: str | None, every_s: float,
                 collector: Collector, buffer: AsyncBuffer, forwarder: Forwarder, sources: StatusSources,
                 heartbeat_s: float = 60.0) -> None:
        self.edge_id, self.mill = edge_id, mill
        self.path = data_dir / STATUS_FILE
        self.cloud_url = cloud_url
        self.every_s = every_s
        self.collector = collector
        self.buffer = buffer
        self.forwarder = forwarder
        self.sources = sources
        self.started_ns = 0
        self.gate = StatusGate(heartbeat_s)
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
                "status_messages": {"sent": self.gate.sent, "skipped": self.gate.skipped,
                                    "heartbeat_s": self.gate.heartbeat_s},
                **({"traffic": t} if (t := self.sources.traffic()) else {}),
                **({"evidence": e} if (e := self.sources.evidence()) else {}),
                **({"federated": f} if (f := self.sources.federated()) else {}),
                "model_updates": self.sources.model_updates() if self.sources.model_updates is not None else None,
                "refused_rows": dict(c.refused_rows),
                "alarms": alarms(bs.as_dict(), up)}

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
                now = time.monotonic()
                if up is not None and self.gate.due(st, now, up) is not None:
                    with contextlib.suppress(UplinkError):
                        await asyncio.wait_for(up.publish_status(wire.encode_status(wire.public_status(st))), 2.0)
                        self.gate.done(st, now, up)
            except (OSError, StorageError, TimeoutError) as exc:
                log.warning("status update failed: %s", exc)


def alarms(buffer: Mapping[str, Any], uplink: Mapping[str, Any]) -> list[str]:
    """The edge's own alarms: buffer full, uplink down, rows the cloud refuses for its state (held and
    retried: ``cloud_refusing_rows``), dead letters kept (and ``conflicting_duplicate`` among them)."""
    out = ["buffer_full"] if buffer.get("full") else []
    if uplink.get("state") != "connected":
        out.append("uplink_down")
    if (buffer.get("held") or {}).get("rows"):
        out.append("cloud_refusing_rows")
    dead = buffer.get("dead_letters_by_reason") or {}
    if dead:
        out.append("dead_letters")
    if "conflicting_duplicate" in dead:
        out.append("conflicting_duplicate")
    return out


def redact(url: str | None) -> str | None:
    """``url`` with its password (if any) replaced by ``***``: status and logs never show it."""
    if not url:
        return url
    u = urlsplit(url)
    if u.password:
        return url.replace(f":{u.password}@", ":***@")
    return url
