"""Starting a federated run (``FederatedRuns``): who is asked to join and with what, each request handed
out once; a run whose edges never join fails by its timeout with the reason naming each mill; a run that
cannot start says why. The Flower server is the real one (``.venv-fl``); the full run with three real
edges joining by themselves is tests/e2e/test_federated_zone.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from spinline.cloud.models.federated import FederatedError
from spinline.cloud.models.fedrun import FederatedRuns
from spinline.cloud.models.registry import ModelRegistry
from spinline.core.fedjoin import Join
from spinline.core.site import Mill, load_site


def _runs(tmp_path: Path, zone_yaml: Path, federated: tuple[str, ...], edges: dict[str, list[str]]
          ) -> tuple[FederatedRuns, ModelRegistry, list[tuple[str, list[str]]]]:
    site = load_site(zone_yaml)
    mills: dict[str, Mill] = {m.id: m.model_copy(update={"federated": m.id in federated}) for m in site.mills}
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    reg = ModelRegistry(engine, mills=mills.get)
    reg.create_schema()
    published: list[tuple[str, list[str]]] = []
    runs = FederatedRuns(engine, reg, mills=lambda: mills, edges_of=lambda m: edges.get(m, []),
                         orders_of=lambda _m: [], workdir=tmp_path / "fl",
                         publish=lambda m, e: published.append((m, list(e))))
    runs.create_schema()
    return runs, reg, published


def test_edges_that_never_join_fail_the_run_with_the_reason(tmp_path: Path, zone_yaml: Path) -> None:
    runs, reg, published = _runs(tmp_path, zone_yaml, ("mill-a", "mill-b", "mill-c"),
                                 {"mill-a": ["ea"], "mill-b": ["eb"], "mill-c": ["ec"]})
    started = runs.start("ring_frame", actor="zone", held_out=["mill-c"], timeout_s=6)
    assert published == [("mill-a", ["ea"]), ("mill-b", ["eb"]), ("mill-c", ["ec"])]   # MQTT edges: at once
    rec = runs.get(started.run_id)
    assert rec is not None and rec["status"] == "running"
    assert rec["mills"] == {"train": ["mill-a", "mill-b"], "test": ["mill-c"]}

    # mill-a's edge gets its request with every status answer until its status shows the run
    join = Join.parse(runs.take("ea"))
    assert Join.parse(runs.take("ea")) == join
    assert runs.take("ea", has_run=join.run) is None and runs.take("ea") is None
    assert join.run == started.run_id and join.server == started.server.address
    assert join.machine_type == "ring_frame" and join.assets
    assert all(a.startswith("mill-a/rf") for a in join.assets)
    # mill-b's edge is sent it but never shows it; mill-c's never asks. Nobody joins Flower: the run fails
    # at its timeout, saying what each mill's edge did
    assert runs.take("eb") is not None
    rec = runs.finish(started)
    assert rec["status"] == "failed" and rec["version"] is None
    assert "over 6 s" in rec["detail"]
    assert "never took its join request (offline, or not reachable): mill-c (edge ec)" in rec["detail"]
    assert "was sent it, but its status never showed the run: mill-b (edge eb)" in rec["detail"]
    assert "took it (see the edge's status 'federated' for its client's outcome): mill-a (edge ea)" in rec["detail"]
    assert runs.take("eb") is None and runs.take("ec") is None     # a closed run hands out nothing
    assert started.server.proc.poll() is not None
    assert reg.versions() == []


@pytest.mark.parametrize(("federated", "edges", "held_out", "match"), [
    (("mill-a",), {"mill-a": ["ea"]}, None, "needs two federated mills"),
    (("mill-a", "mill-b"), {"mill-a": ["ea"]}, None, "mill-b have no active edge"),
    (("mill-a", "mill-b"), {"mill-a": ["ea"], "mill-b": ["eb"]}, ["mill-c"], "mill-c are not federated mills"),
])
def test_a_run_that_cannot_start_says_why(tmp_path: Path, zone_yaml: Path, federated: tuple[str, ...],
                                          edges: dict[str, list[str]], held_out: list[str] | None,
                                          match: str) -> None:
    runs, _reg, published = _runs(tmp_path, zone_yaml, federated, edges)
    with pytest.raises(FederatedError, match=match):
        runs.start("ring_frame", actor="zone", held_out=held_out)
    assert published == []
    assert not (tmp_path / "fl").exists()


def test_a_join_request_is_checked_field_by_field() -> None:
    good = Join(run="fl-1", server="127.0.0.1:1", machine_type="ring_frame", assets=["m/rf01/main_motor"],
                features=["rms"], log_keys=[], start_ns=0, end_ns=1, windows={"rf01/main_motor": [[0, 1]]}).to_dict()
    assert Join.parse(good).to_dict() == good
    for k, v in (("server", ""), ("assets", "m/rf01"), ("start_ns", "0"), ("windows", {"a": [[0]]})):
        with pytest.raises(ValueError, match=k):
            Join.parse(good | {k: v})
