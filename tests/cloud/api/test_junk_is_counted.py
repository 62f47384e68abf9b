"""Junk from anyone is counted, not stored row by row (issue 13, item 6)."""

from __future__ import annotations

import os

from spinline.cloud.ingest.service import UNVERIFIED_EDGE

from .conftest import Api, signed


async def test_junk_payloads_add_no_rows(api: Api) -> None:
    inner = getattr(api.cloud.store, "inner", api.cloud.store)   # the real store under the counting wrapper
    for i in range(300):
        r = await api.ingest(os.urandom(64) if i % 2 else b"\x00garbage" * 8)
        assert r.status_code in (400, 401)
    for i in range(50):                                   # forged: a real payload signed with the wrong key
        r = await api.ingest(signed("edge-a", "mill-a", i + 1, "not-the-secret", {"mill-a/rf01/spindle_speed": 1.0}))
        assert r.status_code == 401
    assert inner.recent_rejections(UNVERIFIED_EDGE, 10_000) == []            # nothing stored
    counts = api.cloud.store.rejections()[UNVERIFIED_EDGE]
    assert sum(counts.values()) == 350                                       # every one counted
    sample = api.cloud.store.recent_rejections(UNVERIFIED_EDGE, 10_000)
    assert 0 < len(sample) <= 100                                            # a bounded sample to look at
    # a verified edge's own refusal is still stored (it is that edge's, signed, and rate-bound by it)
    r = await api.ingest(signed("edge-a", "mill-a", 1, api.secrets["edge-a"], {"mill-a/rf01/spindle_speed": 1.0},
                                ts_ns=4_000_000_000 * 10**9))
    assert r.status_code == 400
    assert [x.reason for x in inner.recent_rejections("edge-a", 10)] == ["future_timestamp"]
