"""Issue 12 item 4: no batch is larger than the cloud accepts. After a commit-failure episode the
collector holds up to ``max_pending_rows`` (2 M) rows; the flush splits them at commit into batches
the cloud's own ``decode`` accepts, and a stored batch above the cap (committed before the split
existed) is split in the buffer at send and stored by the real ``IngestService``, never dead-lettered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spinline.core import wire
from spinline.core.batch import Batch
from spinline.core.site import Priority, load_site
from spinline.edge.buffer import EdgeBuffer
from spinline.edge.forwarder import AsyncBuffer, Forwarder

from .test_hardening import ROOT, SECRET, IngestUplink, agent, rows, session


def test_max_batch_rows_fits_the_clouds_row_and_byte_limits() -> None:
    n = wire.max_batch_rows()
    assert 0 < n <= wire.MAX_ROWS and n * wire.ROW_BYTES < wire.MAX_PAYLOAD_BYTES
    assert wire.max_batch_rows(max_bytes=8 << 20) * wire.ROW_BYTES < 8 << 20


async def test_two_million_pending_rows_commit_as_batches_the_cloud_accepts(tmp_path: Path) -> None:
    ag = agent(tmp_path, max_pending_rows=3_000_000)
    await ag.buffer.open()
    try:
        key = ag.points[0].key
        n = 2_000_000
        # What a commit-failure episode leaves in memory: every flush's rows kept for the next try.
        for part in range(20):
            ag.collector.pending[Priority.NORMAL].append(rows(key, n // 20, v0=part * 1e6))
        assert await ag.collector.flush(ag.buffer) == n
        buf = ag.buffer.buffer
        seqs = buf.seqs()
        assert len(seqs) >= 2
        total = 0
        for s in seqs:
            sb = buf.get(s)
            assert sb is not None and len(sb.batch) <= wire.max_batch_rows()
            env = wire.Envelope(edge="e1", mill="m", seq=s, batch=sb.batch, created_ns=sb.created_ns,
                                incarnation=buf.incarnation)
            payload = wire.encode(env, key=SECRET)
            got = wire.decode(payload, key_lookup={"e1": SECRET}.get)   # the cloud's limits, defaults
            total += len(got.batch)
        assert total == n
    finally:
        await ag.buffer.close()


async def test_a_stored_batch_above_the_cap_is_split_at_send_and_stored_not_dead_lettered(tmp_path: Path) -> None:
    from spinline.cloud.ingest.service import IngestService
    from spinline.cloud.storage.catalog import point_infos
    from spinline.cloud.storage.embedded import EmbeddedStore

    site = load_site(ROOT / "examples" / "mill.yaml")
    mill = site.mills[0].id
    ref = next(p for p in site.points(mill) if p.point.kind == "gauge")
    store = EmbeddedStore(tmp_path / "cloud.duckdb")
    store.migrate()
    store.register_points(point_infos(site, mill))
    service = IngestService(store, {"e1": SECRET}.get, {"e1": mill}.get,
                            lambda m: frozenset(p.key for p in site.points(mill)), max_rows=1000)
    buf = EdgeBuffer(tmp_path / "buffer.sqlite").open()
    try:
        big = rows(ref.key, 2500)
        buf.append(big, meta={"ts_source": "edge+device"})      # committed before the cap existed
        fwd = Forwarder(AsyncBuffer(buf), edge="e1", mill=mill, secret=SECRET, max_batch_rows=1000)
        up = IngestUplink(service)
        assert await session(fwd, up, lambda: buf.stats().batches == 0) is None
        assert [r.status for r in up.results] == ["stored"] * 3, up.results
        assert buf.stats().dead_letters == 0 and fwd.stats.split == 1
        got = store.range(ref.key, int(big.ts_ns.min()), int(big.ts_ns.max()) + 1, resolution="raw")
        assert np.asarray(got.value).tolist() == big.value.tolist()
    finally:
        buf.close()
        store.close()


def test_split_keeps_rows_point_seqs_meta_and_priority(tmp_path: Path) -> None:
    with EdgeBuffer(tmp_path / "b.sqlite") as buf:
        b = Batch.concat([rows(7, 5), rows(8, 4)])
        sb = buf.append(b, priority=Priority.HIGH, meta={"x": 1})
        assert buf.split(sb.seq, 100) == []
        new = buf.split(sb.seq, 4)
        assert len(new) == 3 and buf.seqs() == new and buf.stats().batches == 3
        parts = [buf.get(s) for s in new]
        assert all(p is not None and p.meta == {"x": 1} and p.priority == sb.priority for p in parts)
        joined = Batch.concat([p.batch for p in parts if p is not None])
        assert joined.equals(sb.batch)
