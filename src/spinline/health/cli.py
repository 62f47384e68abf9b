"""``spinline health``: bring your own data.

``spinline health fit DATA --normal ROWS --out MODEL`` learns a baseline from the rows the user
says were normal; ``spinline health score DATA --model MODEL --out OUT`` writes, per row, the
calibrated anomaly score, whether an alarm is active (and where one is raised), the health index
with its driver and the feature that moved most. DATA is CSV (``,`` or ``;``) or Parquet; the
model is JSON (no pickles: a model file is data, safe to share and to read).

ROWS is either row ranges (``0:400`` or ``0:400,1000:1200``; half-open, 0-based) or
``COLUMN=VALUE`` (e.g. ``anomaly=0``: every row whose column equals the value).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import typer

from spinline.health.alarms import AlarmEngine, AnomalyRule
from spinline.health.anomaly import DETECTORS, BaselineDetector
from spinline.health.health_index import health_index

app = typer.Typer(help="Equipment health: learn a baseline from your data and score it.", no_args_is_help=True,
                  add_completion=False)

MODEL_FORMAT = "spinline-health-model/1"
_TIME_NAMES = ("time", "timestamp", "datetime", "date", "ts")


def read_table(path: Path) -> pd.DataFrame:
    """CSV (separator sniffed from the header: ``;`` or ``,``) or Parquet, by extension."""
    if not path.is_file():
        raise typer.BadParameter(f"{path} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    with path.open(encoding="utf-8") as fh:
        head = fh.readline()
    sep = ";" if head.count(";") > head.count(",") else ","
    return pd.read_csv(path, sep=sep)


def write_table(df: pd.DataFrame, path: Path) -> None:
    if path.suffix.lower() in (".parquet", ".pq"):
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)


def select_rows(df: pd.DataFrame, spec: str) -> np.ndarray:
    """Boolean mask of the rows named by ``spec`` (ranges ``a:b,c:d`` or ``COLUMN=VALUE``)."""
    mask = np.zeros(len(df), dtype=bool)
    if "=" in spec:
        col, val = spec.split("=", 1)
        if col not in df.columns:
            raise typer.BadParameter(f"--normal: no column {col!r} (have: {', '.join(map(str, df.columns))})")
        column = df[col]
        try:
            mask |= (column.astype(float) == float(val)).to_numpy()
        except ValueError:
            mask |= (column.astype(str) == val).to_numpy()
        return mask
    for part in spec.split(","):
        a, _, b = part.strip().partition(":")
        try:
            lo = int(a) if a else 0
            hi = int(b) if b else len(df)
        except ValueError:
            raise typer.BadParameter(f"--normal: {part!r} is not a row range like 0:400") from None
        mask[max(lo, 0):min(hi, len(df))] = True
    return mask


def _time_column(df: pd.DataFrame) -> str | None:
    return next((c for c in df.columns if str(c).lower() in _TIME_NAMES), None)


def _feature_columns(df: pd.DataFrame, exclude: set[str]) -> list[str]:
    return [str(c) for c in df.columns if c not in exclude and pd.api.types.is_numeric_dtype(df[c])]


@app.command()
def fit(data: Path = typer.Argument(..., help="CSV or Parquet of measurements, one row per sample"),
        normal: str = typer.Option(..., "--normal", help="rows known to be normal: 0:400 or COLUMN=VALUE"),
        out: Path = typer.Option(..., "--out", help="model file to write (JSON)"),
        features: str | None = typer.Option(None, help="comma-separated feature columns (default: all numeric)"),
        label: list[str] = typer.Option([], "--label", help="label column(s) to leave out of the features"),
        speed: str | None = typer.Option(None, help="operating-speed column to condition on"),
        kind: str = typer.Option("mahalanobis", help=f"detector: {', '.join(DETECTORS)}"),
        far: float = typer.Option(0.01, help="false-alarm rate you accept on normal data (0-1)"),
        velocity: str | None = typer.Option(None, help="velocity RMS column (mm/s) for the ISO part of the index"),
        machine_class: str = typer.Option("I", help="ISO 20816 machine class I-IV"),
        seed: int = typer.Option(0)) -> None:
    """Learn a baseline from the normal rows of DATA and save it."""
    df = read_table(data)
    if kind not in DETECTORS:
        raise typer.BadParameter(f"--kind must be one of {', '.join(DETECTORS)}")
    exclude = set(label) | {speed or ""} | {_time_column(df) or ""}
    cols = [c.strip() for c in features.split(",")] if features else _feature_columns(df, exclude)
    missing = [c for c in cols + ([speed] if speed else []) if c not in df.columns]
    if missing:
        raise typer.BadParameter(f"no column(s) {', '.join(missing)} in {data}")
    mask = select_rows(df, normal)
    if mask.sum() < 8:
        raise typer.BadParameter(f"--normal selects {int(mask.sum())} rows; at least 8 are needed")
    det = DETECTORS[kind](far=far, features=cols, speed_key=speed, min_samples=min(20, int(mask.sum())), seed=seed,
                          max_samples=max(5000, int(mask.sum())))
    for row in df.loc[mask, cols + ([speed] if speed else [])].to_dict("records"):
        det.learn_one(row)
    model = {"format": MODEL_FORMAT, "created": datetime.now().isoformat(timespec="seconds"),
             "source": str(data), "normal": normal, "velocity": velocity, "machine_class": machine_class,
             "detector": det.to_dict()}
    out.write_text(json.dumps(model), encoding="utf-8")
    typer.echo(f"{kind} baseline from {int(mask.sum())} normal rows, {len(cols)} features, "
               f"threshold {det.threshold:.3g} at far={far} -> {out}")


@app.command()
def score(data: Path = typer.Argument(..., help="CSV or Parquet with the model's feature columns"),
          model: Path = typer.Option(..., "--model", help="model file from `spinline health fit`"),
          out: Path = typer.Option(..., "--out", help="CSV or Parquet to write"),
          asset: str = typer.Option("asset", help="asset name used in alarm messages"),
          on_delay: int = typer.Option(1, help="consecutive anomalous rows before an alarm is raised"),
          label: str | None = typer.Option(None, help="0/1 label column: print F1, false/missed-alarm rates"),
          ) -> None:
    """Score every row of DATA: anomaly score, alarms and the health index per row."""
    m = json.loads(model.read_text(encoding="utf-8"))
    if m.get("format") != MODEL_FORMAT:
        raise typer.BadParameter(f"{model} is not a spinline health model")
    det = BaselineDetector.from_dict(m["detector"])
    assert det.features is not None
    df = read_table(data)
    missing = [c for c in det.features if c not in df.columns]
    if missing:
        raise typer.BadParameter(f"{data} lacks the model's column(s) {', '.join(missing)}")
    x = df[list(det.features)].to_numpy(dtype=np.float64)
    spd = df[det.speed_key].to_numpy(dtype=np.float64) if det.speed_key else None
    scores = det.score_many(x, spd)
    tcol = _time_column(df)
    times = pd.to_datetime(df[tcol]) if tcol else None
    t0 = datetime(1970, 1, 1)
    engine = AlarmEngine([AnomalyRule(on_delay=on_delay, off_delay=max(on_delay, 1))], rearm_s=0)
    vel = m.get("velocity")
    rows: list[dict[str, Any]] = []
    for i, s in enumerate(scores):
        at = times.iloc[i].to_pydatetime() if times is not None else t0 + timedelta(seconds=i)
        raised = engine.evaluate(asset, at, {"anomaly_score": float(s)})
        v = float(df[vel].iloc[i]) if vel else None
        hi = health_index(anomaly_score=float(s), velocity_rms=v, machine_class=m.get("machine_class", "I"))
        rows.append({"anomaly_score": round(float(s), 4), "alarm_raised": int(bool(raised)),
                     "alarm_active": int(bool(engine.open_alarms(asset))), "health_index": hi.value,
                     "status": hi.status, "driver": hi.driver})
    res = pd.DataFrame(rows, index=df.index)
    z = det.explain_one  # the feature that moved most, for rows over the threshold only (cheap enough)
    res["moved_most"] = [max(z(r).items(), key=lambda kv: abs(kv[1]))[0] if s > 1 else ""
                         for r, s in zip(df[list(det.features) + ([det.speed_key] if det.speed_key else [])]
                                         .to_dict("records"), scores, strict=True)]
    keep = [c for c in ([tcol] if tcol else [])]
    outdf = pd.concat([df[keep].reset_index(drop=True), res.reset_index(drop=True)], axis=1)
    write_table(outdf, out)
    n_alarms = len(engine.alarms)
    typer.echo(f"{len(df)} rows scored, {int((scores > 1).sum())} over threshold, {n_alarms} alarm(s) -> {out}")
    if label:
        y = df[label].to_numpy(dtype=int)
        pred = outdf["alarm_active"].to_numpy(dtype=bool)
        tp, fp = int(np.sum(pred & (y == 1))), int(np.sum(pred & (y == 0)))
        fn, tn = int(np.sum(~pred & (y == 1))), int(np.sum(~pred & (y == 0)))
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        typer.echo(f"over all {len(y)} rows: F1 {f1:.3f}  false-alarm rate {100 * fp / max(fp + tn, 1):.1f} %  "
                   f"missed-alarm rate {100 * fn / max(fn + tp, 1):.1f} %")
