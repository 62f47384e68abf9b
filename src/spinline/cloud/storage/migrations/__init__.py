"""Alembic migrations of the PostgreSQL store, run programmatically by ``PostgresStore.migrate()``."""
