"""Points say how they report (``interval`` or ``on_change``) and their keep-alive.

Completeness must not call the silence of a report-by-exception point (an OPC UA monitored item, an
on-change MQTT device, a deadbanded point) a gap: it judges their time gaps only past the
keep-alive, and never when none is known (``spinline.core.site.PointRef.report``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE points ADD COLUMN report text NOT NULL DEFAULT 'interval', "
               "ADD COLUMN keepalive_s double precision")


def downgrade() -> None:
    op.execute("ALTER TABLE points DROP COLUMN IF EXISTS report, DROP COLUMN IF EXISTS keepalive_s")
