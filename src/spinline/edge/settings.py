"""``EdgeSettings``: every option of one edge agent, typed and checked once, built by the CLI.

Like the cloud's ``Settings``: the entry point (``spinline edge run``, the demo, a test) builds one
and hands it to ``EdgeAgent``; nothing below reads options from anywhere else. The secret is never
part of the repr (settings get logged).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from spinline.core import wire

from .buffer_retry import RetryPolicy
from .clock import ClockPolicy
from .evidence import EvidenceSettings
from .models import ScoringConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeSettings:
    #: This edge's id, as registered with the cloud (``spinline cloud add-edge``).
    edge_id: str
    #: The edge's secret: signs batches, events and status, checks the cloud's acks. None: unsigned
    #: (a cloud that knows the edge refuses its payloads).
    secret: bytes | None = field(default=None, repr=False)
    #: The edge's state: ``buffer.sqlite``, ``status.json`` and ``models/`` (kept across restarts).
    data_dir: Path = Path("edge-data")
    #: ``mqtt://host:port`` or ``http(s)://host[:port]``; None: collect and buffer only.
    cloud_url: str | None = None
    #: Broker of MQTT devices (default: the site's link broker, else the cloud broker when it is MQTT).
    device_mqtt: str | None = None
    #: Disk budget of the buffer; past it the oldest low-priority batches are dropped (counted).
    budget_bytes: int = 1 << 30
    #: Commit interval of collected rows into the durable buffer, seconds.
    flush_s: float = 0.25
    #: Commit rows soon after they arrive (a quiet edge sends a sample in milliseconds, not half a
    #: ``flush_s`` on average), at most 4 such early flushes a second (``agent.EARLY_FLUSHES_PER_S``) beside
    #: the one per ``flush_s``; vibration features and scores wait for the regular flush (a burst of
    #: snapshots must not spend the early flushes of device rows). False: a flush every ``flush_s`` only.
    flush_on_arrival: bool = True
    #: A point unchanged within its deadband is still reported this often, seconds.
    heartbeat_s: float = 60.0
    #: What to do with rows whose device clock is off by more than ``max_clock_skew_s``.
    clock_policy: ClockPolicy = "correct"
    max_clock_skew_s: float = 120.0
    #: Rows per second the backlog (after an outage) is sent at, beside live data.
    backlog_rows_per_s: float = 200_000.0
    #: Which end of the backlog goes first (newest: the dashboard is current at once).
    backlog_order: Literal["newest_first", "oldest_first"] = "newest_first"
    #: A batch not acked within this many seconds is sent again.
    ack_timeout_s: float = 10.0
    #: Rows the cloud refused for its own state (``wire.CLOUD_STATE_REASONS``, e.g. a point its site file
    #: does not know yet) are held and re-sent after ``held_retry_base_s`` x 2^(attempt-1) seconds, at most
    #: ``held_retry_cap_s`` (``buffer_retry.RetryPolicy``); dead-lettered after its ``max_attempts`` (20).
    #: A lower base re-sends sooner (a cloud whose site is updated within minutes); a lower cap bounds
    #: how long held rows wait once the cloud is fixed, at the cost of more refused re-sends meanwhile.
    held_retry_base_s: float = 30.0
    held_retry_cap_s: float = 1800.0
    #: Interval of the status file, the edge's own points and the check whether the status message is due, s.
    status_every_s: float = 1.0
    #: The status message goes up on a meaningful change, else this often (the uplink budget), seconds.
    status_heartbeat_s: float = 60.0
    #: Largest register gap a Modbus block read bridges (coalescing requests).
    modbus_max_gap: int = 8
    #: How vibration assets learn and score (None: the defaults).
    scoring: ScoringConfig | None = None
    #: Raw vibration snapshots on demand: daily byte budget, sparse samples (None: the defaults).
    evidence: EvidenceSettings | None = None
    #: Rows held in memory while the buffer cannot commit; past it the oldest low-priority rows go.
    max_pending_rows: int = 2_000_000
    #: Most rows one batch (one payload) carries: batches are split to it at commit and at send. The
    #: default fits the cloud's defaults (``wire.max_batch_rows``); lower it for a cloud whose
    #: ``max_ingest_bytes`` is lower (``wire.max_batch_rows(max_bytes=...)``).
    max_batch_rows: int = field(default_factory=wire.max_batch_rows)
    #: Act only on acks the cloud signed with this edge's secret (the default: an unsigned ack on the
    #: broker is anyone's). False trusts unsigned acks until the first signed one (an old cloud).
    require_signed_acks: bool = True
    #: The model repository's root.json (TUF trust anchor, provisioned with the secret); None: no model
    #: updates from the registry (the edge keeps its own commissioned baselines).
    tuf_root: bytes | None = field(default=None, repr=False)
    #: HTTP(S) base of the cloud API for model updates (default: ``cloud_url`` when it is HTTP(S)).
    models_url: str | None = None
    #: Seconds between model update checks (an MQTT nudge from the cloud makes one at once).
    models_every_s: float = 300.0
    #: ``mqtt://host:port`` of the broker carrying the cloud's model nudges (default: ``cloud_url`` when it
    #: is MQTT; none: the edge finds changes by polling).
    models_nudge: str | None = None

    @property
    def held_retry(self) -> RetryPolicy:
        """The backoff of held rows these settings ask for."""
        return RetryPolicy(base_s=self.held_retry_base_s, cap_s=self.held_retry_cap_s)

    @property
    def nudge_broker(self) -> str | None:
        url = self.models_nudge or self.cloud_url
        return url if url and url.startswith(("mqtt://", "tcp://")) else None

    @property
    def models_base(self) -> str | None:
        """Where model updates come from, or None when they are off."""
        if self.tuf_root is None or self.secret is None:
            return None
        if self.models_url:
            return self.models_url
        if self.cloud_url and self.cloud_url.startswith(("http://", "https://")):
            return self.cloud_url
        return None

    def __post_init__(self) -> None:
        if not self.edge_id:
            raise ValueError("edge_id must not be empty")
        for name in ("flush_s", "heartbeat_s", "max_clock_skew_s", "backlog_rows_per_s", "ack_timeout_s",
                     "status_every_s", "status_heartbeat_s", "models_every_s", "held_retry_base_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.budget_bytes <= 0 or self.max_pending_rows <= 0 or self.modbus_max_gap < 0 \
                or self.max_batch_rows <= 0:
            raise ValueError("budget_bytes, max_pending_rows and max_batch_rows must be > 0, modbus_max_gap >= 0")
        if self.held_retry_cap_s < self.held_retry_base_s:
            raise ValueError(f"held_retry_cap_s ({self.held_retry_cap_s!r}) must be >= held_retry_base_s "
                             f"({self.held_retry_base_s!r})")
        if self.clock_policy not in ("correct", "quarantine"):
            raise ValueError(f"clock_policy must be correct or quarantine, got {self.clock_policy!r}")
        if self.backlog_order not in ("newest_first", "oldest_first"):
            raise ValueError(f"backlog_order must be newest_first or oldest_first, got {self.backlog_order!r}")
        object.__setattr__(self, "data_dir", Path(self.data_dir))
