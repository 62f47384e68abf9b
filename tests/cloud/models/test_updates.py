"""A model travels from the registry to the edges over the real API, verified with TUF; every attack of
the threat model (tampered file, replayed old metadata, frozen metadata, revoked key, a rollback not
asked for) is refused at the edge, counted and visible in the fleet view."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata

from spinline.cloud.models import tables as t
from spinline.cloud.models.tuf_repo import TufRepository, load_root_key
from spinline.edge.updates import ModelUpdater

from .conftest import RF_ASSETS, Zone, fitted_params

RF = "ring_frame.mahalanobis"
KIND = "asset_monitor/mahalanobis"


def _register(z: Zone, seed: int = 0, scale: float = 1.0, parent: str | None = None) -> str:
    m = z.registry.register(name=RF, scope_kind="machine_type", scope="ring_frame", kind=KIND,
                            params=fitted_params(seed, scale), actor="test", train_mills=["mill-a", "mill-b"],
                            metrics={"auc": 0.9}, parent=parent)
    return m.version


def _promote(z: Zone, version: str, mills: list[str] | None = None) -> None:
    z.registry.promote(RF, version, mills=mills or ["mill-a"], actor="zone", reason="test")


def _slot_versions(edge: ModelUpdater) -> set[str | None]:
    return {s.version for s in edge.slots.values()}


def test_a_promoted_model_reaches_the_edge_and_the_fleet_view_shows_it(zone: Zone) -> None:
    v1 = _register(zone)
    _promote(zone, v1)
    edge = zone.edge("edge-a")
    res = edge.check_once()
    assert res.state == "ok" and sorted(res.installed) == sorted(f"{a}={v1}" for a in RF_ASSETS["mill-a"])
    assert _slot_versions(edge) == {v1}
    assert all(s.record is not None and s.record.source == "registry" for s in edge.slots.values())
    # a second check is a no-op (converged), a new version replaces it and keeps the old one for rollback
    assert edge.check_once().installed == []
    v2 = _register(zone, seed=1, parent=v1)
    _promote(zone, v2)
    assert len(edge.check_once().installed) == 2
    assert _slot_versions(edge) == {v2}
    assert {p["version"] for p in edge.previous.values()} == {v1}
    fleet = zone.registry.fleet("mill-a", ["edge-a"])["edge-a"]
    assert {a: (x["desired"], x["running"], x["converged"]) for a, x in fleet["assets"].items()} == {
        a: (v2, v2, True) for a in RF_ASSETS["mill-a"]}
    # the history of v1: candidate -> active -> retired, each with who and why
    hist = [(x.from_status, x.to_status, x.actor) for x in zone.registry.get(RF, v1).transitions]
    assert hist == [(None, "candidate", "test"), ("candidate", "active", "zone"), ("active", "retired", "zone")]
    # mill-b was not targeted: its edge gets no desired model
    b = zone.edge("edge-b")
    assert b.check_once().installed == [] and _slot_versions(b) == {None}
    # the fleet API: versions filled per asset, desired beside running; alice (mill-a) sees only her edge
    import httpx

    from .conftest import PASSWORD

    for who, want in (("zone", {"edge-a", "edge-b", "edge-c"}), ("alice", {"edge-a"})):
        tok = httpx.post(f"{zone.url}/api/v1/auth/login", json={"username": who, "password": PASSWORD}).json()
        edges = httpx.get(f"{zone.url}/api/v1/edges", headers={"Authorization": f"Bearer {tok['access_token']}"}
                          ).json()
        assert {e["id"] for e in edges} == want
        ea = next(e for e in edges if e["id"] == "edge-a")
        assert {k: v for k, v in ea["versions"].items() if k in RF_ASSETS["mill-a"]} == dict.fromkeys(
            RF_ASSETS["mill-a"], v2)
        assert all(x["converged"] for x in ea["models"]["assets"].values())
        models = httpx.get(f"{zone.url}/api/v1/models/fleet", headers={
            "Authorization": f"Bearer {tok['access_token']}"}).json()
        assert set(models) == ({"mill-a", "mill-b", "mill-c"} if who == "zone" else {"mill-a"})


def test_a_tampered_model_is_refused_and_counted(zone: Zone) -> None:
    v1 = _register(zone)
    _promote(zone, v1)
    path = zone.registry.get(RF, v1).target
    data = json.loads(zone.repo.target("mill-a", path) or b"")
    data["params"]["detector"]["far"] = 0.5     # someone edits the file on its way
    with zone.repo.engine.begin() as con:
        con.execute(t.tuf_targets.update().where(t.tuf_targets.c.mill == "mill-a", t.tuf_targets.c.path == path)
                    .values(data=json.dumps(data).encode()))
    edge = zone.edge("edge-a")
    res = edge.check_once()
    assert res.state == "refused" and {r for r, _ in res.refused} == {"tampered"}
    assert _slot_versions(edge) == {None}
    assert edge.status()["refusals"]["tampered"] >= 1
    fleet = zone.registry.fleet("mill-a", ["edge-a"])["edge-a"]
    assert fleet["refusals"]["tampered"] >= 1 and fleet["last_refusal"]["reason"] == "tampered"
    assert not any(x["converged"] for x in fleet["assets"].values())


def test_replayed_old_metadata_is_refused_as_a_rollback(zone: Zone) -> None:
    v1 = _register(zone)
    _promote(zone, v1)
    edge = zone.edge("edge-a")
    assert edge.check_once().state == "ok"
    v2 = _register(zone, seed=1)
    _promote(zone, v2)
    assert edge.check_once().state == "ok"
    # an attacker replays the older, validly signed timestamp/snapshot/targets
    with zone.repo.engine.begin() as con:
        for role in ("timestamp", "snapshot", "targets"):
            top = con.execute(sa.select(sa.func.max(t.tuf_metadata.c.version)).where(
                t.tuf_metadata.c.scope == "mill-a", t.tuf_metadata.c.role == role)).scalar_one()
            con.execute(t.tuf_metadata.delete().where(t.tuf_metadata.c.scope == "mill-a",
                                                      t.tuf_metadata.c.role == role,
                                                      t.tuf_metadata.c.version == top))
    res = edge.check_once()
    assert {r for r, _ in res.refused} == {"rollback"}
    assert _slot_versions(edge) == {v2}


def test_frozen_metadata_is_refused_as_expired(zone: Zone) -> None:
    v1 = _register(zone)
    # the repository's clock says two days ago: its 1-day timestamp has expired by now (a freeze attack,
    # or a cloud that stopped re-signing)
    frozen = TufRepository(zone.repo.engine, zone.repo.sealer, clock=lambda: zone.registry.clock() - 2 * 86400 * 10**9)
    zone.registry.repo = frozen
    _promote(zone, v1)
    edge = zone.edge("edge-a")
    res = edge.check_once()
    assert {r for r, _ in res.refused} == {"expired"}
    assert _slot_versions(edge) == {None} and edge.refusals["expired"] == 1
    # the live cloud re-signs what is past half its life; the edge then converges
    live = TufRepository(frozen.engine, frozen.sealer)
    zone.registry.repo = live
    assert live.refresh_expiring() >= 1
    assert edge.check_once().state == "ok" and _slot_versions(edge) == {v1}


def test_key_rotation_is_followed_and_the_revoked_key_no_longer_counts(zone: Zone) -> None:
    v1 = _register(zone)
    _promote(zone, v1)
    edge = zone.edge("edge-a")
    assert edge.check_once().state == "ok"
    old = zone.repo._online("targets")   # noqa: SLF001 - the attacker's copy of the key about to be revoked
    root_key = load_root_key(zone.root_key)
    new_id = zone.repo.rotate("targets", root_key, reason="test rotation")
    assert zone.repo.root_keyids()["targets"] == [new_id] and old.public_key.keyid != new_id
    # the edge walks to root v2 and keeps working with the new key
    v2 = _register(zone, seed=1)
    _promote(zone, v2)
    assert edge.check_once().state == "ok" and _slot_versions(edge) == {v2}
    # a new version is published; on its way, the holder of the revoked key re-signs the new targets
    _promote(zone, _register(zone, seed=2))
    _forge_targets(zone, old, "mill-a")
    res = edge.check_once()
    assert {r for r, _ in res.refused} == {"bad_signature"}
    assert _slot_versions(edge) == {v2}
    # a wrong root key cannot rotate anything
    try:
        zone.repo.rotate("snapshot", CryptoSigner.generate_ed25519())
        raise AssertionError("rotated with a stranger's root key")
    except Exception as exc:  # noqa: BLE001
        assert "root key" in str(exc)


def _forge_targets(z: Zone, signer: CryptoSigner, mill: str) -> None:
    with z.repo.engine.begin() as con:
        row = con.execute(sa.select(t.tuf_metadata).where(t.tuf_metadata.c.scope == mill,
                                                          t.tuf_metadata.c.role == "targets")
                          .order_by(t.tuf_metadata.c.version.desc()).limit(1)).one()
        md = Metadata.from_bytes(bytes(row.data))
        md.signed.version += 0   # the same version the snapshot names: only the signature is wrong
        md.sign(signer)
        con.execute(t.tuf_metadata.update().where(t.tuf_metadata.c.scope == mill, t.tuf_metadata.c.role == "targets",
                                                  t.tuf_metadata.c.version == row.version)
                    .values(data=md.to_bytes()))


def test_an_older_model_not_asked_for_is_refused_and_a_recorded_rollback_is_taken(zone: Zone) -> None:
    v1 = _register(zone)
    _promote(zone, v1)
    edge = zone.edge("edge-a")
    edge.check_once()
    v2 = _register(zone, seed=1)
    _promote(zone, v2)
    edge.check_once()
    assert _slot_versions(edge) == {v2}
    # someone pins v1 again through the desired state without a rollback: the edge refuses the step back
    m1 = zone.registry.get(RF, v1)
    with zone.registry.engine.begin() as con:
        con.execute(t.versions.update().where(t.versions.c.id == m1.id).values(status="active"))
    zone.registry.desire("mill-a", "machine_type", "ring_frame", zone.registry.get(RF, v1), actor="mallory")
    res = edge.check_once()
    assert {r for r, _ in res.refused} == {"rollback"} and _slot_versions(edge) == {v2}
    with zone.registry.engine.begin() as con:
        con.execute(t.versions.update().where(t.versions.c.id == m1.id).values(status="retired"))
    zone.registry.desire("mill-a", "machine_type", "ring_frame", zone.registry.get(RF, v2), actor="zone")
    # the zone operator rolls v2 back: recorded, and the edges may step back (from their kept copy)
    restored = zone.registry.rollback(RF, actor="zone", reason="too many alarms on rf02")
    assert restored.version == v1 and restored.status == "active"
    bytes_before = edge.bytes_in
    res = edge.check_once()
    assert res.state == "ok" and _slot_versions(edge) == {v1}
    assert edge.bytes_in - bytes_before < 20_000   # metadata only: the model came from the kept copy
    bad = zone.registry.get(RF, v2)
    assert bad.status == "retired" and bad.transitions[-1].reason == "rollback: too many alarms on rf02"


def test_an_edge_offline_for_a_week_converges(zone: Zone, tmp_path: Path) -> None:
    v1 = _register(zone)
    _promote(zone, v1)
    edge = zone.edge("edge-a")
    assert edge.check_once().state == "ok"
    # a week passes: three more versions, a key rotation, and every timestamp the edge saw has expired
    week = TufRepository(zone.repo.engine, zone.repo.sealer, clock=lambda: zone.registry.clock() + 7 * 86400 * 10**9)
    zone.registry.repo = week
    for seed in (1, 2, 3):
        _promote(zone, _register(zone, seed=seed))
    week.rotate("timestamp", load_root_key(zone.root_key))
    latest = zone.registry.get(RF).version
    # (the edge's clock is the real one: it sees the week-old future metadata as fresh, which is the point)
    edge2 = zone.edge("edge-a")        # the same data dir: what it trusted a week ago
    res = edge2.check_once()
    assert res.state == "ok" and _slot_versions(edge2) == {latest}
    assert json.loads(zone.repo.root() or b"")["signed"]["version"] == 2


def test_unsigned_or_foreign_requests_get_nothing(zone: Zone) -> None:
    import httpx

    _promote(zone, _register(zone))
    assert httpx.get(f"{zone.url}/api/v1/tuf/timestamp.json").status_code == 401
    assert httpx.get(f"{zone.url}/api/v1/tuf/targets/desired/edge-a.json").status_code == 401
    # edge-b is served its own mill's repository: edge-a's desired state does not exist for it
    b = zone.edge("edge-b")
    b.check_once()
    from spinline.core.request_auth import sign_request

    path = "/api/v1/tuf/targets/desired/edge-a.json"
    h = sign_request(zone.secrets["edge-b"].encode(), "edge-b", "GET", path, zone.registry.clock())
    assert httpx.get(zone.url + path, headers=h).status_code == 404
    h = sign_request(zone.secrets["edge-a"].encode(), "edge-a", "GET", path, zone.registry.clock())
    assert httpx.get(zone.url + path, headers=h).status_code == 200
    # a captured request replayed later is refused
    old = sign_request(zone.secrets["edge-a"].encode(), "edge-a", "GET", path,
                       zone.registry.clock() - int(timedelta(minutes=10).total_seconds() * 1e9))
    assert httpx.get(zone.url + path, headers=old).status_code == 401


def test_reports_go_up_on_change_and_otherwise_at_most_every_report_interval(zone: Zone) -> None:
    _promote(zone, _register(zone))
    edge = zone.edge("edge-a")
    edge.report_every_s = 3600.0
    assert edge.check_once().installed       # installed: reported at once
    sent = edge.bytes_out
    assert sent > 0 and zone.registry.reports(["mill-a"])["edge-a"]["slots"]
    edge.observe("mill-a/rf01/main_motor", edge.slots["mill-a/rf01/main_motor"].version or "", latency_s=0.001)
    edge.check_once()                         # nothing changed: the evidence waits for the next interval
    assert edge.bytes_out == sent
    edge.report_every_s = 0.0
    edge.check_once()
    assert edge.bytes_out > sent
    ev = zone.registry.counts(edge.slots["mill-a/rf01/main_motor"].version or "", ["mill-a"])
    assert ev.scored == 1


def test_a_mill_with_nothing_published_is_not_an_outage(zone: Zone) -> None:
    edge = zone.edge("edge-c")
    res = edge.check_once()
    assert res.state == "ok" and "nothing published" in res.detail
    assert edge.status()["state"] == "ok" and not any(edge.refusals.values())


def test_the_update_client_books_its_bytes_in_the_edge_traffic_ledger(zone: Zone) -> None:
    from spinline.edge.traffic import TrafficLedger

    v1 = _register(zone)
    _promote(zone, v1)
    edge = zone.edge("edge-a")
    ledger = TrafficLedger()
    edge.traffic = ledger.add
    assert edge.check_once().installed
    d = ledger.as_dict()
    # every byte TUF fetched (metadata + desired state + two models) and every report sent is in the ledger
    assert d["bytes"]["models_in"] == edge.bytes_in > 0 and d["messages"]["models_in"] >= 6
    assert d["bytes"]["model_report"] == edge.bytes_out > 0 and d["messages"]["model_report"] == 1
    assert d["up_bytes"] == edge.bytes_out    # the report leaves the edge; downloads come in
    before = d["bytes"]["models_in"]
    edge.check_once()                          # converged: only the timestamp (and maybe a report) again
    assert 0 < ledger.as_dict()["bytes"]["models_in"] - before < before
