"""Canary and automatic rollback on measured evidence: a deliberately bad model goes to one mill's ring
frames as a canary, the edges' real scorers run it on healthy snapshots and report what it did, and the
registry's judge rolls it back with no human step, recording why; the edge steps back to the model it
kept. A good canary is promoted the same way."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from spinline.core.site import iter_machines, load_site
from spinline.edge.models import ScoringConfig
from spinline.edge.scoring import EdgeScoring
from spinline.edge.updates import ApprovedModels, ModelUpdater, ObservedScorer
from spinline.health.anomaly import VIB_MODEL_KEYS

from .conftest import EDGES, Zone, fitted_params

RF = "ring_frame.mahalanobis"
KIND = "asset_monitor/mahalanobis"


class Edge:
    """One edge's real scorer (ring frames of its mill) and update client over the same slots."""

    def __init__(self, z: Zone, edge: str, zone_yaml: Path) -> None:
        mill = EDGES[edge]
        cfg = next(m for m in load_site(zone_yaml).mills if m.id == mill)
        machines = [m for _w, _l, m in iter_machines(cfg) if m.id.startswith("rf")]
        self.approvals = ApprovedModels()
        self.scoring = EdgeScoring(mill, machines, {}, z.tmp / edge, ScoringConfig(commissioning_n=8),
                                   self.approvals)
        self.scoring.load()
        slots = {a.asset: a.slot for a in self.scoring.assets.values()}
        self.updater = ModelUpdater(base_url=z.url, edge=edge, mill=mill, secret=z.secrets[edge].encode(),
                                    data_dir=z.tmp / edge, slots=slots, approvals=self.approvals,
                                    trusted_root=z.repo.root(1), report_every_s=0)
        self.scorer = ObservedScorer(self.scoring, self.updater, self._version_of, lambda: self.scoring.errors)
        self.rng = np.random.default_rng(sum(map(ord, edge)))
        self.ts = time.time_ns()

    def _version_of(self, machine: str, channel: str) -> tuple[str, str] | None:
        a = self.scoring.assets.get((machine, channel))
        return None if a is None else (a.asset, a.version)

    def run(self, n: int) -> None:
        """``n`` healthy snapshots per asset through the real scorer (wrapped: each one is evidence)."""
        for _ in range(n):
            self.ts += 60 * 10**9
            for machine, channel in self.scoring.assets:
                feats = {k: float(abs(self.rng.normal(1.0, 0.05))) for k in VIB_MODEL_KEYS}
                self.scorer.score(machine, channel, self.ts, 24.7, feats)


def test_a_bad_canary_is_rolled_back_automatically_and_a_good_one_promoted(zone: Zone, zone_yaml: Path) -> None:
    reg = zone.registry
    good = reg.register(name=RF, scope_kind="machine_type", scope="ring_frame", kind=KIND, params=fitted_params(0),
                        actor="trainer").version
    reg.promote(RF, good, mills=["mill-a", "mill-b"], actor="zone", reason="first fleet model")
    a, b = Edge(zone, "edge-a", zone_yaml), Edge(zone, "edge-b", zone_yaml)
    for e in (a, b):
        assert e.updater.check_once().state == "ok"
    # a deliberately bad model: its baseline is at half the real amplitude, so healthy machines look faulty
    bad = reg.register(name=RF, scope_kind="machine_type", scope="ring_frame", kind=KIND,
                       params=fitted_params(1, scale=0.5), actor="trainer", parent=good).version
    reg.canary(RF, bad, mills=["mill-a"], actor="zone", reason="try the new one", share=1.0)
    assert a.updater.check_once().installed and {s.version for s in a.updater.slots.values()} == {bad}
    assert b.updater.check_once().installed == []          # mill-b is not in the canary
    a.run(20)
    b.run(20)
    t_evidence = time.monotonic()
    for e in (a, b):
        e.updater.check_once()                               # reports the evidence
    verdicts = reg.evaluate_canaries()
    rollback_s = time.monotonic() - t_evidence
    assert [(m.version, v.decision) for m, v in verdicts] == [(bad, "rollback")]
    m_bad = reg.get(RF, bad)
    assert m_bad.status == "retired"
    last = m_bad.transitions[-1]
    assert last.actor == "canary-judge" and last.reason.startswith("rollback: alarm rate")
    assert reg.get(RF).version == good
    # the edge steps back to the model it kept (a rollback it was asked for), scoring never stopped
    assert a.updater.check_once().state == "ok"
    assert {s.version for s in a.updater.slots.values()} == {good}
    a.run(2)
    assert a.scoring.errors == 0 and rollback_s < 5.0
    # a good canary (same quality as the active model) is promoted on its evidence
    fine = reg.register(name=RF, scope_kind="machine_type", scope="ring_frame", kind=KIND,
                        params=fitted_params(2), actor="trainer", parent=good).version
    reg.policy = type(reg.policy)(promote_after=30)
    reg.canary(RF, fine, mills=["mill-a"], actor="zone", reason="retrained", share=1.0)
    a.updater.check_once()
    a.run(20)
    b.run(20)
    for e in (a, b):
        e.updater.check_once()
    assert [(m.version, v.decision) for m, v in reg.evaluate_canaries()] == [(fine, "promote")]
    assert reg.get(RF).version == fine and reg.get(RF, good).status == "retired"
    for e in (a, b):
        e.updater.check_once()
    assert {s.version for e in (a, b) for s in e.updater.slots.values()} == {fine}
    fleet = reg.fleet("mill-b", ["edge-b"])["edge-b"]
    assert all(x["converged"] and x["running"] == fine for x in fleet["assets"].values())


def test_a_canary_whose_alarms_are_closed_as_no_fault_found_is_rolled_back(zone: Zone, zone_yaml: Path) -> None:
    """The technicians' verdict is evidence: alarms the canary raised, closed as no fault found through the
    work-order API, roll it back (its alarm rate alone would not), with the reason and no human step."""
    from datetime import UTC, datetime

    import httpx

    from spinline.cloud.maintenance.service import Maintenance
    from spinline.cloud.maintenance.store import HealthStore
    from spinline.health.alarms import Severity

    from .conftest import PASSWORD

    reg = zone.registry
    good = reg.register(name=RF, scope_kind="machine_type", scope="ring_frame", kind=KIND, params=fitted_params(0),
                        actor="trainer").version
    reg.promote(RF, good, mills=["mill-a"], actor="zone", reason="first fleet model")
    cand = reg.register(name=RF, scope_kind="machine_type", scope="ring_frame", kind=KIND, params=fitted_params(2),
                        actor="trainer", parent=good).version
    reg.canary(RF, cand, mills=["mill-a"], actor="zone", reason="retrained", share=1.0)
    a = Edge(zone, "edge-a", zone_yaml)
    a.updater.check_once()
    a.run(10)
    a.updater.check_once()
    assert [v.decision for _m, v in reg.evaluate_canaries()] == ["wait"]    # its alarm rate is fine
    # two alarms the canary raised at mill-a (as the edge's events record them), each opened as a work order
    hs = HealthStore(reg.engine)
    now = datetime.now(UTC).replace(tzinfo=None)
    alarms = [Maintenance(hs).record_alarm("mill-a", asset=f"rf0{i}/main_motor", rule="anomaly",
                                           severity=Severity.WARNING, message="anomaly", raised_at=now, value=1.4,
                                           evidence={"source": "edge", "model_version": cand})
              for i in (1, 2)]
    tok = httpx.post(f"{zone.url}/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}).json()
    h = {"Authorization": f"Bearer {tok['access_token']}"}
    base = f"{zone.url}/api/v1/mills/mill-a/maintenance/work-orders"
    for n, al in enumerate(alarms):
        wo = httpx.post(base, headers=h, json={"alarm_id": al.id}).json()
        for step, body in (("assign", {"assignee": "tech"}), ("start", {}),
                           ("resolve", {"comment": "bearing fine, no play", "resolution": "no_fault_found"})):
            r = httpx.post(f"{base}/{wo['id']}/{step}", headers=h, json=body)
            assert r.status_code == 200, r.text
        got = r.json()
        assert got["resolution"] == "no_fault_found" and got["history"][-1]["comment"] == \
            "resolution: no_fault_found"
        assert reg.counts(cand, ["mill-a"]).nff == n + 1
        if n == 0:
            assert [v.decision for _m, v in reg.evaluate_canaries()] == ["wait"]   # one is not yet a pattern
    # a resolution goes with resolve/verify/close only
    r = httpx.post(f"{base}/{wo['id']}/reopen", headers=h, json={"resolution": "repaired"})
    assert r.status_code == 422, r.text
    assert reg.counts(good, ["mill-a"]).nff == 0                 # counted against the version that raised them
    verdicts = reg.evaluate_canaries()
    assert [(m.version, v.decision) for m, v in verdicts] == [(cand, "rollback")]
    last = reg.get(RF, cand).transitions[-1]
    assert last.actor == "canary-judge" and last.reason == \
        "rollback: no fault found: 2 of its alarms were closed as no fault found"
    assert reg.get(RF).version == good
