"""Raw evidence snapshots in the cloud: verified, stored (bounded per channel), served, and requested.

The receiving side of ``spinline.core.wire.snapshots``: an edge sends one signed raw waveform at a time
(alarm onset, a user's request, the daily sample). ``EvidenceStore.handle`` verifies the signature with
the edge's key, checks the edge belongs to the mill it claims and that the snapshot's asset is one of
that mill's (``{mill}/{machine}/{channel}``), and keeps the snapshot bytes as sent (zlib float32, the
edge's own encoding) in the metadata database, table ``evidence_snapshots``. Only the newest
``keep_per_channel`` of each channel are kept, so a flapping alarm cannot fill the database. Refusals
are recorded like every other ingest refusal (``TimeSeriesStore.record_rejection``; unverified ones
under ``UNVERIFIED_EDGE`` with nothing the sender chose echoed). ``(edge, id)`` makes a re-send a
duplicate that is acked again and not stored twice.

A user's request for a machine's snapshot (``request``) is a row of ``evidence_requests`` per active
edge of the mill; ``take_requests(edge)`` hands them to that edge once (in the HTTP answer to its next
snapshot or events post) and deletes them.

An ``uncertain`` snapshot (an alarm whose edge diagnosis is weak) also gets the cloud model's answer
(``cloud.evidence_answers``, when the store is given ``opinion``): stored with it, shown by ``latest``,
noted on the asset's open work order and handed back to the edge with ``take_answers``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from spinline.cloud import evidence_answers
from spinline.cloud.evidence_answers import SecondOpinion
from spinline.cloud.ingest.service import UNVERIFIED_EDGE, unverified_detail
from spinline.cloud.storage.base import Rejection, TimeSeriesStore
from spinline.core.errors import PayloadError, StorageError
from spinline.core.wire import (
    SNAPSHOT_REASONS,
    CloudAnswer,
    EventsAck,
    UnverifiedPayload,
    decode_snapshot_samples,
    decode_snapshot_upload,
)
from spinline.health.features import envelope_spectrum

log = logging.getLogger(__name__)
metadata = sa.MetaData()
snapshots_t = sa.Table(
    "evidence_snapshots", metadata,
    sa.Column("edge", sa.String(64), primary_key=True),
    sa.Column("snap_id", sa.BigInteger, primary_key=True),
    sa.Column("mill", sa.String(64), nullable=False),
    sa.Column("machine", sa.String(128), nullable=False),
    sa.Column("channel", sa.String(128), nullable=False),
    sa.Column("reason", sa.String(16), nullable=False),
    sa.Column("ts_ns", sa.BigInteger, nullable=False),
    sa.Column("fs_hz", sa.Float, nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("received_ns", sa.BigInteger, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Index("evidence_snapshots_channel", "mill", "machine", "channel", "ts_ns"),
)
requests_t = sa.Table(
    "evidence_requests", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mill", sa.String(64), nullable=False),
    sa.Column("edge", sa.String(64), nullable=False, index=True),
    sa.Column("asset", sa.String(300), nullable=False),
    sa.Column("requested_by", sa.String(128), nullable=False),
    sa.Column("requested_ns", sa.BigInteger, nullable=False),
)
diagnoses_t = evidence_answers.table(metadata)
#: Why an edge sent a snapshot (``wire.SNAPSHOT_REASONS``: alarm, request, sample, uncertain).
REASONS = SNAPSHOT_REASONS


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    mill: str
    machine: str
    channel: str
    edge: str
    reason: str
    ts_ns: int
    fs_hz: float
    samples: np.ndarray
    #: An uncertain snapshot's edge diagnosis ({fault, confidence}) and the cloud model's answer (``view``).
    edge_diagnosis: dict[str, Any] | None = None
    cloud_diagnosis: dict[str, Any] | None = None


class EvidenceStore:
    """Snapshots and snapshot requests (see the module docstring). Synchronous; routes run it in a thread."""

    def __init__(self, engine: sa.Engine, store: TimeSeriesStore, edge_keys: Callable[[str], bytes | None],
                 edge_mill: Callable[[str], str | None], *, keep_per_channel: int = 20,
                 clock: Callable[[], int] = time.time_ns, opinion: SecondOpinion | None = None) -> None:
        if keep_per_channel < 1:
            raise ValueError("keep_per_channel must be >= 1")
        self.engine = engine
        self.store = store
        self.edge_keys = edge_keys
        self.edge_mill = edge_mill
        self.keep_per_channel = keep_per_channel
        self.clock = clock
        #: The cloud model for uncertain snapshots (None: they are stored like any other).
        self.opinion = opinion

    def create_schema(self) -> None:
        try:
            metadata.create_all(self.engine, checkfirst=True)
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"cannot create the evidence tables: {exc}") from exc

    def _refuse(self, edge: str, reason: str, detail: str, now: int) -> PayloadError:
        self.store.record_rejection(Rejection(edge, reason, detail, now))
        return PayloadError(reason, detail)

    def handle(self, payload: bytes, *, topic: tuple[str, str] | None = None) -> tuple[str, EventsAck]:
        """Verify and keep one snapshot message: (its edge, the ack). ``PayloadError`` when refused whole
        (unverified: 401/400 and no ack); a verified snapshot the cloud cannot use is acked ``rejected``."""
        now = self.clock()
        try:
            up = decode_snapshot_upload(payload, key_lookup=self.edge_keys)
        except UnverifiedPayload as exc:
            raise self._refuse(UNVERIFIED_EDGE, exc.reason, unverified_detail("snapshot", exc.reason, len(payload)),
                               now) from None
        except PayloadError as exc:   # signed by its edge, but the samples are unusable: refused for good
            try:
                d = json.loads(payload.partition(b"\n")[0])
                edge, ident = str(d["edge"])[:64], int(d["id"])
            except (ValueError, KeyError, TypeError):
                raise self._refuse(UNVERIFIED_EDGE, exc.reason, f"snapshot: {exc.detail}", now) from None
            self.store.record_rejection(Rejection(edge, exc.reason, f"snapshot {ident}: {exc.detail}", now))
            return edge, EventsAck(rejected=((ident, exc.reason),))
        if topic is not None and topic != (up.mill, up.edge):
            raise self._refuse(UNVERIFIED_EDGE, "unauthorised",
                               unverified_detail("snapshot", "published on another edge's topic", len(payload)), now)
        if self.edge_mill(up.edge) != up.mill:
            raise self._refuse(up.edge, "unauthorised", f"snapshot: edge {up.edge!r} may not send for mill "
                                                        f"{up.mill[:64]!r}", now)
        asset = str(up.header["asset"])
        parts = asset.split("/")
        reason = str(up.header.get("reason"))
        if len(parts) != 3 or parts[0] != up.mill or not all(parts) or reason not in REASONS:
            detail = (f"snapshot {up.id}: asset {asset[:100]!r} is not {{mill}}/{{machine}}/{{channel}} of mill "
                      f"{up.mill!r}" if reason in REASONS else f"snapshot {up.id}: unknown reason {reason[:20]!r}")
            self.store.record_rejection(Rejection(up.edge, "invalid", detail, now))
            return up.edge, EventsAck(rejected=((up.id, "invalid"),))
        _, machine, channel = parts
        key = (snapshots_t.c.edge == up.edge) & (snapshots_t.c.snap_id == up.id)
        with self.engine.connect() as con:
            new = con.execute(sa.select(snapshots_t.c.snap_id).where(key)).first() is None
        answer = None
        if new and reason == "uncertain" and self.opinion is not None:   # computed outside the transaction
            _, samples = decode_snapshot_samples(up.snapshot)
            try:
                d = self.opinion.diagnose(up.mill, machine, channel, up.header, samples)
            except (ValueError, ArithmeticError) as exc:   # the model must not cost the evidence: stored without
                log.warning("cloud model failed on snapshot %d of %s (%r): stored without an answer",
                            up.id, asset, exc)
                d = None
            answer = self.opinion.row(up.edge, up.id, up.mill, machine, channel, up.header, d) if d else None
        with self.engine.begin() as con:
            if con.execute(sa.select(snapshots_t.c.snap_id).where(key)).first() is None:
                con.execute(snapshots_t.insert().values(
                    edge=up.edge, snap_id=up.id, mill=up.mill, machine=machine, channel=channel, reason=reason,
                    ts_ns=int(up.header["ts_ns"]), fs_hz=float(up.header["fs_hz"]), n=int(up.header["n"]),
                    received_ns=now, body=up.snapshot))
                if answer is not None:
                    con.execute(diagnoses_t.insert().values(**answer))
                self._trim(con, up.mill, machine, channel)
            elif reason == "uncertain" and self.opinion is not None:
                self.opinion.resend(con, up.edge, up.id)
        if answer is not None:
            self.note_pending(up.mill)
        return up.edge, EventsAck(acked=(up.id,))

    def note_pending(self, mill: str | None = None) -> int:
        """Note the cloud's answers still waiting for their asset's work order (``SecondOpinion.note_pending``)."""
        return self.opinion.note_pending(self.engine, mill) if self.opinion is not None else 0

    def take_answers(self, edge: str) -> list[CloudAnswer]:
        """The cloud model's answers not yet sent to ``edge`` (each handed over once)."""
        if self.opinion is None:
            return []
        with self.engine.begin() as con:
            return self.opinion.take(con, edge)

    def _trim(self, con: sa.Connection, mill: str, machine: str, channel: str) -> None:
        """Keep the newest ``keep_per_channel`` snapshots of one channel."""
        where = (snapshots_t.c.mill == mill) & (snapshots_t.c.machine == machine) & (snapshots_t.c.channel == channel)
        old = con.execute(sa.select(snapshots_t.c.edge, snapshots_t.c.snap_id).where(where)
                          .order_by(snapshots_t.c.ts_ns.desc(), snapshots_t.c.snap_id.desc())
                          .offset(self.keep_per_channel)).all()
        for edge, ident in old:
            con.execute(snapshots_t.delete().where((snapshots_t.c.edge == edge) & (snapshots_t.c.snap_id == ident)))
            con.execute(diagnoses_t.delete().where((diagnoses_t.c.edge == edge) & (diagnoses_t.c.snap_id == ident)))

    def count(self, mill: str, machine: str, channel: str) -> int:
        where = (snapshots_t.c.mill == mill) & (snapshots_t.c.machine == machine) & (snapshots_t.c.channel == channel)
        with self.engine.connect() as con:
            return int(con.execute(sa.select(sa.func.count()).select_from(snapshots_t).where(where)).scalar_one())

    def latest(self, mill: str, machine: str) -> list[StoredSnapshot]:
        """The newest snapshot of each channel of ``mill``/``machine``, by channel."""
        out: list[StoredSnapshot] = []
        with self.engine.connect() as con:
            channels = con.execute(sa.select(snapshots_t.c.channel).distinct().where(
                snapshots_t.c.mill == mill, snapshots_t.c.machine == machine).order_by(snapshots_t.c.channel)).scalars()
            for ch in list(channels):
                r = con.execute(sa.select(snapshots_t).where(
                    snapshots_t.c.mill == mill, snapshots_t.c.machine == machine, snapshots_t.c.channel == ch)
                    .order_by(snapshots_t.c.ts_ns.desc(), snapshots_t.c.snap_id.desc()).limit(1)).mappings().one()
                head, samples = decode_snapshot_samples(bytes(r["body"]))
                answer = con.execute(sa.select(diagnoses_t).where(
                    diagnoses_t.c.edge == r["edge"], diagnoses_t.c.snap_id == r["snap_id"])).mappings().first()
                dg = head.get("diagnosis")
                out.append(StoredSnapshot(mill, machine, ch, r["edge"], r["reason"], int(r["ts_ns"]),
                                          float(r["fs_hz"]), samples, dg if isinstance(dg, dict) else None,
                                          evidence_answers.view(answer)))
        return out

    # --- requests ---------------------------------------------------------------------------------

    def request(self, mill: str, asset: str, edges: list[str], by: str) -> int:
        """Ask every edge in ``edges`` (the mill's active ones) for ``asset``'s latest waveform; rows added
        (a request already waiting for an edge is not added again: repeated clicks queue one snapshot)."""
        now = self.clock()
        added = 0
        with self.engine.begin() as con:
            for e in edges:
                if con.execute(sa.select(requests_t.c.id).where(requests_t.c.edge == e,
                                                                requests_t.c.asset == asset)).first() is None:
                    con.execute(requests_t.insert().values(mill=mill, edge=e, asset=asset, requested_by=by[:128],
                                                           requested_ns=now))
                    added += 1
        return added

    def take_requests(self, edge: str) -> list[str]:
        """The assets asked of ``edge`` since the last call (deleted: each is delivered once)."""
        with self.engine.begin() as con:
            rows = con.execute(sa.select(requests_t.c.id, requests_t.c.asset).where(requests_t.c.edge == edge)
                               .order_by(requests_t.c.id)).all()
            if rows:
                con.execute(requests_t.delete().where(requests_t.c.id.in_([r[0] for r in rows])))
        return list(dict.fromkeys(str(r[1]) for r in rows))


def waveform_view(s: StoredSnapshot, max_points: int, spectrum_max_hz: float | None = None) -> dict[str, Any]:
    """What the API shows of a snapshot: the waveform (every k-th sample when longer than ``max_points``),
    its amplitude spectrum and its envelope spectrum (``health.features.envelope_spectrum``, the bearing
    analyst's view), each pooled to at most ``max_points`` bins by their maximum so no peak is lost.

    ``spectrum_max_hz`` ends the amplitude spectrum there, so its bins are pooled over that span only:
    over the whole 12.8 kHz of a 25.6 kHz snapshot, 1,024 bins are 12.5 Hz wide and a 980 rpm fan's
    1x (16 Hz) and 2x (33 Hz) — imbalance, misalignment, looseness — merge with 0 Hz; below 1 kHz they
    are 1 Hz apart. Pure."""
    x = np.asarray(s.samples, dtype=np.float64)
    step = max(1, -(-len(x) // max_points))
    amp = np.abs(np.fft.rfft(x - x.mean())) * 2.0 / max(len(x), 1)
    freqs = np.fft.rfftfreq(len(x), 1.0 / s.fs_hz)
    if spectrum_max_hz is not None:
        keep = freqs <= spectrum_max_hz
        amp, freqs = amp[keep], freqs[keep]
    ef, ea = envelope_spectrum(x, s.fs_hz)
    return {"channel": s.channel, "edge": s.edge, "reason": s.reason, "ts_ns": s.ts_ns, "fs_hz": s.fs_hz,
            "edge_diagnosis": s.edge_diagnosis, "cloud_diagnosis": s.cloud_diagnosis,
            "n": len(x), "step": step, "samples": x[::step].round(6).tolist(),
            "spectrum": _pooled(freqs, amp, max_points),
            "envelope_spectrum": _pooled(np.asarray(ef).ravel(), np.asarray(ea).ravel(), max_points)}


def _pooled(freqs: np.ndarray, amp: np.ndarray, max_points: int) -> dict[str, list[float]]:
    k = max(1, -(-len(amp) // max_points))
    m = len(amp) // k * k
    if k == 1 or m == 0:
        return {"freq_hz": freqs.round(3).tolist(), "amplitude": amp.round(9).tolist()}
    a = amp[:m].reshape(-1, k)
    idx = a.argmax(axis=1) + np.arange(a.shape[0]) * k
    return {"freq_hz": freqs[idx].round(3).tolist(), "amplitude": amp[idx].round(9).tolist()}
