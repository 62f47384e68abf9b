"""A mill from examples/mill.yaml, two registered edges with secrets, and an ingest service on a store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spinline.cloud.ingest.service import IngestService
from spinline.cloud.storage.base import PointInfo, TimeSeriesStore
from spinline.cloud.storage.catalog import point_infos
from spinline.cloud.storage.embedded import EmbeddedStore
from spinline.core.batch import Batch, Quality
from spinline.core.site import load_site
from spinline.core.wire import Envelope, encode

SECRETS = {"edge-a": b"secret-a" * 4, "edge-b": b"secret-b" * 4, "edge-x": b"secret-x" * 4}
EDGE_MILL = {"edge-a": "mill-a", "edge-b": "mill-a", "edge-x": "mill-x"}


@dataclass
class Mill:
    id: str
    infos: list[PointInfo]

    @property
    def keys(self) -> frozenset[int]:
        return frozenset(p.key for p in self.infos)

    def of_kind(self, kind: str) -> list[int]:
        return [p.key for p in self.infos if p.kind == kind]

    def batch(self, n_ts: int = 5, start_ns: int | None = None, seq0: int = 0) -> Batch:
        """Every point of the mill (whole-number values, valid for every kind) at ``n_ts`` whole seconds ending now."""
        keys = np.array(self.of_kind("gauge") + self.of_kind("counter") + self.of_kind("state"), dtype=np.int64)
        t0 = (time.time_ns() // 10**9 - n_ts) * 10**9 if start_ns is None else start_ns
        ts = t0 + np.repeat(np.arange(n_ts, dtype=np.int64), len(keys)) * 10**9
        seq = seq0 + np.repeat(np.arange(n_ts), len(keys))
        return Batch.of(np.tile(keys, n_ts), ts, np.floor(np.abs(np.sin(ts / 1e9)) * 4), Quality.GOOD, seq)

    def payload(self, batch: Batch, seq: int, edge: str = "edge-a", *, key: bytes | None = None,
                mill_id: str | None = None, meta: dict[str, Any] | None = None) -> bytes:
        """A signed payload (``key=b""``: unsigned; another key: a forged one)."""
        env = Envelope(edge=edge, mill=mill_id or self.id, seq=seq, batch=batch, created_ns=time.time_ns(),
                       meta=dict(meta or {}))
        k = SECRETS.get(edge, b"") if key is None else key
        return encode(env, key=k or None)

    def service(self, store: TimeSeriesStore, **kw: Any) -> IngestService:
        """An ingest service for this mill's edges, its points registered in ``store``."""
        store.register_points(self.infos)
        keys = self.keys
        return IngestService(store, SECRETS.get, EDGE_MILL.get,
                             lambda m: keys if m == self.id else frozenset(), **kw)


@pytest.fixture(scope="session")
def mill(mill_yaml: Path) -> Mill:
    site = load_site(mill_yaml)
    return Mill(site.mills[0].id, point_infos(site, site.mills[0].id))


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[TimeSeriesStore]:
    s = EmbeddedStore(tmp_path / "ingest.duckdb")
    s.migrate()
    yield s
    s.close()

