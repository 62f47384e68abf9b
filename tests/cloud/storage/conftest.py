"""One store fixture, parametrised over both backends: every storage test runs on each."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spinline.cloud.storage.base import TimeSeriesStore
from spinline.cloud.storage.embedded import EmbeddedStore

StoreFactory = Callable[..., TimeSeriesStore]


@pytest.fixture(params=["embedded", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Builds migrated stores on one database (call twice for two writers on the same data)."""
    opened: list[TimeSeriesStore] = []
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")

    def make(**kw: object) -> TimeSeriesStore:
        if request.param == "embedded":
            store: TimeSeriesStore = EmbeddedStore(tmp_path / "store.duckdb", **kw)  # type: ignore[arg-type]
        else:
            from spinline.cloud.storage.postgres import PostgresStore

            store = PostgresStore(url, **kw)  # type: ignore[arg-type]
        store.migrate()
        opened.append(store)
        return store

    yield make
    for s in opened:
        s.close()


@pytest.fixture()
def store(make_store: StoreFactory) -> TimeSeriesStore:
    return make_store()
