"""Open a store from one string: the composition roots (cloud app, CLI, benches) call this.

- ``"embedded"``: ``./spinline.duckdb`` in the working folder;
- ``"embedded:/path/to/file.duckdb"`` (or a folder, which then holds ``spinline.duckdb``);
- ``"postgresql://user@host:5432/db"`` (also ``postgres://`` and ``postgresql+psycopg://``).

Nothing is opened here: stores connect on first use (call ``migrate()`` first).
"""

from __future__ import annotations

from collections.abc import Mapping

from spinline.cloud.storage.base import TimeSeriesStore


def open_store(url: str, *, retention_s: Mapping[str, float | None] | None = None) -> TimeSeriesStore:
    if url == "embedded" or url.startswith("embedded:"):
        from spinline.cloud.storage.embedded import EmbeddedStore

        path = url.partition(":")[2] or "spinline.duckdb"
        return EmbeddedStore(path, retention_s=retention_s)
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        from spinline.cloud.storage.postgres import PostgresStore

        return PostgresStore(url, retention_s=retention_s)
    raise ValueError(f"unknown store {url!r}: use 'embedded', 'embedded:/path.duckdb' or 'postgresql://...'")
