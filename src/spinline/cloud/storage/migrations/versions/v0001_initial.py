"""Initial schema: points, time-partitioned samples, latest values, rollups, ingest bookkeeping.

``samples`` is partitioned by range of ``ts`` (UTC ns); the store creates one partition per day on
demand (``samples_YYYYMMDD``), and retention drops whole partitions. Its only index is BRIN on
``ts``: a b-tree on (point, ts) would cut binary COPY from ~1.6M to ~220K rows/s, and the queries
that need per-point speed (charts over long spans, the overview) read ``rollup_*`` (b-tree on
(point, bucket), 60x fewer rows) and ``latest``.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ROLLUP = """(point bigint NOT NULL, bucket bigint NOT NULL, min float8, max float8, sum float8,
    count bigint NOT NULL, first float8, last float8, inc float8, PRIMARY KEY (point, bucket))"""


def upgrade() -> None:
    op.execute("""CREATE TABLE points (key bigint PRIMARY KEY, tag text NOT NULL, mill text NOT NULL,
        machine text NOT NULL, name text NOT NULL, unit text NOT NULL, kind text NOT NULL,
        interval_s float8 NOT NULL, line text NOT NULL DEFAULT '', workshop text NOT NULL DEFAULT '',
        machine_type text NOT NULL DEFAULT '', deadband float8 NOT NULL DEFAULT 0, rollover float8)""")
    op.execute("CREATE INDEX points_mill ON points (mill)")
    op.execute("""CREATE TABLE samples (point bigint NOT NULL, ts bigint NOT NULL, value float8,
        quality smallint NOT NULL, seq bigint) PARTITION BY RANGE (ts)""")
    op.execute("CREATE INDEX samples_ts_brin ON samples USING brin (ts) WITH (pages_per_range = 32)")
    op.execute("""CREATE TABLE latest (point bigint PRIMARY KEY, ts bigint NOT NULL, value float8,
        quality smallint NOT NULL, seq bigint)""")
    op.execute("CREATE TABLE ingest_keys (key text PRIMARY KEY, stored bigint NOT NULL, ts_ns bigint NOT NULL)")
    op.execute("CREATE INDEX ingest_keys_ts ON ingest_keys USING brin (ts_ns)")
    op.execute("CREATE TABLE rollup_dirty (bucket bigint NOT NULL)")
    op.execute(f"CREATE TABLE rollup_1m {_ROLLUP}")
    op.execute(f"CREATE TABLE rollup_1h {_ROLLUP}")
    op.execute("""CREATE TABLE rejections (id bigserial PRIMARY KEY, edge text NOT NULL, reason text NOT NULL,
        detail text NOT NULL, ts_ns bigint NOT NULL)""")
    op.execute("CREATE INDEX rejections_edge_ts ON rejections (edge, ts_ns)")
    op.execute("""CREATE TABLE edge_status (edge text PRIMARY KEY, mill text NOT NULL, status jsonb NOT NULL,
        received_ns bigint NOT NULL)""")


def downgrade() -> None:
    for t in ("edge_status", "rejections", "rollup_1h", "rollup_1m", "rollup_dirty", "ingest_keys", "latest",
              "samples", "points"):
        op.execute(f"DROP TABLE IF EXISTS {t} CASCADE")
