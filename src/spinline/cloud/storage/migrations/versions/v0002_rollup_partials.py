"""Rollup partials: per-(point, minute) partial aggregates written with the rows, merged by refresh.

- ``rollup_partial``: one row per (point, minute) per written transaction: min, max, sum, count,
  first/last (time and value) and the counter increase within the rows of that transaction. They
  merge associatively, so ``refresh_rollups`` folds them into ``rollup_1m``/``rollup_1h`` without
  reading ``samples`` (except to recompute a counter's bucket whose partials overlap in time);
- ``rollup_1m``/``rollup_1h`` gain ``first_ts``/``last_ts`` (when a bucket's first and last values
  were taken), which the merge needs to place late data before, after or inside a bucket. Rows
  from before this revision have NULL there: a partial landing in one recomputes that bucket.

``rollup_dirty`` stays: minutes listed there are recomputed from ``samples`` for every point.

Revision ID: 0002
Revises: 0001
Create Date: 2026-02-01
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""CREATE TABLE rollup_partial (point bigint NOT NULL, bucket bigint NOT NULL, min float8,
        max float8, sum float8, count bigint NOT NULL, first_ts bigint NOT NULL, first float8,
        last_ts bigint NOT NULL, last float8, inc float8)""")
    for t in ("rollup_1m", "rollup_1h"):
        op.execute(f"ALTER TABLE {t} ADD COLUMN first_ts bigint, ADD COLUMN last_ts bigint")
    # Minutes written before this revision and not yet refreshed are recomputed from samples.


def downgrade() -> None:
    op.execute("INSERT INTO rollup_dirty SELECT DISTINCT bucket FROM rollup_partial")
    op.execute("DROP TABLE rollup_partial")
    for t in ("rollup_1m", "rollup_1h"):
        op.execute(f"ALTER TABLE {t} DROP COLUMN first_ts, DROP COLUMN last_ts")
