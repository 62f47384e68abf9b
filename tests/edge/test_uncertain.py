"""An uncertain diagnosis asks the cloud (issue 11 item 7, edge side): one ``uncertain`` snapshot per alarm
episode, the cloud's signed answer verified, recorded and carried by the open alarm.

Pure: the keeper's rule (``is_uncertain``, ``request_alarm``, ``episode_over``) and the header it writes;
``CloudAnswers`` against good, forged, unsigned, foreign and stale answers. Real pieces: the edge's own
scoring (``EdgeScoring`` + ``ScoringStage``, the featuriser on simulated waveforms of rf01's motor bearing)
commissions on healthy snapshots, then an outer-race fault whose impacts ring a 1.2 kHz resonance — below the
edge's fixed envelope band, so its diagnosis is weak — raises an alarm that queues exactly one ``uncertain``
snapshot for the episode; the same fault ringing 3.6 kHz (inside the band) is diagnosed confidently and queues
an ``alarm`` snapshot only.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from spinline.connectors.mqtt.vibration import ChannelFeatures
from spinline.core import wire
from spinline.core.site import Machine, iter_machines, load_site
from spinline.edge.buffer import EdgeBuffer
from spinline.edge.buffer_io import AsyncBuffer
from spinline.edge.cloud_answers import CloudAnswers
from spinline.edge.evidence import (
    EvidenceKeeper,
    EvidenceSettings,
    RawSnapshot,
    decode_snapshot,
    encode_snapshot,
    is_uncertain,
)
from spinline.edge.models import ScoringConfig
from spinline.edge.scoring import CloudDiagnosis, EdgeScoring
from spinline.edge.scoring_stage import ScoringStage
from spinline.health.features import featurize
from spinline.sim.vibration import synthesize

ASSET = "mill-a/rf01/main_motor"
FS, RPM = 25600.0, 1480.0


def _snap(t: float, seed: int = 0) -> RawSnapshot:
    x = np.random.default_rng(seed).normal(0, 0.3, 25600).astype(np.float32)
    return RawSnapshot(ASSET, int(t * 1e9), FS, x, shaft_hz=RPM / 60)


def test_uncertain_is_unknown_none_or_below_the_threshold() -> None:
    assert is_uncertain(None, None, 0.6) and is_uncertain("unknown", 0.9, 0.6)
    assert is_uncertain("bearing_outer", 0.59, 0.6) and is_uncertain("bearing_outer", float("nan"), 0.6)
    assert not is_uncertain("bearing_outer", 0.6, 0.6) and not is_uncertain("imbalance", 0.95, 0.6)
    assert not is_uncertain("bearing_outer", 0.1, 0.0)             # 0: only "unknown" is uncertain
    with pytest.raises(ValueError, match="uncertain_below"):
        EvidenceSettings(uncertain_below=1.5)
    # the edge's reasons are the wire's
    from spinline.edge.evidence import REASONS
    assert REASONS == wire.SNAPSHOT_REASONS


def test_one_uncertain_snapshot_per_alarm_episode_with_the_diagnosis_in_its_header() -> None:
    now = [time.time()]
    k = EvidenceKeeper("e1", EvidenceSettings(samples_per_channel_per_day=0), clock=lambda: now[0])
    k.offer(_snap(now[0]))
    # a confident diagnosis: an alarm snapshot, no question to the cloud
    assert k.request_alarm(ASSET, "bearing_outer", 0.93, diagnosed=True) == "alarm"
    # an uncertain one: one "uncertain" snapshot carrying the edge's diagnosis and the shaft speed ...
    assert k.request_alarm(ASSET, "bearing_inner", 0.41, diagnosed=True) == "uncertain"
    # ... and a second alarm of the same episode (another rule, still uncertain) asks nothing more
    assert k.request_alarm(ASSET, "unknown", 0.0, diagnosed=True) == "alarm"
    got = k.take()
    assert [r for _, r, _ in got] == ["alarm", "uncertain", "alarm"]
    head, samples = decode_snapshot(got[1][2])
    assert head["reason"] == "uncertain" and head["diagnosis"] == {"fault": "bearing_inner", "confidence": 0.41}
    assert head["shaft_hz"] == pytest.approx(RPM / 60) and len(samples) == 25600
    assert "diagnosis" not in decode_snapshot(got[0][2])[0]
    # the episode ends (no alarm open): the next uncertain alarm asks again
    k.episode_over(ASSET)
    assert k.request_alarm(ASSET, "unknown", 0.0, diagnosed=True) == "uncertain"
    assert k.stats()["queued"] == {"alarm": 2, "request": 0, "sample": 0, "uncertain": 2}
    # the same header survives the wire's own check (what the cloud runs)
    up = wire.decode_snapshot_upload(wire.encode_snapshot_upload("e1", "mill-a", 7, got[1][2], key=b"k" * 32),
                                     key_lookup=lambda e: b"k" * 32)
    assert up.header["diagnosis"]["fault"] == "bearing_inner"


def test_uncertain_snapshots_share_the_daily_budget_and_wait_for_a_waveform() -> None:
    now = [time.time()]
    size = len(encode_snapshot(_snap(now[0]), "uncertain", "e1"))
    k = EvidenceKeeper("e1", EvidenceSettings(samples_per_channel_per_day=0, daily_bytes=int(size * 1.5)),
                       clock=lambda: now[0])
    # no recent waveform: the uncertain request waits, with its diagnosis, for the next one
    assert k.request_alarm(ASSET, "unknown", 0.0, diagnosed=True) == "uncertain"
    assert k.take() == [] and k.stats()["waiting"] == [ASSET]
    assert k.request(ASSET)                       # a user's request meanwhile does not replace the question
    k.offer(_snap(now[0]))
    (s, reason, payload), = k.take()
    assert reason == "uncertain" and decode_snapshot(payload)[0]["diagnosis"]["fault"] == "unknown"
    k.episode_over(ASSET)
    assert k.request_alarm(ASSET, "unknown", 0.0, diagnosed=True) == "uncertain"   # over budget: refused
    assert k.take() == [] and k.stats()["refused_by_reason"]["uncertain"] == 1


def _rf01() -> Machine:
    site = load_site(Path(__file__).parents[2] / "examples" / "zone.yaml")
    return next(m for _, _, m in iter_machines(site.mill("mill-a")) if m.id == "rf01")


async def _run_fault(tmp_path: Path, resonance_hz: float) -> list[list[str]]:
    """Commission rf01's motor on healthy snapshots, then fault / healthy / fault; the reasons queued per phase."""
    rf01 = _rf01()
    bearing = rf01.bearings[0]
    scoring = EdgeScoring("mill-a", [rf01], {"rf01": "I"}, tmp_path, ScoringConfig(commissioning_n=8))
    stage = ScoringStage(scoring, "mill-a", lambda b: None)
    now = [time.time() - 86400]
    keeper = EvidenceKeeper("e1", EvidenceSettings(samples_per_channel_per_day=0), clock=lambda: now[0])

    def on_alarm(e: wire.EdgeEvent) -> None:   # as the agent wires it
        keeper.request_alarm(e.asset, e.fault, e.confidence, diagnosed=True)

    stage.on_alarm = on_alarm
    stage.on_episode_over = keeper.episode_over
    buf = EdgeBuffer(tmp_path / "b.sqlite").open()
    ab = AsyncBuffer(buf)
    rng = np.random.default_rng(3)

    async def feed(levels: dict[str, float]) -> None:
        now[0] += 300
        x = synthesize(FS, 1.0, RPM, bearing, levels, rng, resonance_hz=resonance_hz)
        f = {k: float(v[0]) for k, v in featurize(x[None, :], FS, RPM / 60, bearing, extended=True).items()}
        ts = int(now[0] * 1e9)
        keeper.offer(RawSnapshot(ASSET, ts, FS, x, shaft_hz=RPM / 60))
        stage.score(ChannelFeatures("rf01", "main_motor", ts, RPM / 60, f, x, FS))
        await stage.commit(ab, lambda: None)

    for _ in range(12):
        await feed({})
    assert keeper.take() == []
    phases = []
    for levels in ({"bearing_outer": 0.6}, {}, {"bearing_outer": 0.6}):
        for _ in range(8):
            await feed(levels)
        phases.append([r for _, r, _ in keeper.take()])
    buf.close()
    return phases


async def test_the_edges_weak_diagnosis_queues_one_uncertain_snapshot_per_episode(tmp_path: Path) -> None:
    # 1.2 kHz resonance: outside the edge's band (3.2-9.6 kHz): weak or no bearing line -> uncertain, once
    # per episode (fault, cleared by healthy running, fault again)
    assert await _run_fault(tmp_path, 1200.0) == [["uncertain"], [], ["uncertain"]]


async def test_a_confident_diagnosis_queues_the_alarm_snapshot_only(tmp_path: Path) -> None:
    assert await _run_fault(tmp_path, 3600.0) == [["alarm"], [], ["alarm"]]


# --- the cloud's answer ----------------------------------------------------------------------------

SECRET = b"s" * 32


def _answer(*items: dict[str, object], edge: str = "e1", key: bytes | None = SECRET) -> dict[str, object]:
    obj: dict[str, object] = {"edge": edge, "requests": [], "diagnoses": list(items)}
    return wire.sign_ack(key, obj) if key else obj


def _item(snapshot: int = 5, fault: str = "bearing_outer", asset: str = ASSET) -> dict[str, object]:
    return {"asset": asset, "snapshot": snapshot, "fault": fault, "confidence": 0.97}


def test_cloud_answers_only_signed_ones_for_this_edges_channels_are_recorded() -> None:
    recorded: list[wire.CloudAnswer] = []
    ans = CloudAnswers(SECRET, "e1", {ASSET}, lambda a: recorded.append(a) is None, clock=lambda: 42)
    assert ans.offer(_answer(_item(), key=b"x" * 32)) == 0                  # forged: another key
    tampered = _answer(_item()) | {"diagnoses": [_item(fault="imbalance")]}  # altered after signing
    assert ans.offer(tampered) == 0
    assert ans.offer(_answer(_item(), key=None)) == 0                        # unsigned
    assert ans.offer(_answer(_item(), edge="e2")) == 0                       # for another edge
    assert ans.offer(_answer({"asset": ASSET, "snapshot": -1})) == 0         # malformed
    assert recorded == [] and ans.latest == {}
    assert ans.offer(_answer(_item(asset="mill-a/rf02/main_motor"), _item())) == 1   # one of two is ours
    assert recorded == [wire.CloudAnswer(ASSET, 5, "bearing_outer", 0.97)]
    assert ans.offer(_answer(_item())) == 0 and ans.offer(_answer(_item(snapshot=3))) == 0  # replayed, stale
    st = ans.stats()
    assert st["accepted"] == 1 and st["by_asset"][ASSET] == {"asset": ASSET, "snapshot": 5, "fault": "bearing_outer",
                                                            "confidence": 0.97, "received_ns": 42,
                                                            "alarm_open": True}
    assert st["refused_by_reason"] == {"unsigned": 1, "bad_signature": 2, "other_edge": 1, "malformed": 1,
                                       "unknown_asset": 1, "stale": 1}
    assert st["refused"] == 7


def test_the_open_alarm_carries_the_clouds_diagnosis_until_its_episode_ends(tmp_path: Path) -> None:
    rf01 = _rf01()
    scoring = EdgeScoring("mill-a", [rf01], {"rf01": "I"}, tmp_path, ScoringConfig(commissioning_n=8))
    cloud = CloudDiagnosis("bearing_outer", 0.99, 5)
    assert not scoring.set_cloud_diagnosis(ASSET, cloud)          # no alarm open: shown, not carried
    assert not scoring.set_cloud_diagnosis("mill-a/rf09/x", cloud)
    a = scoring.assets[("rf01", "main_motor")]
    rng = np.random.default_rng(5)
    t0 = int((time.time() - 86400) * 1e9)

    def feed(i: int, levels: dict[str, float]) -> None:
        x = synthesize(FS, 1.0, RPM, rf01.bearings[0], levels, rng, resonance_hz=1200.0)
        f = {k: float(v[0]) for k, v in featurize(x[None, :], FS, RPM / 60, rf01.bearings[0], extended=True).items()}
        scoring.score("rf01", "main_motor", t0 + i * 300 * 10**9, RPM / 60, f)

    for i in range(12):
        feed(i, {})
    i = 12
    while not scoring.open_alarms(ASSET):
        feed(i, {"bearing_outer": 0.6})
        i += 1
        assert i < 30
    raised = [e for e in scoring.take_events() if e.kind == "alarm_raised"]
    assert raised and is_uncertain(raised[0].fault, raised[0].confidence, 0.6)   # the edge is unsure
    # a late answer about a snapshot from long before this episode (an earlier one) is not carried
    assert not scoring.set_cloud_diagnosis(ASSET, cloud, ts_ns=t0, max_age_s=900.0)
    assert a.cloud_diagnosis is None
    assert scoring.set_cloud_diagnosis(ASSET, cloud, ts_ns=t0 + (i - 1) * 300 * 10**9, max_age_s=900.0)
    assert scoring.snapshot()[ASSET]["cloud_diagnosis"] == {"fault": "bearing_outer", "confidence": 0.99, "snapshot": 5}
    while scoring.open_alarms(ASSET):
        feed(i, {})
        i += 1
        assert i < 60
    cleared = [e for e in scoring.take_events() if e.kind == "alarm_cleared"]
    assert cleared and cleared[0].fault == "bearing_outer" and cleared[0].confidence == 0.99
    assert "cloud diagnosis of snapshot 5: bearing_outer" in cleared[0].evidence
    assert a.cloud_diagnosis is None and "cloud_diagnosis" not in scoring.snapshot()[ASSET]
