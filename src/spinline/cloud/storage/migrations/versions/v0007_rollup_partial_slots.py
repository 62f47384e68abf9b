"""Two partial tables in turn, so a refresh empties one by TRUNCATE instead of a DELETE of every row.

- ``rollup_partial_1``: the second slot, like ``rollup_partial`` (slot 0);
- ``rollup_partial_slot``: one row, the slot writers append to (``active``). A refresh flips it,
  then drains the other slot under an ACCESS EXCLUSIVE lock taken before its snapshot and truncates
  it; what a writer appended to the active slot before that snapshot is deleted row by row in the
  same snapshot (see ``PostgresStore.refresh_rollups`` for why every partial is merged exactly once).

A DELETE of the partials was ~40 % of a sparse refresh (every row alone in its minute: as many
partials as rows), and left the dead rows to vacuum. Autovacuum is off on both partial tables: each
is emptied by TRUNCATE every other refresh (the rare rows deleted one by one go with it), and an
insert-triggered autovacuum of the drained table would make the refresh's ACCESS EXCLUSIVE lock wait
until PostgreSQL cancels it (``deadlock_timeout``, 1 s by default). Anti-wraparound vacuums still run.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE rollup_partial_1 (LIKE rollup_partial INCLUDING ALL)")
    for t in ("rollup_partial", "rollup_partial_1"):
        op.execute(f"ALTER TABLE {t} SET (autovacuum_enabled = false)")
    op.execute("CREATE TABLE rollup_partial_slot (active smallint NOT NULL CHECK (active IN (0, 1)))")
    op.execute("INSERT INTO rollup_partial_slot VALUES (0)")


def downgrade() -> None:
    op.execute("LOCK TABLE rollup_partial, rollup_partial_1 IN ACCESS EXCLUSIVE MODE")
    op.execute("INSERT INTO rollup_partial SELECT * FROM rollup_partial_1")
    op.execute("DROP TABLE rollup_partial_1")
    op.execute("ALTER TABLE rollup_partial RESET (autovacuum_enabled)")
    op.execute("DROP TABLE rollup_partial_slot")
