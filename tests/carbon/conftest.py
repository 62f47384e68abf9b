"""A simulated month of examples/mill.yaml in an embedded store, shared by the service/CLI/API tests.

Only the points the carbon service reads are stored (energy, power, output, spindle-hours): the
same rollups, a fraction of the write time. 1-minute steps: sparser data (5-minute steps) makes
the store refresh every isolated minute bucket on its own, which is far slower.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from spinline.cloud.storage.catalog import point_infos
from spinline.cloud.storage.embedded import EmbeddedStore
from spinline.core.site import Site, load_site

CARBON_POINTS = ("energy", "power", "output", "spindle_hours")
OCT_2026 = int(dt.datetime(2026, 10, 1, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()) * 10**9


def fill_store(store: EmbeddedStore, site: Site, mill_id: str, start_ns: int, days: float, step_s: float,
               seed: int = 7) -> None:
    from spinline.sim.history import generate

    keep = np.array(sorted(p.key for p in site.points(mill_id) if p.point.name in CARBON_POINTS), dtype=np.int64)
    for b in generate(site, mill_id, start_ns, days * 86400.0, step_s, seed=seed, chunk_s=7 * 86400.0):
        store.write(b.take(np.isin(b.point, keep)))
    store.refresh_rollups()


@pytest.fixture(scope="session")
def month_db(tmp_path_factory: pytest.TempPathFactory, mill_yaml: Path) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("carbon") / "month.duckdb"
    site = load_site(mill_yaml)
    store = EmbeddedStore(path)
    store.migrate()
    store.register_points(point_infos(site))
    fill_store(store, site, "mill-a", OCT_2026, 31, 60.0)
    store.close()
    yield path
