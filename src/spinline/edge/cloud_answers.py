"""The cloud model's answers to this edge's uncertain snapshots: verified, recorded, shown, used.

An ``uncertain`` snapshot (``edge.evidence``) asks the cloud for a second opinion; the cloud's model answers
with ``wire.CloudAnswer`` items (asset, snapshot id, fault, confidence) in a downlink message signed like an
ack (``wire.sign_ack`` with this edge's secret): on MQTT ``TOPIC_REQUESTS``, over HTTP in the answer to
the edge's next snapshot, events or status post. The uplinks hand every answer that carries
``"diagnoses"`` to ``CloudAnswers.offer`` *before* their own ack trust decides anything else, because an
answer changes what the edge says about a machine and so is held to a stricter rule than an ack:

* it must be signed, and the signature must verify (``AckTrust`` may still accept unsigned acks from an
  old cloud; a diagnosis never is): ``unsigned`` / ``bad_signature`` otherwise;
* it must name this edge (``other_edge``), be well formed (``malformed``), and each diagnosis must be of
  one of this edge's vibration channels (``unknown_asset``) and not older than the one already recorded
  for that asset (``stale``: a replayed old answer changes nothing).

Refusals are counted per reason and logged once per reason. An accepted diagnosis is kept per asset
(``stats()``, in the status as ``evidence.cloud_diagnoses``: ``spinline edge status`` prints it) and handed
to ``record`` (the scorer: while the asset's alarm episode is open, its later alarm events carry the
cloud's fault and confidence). Kept in memory: after a restart the status shows none until the next answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from spinline.core.errors import PayloadError
from spinline.core.wire import CloudAnswer, decode_answers, verify_ack

log = logging.getLogger(__name__)
#: Why an answer (or one diagnosis of it) was refused.
REFUSALS = ("unsigned", "bad_signature", "other_edge", "malformed", "unknown_asset", "stale")


class CloudAnswers:
    """Verifies and records the cloud's diagnoses (see the module docstring). Pure but for logging."""

    def __init__(self, secret: bytes | None, edge: str, assets: Collection[str],
                 record: Callable[[CloudAnswer], bool] | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.secret = secret or b""
        self.edge = edge
        self.assets = frozenset(assets)
        #: Hands an accepted diagnosis on (True: an open alarm of the asset takes it).
        self.record = record
        self.clock = clock
        self.latest: dict[str, dict[str, Any]] = {}
        self.accepted = 0
        self.refused = dict.fromkeys(REFUSALS, 0)
        self._logged: set[str] = set()

    def offer(self, answer: Mapping[str, Any]) -> int:
        """Check one downlink answer carrying ``"diagnoses"``; the diagnoses accepted."""
        ok = verify_ack(self.secret, answer)
        if ok is None:
            return self._refuse("unsigned", "an unsigned cloud diagnosis")
        if not ok:
            return self._refuse("bad_signature", "a cloud diagnosis with a bad signature (forged, or signed with "
                                                 "another secret)")
        if answer.get("edge") != self.edge:
            return self._refuse("other_edge", f"a cloud diagnosis for edge {str(answer.get('edge'))[:60]!r}")
        try:
            items = decode_answers(answer.get("diagnoses"))
        except PayloadError as exc:
            return self._refuse("malformed", f"a malformed cloud diagnosis ({exc.detail})")
        n = 0
        for a in items:
            if a.asset not in self.assets:
                self._refuse("unknown_asset", f"a cloud diagnosis of {a.asset[:80]!r}, not a channel of this edge")
                continue
            prev = self.latest.get(a.asset)
            if prev is not None and a.snapshot <= prev["snapshot"]:
                if a.snapshot < prev["snapshot"]:
                    self._refuse("stale", f"a cloud diagnosis of {a.asset} for snapshot {a.snapshot}, older than "
                                          f"the one recorded ({prev['snapshot']})")
                continue
            in_alarm = self.record(a) if self.record is not None else False
            self.latest[a.asset] = {**a.to_json(), "received_ns": self.clock(), "alarm_open": in_alarm}
            self.accepted += 1
            n += 1
            log.info("cloud diagnosis of %s (snapshot %d): %s, confidence %.2f%s", a.asset, a.snapshot, a.fault,
                     a.confidence, " (its open alarm carries it)" if in_alarm else "")
        return n

    def _refuse(self, reason: str, what: str) -> int:
        self.refused[reason] += 1
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("%s refused [counted in evidence.cloud_diagnoses.refused; logged once]", what)
        return 0

    def stats(self) -> dict[str, Any]:
        return {"by_asset": {k: dict(v) for k, v in sorted(self.latest.items())}, "accepted": self.accepted,
                "refused": sum(self.refused.values()), "refused_by_reason": dict(self.refused)}
