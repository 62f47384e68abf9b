"""Alembic environment: runs on the connection ``PostgresStore.migrate()`` hands over.

There is no alembic.ini: the store builds the config in code and passes an open SQLAlchemy
connection in ``config.attributes["connection"]``. An advisory lock serialises migrations, so
several ingest workers starting at once upgrade the schema once.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

#: pg_advisory_xact_lock key shared by every spinline migration ("spinline" as 8 bytes).
MIGRATION_LOCK = 0x7370696E6C696E65


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through PostgresStore.migrate(), which passes a connection")
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=False)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        context.run_migrations()


run()
