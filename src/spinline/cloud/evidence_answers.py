"""The cloud model's answer to an uncertain snapshot: diagnosed, stored, noted on the work order, sent back.

An edge sends an ``uncertain`` snapshot (``edge.evidence``) when an alarm's diagnosis is too weak to act
on, with its own (fault, confidence) in the header. On storing one (``EvidenceStore.handle``) the cloud
runs ``health.raw_diagnosis.diagnose_raw`` on the raw waveform: the envelope band searched, with the
bearing geometry of the site's channel and the shaft speed the edge measured with it (else the channel's
nominal speed). The answer is a row of ``evidence_diagnoses`` (one per snapshot, written in the same
transaction as the snapshot, dropped with it by the per-channel retention):

* the latest-snapshot API shows it beside the edge's diagnosis (``view``);
* it is noted on the open work order of the asset (``note_pending``) as a system comment with a message
  key (``wo.comment.cloud_diagnosis``, in both console catalogues) and, when the cloud is confident
  (``confidence >= confident_at``, default 0.8) and says another fault, the order's fault is updated
  (``WorkOrder.update_fault``: a ``wo.comment.diagnosis`` step "edge's fault -> cloud's fault", so the
  edge's original stays in the history). The edge's alarm event and the snapshot may reach the cloud in
  either order: a diagnosis with no open order yet is noted by the next ``note_pending`` (every snapshot
  and every events message of the mill calls it) for ``note_within_s`` (default 1 h), then given up;
* it goes back to the edge that sent the snapshot (``take``, once each) as a ``wire.CloudAnswer`` in the
  signed downlink answers the snapshot requests travel in (MQTT ``TOPIC_REQUESTS``, HTTP answers). A
  snapshot sent again (its ack, and so perhaps its answer, was lost) has its answer handed over again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from spinline.cloud.maintenance.store import HealthStore
from spinline.core.errors import StorageError
from spinline.core.site import Machine
from spinline.core.texts import render
from spinline.core.wire import CloudAnswer
from spinline.health.alarms import Step
from spinline.health.raw_diagnosis import RawDiagnosis, diagnose_raw

log = logging.getLogger(__name__)
#: Who the cloud model's work-order steps are recorded as.
ACTOR = "cloud-model"


def table(metadata: sa.MetaData) -> sa.Table:
    """``evidence_diagnoses``: the cloud's answer per uncertain snapshot (on the evidence store's metadata)."""
    return sa.Table(
        "evidence_diagnoses", metadata,
        sa.Column("edge", sa.String(64), primary_key=True),
        sa.Column("snap_id", sa.BigInteger, primary_key=True),
        sa.Column("mill", sa.String(64), nullable=False),
        sa.Column("machine", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(128), nullable=False),
        sa.Column("ts_ns", sa.BigInteger, nullable=False),
        sa.Column("edge_fault", sa.String(40)),
        sa.Column("edge_confidence", sa.Float),
        sa.Column("fault", sa.String(40), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("band_lo_hz", sa.Float),
        sa.Column("band_hi_hz", sa.Float),
        sa.Column("explain", sa.Text, nullable=False),
        sa.Column("computed_ns", sa.BigInteger, nullable=False),
        #: The work order it was noted on ("" : none was open within ``note_within_s``); NULL: not yet.
        sa.Column("work_order", sa.String(128)),
        sa.Column("fault_updated", sa.Boolean, nullable=False, default=False),
        #: When it went back to its edge; NULL: still to send.
        sa.Column("delivered_ns", sa.BigInteger),
    )


class SecondOpinion:
    """Runs the cloud model on uncertain snapshots and keeps/delivers/notes its answers (module docstring)."""

    def __init__(self, t: sa.Table, machine_of: Callable[[str, str], Machine | None], *,
                 orders: HealthStore | None = None, confident_at: float = 0.8, note_within_s: float = 3600.0,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.t = t
        self.machine_of = machine_of
        self.orders = orders
        self.confident_at = confident_at
        self.note_within_s = note_within_s
        self.clock = clock
        self._note_failed = False

    # --- the model --------------------------------------------------------------------------------

    def diagnose(self, mill: str, machine: str, channel: str, header: dict[str, Any],
                 samples: np.ndarray) -> RawDiagnosis | None:
        """The cloud model's diagnosis of one waveform; None when the site has no such vibration channel."""
        m = self.machine_of(mill, machine)
        ch = next((c for c in m.vibration.channels if c.name == channel), None) if m and m.vibration else None
        if m is None or ch is None:
            return None
        bearing = next((b for b in m.bearings if b.name == ch.bearing), None)
        shaft = header.get("shaft_hz")
        shaft_hz = float(shaft) if isinstance(shaft, int | float) and shaft > 0 else ch.shaft_rpm / 60.0
        return diagnose_raw(samples, float(header["fs_hz"]), shaft_hz, bearing)

    def row(self, edge: str, snap_id: int, mill: str, machine: str, channel: str, header: dict[str, Any],
            d: RawDiagnosis) -> dict[str, Any]:
        """The ``evidence_diagnoses`` row of an answer (inserted with its snapshot)."""
        got = header.get("diagnosis")
        ed: dict[str, Any] = got if isinstance(got, dict) else {}
        return {"edge": edge, "snap_id": snap_id, "mill": mill, "machine": machine, "channel": channel,
                "ts_ns": int(header["ts_ns"]), "edge_fault": ed.get("fault"), "edge_confidence": ed.get("confidence"),
                "fault": d.diagnosis.fault, "confidence": float(d.diagnosis.confidence),
                "band_lo_hz": d.band[0], "band_hi_hz": d.band[1], "explain": d.diagnosis.explain(),
                "computed_ns": self.clock(), "work_order": None, "fault_updated": False, "delivered_ns": None}

    # --- back to the edge -------------------------------------------------------------------------

    def resend(self, con: sa.Connection, edge: str, snap_id: int) -> None:
        """The edge sent this snapshot again (it never saw the ack, so perhaps not the answer either): hand the
        answer over once more (the edge ignores one it already holds)."""
        con.execute(self.t.update().where(self.t.c.edge == edge, self.t.c.snap_id == snap_id)
                    .values(delivered_ns=None))

    def take(self, con: sa.Connection, edge: str) -> list[CloudAnswer]:
        """The answers not yet sent to ``edge`` (marked sent: each goes once, like a request)."""
        t = self.t
        rows = con.execute(sa.select(t.c.snap_id, t.c.mill, t.c.machine, t.c.channel, t.c.fault, t.c.confidence,
                                     t.c.ts_ns)
                           .where(t.c.edge == edge, t.c.delivered_ns.is_(None)).order_by(t.c.snap_id)).all()
        if rows:
            con.execute(t.update().where(t.c.edge == edge, t.c.snap_id.in_([r[0] for r in rows]))
                        .values(delivered_ns=self.clock()))
        return [CloudAnswer(f"{r[1]}/{r[2]}/{r[3]}", int(r[0]), str(r[4]), float(r[5]), int(r[6])) for r in rows]

    # --- the work order ---------------------------------------------------------------------------

    def note_pending(self, engine: sa.Engine, mill: str | None = None) -> int:
        """Note answers not yet on a work order on their asset's open order; answers noted. An answer with
        no open order after ``note_within_s`` is given up (``work_order`` ""). A failing order store is
        logged once and retried on the next call."""
        if self.orders is None:
            return 0
        t, now = self.t, self.clock()
        q = sa.select(t).where(t.c.work_order.is_(None))
        if mill is not None:
            q = q.where(t.c.mill == mill)
        try:
            with engine.connect() as con:
                pending = list(con.execute(q.order_by(t.c.computed_ns)).mappings())
            n = 0
            for r in pending:
                # too old: given up without looking, so it never lands on the order of a later episode
                stale = now - int(r["computed_ns"]) >= self.note_within_s * 1e9
                got = None if stale else self._note(dict(r))
                if got is None and not stale:
                    continue
                with engine.begin() as con:
                    con.execute(t.update().where(t.c.edge == r["edge"], t.c.snap_id == r["snap_id"])
                                .values(work_order=got[0] if got else "", fault_updated=bool(got and got[1])))
                n += got is not None
        except (StorageError, sa.exc.SQLAlchemyError) as exc:
            if not self._note_failed:
                log.warning("cannot note the cloud's diagnoses on work orders (%s): retried with the next "
                            "snapshot or events [logged once]", str(exc).splitlines()[0][:200])
            self._note_failed = True
            return 0
        self._note_failed = False
        return n

    def _note(self, r: dict[str, Any]) -> tuple[str, bool] | None:
        """Comment on the asset's open work order (and update its fault when confident and different):
        (order id, fault updated), or None when the asset has no open order."""
        assert self.orders is not None
        asset = f"{r['machine']}/{r['channel']}"
        open_orders = [w for w in self.orders.list_work_orders(r["mill"], asset=asset) if not w.is_done()]
        if not open_orders:
            return None
        w = open_orders[-1]
        at = datetime.fromtimestamp(self.clock() / 1e9, UTC).replace(tzinfo=None)
        conf = float(r["confidence"])
        ec = r["edge_confidence"]
        w.history.append(Step(w.state.value, at, ACTOR, render("wo.comment.cloud_diagnosis", {
            "snapshot": str(r["snap_id"]), "edge": str(r["edge"]), "fault": str(r["fault"]),
            "confidence": f"{conf:.2f}", "edge_fault": str(r["edge_fault"] or "unknown"),
            "edge_confidence": f"{float(ec):.2f}" if ec is not None else "0.00"})))
        updated = conf >= self.confident_at and r["fault"] != "unknown" and r["fault"] != w.fault
        if updated:
            w.update_fault(str(r["fault"]), by=ACTOR, at=at)
        self.orders.save_work_order(r["mill"], w)
        log.info("cloud diagnosis of %s/%s snapshot %s: %s (%.2f) noted on %s%s", r["mill"], asset, r["snap_id"],
                 r["fault"], conf, w.id, ", its fault updated" if updated else "")
        return w.id, updated


def view(row: Any) -> dict[str, Any] | None:
    """What the API shows of an answer (None: no answer)."""
    if row is None:
        return None
    return {"fault": row["fault"], "confidence": float(row["confidence"]),
            "band_hz": [row["band_lo_hz"], row["band_hi_hz"]] if row["band_lo_hz"] is not None else None,
            "explain": row["explain"], "work_order": row["work_order"] or None,
            "fault_updated": bool(row["fault_updated"]), "computed_ns": int(row["computed_ns"])}
