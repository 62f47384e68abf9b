"""Bring-your-own-data health models against simple baselines, on every real set and on simulated fleets.

Every spinline figure goes through the public CLI path (``spinline health fit`` then ``score``,
in process through Typer's runner, on a table written to disk exactly as a user would). The
baselines are computed in the same run, on the same normal rows, per asset where the set has
assets, with their threshold at the same false-alarm rate (1 %) on those normal rows:

* ``robust_z``: max over features of |x - median| / (1.4826 MAD);
* ``iforest``: scikit-learn ``IsolationForest`` (100 trees, seed 0) on standardised features;
* ``pca_recon``: scikit-learn ``PCA`` keeping 90 % of the variance of the standardised normal rows;
  the score is the squared reconstruction error.

Metric per set, as the set defines it: SKAB point-wise F1 over the test rows (leaderboard protocol:
first 400 rows of each experiment train); CWRU detection AUROC; IMS test 2 hours of warning before
the end of the run with no alarm before the visible onset; simulated fleets AUROC over the rows
after each asset's baseline. Runs alone too: ``.venv/bin/python bench/health_byod.py`` (one JSON line).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from typer.testing import CliRunner

from spinline.cli import app
from spinline.health.assess import alarm_states, default_alarm_settings
from spinline.health.checks import roc_auc
from spinline.health.validation import cwru, data_dir, skab

FAR = 0.01
_runner = CliRunner()
#: Seeds of the simulated fleets beyond the bench's own (levels 1, regimes 2, short 3).
#: 11-23 since 2026-12-04; 101-106 were run by hand on 2026-12-05 and joined the bench on the same day.
EXTRA_SEEDS: dict[str, tuple[int, ...]] = {k: (*first, *range(101, 107)) for k, first in (
    ("levels", (11, 21)), ("regimes", (12, 22)), ("short", (13, 23)))}
BASELINE_NAMES = ("robust_z", "iforest", "pca_recon")
IMS_ONSET = pd.Timestamp("2004-02-16 03:00")  # bearing 1's mean amplitude leaves its band (README: derived file)


def run_cli(df: pd.DataFrame, work: Path, name: str, fit_args: list[str], score_args: list[str] | None = None,
            ) -> tuple[pd.DataFrame, str, str]:
    data, model, out = work / f"{name}.csv", work / f"{name}.json", work / f"{name}_scored.csv"
    df.to_csv(data, index=False)
    r = _runner.invoke(app, ["health", "fit", str(data), "--out", str(model), "--far", str(FAR), *fit_args])
    if r.exit_code != 0:
        raise RuntimeError(r.output)
    s = _runner.invoke(app, ["health", "score", str(data), "--model", str(model), "--out", str(out),
                             *(score_args or [])])
    if s.exit_code != 0:
        raise RuntimeError(s.output)
    return pd.read_csv(out), r.output, s.output


def baselines(x: np.ndarray, normal: np.ndarray, assets: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (scores / threshold, over-threshold)} per row, each fitted per asset on its normal rows.

    The scores are divided by their threshold so that, like spinline's, 1 is the threshold: the same
    alarm logic (``assess.alarm_states``) can then be applied to them."""
    out = {k: (np.zeros(len(x)), np.zeros(len(x), dtype=bool)) for k in ("robust_z", "iforest", "pca_recon")}
    for a in pd.unique(assets):
        rows = assets == a
        tr = x[rows & normal]
        xa = x[rows]
        med = np.nanmedian(tr, axis=0)
        mad = np.maximum(1.4826 * np.nanmedian(np.abs(tr - med), axis=0), 1e-9)
        mu, sd = np.nanmean(tr, axis=0), np.maximum(np.nanstd(tr, axis=0), 1e-9)
        zt, za = np.nan_to_num((tr - mu) / sd), np.nan_to_num((xa - mu) / sd)
        f = IsolationForest(n_estimators=100, random_state=0).fit(zt)
        pca = PCA(n_components=0.9, svd_solver="full").fit(zt)

        def recon(z: np.ndarray, pca: PCA = pca) -> np.ndarray:
            return np.asarray(((z - pca.inverse_transform(pca.transform(z))) ** 2).sum(axis=1))

        for name, s_tr, s_a in (
                ("robust_z", np.nanmax(np.abs((tr - med) / mad), axis=1), np.nanmax(np.abs((xa - med) / mad), axis=1)),
                ("iforest", -f.score_samples(zt), -f.score_samples(za)),
                ("pca_recon", recon(zt), recon(za))):
            thr = float(np.quantile(s_tr, 1 - FAR))
            out[name][0][rows] = s_a / max(thr, 1e-12)
            out[name][1][rows] = s_a > thr
    return out


def f1_far(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    tp, fp = int(np.sum(pred & (y == 1))), int(np.sum(pred & (y == 0)))
    fn, tn = int(np.sum(~pred & (y == 1))), int(np.sum(~pred & (y == 0)))
    return {"f1": round(2 * tp / max(2 * tp + fp + fn, 1), 3), "far_pct": round(100 * fp / max(fp + tn, 1), 2),
            "mar_pct": round(100 * fn / max(fn + tp, 1), 2)}


def _entry(metric: str, ours: float, base: dict[str, float], extra: dict[str, Any]) -> dict[str, Any]:
    best = max(base.values())
    return {"metric": metric, "spinline": round(ours, 3), **{k: round(v, 3) for k, v in base.items()},
            "best_baseline": round(best, 3), "not_worse": bool(ours >= best - 1e-9), **extra}


def skab_set(work: Path) -> dict[str, Any]:
    parts = []
    for p in skab.files():
        d = skab.load(p).reset_index()
        d.insert(0, "experiment", f"{p.parent.name}/{p.stem}")
        parts.append(d)
    df = pd.concat(parts, ignore_index=True)
    res, fit_out, _ = run_cli(df, work, "skab", ["--normal", f"0:{skab.N_TRAIN}", "--asset-column", "experiment",
                                                 "--label", "anomaly"], ["--no-rul"])
    test = (df.groupby("experiment").cumcount() >= skab.N_TRAIN).to_numpy()
    y = df["anomaly"].to_numpy(dtype=int)[test]
    assets = df["experiment"].to_numpy()
    s_ours = res["anomaly_score"].to_numpy()
    x = df[list(skab.FEATURES)].to_numpy(dtype=float)
    b = baselines(x, ~test, assets)
    settings = default_alarm_settings(1.0)  # SKAB is 1 Hz: the CLI's default for rows every <= 2 s
    scores = {"spinline": s_ours, **{k: v[0] for k, v in b.items()}}
    levels: dict[str, dict[str, Any]] = {"raw": {}, "smoothed": {}, "alarm": {}}
    auroc: dict[str, float] = {}
    for k, s in scores.items():
        smooth, _, active = alarm_states(s, assets, settings)
        levels["raw"][k] = f1_far(s[test] > 1, y)
        levels["smoothed"][k] = f1_far(smooth[test] > 1, y)
        levels["alarm"][k] = f1_far(active[test].astype(bool), y)
        auroc[k] = round(roc_auc(s[test][y == 0], s[test][y == 1]), 3)
    # A bound, not a result: the best point-wise F1 any single threshold on spinline's smoothed score
    # could reach with FAR <= 15 %, found on the test labels themselves (nothing is chosen from it).
    sm_test = alarm_states(s_ours, assets, settings)[0][test]
    oracle = max((f1_far(sm_test > q, y) for q in np.quantile(sm_test, np.linspace(0.01, 0.99, 99))),
                 key=lambda r: r["f1"] if r["far_pct"] <= 15 else -1.0)
    cli_alarm = f1_far(res["alarm_active"].to_numpy(dtype=bool)[test], y)
    assert cli_alarm == levels["alarm"]["spinline"], (cli_alarm, levels["alarm"]["spinline"])
    chosen = json.loads((work / "skab.json").read_text())["fleet"]["selection"]["chosen"]
    per_level = {lv: {"spinline": r["spinline"]["f1"], "best_baseline": max(v["f1"] for k, v in r.items()
                                                                            if k != "spinline"),
                      "not_worse": bool(r["spinline"]["f1"] >= max(v["f1"] for k, v in r.items() if k != "spinline"))}
                 for lv, r in levels.items()}
    ours = levels["alarm"]["spinline"]
    entry = _entry("F1 (point-wise over the test rows, leaderboard protocol) of the alarm state: the CLI's default "
                   "alarm logic for 1 Hz rows, applied to the baselines' calibrated scores too", ours["f1"],
                   {k: v["f1"] for k, v in levels["alarm"].items() if k != "spinline"},
                   {"spinline_detail": ours, "levels": levels, "per_level": per_level, "auroc_raw": auroc,
                    "bound_best_threshold_on_test_labels_far_le_15": oracle,
                    "alarm_settings": settings.describe(), "chosen": chosen,
                    "target": "F1 >= 0.80 with FAR <= 15 %",
                    "target_met": bool(ours["f1"] >= 0.8 and ours["far_pct"] <= 15)})
    entry["not_worse"] = bool(all(v["not_worse"] for v in per_level.values())
                              and auroc["spinline"] >= max(v for k, v in auroc.items() if k != "spinline"))
    return entry


def cwru_set(work: Path) -> dict[str, Any]:
    rows = cwru.featurise_all(window=2048)
    df = pd.DataFrame(rows)
    feats = ["rms_g", "peak_g", "crest", "kurtosis", "skewness", "velocity_rms", "env_bpfo", "env_bpfi", "env_bsf",
             "env_ftf"]
    normal_idx = np.flatnonzero((df["label"] == "normal").to_numpy())
    half = normal_idx[: normal_idx.size // 2]
    df["baseline"] = 0
    df.loc[half, "baseline"] = 1
    res, _, _ = run_cli(df[[*feats, "label", "baseline"]], work, "cwru", ["--normal", "baseline=1", "--features",
                                                                           ",".join(feats)], ["--no-rul"])
    is_norm = df["label"].to_numpy() == "normal"
    held = is_norm & (df["baseline"].to_numpy() == 0)
    fault = ~is_norm
    s = res["anomaly_score"].to_numpy()
    b = baselines(df[feats].to_numpy(dtype=float), df["baseline"].to_numpy() == 1, np.zeros(len(df)))
    base = {k: roc_auc(v[0][held], v[0][fault]) for k, v in b.items()}
    return _entry("detection AUROC (held-back healthy windows vs every fault window)", roc_auc(s[held], s[fault]),
                  base, {"caveat": "the healthy record is 48 kHz resampled to 12 kHz at 0 hp; the fault records are "
                                   "native 12 kHz at 0-3 hp: part of the separation may be recording, not bearing",
                         "n_healthy_baseline": int(half.size), "n_healthy_held": int(held.sum()),
                         "n_fault": int(fault.sum())})


def ims_long(df: pd.DataFrame) -> pd.DataFrame:
    """The averaged IMS file (one column per bearing) as one row per bearing and snapshot."""
    tcol = df.columns[0]
    long = df.melt(id_vars=[tcol], var_name="bearing", value_name="mean_abs_g").rename(columns={tcol: "time"})
    long["bearing"] = long["bearing"].str.replace(" ", "").str.lower()
    return long


def ims_onset_evidence(long: pd.DataFrame, baseline_rows: int) -> dict[str, Any]:
    """How far bearing 1 has left its own baseline when the literal "first 4 days" end, read off the data alone.

    The issue's target asks for no alarm in the first 4 days *and* a warning a day before failure. This
    says whether the data allows both: bearing 1's hourly mean amplitude (6 snapshots) in robust standard
    deviations (1.4826 MAD) of its baseline rows, the first hour from which it stays above 6 of them to the
    end of the run, and its value at the 4-day mark. No detector and no label is involved."""
    b1 = long[long["bearing"] == "bearing1"]
    t = pd.to_datetime(b1["time"]).reset_index(drop=True)
    v = b1["mean_abs_g"].to_numpy(dtype=float)
    base = v[:baseline_rows]
    med = float(np.median(base))
    sd = 1.4826 * float(np.median(np.abs(base - med)))
    z_hour = pd.Series((v - med) / sd).rolling(6).mean().to_numpy()
    above = np.nan_to_num(z_hour, nan=0.0) > 6.0
    tail_ok = np.flip(np.logical_and.accumulate(np.flip(above)))  # above from here to the end
    first = int(np.argmax(tail_ok)) if tail_ok.any() else None
    mark = t.iloc[0] + pd.Timedelta(days=4)
    at_mark = int(np.searchsorted(t.to_numpy(), mark.to_datetime64())) - 1
    return {"baseline_rows": baseline_rows, "robust_sd_g": round(sd, 6),
            "sustained_above_6sd_from": str(t.iloc[first]) if first is not None else None,
            "hourly_sd_at_4_day_mark": round(float(z_hour[at_mark]), 1), "four_day_mark": str(mark)}


def ims_set(work: Path, baseline_rows: int) -> dict[str, Any]:
    """IMS test 2 through the CLI, one asset per bearing (``--asset-column bearing``), the mean absolute
    acceleration declared ``--rising`` (a bearing that gets quieter is not failing). Lead time: hours from
    bearing 1's first alarm to the end of the run, 0 if any bearing alarms before the visible onset."""
    path = data_dir() / "ims" / "test2_averaged" / "Averaged_BearingTest_Dataset.csv"
    long = ims_long(pd.read_csv(path))
    t = pd.to_datetime(long["time"])
    end = t.max()
    res, _, score_out = run_cli(long, work, f"ims{baseline_rows}",
                                ["--normal", f"0:{baseline_rows}", "--asset-column", "bearing",
                                 "--rising", "mean_abs_g"])
    raised = (res["alarm_raised"].to_numpy() == 1)
    b1 = (long["bearing"] == "bearing1").to_numpy()
    first_b1 = t[raised & b1].min() if (raised & b1).any() else None
    early = int((t[raised] < IMS_ONSET).sum())
    four_days = int((t[raised] < t.min() + pd.Timedelta(days=4)).sum())
    per_bearing = {str(b): str(t[raised & (long["bearing"] == b).to_numpy()].min())
                   for b in long["bearing"].unique() if (raised & (long["bearing"] == b).to_numpy()).any()}

    def lead(ts: pd.Timestamp | None, n_early: int) -> float:
        return round((end - ts).total_seconds() / 3600, 1) if ts is not None and n_early == 0 else 0.0

    x = long[["mean_abs_g"]].to_numpy(dtype=float)
    assets = long["bearing"].to_numpy(dtype=object)
    idx_in_asset = long.groupby("bearing").cumcount().to_numpy()
    normal = idx_in_asset < baseline_rows
    b = baselines(x, normal, assets)
    base = {}
    detail = {}
    settings = default_alarm_settings(600.0)  # the CLI's default for 10-minute rows, as spinline got
    for k, (sc, _) in b.items():
        _, raised_k, _ = alarm_states(np.where(normal, 0.0, sc), assets, settings)
        firsts = {a: (t[(raised_k == 1) & (assets == a)].min() if ((raised_k == 1) & (assets == a)).any() else None)
                  for a in pd.unique(assets)}
        n_early = sum(1 for v in firsts.values() if v is not None and v < IMS_ONSET)
        base[k] = lead(firsts["bearing1"], n_early)
        detail[k] = {a: str(v) for a, v in firsts.items()}
    ours = lead(first_b1, early)
    return _entry(f"hours of warning (bearing 1) before the end of the run, 0 if any bearing alarms before the "
                  f"onset (baseline rows 0:{baseline_rows} per bearing)", ours, base,
                  {"first_alarm_bearing1": str(first_b1), "first_alarm_per_bearing": per_bearing,
                   "alarms_before_onset": early, "alarms_in_first_4_days": four_days,
                   "onset_used": str(IMS_ONSET), "end": str(end), "baseline_first_alarm": detail,
                   "bearing1_departure": ims_onset_evidence(long, baseline_rows),
                   "target": ">= 24 h warning, no false alarm in the healthy first days",
                   "target_met_before_onset": bool(ours >= 24 and early == 0),
                   "target_met_literal_4_days": bool(ours >= 24 and four_days == 0)})


def fleet_frame(seed: int, kind: str) -> pd.DataFrame:
    """Simulated fleets: assets of different levels, noise and operating regimes; faults on some assets."""
    rng = np.random.default_rng(seed)
    parts = []
    for a in range(8):
        n = 1500
        regime = rng.integers(0, 3, n) if kind == "regimes" else np.zeros(n, dtype=int)
        regime = np.repeat(regime[::50], 50)[:n]  # regimes last 50 rows
        speed = np.array([1200.0, 1500.0, 1800.0])[regime]
        noise = (0.02 if a % 4 else 0.08) * (1 + regime)
        base = 1 + 0.2 * a
        vib = base * (speed / 1500) ** 2 + noise * rng.standard_normal(n)
        temp = 40 + 5 * a / 8 + 3 * (speed / 1500 - 1) + 0.3 * rng.standard_normal(n)
        cur = 20 + 0.01 * speed + 0.4 * (vib - base) + 0.2 * rng.standard_normal(n)
        y = np.zeros(n, dtype=int)
        if a in (1, 2, 5):
            start = int(rng.integers(900, 1200))
            y[start:] = 1
            ramp = np.linspace(0, 1, n - start)
            if a == 1:
                vib[start:] += 6 * noise[start:] * ramp
            elif a == 2:
                cur[start:] += 1.5 * ramp  # current decouples from vibration (a relationship breaks)
            else:
                temp[start:] += 2.5 * ramp
        n_base = 200 if kind == "short" and a >= 4 else 600
        parts.append(pd.DataFrame({"asset": f"a{a}", "vib": vib, "temp": temp, "current": cur, "rpm": speed,
                                   "fault": y, "baseline": (np.arange(n) < n_base).astype(int)}))
    return pd.concat(parts, ignore_index=True)


def fleet_set(work: Path, kind: str, seed: int) -> dict[str, Any]:
    df = fleet_frame(seed, kind)
    res, fit_out, _ = run_cli(df, work, f"fleet_{kind}", ["--normal", "baseline=1", "--asset-column", "asset",
                                                          "--label", "fault", "--speed", "rpm"], ["--no-rul"])
    after = df["baseline"].to_numpy() == 0
    y = df["fault"].to_numpy()
    s = res["anomaly_score"].to_numpy()
    feats = ["vib", "temp", "current"]
    b = baselines(df[feats].to_numpy(dtype=float), ~after, df["asset"].to_numpy())
    base = {k: roc_auc(v[0][after & (y == 0)], v[0][after & (y == 1)]) for k, v in b.items()}
    chosen = json.loads((work / f"fleet_{kind}.json").read_text())["fleet"]["selection"]["chosen"]
    return _entry("AUROC over rows after each asset's baseline", roc_auc(s[after & (y == 0)], s[after & (y == 1)]),
                  base, {"chosen": chosen, "assets": 8, "faulty_assets": 3})


def seed_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """spinline minus each baseline over a fleet's seeds: mean and a 95 % t-interval of the paired differences.

    Why beside the per-seed verdict: on one seed a difference of 0.01 AUROC is within the seed-to-seed
    spread, and "the best of three baselines on this seed" picks whichever was luckiest, so a tie reads
    as a loss about half the time. The paired interval says whether spinline is behind a baseline by
    more than chance; the verdict per seed is kept as it was."""
    from scipy import stats

    def interval(d: np.ndarray) -> dict[str, Any]:
        m = float(np.mean(d))
        n = d.size
        half = float(stats.t.ppf(0.975, n - 1) * np.std(d, ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
        return {"mean": round(m, 4), "ci95": [round(m - half, 4), round(m + half, 4)],
                "behind_beyond_chance": bool(m + half < 0), "seeds_behind": int(np.sum(d < 0))}

    ours = np.array([r["spinline"] for r in rows], dtype=float)
    out: dict[str, Any] = {"seeds": len(rows)}
    for name in BASELINE_NAMES:
        out[f"vs_{name}"] = interval(ours - np.array([r[name] for r in rows], dtype=float))
    out["vs_best_of_three_per_seed"] = interval(ours - np.array([r["best_baseline"] for r in rows], dtype=float))
    return out


def compare_all() -> dict[str, Any]:
    t0 = time.perf_counter()
    out: dict[str, Any] = {"far": FAR, "sets": {}, "extra_seeds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out["sets"]["skab"] = skab_set(work)
        out["sets"]["cwru_detection"] = cwru_set(work)
        out["sets"]["ims_test2_baseline_1day"] = ims_set(work, 144)
        out["sets"]["ims_test2_baseline_2days"] = ims_set(work, 288)
        for kind, seed in (("levels", 1), ("regimes", 2), ("short", 3)):
            out["sets"][f"sim_fleet_{kind}"] = fleet_set(work, kind, seed)
        # Two more seeds per fleet: a fix must hold beyond the seeds it was looked at on. Reported
        # beside the sets, not in "never_worse" (which is over the sets above, as before).
        for kind, seeds in EXTRA_SEEDS.items():
            out["extra_seeds"][kind] = []
            for seed in seeds:
                r = fleet_set(work, kind, seed)
                out["extra_seeds"][kind].append({"seed": seed, **{k: r[k] for k in (
                    "spinline", "robust_z", "iforest", "pca_recon", "best_baseline", "not_worse")},
                    "diff": round(r["spinline"] - r["best_baseline"], 3)})
    out["never_worse"] = all(r["not_worse"] for r in out["sets"].values())
    out["seed_summary"] = {kind: seed_summary([out["sets"][f"sim_fleet_{kind}"], *out["extra_seeds"][kind]])
                           for kind in EXTRA_SEEDS}
    out["elapsed_s"] = round(time.perf_counter() - t0, 1)
    return out


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    res = compare_all()
    for name, r in res["sets"].items():
        print(f"{name} ({r['metric']}): spinline {r['spinline']} vs robust_z {r['robust_z']}, iforest {r['iforest']}, "  # noqa: T201
              f"pca_recon {r['pca_recon']} -> {'not worse' if r['not_worse'] else 'WORSE'}")
    for kind, rows in res["extra_seeds"].items():
        print(f"sim_fleet_{kind}, other seeds: " + ", ".join(  # noqa: T201
            f"seed {r['seed']} spinline {r['spinline']} vs best {r['best_baseline']} ({r['diff']:+.3f})" for r in rows))
    for kind, summ in res["seed_summary"].items():
        print(f"sim_fleet_{kind}, {summ['seeds']} seeds, spinline minus: " + ", ".join(  # noqa: T201
            f"{k[3:]} {v['mean']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]" for k, v in summ.items()
            if k.startswith("vs_")))
    print(json.dumps({"bench": "health_byod", **res}, separators=(",", ":"), default=str))  # noqa: T201
