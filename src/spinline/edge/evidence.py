"""Raw evidence on demand: a vibration snapshot goes up only when it matters, within a daily byte budget.

The edge sends features, scores and events; a raw waveform (25.6 kHz x 1 s = 100 kB per channel) is
kept in memory, the latest per channel, as float32 (what the sensor sent and what goes up: half the
resident memory of the featuriser's float64 copy, 5 MB not 10 MB for 50 channels), and queued for the
cloud only

* at an alarm (``alarm_raised``: the onset the technician and the cloud model will want to see),
* on request (``request(asset, by)``: a cloud model unsure of a diagnosis, a user's "send rf03's latest"),
* as a sparse sample for retraining: the first snapshot of each channel each UTC day,
* at an alarm whose diagnosis is **uncertain** (``is_uncertain``: fault ``unknown`` or none, or a confidence
  below ``EvidenceSettings.uncertain_below``; ``diagnose`` already halves its confidence when the runner-up
  fault is as strong, so "the top two are close" is below the threshold too): reason ``uncertain``, instead
  of ``alarm``, with the edge's diagnosis (fault, confidence) in the snapshot header. The cloud runs its
  model on it and answers (``edge.cloud_answers``). At most one per asset per alarm episode (from the first
  alarm raised until none is open: ``episode_over``); a second alarm of the same episode queues ``alarm``.

A queued snapshot is a durable item in the edge's buffer file (table ``evidence_snapshots``, fsync'd
like batches, written on the buffer's thread), so nothing is lost while the link is down. Each UTC day
has a byte budget (``EvidenceSettings.daily_bytes``, counted on the compressed payload when it is
queued); past it a snapshot is refused, counted per reason in ``refused`` and logged once a day, so the
link is never flooded by a flapping alarm. A federated mill's keeper (``withhold``) queues nothing at all:
each snapshot it would have sent is counted in ``withheld_federated``. ``stats()`` goes into the status
(``evidence``). The forwarder sends what is queued after live data and deletes it on the cloud's ack
(``ack_snapshots``).

Payload (``encode_snapshot``): JSON header line, then the zlib-compressed float32 little-endian samples.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from spinline.core.errors import StorageError

from .traffic import utc_day

log = logging.getLogger(__name__)
Reason = Literal["alarm", "request", "sample", "uncertain"]
REASONS: tuple[Reason, ...] = ("alarm", "request", "sample", "uncertain")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS evidence_snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created_ns INTEGER NOT NULL, asset TEXT NOT NULL,
    reason TEXT NOT NULL, ts_ns INTEGER NOT NULL, nbytes INTEGER NOT NULL, body BLOB NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class EvidenceSettings:
    #: Bytes of snapshots queued per UTC day, all reasons together (compressed payload).
    daily_bytes: int = 16 << 20
    #: Sparse samples for retraining: this many per channel per UTC day (0: none).
    samples_per_channel_per_day: int = 1
    #: A snapshot older than this is not "the latest" any more: an alarm or a request without one waits.
    max_age_s: float = 900.0
    #: An alarm's diagnosis below this confidence (0.5 at ``diagnose``'s threshold, ~0.82 at twice it, halved
    #: when the runner-up fault is as strong) is uncertain: its waveform goes up for the cloud's model.
    #: 0: only a fault ``unknown`` (or no diagnosis at all) is uncertain.
    uncertain_below: float = 0.6

    def __post_init__(self) -> None:
        if self.daily_bytes <= 0 or self.samples_per_channel_per_day < 0 or self.max_age_s <= 0:
            raise ValueError("daily_bytes and max_age_s must be > 0, samples_per_channel_per_day >= 0")
        if not 0.0 <= self.uncertain_below <= 1.0:
            raise ValueError(f"uncertain_below must be in [0, 1], got {self.uncertain_below!r}")


def is_uncertain(fault: str | None, confidence: float | None, below: float) -> bool:
    """Is an alarm's diagnosis too weak to act on without a second opinion? Pure.

    No diagnosis, fault ``unknown``, or a confidence under ``below`` (a missing or non-finite confidence
    counts as 0)."""
    if fault is None or fault == "unknown":
        return True
    c = confidence if confidence is not None and confidence == confidence else 0.0
    return c < below


@dataclass(frozen=True, slots=True)
class RawSnapshot:
    asset: str
    ts_ns: int
    fs_hz: float
    samples: np.ndarray
    #: The shaft speed measured with this waveform (the cloud's model places the defect lines with it).
    shaft_hz: float | None = None


@dataclass(frozen=True, slots=True)
class EdgeDiagnosis:
    """What the edge diagnosed at an uncertain alarm (travels in the snapshot header as ``diagnosis``)."""

    fault: str
    confidence: float


def encode_snapshot(s: RawSnapshot, reason: Reason, edge: str, diagnosis: EdgeDiagnosis | None = None) -> bytes:
    """Header JSON + newline + zlib(float32 LE samples). Pure."""
    head: dict[str, Any] = {"v": 1, "edge": edge, "asset": s.asset, "ts_ns": s.ts_ns, "fs_hz": s.fs_hz,
                            "reason": reason, "n": len(s.samples), "encoding": "f32le-zlib"}
    if s.shaft_hz is not None and s.shaft_hz == s.shaft_hz and s.shaft_hz > 0:
        head["shaft_hz"] = float(s.shaft_hz)
    if diagnosis is not None:
        conf = diagnosis.confidence if diagnosis.confidence == diagnosis.confidence else 0.0
        head["diagnosis"] = {"fault": diagnosis.fault[:40], "confidence": round(min(max(conf, 0.0), 1.0), 3)}
    body = zlib.compress(np.asarray(s.samples, dtype="<f4").tobytes(), 6)
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + body


def decode_snapshot(data: bytes) -> tuple[dict[str, Any], np.ndarray]:
    """The header and the samples of ``encode_snapshot``'s bytes; ``ValueError`` naming the problem."""
    head, sep, body = data.partition(b"\n")
    if not sep:
        raise ValueError("snapshot payload has no header line")
    h = json.loads(head)
    samples = np.frombuffer(zlib.decompress(body), dtype="<f4")
    if len(samples) != h.get("n"):
        raise ValueError(f"snapshot says {h.get('n')} samples, payload holds {len(samples)}")
    return h, samples


@dataclass(slots=True)
class _Day:
    day: str
    bytes: int = 0
    queued: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    sampled: dict[str, int] = field(default_factory=dict)
    refusal_logged: bool = False


class EvidenceKeeper:
    """Latest raw snapshot per channel, and the decision to queue one (pure but for ``commit``)."""

    def __init__(self, edge: str, settings: EvidenceSettings | None = None,
                 clock: Callable[[], float] = time.time, *, withhold: bool = False) -> None:
        self.edge = edge
        #: A federated mill: no snapshot is ever queued for the cloud; each one wanted is counted here.
        self.withhold = withhold
        self.withheld = 0
        self.settings = settings or EvidenceSettings()
        self.clock = clock
        self.latest: dict[str, RawSnapshot] = {}
        self._today = _Day(utc_day(clock()))
        #: Snapshots wanted but with no recent waveform yet: served by the next one of that asset.
        self._waiting: dict[str, tuple[Reason, EdgeDiagnosis | None]] = {}
        self._queue: list[tuple[RawSnapshot, Reason, bytes]] = []
        self.committed = 0
        #: Assets whose current alarm episode already asked the cloud for a second opinion.
        self._uncertain_episode: set[str] = set()

    def _day(self) -> _Day:
        d = utc_day(self.clock())
        if d != self._today.day:
            self._today = _Day(d)
        return self._today

    def offer(self, s: RawSnapshot) -> None:
        """A new waveform of ``s.asset`` (called by the connector's sink; must not block)."""
        if s.samples.dtype != np.float32:   # sensor samples are float32: exact, and half the memory held
            s = RawSnapshot(s.asset, s.ts_ns, s.fs_hz, s.samples.astype(np.float32))
        self.latest[s.asset] = s
        day = self._day()
        if (why := self._waiting.pop(s.asset, None)) is not None:
            self._want(s, *why)
        elif day.sampled.get(s.asset, 0) < self.settings.samples_per_channel_per_day:
            day.sampled[s.asset] = day.sampled.get(s.asset, 0) + 1
            self._want(s, "sample")

    def request(self, asset: str, reason: Reason = "request", diagnosis: EdgeDiagnosis | None = None) -> bool:
        """Queue ``asset``'s latest waveform (or the next one, if none is recent); False if refused."""
        s = self.latest.get(asset)
        if s is None or (self.clock() - s.ts_ns / 1e9) > self.settings.max_age_s:
            if reason == "uncertain" or self._waiting.get(asset, ("alarm", None))[0] != "uncertain":
                self._waiting[asset] = (reason, diagnosis)   # a waiting question to the cloud is not replaced
            return True
        return self._want(s, reason, diagnosis)

    def request_alarm(self, asset: str, fault: str | None = None, confidence: float | None = None,
                      *, diagnosed: bool = False) -> Reason:
        """An alarm was raised on ``asset``: its onset waveform is evidence. ``diagnosed``: ``fault`` and
        ``confidence`` are the alarm's diagnosis; an uncertain one (``is_uncertain``) queues the snapshot as
        ``uncertain`` with it, once per alarm episode. The reason queued (or waiting) is returned."""
        reason: Reason = "alarm"
        diag = None
        if diagnosed and asset not in self._uncertain_episode \
                and is_uncertain(fault, confidence, self.settings.uncertain_below):
            self._uncertain_episode.add(asset)
            reason = "uncertain"
            diag = EdgeDiagnosis(fault or "unknown", float(confidence or 0.0))
        self.request(asset, reason, diag)
        return reason

    def episode_over(self, asset: str) -> None:
        """No alarm of ``asset`` is open any more: its next uncertain alarm may ask the cloud again."""
        self._uncertain_episode.discard(asset)

    def _want(self, s: RawSnapshot, reason: Reason, diagnosis: EdgeDiagnosis | None = None) -> bool:
        if self.withhold:
            self.withheld += 1
            return False
        day = self._day()
        payload = encode_snapshot(s, reason, self.edge, diagnosis)
        if day.bytes + len(payload) > self.settings.daily_bytes:
            day.refused[reason] += 1
            if not day.refusal_logged:
                day.refusal_logged = True
                log.warning("evidence budget of %d bytes for %s spent: %s snapshot of %s refused "
                            "[counted in evidence.refused; logged once a day]", self.settings.daily_bytes,
                            day.day, reason, s.asset)
            return False
        day.bytes += len(payload)
        day.queued[reason] += 1
        self._queue.append((s, reason, payload))
        return True

    def take(self) -> list[tuple[RawSnapshot, Reason, bytes]]:
        out, self._queue = self._queue, []
        return out

    def restore(self, items: list[tuple[RawSnapshot, Reason, bytes]]) -> None:
        """Put back what a failed commit took (kept for the next flush)."""
        self._queue = items + self._queue

    def stats(self) -> dict[str, Any]:
        d = self._day()
        return {"day": d.day, "budget_bytes": self.settings.daily_bytes, "queued_bytes": d.bytes,
                "queued": dict(d.queued), "refused": sum(d.refused.values()), "refused_by_reason": dict(d.refused),
                "waiting": sorted(self._waiting), "committed": self.committed,
                "withheld_federated": self.withheld}


def commit_snapshots(db: sqlite3.Connection, items: list[tuple[RawSnapshot, Reason, bytes]]) -> list[int]:
    """Write queued snapshots to the buffer file in one fsync'd transaction (on the buffer's thread)."""
    if not items:
        return []
    now = time.time_ns()
    try:
        db.executescript(_SCHEMA)
        db.execute("BEGIN IMMEDIATE")
        ids = [int(db.execute("INSERT INTO evidence_snapshots (created_ns, asset, reason, ts_ns, nbytes, body) "
                              "VALUES (?,?,?,?,?,?)", (now, s.asset, r, s.ts_ns, len(p), p)).lastrowid or 0)
               for s, r, p in items]
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise StorageError(f"evidence snapshot commit failed: {exc}") from exc
    return ids


def pending_snapshots(db: sqlite3.Connection, limit: int = 10) -> list[tuple[int, str, str, bytes]]:
    """(id, asset, reason, payload) of queued snapshots not yet acknowledged, oldest first."""
    db.executescript(_SCHEMA)
    return [(int(i), str(a), str(r), bytes(b)) for i, a, r, b in db.execute(
        "SELECT id, asset, reason, body FROM evidence_snapshots ORDER BY id LIMIT ?", (limit,))]


def ack_snapshots(db: sqlite3.Connection, ids: list[int] | tuple[int, ...]) -> int:
    """Delete snapshots the cloud acknowledged (stored, duplicate or refused for good); how many were deleted."""
    if not ids:
        return 0
    db.executescript(_SCHEMA)
    try:
        db.execute("BEGIN IMMEDIATE")
        n = sum(db.execute("DELETE FROM evidence_snapshots WHERE id = ?", (int(i),)).rowcount for i in ids)
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise StorageError(f"evidence snapshot ack failed: {exc}") from exc
    return n
