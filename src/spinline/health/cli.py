"""``spinline health``: bring your own data.

A worked example, end to end (docs/health.md has it with the output explained)::

    # 1. learn what normal looks like: rows 0-699 of every pump, one baseline per pump
    spinline health fit pumps.csv --normal 0:700 --asset-column pump --label fault --out pumps.json
    # -> lists every column kept or dropped and why, the detector chosen and why,
    #    the false-alarm rate achieved on held-back healthy rows, the alarm delays
    # 2. score everything (or new data with the same columns): per row and per pump
    spinline health score pumps.csv --model pumps.json --out scored.xlsx --label fault
    # -> anomaly_score, alarm_raised, alarm_active, health_index, status, driver, moved_most,
    #    rul_h, rul_low_h, rul_high_h beside every input column; a summary per pump
    # 3. if you know the true remaining life of a run to failure, check the RUL
    spinline health score pumps.csv --model pumps.json --out scored.xlsx --true-rul true_rul_h
    # -> RMSE, PHM08 score and how often the band held the truth

DATA is CSV (``,`` or ``;``), Parquet or XLSX, one row per sample; the model is JSON (no pickles:
a model file is data, safe to share and to read). ROWS is row ranges (``0:400`` or
``0:400,1000:1200``; half-open, 0-based, counted per asset when ``--asset-column`` is given) or
``COLUMN=VALUE`` (e.g. ``anomaly=0``: every row whose column equals the value; the column is then
never a feature). Every bad input stops with one line naming the file, the column and the problem.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import typer

from spinline.health.assess import AlarmSettings, assess, default_alarm_settings, median_interval_s, rul_metrics
from spinline.health.fleet import (
    BEST,
    CANDIDATES,
    CONSENSUS,
    N_PRIOR,
    FleetModel,
    clip_rising,
    fit_fleet,
    rising_floors,
)
from spinline.health.screening import BadInput, find_time_column, numeric_column, screen

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, rich_markup_mode=None)

MODEL_FORMAT = "spinline-health-model/2"
ALL = "all"


def _fail(msg: str) -> NoReturn:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def read_table(path: Path) -> pd.DataFrame:
    """CSV (separator sniffed from the header: ``;`` or ``,``), Parquet or XLSX, by extension."""
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    ext = path.suffix.lower()
    try:
        if ext in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if ext in (".xlsx", ".xlsm"):
            return pd.read_excel(path, engine="openpyxl")
        with path.open(encoding="utf-8-sig") as fh:
            head = fh.readline()
        sep = ";" if head.count(";") > head.count(",") else ","
        return pd.read_csv(path, sep=sep, encoding="utf-8-sig")
    except (ValueError, OSError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"{path}: cannot read it as {ext.lstrip('.') or 'CSV'}: {first}") from None


def write_table(df: pd.DataFrame, path: Path) -> None:
    ext = path.suffix.lower()
    if ext in (".parquet", ".pq"):
        df.to_parquet(path, index=False)
    elif ext in (".xlsx", ".xlsm"):
        df.to_excel(path, index=False, engine="openpyxl")
    else:
        df.to_csv(path, index=False)


def _check_out(path: Path, opt: str) -> None:
    if not path.parent.is_dir():
        raise BadInput(f"{opt} {path}: folder {path.parent} does not exist")


def select_rows(df: pd.DataFrame, spec: str, asset_column: str | None = None) -> tuple[np.ndarray, str | None]:
    """(mask of the rows named by ``spec``, the marker column if ``COLUMN=VALUE``)."""
    mask = np.zeros(len(df), dtype=bool)
    if "=" in spec:
        col, val = spec.split("=", 1)
        if col not in df.columns:
            raise BadInput(f"--normal {spec}: no column {col!r} (have: {', '.join(map(str, df.columns))})")
        column = df[col]
        try:
            mask |= (pd.to_numeric(column, errors="raise") == float(val)).to_numpy()
        except (ValueError, TypeError):
            mask |= (column.astype(str) == val).to_numpy()
        return mask, col
    pos = df.groupby(df[asset_column].astype(str), sort=False).cumcount().to_numpy() if asset_column \
        else np.arange(len(df))
    for part in spec.split(","):
        a, sep, b = part.strip().partition(":")
        try:
            lo = int(a) if a else 0
            hi = int(b) if b else len(df)
        except ValueError:
            raise BadInput(f"--normal: {part!r} is not a row range like 0:400 or COLUMN=VALUE") from None
        if not sep:
            raise BadInput(f"--normal: {part!r} is not a row range like 0:400 or COLUMN=VALUE")
        mask |= (pos >= lo) & (pos < hi)
    return mask, None


def _times_s(df: pd.DataFrame, col: str | None) -> np.ndarray | None:
    if not col:
        return None
    s = df[col]
    if pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(dtype=np.float64)
    t = pd.to_datetime(s, errors="coerce", format="mixed")
    if t.isna().mean() > 0.1:
        return None
    if getattr(t.dt, "tz", None) is not None:
        t = t.dt.tz_convert(None)
    ns = t.to_numpy(dtype="datetime64[ns]").astype("int64").astype(np.float64)
    return np.where(t.isna().to_numpy(), np.nan, ns / 1e9)


def _backwards(t_s: np.ndarray | None, assets: np.ndarray) -> int | None:
    """First row at which time runs backwards within an asset (None if it never does)."""
    if t_s is None:
        return None
    for a in pd.unique(assets):
        rows = np.flatnonzero(assets == a)
        d = np.diff(t_s[rows])
        bad = np.flatnonzero(np.isfinite(d) & (d < 0))
        if bad.size:
            return int(rows[bad[0] + 1])
    return None


def _require(df: pd.DataFrame, cols: list[str | None], source: Path, what: str) -> None:
    missing = [c for c in cols if c and c not in df.columns]
    if missing:
        raise BadInput(f"{source}: no column {', '.join(map(repr, missing))} for {what} (have: "
                       f"{', '.join(map(str, df.columns))})")


def _assets(df: pd.DataFrame, col: str | None) -> np.ndarray:
    return df[col].astype(str).to_numpy(dtype=object) if col else np.full(len(df), ALL, dtype=object)


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.2f} %"


@app.command()
def fit(data: Path = typer.Argument(..., help="CSV, Parquet or XLSX of measurements, one row per sample"),
        normal: str = typer.Option(..., "--normal", help="rows known to be normal: 0:400 (per asset) or COLUMN=VALUE"),
        out: Path = typer.Option(..., "--out", help="model file to write (JSON)"),
        asset_column: str | None = typer.Option(None, "--asset-column",
                                                help="column naming the asset of each row: one baseline each"),
        features: str | None = typer.Option(None, help="comma-separated feature columns (default: screened)"),
        label: list[str] = typer.Option([], "--label", help="label column(s): never features"),
        speed: str | None = typer.Option(None, help="operating-speed column to condition on (a line on log "
                                                   "speed, and each asset's centre and scale per 5 % band "
                                                   "of speed)"),
        kind: str = typer.Option("auto", help="detector: auto (consensus of the stable candidates, each "
                                               "judged on normal rows), best (the single candidate that separates "
                                               f"synthetic departures best), or one of {', '.join(CANDIDATES)}"),
        far: float = typer.Option(0.01, help="false-alarm rate you accept on healthy rows (0-1, e.g. 0.01)"),
        velocity: str | None = typer.Option(None, help="velocity RMS column (mm/s) for the ISO part of the index"),
        machine_class: str = typer.Option("I", help="ISO 20816 machine class I-IV"),
        rising: str | None = typer.Option(None, "--rising",
                                          help="comma-separated feature columns where only an increase means "
                                               "trouble (vibration amplitude, temperature): a drop below the "
                                               "asset's normal median is not scored"),
        seed: int = typer.Option(0)) -> None:
    """Learn per-asset baselines from the normal rows of DATA, choose the detector, calibrate, save."""
    try:
        _fit(data, normal, out, asset_column, features, label, speed, kind, far, velocity, machine_class, seed,
             rising)
    except BadInput as e:
        _fail(str(e))


def _fit(data: Path, normal: str, out: Path, asset_column: str | None, features: str | None, label: list[str],
         speed: str | None, kind: str, far: float, velocity: str | None, machine_class: str, seed: int,
         rising: str | None = None) -> None:
    if not 0.0 < far < 1.0:
        raise BadInput(f"--far {far}: the false-alarm rate must be between 0 and 1 (0.01 = 1 % of healthy rows)")
    if kind not in ("auto", BEST) and kind not in CANDIDATES:
        raise BadInput(f"--kind {kind}: must be auto, {BEST} or one of {', '.join(CANDIDATES)}")
    if machine_class not in ("I", "II", "III", "IV"):
        raise BadInput(f"--machine-class {machine_class}: must be I, II, III or IV")
    _check_out(out, "--out")
    df = read_table(data)
    wanted = [c.strip() for c in features.split(",")] if features else None
    up = [c.strip() for c in rising.split(",") if c.strip()] if rising else []
    _require(df, [asset_column, speed, velocity, *label, *(wanted or []), *up], data, "the options given")
    mask, marker = select_rows(df, normal, asset_column)
    if mask.sum() < 8:
        raise BadInput(f"{data}: --normal {normal} selects {int(mask.sum())} rows; at least 8 are needed")
    rep = screen(df, mask, source=str(data), features=wanted, labels=label, normal_column=marker,
                 asset_column=asset_column, speed=speed)
    if velocity:
        rep.columns = [c for c in rep.columns if c.column != velocity] + [c for c in rep.columns
                                                                          if c.column == velocity]
    typer.echo(f"{data}: {len(df)} rows, {int(mask.sum())} normal; columns:")
    for line in rep.lines():
        typer.echo(line)
    cols = rep.features
    if not cols:
        raise BadInput(f"{data}: no usable feature column (every column dropped, reasons above)")
    not_kept = [c for c in up if c not in cols]
    if not_kept:
        raise BadInput(f"{data}: --rising {not_kept[0]!r} is not a kept feature column (see the screening above)")
    x = np.column_stack([numeric_column(df, c, str(data)) for c in cols])
    assets = _assets(df, asset_column)
    up_idx = [cols.index(c) for c in up]
    floors = rising_floors(x, assets, mask, up_idx) if up_idx else {}
    x = clip_rising(x, assets, up_idx, floors)
    t_s = _times_s(df, rep.time_column)
    back = _backwards(t_s, assets)
    if back is not None and not asset_column:
        typer.echo(f"warning: {data}: time goes backwards at row {back} (several assets stacked?): pass "
                   "--asset-column COLUMN so each asset gets its own baseline and alarm state")
    spd = numeric_column(df, speed, str(data)) if speed else None
    kinds = CANDIDATES if kind in ("auto", BEST) else (kind,)
    fm = fit_fleet(x, assets, mask, features=cols, floors=[rep.floors[c] for c in cols], far=far, kinds=kinds,
                   seed=seed, speed=spd, speed_key=speed, rule=BEST if kind == BEST else CONSENSUS)
    alarm = default_alarm_settings(median_interval_s(t_s, assets) if t_s is not None else None)
    model = {"format": MODEL_FORMAT, "created": datetime.now().isoformat(timespec="seconds"), "source": str(data),
             "normal": normal, "features": cols, "screening": rep.to_dict(), "asset_column": asset_column,
             "labels": list(label) + ([marker] if marker else []), "velocity": velocity,
             "machine_class": machine_class, "rising": {"columns": up, "floors": floors},
             "alarm": {"on_delay": alarm.on_delay, "off_delay": alarm.off_delay,
                       "hysteresis": alarm.hysteresis, "basis": alarm.basis},
             "fleet": fm.to_dict()}
    out.write_text(json.dumps(model), encoding="utf-8")
    cal = fm.calibration
    n_assets = len(fm.assets) - 1
    typer.echo(f"detector: {fm.selection['why']}")
    for k, r in fm.selection["candidates"].items():
        if k == CONSENSUS:
            typer.echo(f"  {k:<12} synthetic departures: AUROC {r['mean_auroc']:.3f} "
                       f"(mean of {', '.join(r['members'])})")
            continue
        typer.echo(f"  {k:<12} synthetic departures: AUROC {r['mean_auroc']:.3f}, detected at the threshold "
                   f"{100 * r['mean_detected']:.1f} %, stability {r['stability']:.2f}")
    achieved = _pct(cal["far_achieved_held_back"])
    typer.echo(f"threshold: {cal['how']}; false-alarm rate on held-back healthy rows {achieved}"
               f" (asked {_pct(far)}, {cal['n_held_back']} held-back rows, two-fold cross-calibration)")
    if asset_column:
        typer.echo(f"assets: {n_assets}, each with its own centre and scale; scales shrunk toward the fleet "
                   f"prior (weight n/(n+{N_PRIOR})); {len(cal['assets_own_threshold'])} with a threshold of their "
                   "own, the rest the fleet's")
    if up:
        typer.echo(f"rising only: {', '.join(up)} (a drop below the asset's normal median scores as the median)")
    typer.echo(f"alarms: {alarm.describe()} -> {out}")


@app.command()
def score(data: Path = typer.Argument(..., help="CSV, Parquet or XLSX with the model's feature columns"),
          model: Path = typer.Option(..., "--model", help="model file from `spinline health fit`"),
          out: Path = typer.Option(..., "--out", help="CSV, Parquet or XLSX to write (by extension)"),
          label: str | None = typer.Option(None, help="0/1 label column: print F1, false/missed-alarm rates"),
          on_delay: int | None = typer.Option(None, help="rows over threshold before an alarm (default by data rate)"),
          off_delay: int | None = typer.Option(None, help="rows back under before it clears (default by data rate)"),
          hysteresis: float | None = typer.Option(None, help="clears below 1 - hysteresis (default 0.3)"),
          true_rul: str | None = typer.Option(None, "--true-rul",
                                              help="column of true remaining life (same unit as rul_*): RMSE, "
                                                   "PHM08 score, band coverage"),
          rul: bool = typer.Option(True, "--rul/--no-rul", help="estimate remaining useful life per row"),
          ) -> None:
    """Score every row: anomaly score, alarms per asset, health index, remaining life with its band."""
    try:
        _score(data, model, out, label, on_delay, off_delay, hysteresis, true_rul, rul)
    except BadInput as e:
        _fail(str(e))


def load_model(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BadInput(f"--model {path}: no such model file (make one with `spinline health fit`)")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"--model {path}: not JSON ({e}): a model file comes from `spinline health fit`") from None
    if not isinstance(m, dict) or m.get("format") != MODEL_FORMAT:
        raise BadInput(f"--model {path}: not a spinline health model (format {MODEL_FORMAT} expected)")
    return m


def _score(data: Path, model_path: Path, out: Path, label: str | None, on_delay: int | None,
           off_delay: int | None, hysteresis: float | None, true_rul: str | None, with_rul: bool) -> None:
    m = load_model(model_path)
    _check_out(out, "--out")
    for name, v in (("--on-delay", on_delay), ("--off-delay", off_delay)):
        if v is not None and v < 1:
            raise BadInput(f"{name} {v}: must be at least 1 row")
    if hysteresis is not None and not 0.0 <= hysteresis < 1.0:
        raise BadInput(f"--hysteresis {hysteresis}: must be in [0, 1)")
    fm = FleetModel.from_dict(m["fleet"])
    df = read_table(data)
    asset_col = m.get("asset_column")
    _require(df, [*fm.features, fm.speed_key, m.get("velocity")], data, f"the model {model_path}")
    _require(df, [asset_col], data, f"the asset column of {model_path}")
    _require(df, [label, true_rul], data, "the options given")
    y = None
    if label:
        yv = numeric_column(df, label, str(data))
        odd = sorted({float(v) for v in yv[np.isfinite(yv)]} - {0.0, 1.0})
        if odd or not np.isfinite(yv).all():
            found = f"found {odd[0]:g}" if odd else "found empty cells"
            raise BadInput(f"{data}: column {label!r}: --label needs 0/1 values (1 = abnormal), {found}")
        y = yv.astype(int)
    x = np.column_stack([numeric_column(df, c, str(data)) for c in fm.features])
    spd = numeric_column(df, fm.speed_key, str(data)) if fm.speed_key else None
    vel = numeric_column(df, m["velocity"], str(data)) if m.get("velocity") else None
    truth = numeric_column(df, true_rul, str(data)) if true_rul else None
    assets = _assets(df, asset_col)
    tcol = find_time_column(df)
    t_s = _times_s(df, tcol)
    back = _backwards(t_s, assets)
    if back is not None:
        typer.echo(f"warning: {data}: time goes backwards at row {back}" + (
            " within an asset: rows are taken in file order" if asset_col else
            " (several assets stacked?): fit with --asset-column COLUMN for per-asset baselines and alarms"))
    rise = m.get("rising") or {"columns": [], "floors": {}}
    if rise["columns"]:
        x = clip_rising(x, assets, [fm.features.index(c) for c in rise["columns"]], rise["floors"])
    scores, z, unseen = fm.score(x, spd, assets)
    if unseen:
        typer.echo(f"note: {len(unseen)} asset(s) not in the model ({', '.join(unseen[:5])}"
                   f"{'...' if len(unseen) > 5 else ''}): scored against the fleet baseline")
    base = default_alarm_settings(median_interval_s(t_s, assets) if t_s is not None else None)
    if t_s is None and m.get("alarm"):
        base = AlarmSettings(int(m["alarm"]["on_delay"]), int(m["alarm"]["off_delay"]),
                             float(m["alarm"]["hysteresis"]), str(m["alarm"]["basis"]))
    settings = AlarmSettings(on_delay or base.on_delay, off_delay or base.off_delay,
                             base.hysteresis if hysteresis is None else hysteresis,
                             base.basis if on_delay is None and off_delay is None and hysteresis is None
                             else "set on the command line")
    res = assess(scores, z, fm.features, assets, t_s, settings, velocity=vel,
                 machine_class=m.get("machine_class", "I"), with_rul=with_rul)
    clash = {c: f"input_{c}" for c in df.columns if c in res.columns}
    outdf = pd.concat([df.rename(columns=clash).reset_index(drop=True), res.reset_index(drop=True)], axis=1)
    write_table(outdf, out)
    typer.echo(f"{len(df)} rows scored with {fm.kind}, {int((scores > 1).sum())} over threshold, "
               f"{int(res['alarm_raised'].sum())} alarm(s) -> {out}")
    typer.echo(f"alarms: {settings.describe()}")
    rcol = next(c for c in res.columns if c.startswith("rul_") and "low" not in c and "high" not in c)
    if asset_col:
        summary = outdf.assign(_a=assets).groupby("_a", sort=False).agg(
            rows=("anomaly_score", "size"), alarms=("alarm_raised", "sum"), min_hi=("health_index", "min"),
            last_hi=("health_index", "last"), last_rul=(rcol, lambda v: v.iloc[-1]))
        shown = summary.sort_values(["alarms", "min_hi"], ascending=[False, True]).head(30)
        typer.echo(f"per {asset_col} (worst first{', 30 shown' if len(summary) > 30 else ''}):")
        for a, r in shown.iterrows():
            typer.echo(f"  {a}: {int(r['rows'])} rows, {int(r['alarms'])} alarm(s), health min {r['min_hi']:.0f} "
                       f"last {r['last_hi']:.0f}, {rcol} {r['last_rul']:.1f}" if np.isfinite(r["last_rul"]) else
                       f"  {a}: {int(r['rows'])} rows, {int(r['alarms'])} alarm(s), health min {r['min_hi']:.0f} "
                       f"last {r['last_hi']:.0f}, no RUL (no downward trend)")
    if y is not None:
        pred = outdf["alarm_active"].to_numpy(dtype=bool)
        tp, fp = int(np.sum(pred & (y == 1))), int(np.sum(pred & (y == 0)))
        fn, tn = int(np.sum(~pred & (y == 1))), int(np.sum(~pred & (y == 0)))
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        typer.echo(f"against {label} over all {len(y)} rows (normal rows included): F1 {f1:.3f}  false-alarm rate "
                   f"{100 * fp / max(fp + tn, 1):.1f} %  missed-alarm rate {100 * fn / max(fn + tp, 1):.1f} %")
    if truth is not None:
        lo_c, hi_c = rcol.replace("rul_", "rul_low_"), rcol.replace("rul_", "rul_high_")
        r = rul_metrics(res[rcol].to_numpy(float), res[lo_c].to_numpy(float), res[hi_c].to_numpy(float), truth)
        unit = rcol.removeprefix("rul_")
        typer.echo(f"RUL against {true_rul} over {r['n']} rows with an estimate: RMSE {r['rmse']:.2f} {unit}, "
                   f"PHM08 score {r['phm08_mean']:.3g} per row, band coverage {_pct(r['coverage'])}")
