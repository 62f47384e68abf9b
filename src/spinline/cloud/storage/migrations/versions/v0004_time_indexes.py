"""BRIN indexes on time for the refresh's merge join and the rejections' retention.

- ``rollup_1m``/``rollup_1h`` (``bucket``): the refresh joins the new partials only against the
  stored buckets in the new data's time range; rollup rows are appended in roughly bucket order, so a
  BRIN index lets that range skip the history (the b-tree on (point, bucket) cannot: its first
  column is the point);
- ``rejections`` (``ts_ns``): ``apply_retention`` prunes the rejection log by time.

Revision ID: 0004
Revises: 0003
Create Date: 2026-04-01
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX rollup_1m_bucket_brin ON rollup_1m USING brin (bucket)")
    op.execute("CREATE INDEX rollup_1h_bucket_brin ON rollup_1h USING brin (bucket)")
    op.execute("CREATE INDEX rejections_ts_brin ON rejections USING brin (ts_ns)")


def downgrade() -> None:
    for name in ("rollup_1m_bucket_brin", "rollup_1h_bucket_brin", "rejections_ts_brin"):
        op.execute(f"DROP INDEX IF EXISTS {name}")
