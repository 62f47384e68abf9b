"""The bad-input suite: every refusal reason, with the good batches around it still stored."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from spinline.cloud.ingest.service import CONFLICT, IngestService
from spinline.cloud.ingest.validate import CLOUD_STATE_REASONS
from spinline.cloud.storage.base import TimeSeriesStore
from spinline.core.batch import Batch, Quality

S = 10**9


def _good(mill: Any, k: int) -> Batch:
    base = (time.time_ns() // S - 600) * S
    return mill.batch(n_ts=5, start_ns=base + k * 10 * S, seq0=k * 5)


def _with(mill: Any, kind: str, value: float, ts: int | None = None) -> Batch:
    b = _good(mill, 1)
    point = mill.of_kind(kind)[0]
    idx = int(np.flatnonzero(b.point == point)[0])
    v, t = b.value.copy(), b.ts_ns.copy()
    v[idx] = value
    if ts is not None:
        t[idx] = ts
    return Batch(b.point, t, v, b.quality, b.seq)


def _unknown(mill: Any) -> Batch:
    b = _good(mill, 1)
    p = b.point.copy()
    p[3] = 123456789
    return Batch(p, b.ts_ns, b.value, b.quality, b.seq)


def _all_unknown(mill: Any) -> Batch:
    b = _good(mill, 1)
    return Batch(np.full(len(b), 123456789), b.ts_ns, b.value, b.quality, b.seq)


def _version(mill: Any) -> bytes:
    data = bytearray(mill.payload(_good(mill, 1), 2))
    data[4] = 9
    return bytes(data)


def _bad_header(mill: Any) -> bytes:
    header = b'{"edge": "edge-a", "mill": '
    return struct.pack("<4sBBHI", b"SPLB", 1, 0, 0, len(header)) + header


BAD: dict[str, tuple[str, Callable[[Any], bytes]]] = {
    "garbage": ("malformed", lambda m: b"\x00not a spinline payload at all"),
    "bad header": ("malformed", _bad_header),
    "version": ("unsupported_version", _version),
    "too many rows": ("oversized", lambda m: m.payload(m.batch(n_ts=40), 2)),
    "unknown point": ("unknown_point", lambda m: m.payload(_unknown(m), 2)),
    "fractional state": ("wrong_type", lambda m: m.payload(_with(m, "state", 2.5), 2)),
    "negative counter": ("wrong_type", lambda m: m.payload(_with(m, "counter", -4.0), 2)),
    "nan": ("non_finite", lambda m: m.payload(_with(m, "gauge", float("nan")), 2)),
    "inf": ("non_finite", lambda m: m.payload(_with(m, "gauge", float("inf")), 2)),
    "future": ("future_timestamp", lambda m: m.payload(_with(m, "gauge", 1.0, time.time_ns() + 3600 * S), 2)),
    "1970": ("clock_skew", lambda m: m.payload(_with(m, "gauge", 1.0, 5 * S), 2)),
    "wrong key": ("unauthorised", lambda m: m.payload(_good(m, 1), 2, key=b"guessed" * 5)),
    "unsigned": ("unauthorised", lambda m: m.payload(_good(m, 1), 2, key=b"")),
    "other mill's edge": ("unauthorised", lambda m: m.payload(_good(m, 1), 2, edge="edge-x")),
    "unknown edge": ("unauthorised", lambda m: m.payload(_good(m, 1), 2, edge="edge-zz", key=b"k" * 32)),
}


def _rows(store: TimeSeriesStore, mill: Any) -> int:
    g = mill.of_kind("gauge")[0]
    now = time.time_ns()
    return len(store.range(g, now - 3600 * S, now + S, resolution="raw").ts_ns)


#: Reasons judged per row: only the offending rows are refused, the rest of the batch is stored.
ROW_REASONS = {"unknown_point", "wrong_type", "non_finite", "future_timestamp", "clock_skew"}


@pytest.mark.parametrize("case", [c for c in BAD if BAD[c][0] not in ROW_REASONS])
def test_bad_batch_refused_with_reason_and_good_ones_around_it_stored(
        case: str, store: TimeSeriesStore, mill: Any) -> None:
    reason, make = BAD[case]
    svc = mill.service(store, max_rows=5 * len(mill.batch(n_ts=1)) + 10)
    before = svc.handle(mill.payload(_good(mill, 0), 1))
    bad = svc.handle(make(mill))
    after = svc.handle(mill.payload(_good(mill, 2), 3))
    assert (before.status, before.stored) == ("stored", len(_good(mill, 0)))
    assert (bad.status, bad.reason, bad.stored) == ("rejected", reason, 0) and bad.detail
    assert bad.ack() == {"seq": bad.seq, "status": "rejected", "reason": reason, "stored": 0}
    assert after.status == "stored"
    assert _rows(store, mill) == 10                          # 5 seconds from each good batch
    counts = store.rejections()
    assert sum(n for per in counts.values() for n in per.values()) == 1
    assert reason in next(iter(counts.values()))


@pytest.mark.parametrize("case", [c for c in BAD if BAD[c][0] in ROW_REASONS])
def test_bad_row_refused_alone_and_the_rest_of_its_batch_stored(case: str, store: TimeSeriesStore,
                                                                 mill: Any) -> None:
    """One fractional state, negative counter, NaN, unknown key or future stamp costs its row only."""
    reason, make = BAD[case]
    svc = mill.service(store)
    payload = make(mill)
    res = svc.handle(payload)
    n = len(_good(mill, 1))
    if reason in CLOUD_STATE_REASONS:
        # The cloud's own state refused a row: the whole batch waits at the edge (dead letter, key
        # free) until the edge re-buffers what ``retry`` names; nothing is stored, nothing is lost.
        assert (res.status, res.reason, res.stored, res.refused) == ("rejected", reason, 0, {reason: 1})
        assert res.ack()["retry"] == ({"points": [123456789]} if reason == "unknown_point"
                                      else {"after_ns": res.ack()["retry"]["after_ns"]})
        assert _rows(store, mill) == 0
        return
    assert (res.status, res.stored, res.refused) == ("stored", n - 1, {reason: 1})
    ack = res.ack()
    assert ack["refused"] == {reason: 1} and ack["status"] == "stored"
    if reason in CLOUD_STATE_REASONS:                         # the edge may re-send these rows later
        assert ack["retry"] == ({"points": [123456789]} if reason == "unknown_point"
                                else {"after_ns": ack["retry"]["after_ns"]})
    else:
        assert "retry" not in ack
    assert store.rejections() == {"edge-a": {reason: 1}}
    again = svc.handle(payload)                               # a re-send repeats the first answer
    assert (again.status, again.refused, again.retry) == ("duplicate", res.refused, res.retry)
    assert store.rejections() == {"edge-a": {reason: 1}}     # and is not counted twice


@pytest.mark.parametrize("case", [c for c in BAD if BAD[c][0] in CLOUD_STATE_REASONS])
def test_an_edge_that_rebuffers_gets_the_rest_stored_despite_cloud_state_refusals(case: str, store: TimeSeriesStore,
                                                                                  mill: Any) -> None:
    """Issue 12 item 3: an edge that holds the rows ``retry`` names loses nothing when the rest is stored."""
    from spinline.core.wire import META_REBUFFERS, decode

    reason, make = BAD[case]
    svc = mill.service(store)
    env = decode(make(mill))
    payload = mill.payload(env.batch, env.seq, meta={META_REBUFFERS: True})
    res = svc.handle(payload)
    n = len(_good(mill, 1))
    assert (res.status, res.stored, res.refused) == ("stored", n - 1, {reason: 1})
    assert res.ack()["retry"] and _rows(store, mill) > 0          # visible, not only counted
    again = svc.handle(payload)                               # a re-send repeats the retry it must act on
    assert (again.status, again.retry) == ("duplicate", res.retry)


def test_batch_whose_every_row_is_refused_is_rejected_and_its_key_left_free(store: TimeSeriesStore,
                                                                            mill: Any) -> None:
    svc = mill.service(store)
    b = _good(mill, 1)
    res = svc.handle(mill.payload(_all_unknown(mill), 4))
    assert (res.status, res.reason, res.refused, res.retry) == ("rejected", "unknown_point",
                                                                {"unknown_point": len(b)}, {"points": [123456789]})
    assert svc.handle(mill.payload(b, 4)).status == "stored"   # the same seq, fixed: stored


def test_reused_key_with_other_rows_is_a_loud_refusal_not_a_duplicate(store: TimeSeriesStore, mill: Any,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A buffer restored from a snapshot rolls its seq back: new rows under a used key are not acked as done."""
    svc = mill.service(store)
    original = mill.payload(_good(mill, 0), 9)
    assert svc.handle(original).status == "stored"
    with caplog.at_level("ERROR"):
        first = svc.handle(mill.payload(_good(mill, 1), 9))
        second = svc.handle(mill.payload(_good(mill, 2), 9))
    assert (first.status, first.reason, first.stored) == ("rejected", CONFLICT, 0)
    assert first.ack()["reason"] == CONFLICT and second.reason == CONFLICT
    assert store.rejections() == {"edge-a": {CONFLICT: 2}}     # every one counted ...
    assert sum(CONFLICT in r.message for r in caplog.records) == 1   # ... logged once
    assert _rows(store, mill) == 5
    assert svc.handle(original).status == "duplicate"        # the real re-send still is


def test_bad_batch_in_a_coalesced_group_does_not_block_the_rest(store: TimeSeriesStore, mill: Any) -> None:
    svc = mill.service(store)
    first = mill.payload(_good(mill, 0), 1)      # re-sent as the same bytes: two _good calls straddling a
    results = svc.handle_many([first, mill.payload(_all_unknown(mill), 2),   # second differ (a conflict)
                               mill.payload(_good(mill, 2), 3), first,
                               mill.payload(_with(mill, "gauge", np.nan), 4)])
    assert [(r.status, r.reason) for r in results] == [("stored", None), ("rejected", "unknown_point"),
                                                       ("stored", None), ("duplicate", None), ("stored", None)]
    assert [r.seq for r in results] == [1, 2, 3, 1, 4]
    assert results[4].refused == {"non_finite": 1}
    assert _rows(store, mill) == 14
    assert store.rejections() == {"edge-a": {"non_finite": 1, "unknown_point": 1}}


def test_resend_is_stored_exactly_once(store: TimeSeriesStore, mill: Any) -> None:
    svc = mill.service(store)
    p = mill.payload(_good(mill, 0), 7)
    first, again, other_edge = svc.handle(p), svc.handle(p), svc.handle(mill.payload(_good(mill, 1), 7, "edge-b"))
    assert (first.status, again.status, other_edge.status) == ("stored", "duplicate", "stored")
    assert again.ack() == {"seq": 7, "status": "duplicate", "reason": None, "stored": 0}
    assert _rows(store, mill) == 10


def test_bad_quality_nan_is_stored_not_refused(store: TimeSeriesStore, mill: Any) -> None:
    svc = mill.service(store)
    b = _good(mill, 0)
    v, q = b.value.copy(), b.quality.copy()
    v[0], q[0] = np.nan, Quality.BAD
    assert svc.handle(mill.payload(Batch(b.point, b.ts_ns, v, q, b.seq), 1)).status == "stored"


def _signed(edge: str, body: bytes) -> bytes:
    from spinline.core.wire import sign_status

    from .conftest import SECRETS

    return body + b"\n" + sign_status(SECRETS[edge], body).encode()


def test_status_messages_kept_for_known_edges_only(store: TimeSeriesStore, mill: Any) -> None:
    svc: IngestService = mill.service(store)
    assert svc.handle_status(_signed("edge-a", b'{"buffer_depth": 3, "version": "0.1.0"}'), "mill-a", "edge-a")
    assert not svc.handle_status(b'{"buffer_depth": 3}', "mill-a", "edge-zz")
    assert not svc.handle_status(_signed("edge-b", b"[1, 2]"), "mill-a", "edge-b")
    assert store.edge_status()["edge-a"].status == {"buffer_depth": 3, "version": "0.1.0"}
    assert set(store.edge_status()) == {"edge-a"}
    # an unknown edge proves nothing: counted under the neutral "?"; a known edge's bad status is its own
    assert store.rejections() == {"?": {"unauthorised": 1}, "edge-b": {"malformed": 1}}


def test_a_replayed_or_stale_signed_status_is_refused_and_counted(store: TimeSeriesStore, mill: Any) -> None:
    """Issue 12 item 2: a status captured on the broker, validly signed, re-published later must not
    overwrite the edge's fleet status (it would show a dead edge alive, or an old buffer depth)."""
    import json

    svc: IngestService = mill.service(store)
    now = time.time_ns()

    def status(ts: int, started: int = 1, state: str = "online") -> bytes:
        return _signed("edge-a", json.dumps({"state": state, "ts_ns": ts, "started_ns": started}).encode())

    first = status(now - 20 * 10**9)
    assert svc.handle_status(first, "mill-a", "edge-a", now)
    assert svc.handle_status(status(now - 10 * 10**9, state="degraded"), "mill-a", "edge-a", now)
    assert not svc.handle_status(first, "mill-a", "edge-a", now)                    # replayed within minutes
    assert store.edge_status()["edge-a"].status["state"] == "degraded"
    # the status kept, delivered again (the retained copy to a restarted worker, hours later): not a
    # refusal, and the edge's last-seen stays when it was really sent
    seen = store.edge_status()["edge-a"].received_ns
    assert svc.handle_status(status(now - 10 * 10**9, state="degraded"), "mill-a", "edge-a", now + 3600 * 10**9)
    assert store.edge_status()["edge-a"].received_ns == seen
    assert not svc.handle_status(status(now - 3600 * 10**9), "mill-a", "edge-a", now)   # an hour old
    assert not svc.handle_status(status(now + 3600 * 10**9), "mill-a", "edge-a", now)   # an hour ahead
    assert not svc.handle_status(_signed("edge-a", b'{"ts_ns": "soon"}'), "mill-a", "edge-a", now)
    assert store.rejections()["edge-a"] == {"stale_status": 3, "malformed": 1}
    # a new process of the edge whose clock stepped back a little is not a replay
    assert svc.handle_status(status(now - 15 * 10**9, started=2, state="online"), "mill-a", "edge-a", now)
    assert store.edge_status()["edge-a"].status["started_ns"] == 2


def test_unsigned_or_forged_status_of_a_known_edge_is_refused_and_counted(store: TimeSeriesStore,
                                                                         mill: Any) -> None:
    """Issue 12 item 2: over MQTT anyone on the broker can publish an edge's (retained) status."""
    svc: IngestService = mill.service(store)
    assert not svc.handle_status(b'{"state": "online", "buffer": {"batches": 0}}', "mill-a", "edge-a")
    assert not svc.handle_status(_signed("edge-b", b'{"state": "online"}'), "mill-a", "edge-a")  # other key
    assert "edge-a" not in store.edge_status()
    assert store.rejections() == {"?": {"unauthorised": 2}}
    # the transport checked it (the HTTP header): the body alone is kept
    assert svc.handle_status(b'{"state": "online"}', "mill-a", "edge-a", verified=True)
    assert store.edge_status()["edge-a"].status == {"state": "online"}
