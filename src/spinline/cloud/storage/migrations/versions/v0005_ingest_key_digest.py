"""Idempotency keys keep the digest of the content stored under them, and the ingest's note.

A re-send with the same key and the same digest is a duplicate; with another digest it is a
conflict (the same (edge, incarnation, seq) naming other rows: a buffer restored from a snapshot),
refused loudly instead of acked as done. ``note``: the row refusals of the first answer (JSON), so
the answer to a re-send repeats them. Keys written before this revision have NULL digests and
match any content (they were stored without one).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE ingest_keys ADD COLUMN digest text, ADD COLUMN note text")


def downgrade() -> None:
    op.execute("ALTER TABLE ingest_keys DROP COLUMN IF EXISTS digest, DROP COLUMN IF EXISTS note")
