"""The pipeline on real machine data no one here generated (../shared/data). Missing data fails.

These run on subsets to stay quick; bench/health.py runs the full protocols and the doc reports them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from spinline.health.features import bearing_frequencies, featurize
from spinline.health.validation import cwru, ims, skab

pytestmark = pytest.mark.realdata


def test_cwru_bearing_geometry_matches_published_multiples() -> None:
    fr = bearing_frequencies(cwru.SKF6205, 1.0)
    assert float(fr["bpfi"]) == pytest.approx(5.4152, rel=2e-3)
    assert 2 * float(fr["bsf"]) == pytest.approx(4.7135, rel=2e-3)


def test_cwru_envelope_finds_inner_and_outer_race_faults(shared_data: Path) -> None:
    recs = {r.file: r for r in cwru.records(shared_data)}
    inner = next(r for r in recs.values() if r.label == "bearing_inner" and r.size_in == 0.007)
    outer = next(r for r in recs.values() if r.label == "bearing_outer" and r.size_in == 0.021)
    for rec, want in ((inner, "bearing_inner"), (outer, "bearing_outer")):
        w = cwru.windows(cwru.load_signal(rec, shared_data), 12000)[:4]
        f = featurize(w, cwru.FS, rec.rpm / 60, cwru.SKF6205, extended=True)
        rows = [{k: float(v[i]) for k, v in f.items()} for i in range(w.shape[0])]
        assert [cwru.envelope_only(r) for r in rows] == [want] * len(rows), rec.file


def test_cwru_bearing_held_out_protocol_on_a_subset(shared_data: Path) -> None:
    rows = cwru.featurise_all(window=12000, root=shared_data, max_windows=3, multiband=True)
    assert {r["label"] for r in rows} == {"bearing_inner", "bearing_ball", "bearing_outer", "normal"}
    res = cwru.evaluate(rows)
    # The multi-band envelope vote (no training, no choice among its rules): on this subset (3 windows a
    # record) macro F1 0.747 (full set 0.735, docs/health-validation.md), above envelope analysis alone.
    vote = res["envelope_multiband_vote"]
    assert vote["macro_f1"] == pytest.approx(0.747, abs=0.02)
    assert vote["macro_f1"] >= 0.70 > res["envelope_only"]["macro_f1"]
    assert vote["per_class_f1"]["bearing_inner"] > 0.7 and vote["per_class_f1"]["bearing_outer"] > 0.85
    assert set(res["multiband_rules_chosen"]) == {"0.007", "0.014", "0.021", "0.028"}
    # The nested alternative (issue 14): the rules' evidence stacked by a regression trained on the other sizes
    # only. Subset 0.749 (full set 0.754, docs), above the rule picked on the training sizes (subset 0.656).
    stacked = res["envelope_multiband_stacked_on_train"]
    assert stacked["macro_f1"] == pytest.approx(0.749, abs=0.02)
    assert stacked["macro_f1"] > res["envelope_multiband_rule_selected_on_train"]["macro_f1"]
    assert min(stacked["per_class_f1"].values()) > 0.55
    # Inner/outer race faults are diagnosable by envelope analysis alone (Smith & Randall 2015), ball
    # faults often are not: macro F1 well above chance (1/3), per class reported.
    assert res["envelope_only"]["macro_f1"] > 0.5
    assert set(res["classifier"]["per_class_f1"]) == set(cwru.CLASSES)
    det = cwru.evaluate_detection(cwru.featurise_all(window=2048, root=shared_data, max_windows=8))
    assert det["auroc"] > 0.9


def test_skab_protocol_on_a_subset(shared_data: Path) -> None:
    res = skab.evaluate(kinds=("mahalanobis",), far=0.01, root=shared_data, max_files=6)
    m = res["mahalanobis"]
    assert m["tp"] + m["fn"] > 0 and m["fp"] + m["tn"] > 0
    assert m["f1"] > 0.5  # a detector worth having, far above the isolation-forest row (0.29)


def test_ims_healthy_run_in_raises_no_alarm(shared_data: Path) -> None:
    res = ims.evaluate(root=shared_data)
    assert res["scored"] == 200 and res["alarms"] == 0
    assert res["hi_median"] > 80


def test_missing_data_folder_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spinline.health.validation import DataMissing, data_dir

    monkeypatch.setenv("SPINLINE_DATA", str(tmp_path / "nope"))
    with pytest.raises(DataMissing, match="SPINLINE_DATA"):
        data_dir()


# --- `spinline health fit/score` on the real sets, figures pinned as docs/health-validation.md reports them ----

def _bench() -> object:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "bench" / "health_byod.py"
    spec = importlib.util.spec_from_file_location("health_byod", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_on_ims_test2_warns_a_day_ahead_with_no_false_alarm(shared_data: Path, tmp_path: Path) -> None:
    """One asset per bearing (--asset-column), baseline = each bearing's first day, the amplitude declared
    --rising. Pinned: bearing 1 alarms 2004-02-16 07:02, 71.3 h before the end of the run; no bearing alarms
    before bearing 1's visible onset (02-16 03:00) -- the healthy drift of bearings 2 and 3 is downwards."""
    res = _bench().ims_set(tmp_path, 144)  # type: ignore[attr-defined]
    assert res["first_alarm_bearing1"].startswith("2004-02-16 07:02")
    assert res["spinline"] == pytest.approx(71.3, abs=1.0) and res["spinline"] >= 24
    assert res["alarms_before_onset"] == 0
    # The literal "first 4 days" end 02-16 10:52, 4 h after bearing 1's (true) alarm: 1 alarm there.
    assert res["alarms_in_first_4_days"] == 1
    assert all(v >= "2004-02-16 22" for k, v in res["first_alarm_per_bearing"].items() if k != "bearing1")
    scored = __import__("pandas").read_csv(tmp_path / "ims144_scored.csv")
    b1 = scored[scored["bearing"] == "bearing1"]
    assert b1["health_index"].iloc[-30:-2].median() < 30  # the last hours before the signal stops: "act now"
    assert b1["health_index"].iloc[200:500].median() > 60  # days 1.4-3.5: not "plan maintenance"


def test_ims_test2_bearing1_has_left_its_baseline_before_the_literal_four_day_mark(shared_data: Path) -> None:
    """The data alone, no detector: bearing 1's hourly mean amplitude stays above 6 robust sd of its first
    day from 02-16 04:12 to the end, and reads ~10 sd when the literal "first 4 days" end (10:52), while the
    other three bearings sit within 2.5 sd of theirs. So "no alarm in the first 4 days" and "warn as soon as
    the data shows it" cannot both hold on this run; spinline's alarm (07:02) is on the second."""
    bench = _bench()
    long = bench.ims_long(__import__("pandas").read_csv(  # type: ignore[attr-defined]
        shared_data / "ims" / "test2_averaged" / "Averaged_BearingTest_Dataset.csv"))
    ev = bench.ims_onset_evidence(long, 144)  # type: ignore[attr-defined]
    assert ev["sustained_above_6sd_from"].startswith("2004-02-16 04:")
    assert ev["sustained_above_6sd_from"] < ev["four_day_mark"]
    assert ev["hourly_sd_at_4_day_mark"] == pytest.approx(9.9, abs=0.5)
    for other in ("bearing2", "bearing3", "bearing4"):
        alone = long[long["bearing"] == other].assign(bearing="bearing1")
        assert abs(bench.ims_onset_evidence(alone, 144)["hourly_sd_at_4_day_mark"]) < 2.5  # type: ignore[attr-defined]


def test_cli_on_skab_leaderboard_protocol(shared_data: Path, tmp_path: Path) -> None:
    """Pinned (far=0.01, defaults: consensus detector, alarm logic for 1 Hz rows): point-wise F1 of the alarm
    state 0.796, FAR 5.2 % -- level with the leaderboard's best (Conv-AE 0.78 / 13.55 %), short of the issue's
    0.80, and ahead of every simple baseline at every level (raw score, smoothed score, alarm; AUROC)."""
    res = _bench().skab_set(tmp_path)  # type: ignore[attr-defined]
    assert res["spinline_detail"]["f1"] == pytest.approx(0.796, abs=0.03)
    assert res["spinline_detail"]["far_pct"] == pytest.approx(5.2, abs=1.5)
    assert res["levels"]["raw"]["spinline"]["f1"] == pytest.approx(0.742, abs=0.03)
    assert res["auroc_raw"]["spinline"] == pytest.approx(0.849, abs=0.02)
    assert res["chosen"] == "consensus"
    assert res["not_worse"]


def test_cli_on_cwru_detection(shared_data: Path, tmp_path: Path) -> None:
    """AUROC 1.0 -- but the healthy record is 48 kHz resampled to 12 kHz at 0 hp, the faults native 12 kHz at
    0-3 hp, so part of the separation may be the recording, not the bearing."""
    res = _bench().cwru_set(tmp_path)  # type: ignore[attr-defined]
    assert res["spinline"] >= 0.99
    assert "resampled" in res["caveat"]


@pytest.mark.parametrize(("kind", "seed", "ours", "best"), [
    ("regimes", 2, 0.852, 0.781), ("levels", 1, 0.862, 0.863), ("short", 3, 0.853, 0.870)])
def test_cli_on_simulated_fleets(tmp_path: Path, kind: str, seed: int, ours: float, best: float) -> None:
    """The three simulated fleets of docs/health-validation.md, section 0 (no shared data needed). Pinned:
    the three-regime fleet 0.852 with speed bands (0.742 with the fleet's line alone), ahead of the forest's
    0.781; the other two level with robust z, a hair under it (-0.001, -0.017: within the spread between
    seeds, which the bench's extra_seeds report)."""
    res = _bench().fleet_set(tmp_path, kind, seed)  # type: ignore[attr-defined]
    assert res["spinline"] == pytest.approx(ours, abs=0.015)
    assert res["best_baseline"] == pytest.approx(best, abs=0.005)
    if kind == "regimes":
        assert res["not_worse"] and res["spinline"] - res["best_baseline"] > 0.04


def test_seed_summary_tells_a_tie_from_a_loss() -> None:
    """The bench's paired summary over seeds: a difference that changes sign with the seed is a tie, one that
    is behind on every seed by more than its spread is a loss (docs/health-validation.md, section 0)."""
    summary = _bench().seed_summary  # type: ignore[attr-defined]

    def rows(diffs: list[float]) -> list[dict[str, float]]:
        return [{"spinline": 0.85 + d, "robust_z": 0.85, "iforest": 0.80, "pca_recon": 0.80,
                 "best_baseline": 0.85} for d in diffs]

    tie = summary(rows([-0.01, 0.008, -0.004, 0.012, -0.006, 0.003]))
    assert tie["seeds"] == 6 and not tie["vs_robust_z"]["behind_beyond_chance"]
    assert tie["vs_robust_z"]["seeds_behind"] == 3 and tie["vs_iforest"]["ci95"][0] > 0
    loss = summary(rows([-0.02, -0.025, -0.018, -0.022, -0.03, -0.019]))
    assert loss["vs_robust_z"]["behind_beyond_chance"] and loss["vs_best_of_three_per_seed"]["ci95"][1] < 0
