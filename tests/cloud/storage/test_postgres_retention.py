"""PostgreSQL only: raw retention drops whole daily partitions and never deletes rows."""

from __future__ import annotations

import numpy as np
import psycopg

from spinline.cloud.storage.postgres import PostgresStore, partition_name
from spinline.core.batch import Batch, Quality

S = 10**9
DAY = 86400 * S
T0 = 1_767_225_600 * S


def test_retention_drops_expired_partitions_without_delete(postgres_url: str) -> None:
    store = PostgresStore(postgres_url, retention_s={"raw": 2 * 86400, "1m": None, "1h": None})
    store.migrate()
    try:
        for d in range(5):
            ts = T0 + d * DAY + np.arange(0, 20 * 3600, 3600, dtype=np.int64) * S    # 20 rows, hours 0..19
            store.write(Batch.of(np.full(20, 7), ts, 1.0, Quality.GOOD))
        # Cutoff mid-day 2: days 0 and 1 are whole and expired; day 2 straddles the cutoff.
        dropped = store.apply_retention(T0 + 4 * DAY + 12 * 3600 * S)
        assert dropped == {"raw": 40, "1m": 0, "1h": 0, "rejections": 0}
        with psycopg.connect(postgres_url) as c:
            names = {r[0] for r in c.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c "
                                              "ON c.oid = i.inhrelid WHERE i.inhparent = 'samples'::regclass")}
            left = c.execute("SELECT count(*) FROM samples").fetchone()
            deleted = c.execute("SELECT coalesce(sum(n_tup_del), 0) FROM pg_stat_user_tables "
                                "WHERE relname LIKE 'samples_%'").fetchone()
        day0 = T0 // DAY
        assert names == {partition_name(day0 + d) for d in (2, 3, 4)}
        assert left == (60,) and deleted == (0,)          # day 2 kept whole until it all expires
    finally:
        store.close()


def test_write_after_another_process_dropped_the_partition(postgres_url: str) -> None:
    # Two stores = two processes: the writer's partition cache still lists the day the other dropped.
    writer = PostgresStore(postgres_url, retention_s={"raw": 86400})
    janitor = PostgresStore(postgres_url, retention_s={"raw": 86400})
    writer.migrate()
    try:
        ts = T0 + np.arange(10, dtype=np.int64) * S
        writer.write(Batch.of(np.full(10, 7), ts, 1.0, Quality.GOOD))
        janitor.apply_retention(T0 + 3 * DAY)                 # drops day 0 under the writer
        assert writer.write(Batch.of(np.full(10, 7), ts + 20 * S, 2.0, Quality.GOOD)).stored == 10
        assert writer.write(Batch.of(np.full(10, 7), ts + 40 * S, 3.0, Quality.GOOD)).stored == 10
        assert len(writer.range(7, T0, T0 + DAY, resolution="raw").ts_ns) == 20
    finally:
        writer.close()
        janitor.close()
