"""Points gain ``iso_class``: the ISO 20816 machine class (I..IV) of the point's machine, from its template.

The cloud health pipeline judges velocity RMS zones with it instead of assuming class I. NULL: not
known (points registered before this revision, or a template without a class).

Revision ID: 0003
Revises: 0002
Create Date: 2026-03-01
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE points ADD COLUMN iso_class text")


def downgrade() -> None:
    op.execute("ALTER TABLE points DROP COLUMN iso_class")
