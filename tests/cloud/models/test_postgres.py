"""The registry and its TUF repository on PostgreSQL (the production metadata database), as on SQLite."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from tuf.api.metadata import Metadata

from spinline.cloud.auth.sealing import SecretBox
from spinline.cloud.models.registry import ModelRegistry
from spinline.cloud.models.tuf_repo import TufRepository, generate_root_key, load_root_key
from spinline.core.site import load_site

from .conftest import fitted_params

pytestmark = pytest.mark.postgres


def test_registry_on_postgres(postgres_url: str, zone_yaml: Path, tmp_path: Path) -> None:
    url = postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    site = {m.id: m for m in load_site(zone_yaml).mills}
    repo = TufRepository(engine, SecretBox(base64.urlsafe_b64decode(base64.urlsafe_b64encode(b"p" * 32))))
    reg = ModelRegistry(engine, repo, mills=site.get, edges_of=lambda m: [f"{m}-e1"])
    reg.create_schema()
    repo.init(generate_root_key(tmp_path / "root.pem"))
    v1 = reg.register(name="card.mahalanobis", scope_kind="machine_type", scope="card",
                      kind="asset_monitor/mahalanobis", params=fitted_params(0), actor="t").version
    reg.promote("card.mahalanobis", v1, mills=["mill-a", "mill-c"], actor="zone", reason="pg")
    doc = json.loads(repo.target("mill-a", "desired/mill-a-e1.json") or b"")
    assert {a for a in doc["assets"]} == {"mill-a/ca01/cylinder", "mill-a/ca02/cylinder"}
    assert repo.target("mill-b", "desired/mill-b-e1.json") is None
    targets = Metadata.from_bytes(repo.metadata("mill-a", "targets") or b"")
    assert reg.get("card.mahalanobis", v1).target in targets.signed.targets
    repo.rotate("snapshot", load_root_key(tmp_path / "root.pem"))
    assert Metadata.from_bytes(repo.root() or b"").signed.version == 2
    reg.record_report("mill-a-e1", "mill-a", {"slots": {"mill-a/ca01/cylinder": v1},
                                              "evidence": [{"asset": "mill-a/ca01/cylinder", "version": v1,
                                                            "scored": 5, "alarms": 1}]})
    assert reg.counts(v1, ["mill-a"]).scored == 5
    fleet = reg.fleet("mill-a", ["mill-a-e1"])["mill-a-e1"]["assets"]
    assert fleet["mill-a/ca01/cylinder"]["converged"] and not fleet["mill-a/ca02/cylinder"]["converged"]
    engine.dispose()
