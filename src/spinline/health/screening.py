"""Which columns of a user's table may be features, and on what scale: the screening report.

A model of "normal" learns whatever it is given. Given a column that marks the normal rows, it
learns the label (every abnormal row then scores enormous: a perfect-looking result that is a
bug); given a row counter or a clock, it sees every later row as new; given a column that was
constant over the baseline, a 0.02 % change divided by a near-zero scale scores 10^10. So every
column is sorted, by rule, before anything is fitted, and the reasons are kept in the model:

* **excluded by role**: the asset column, the time column, the ``--normal`` marker column, the
  ``--label`` columns, the ``--speed`` column (it conditions the model, it is not a symptom);
* **excluded by name**: ids (``id``, ``*_id``, ``index``, ``Unnamed: 0`` ...) and names that
  read as labels (``anomaly``, ``changepoint``, ``label``, ``fault``, ``target``, ``rul`` ...),
  unless the user names them in ``--features``;
* **excluded by content**: text columns (a column of dates is taken as the time column),
  columns that increase with every row within an asset (a clock or counter), columns mostly
  missing or **constant** over the normal rows;
* **kept with a scale floor**: every kept column gets a floor on its scale equal to its
  resolution (the smallest step between distinct values seen over the normal rows): a column
  quantised to 0.1, or one that only takes two values, can only say "moved by k steps", so one
  step reads as one unit of scale, never as thousands.

A text value among numbers (``#VALUE!`` in a column of readings) is an error that names the
file, the column, the row and the value: dropping the column silently is how a user ends up
with a model of zero features.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from spinline.core.errors import SpinlineError

_ID_NAME = re.compile(r"^(id|idx|index|row|row_?no|row_?number|sample|sample_?id|serial|serial_?no|record|"
                      r"unnamed: ?\d+)$|_id$|^id_", re.IGNORECASE)
_LABEL_NAME = re.compile(r"^(anomaly|anomalies|is_?anomaly|changepoint|label|labels|fault|faults|failure|"
                         r"failed|target|class|y|ground_?truth|true_?rul.*|rul.*|ttf|is_?normal|normal|"
                         r"state_?label|outlier)$", re.IGNORECASE)
_TIME_NAME = re.compile(r"^(time|timestamp|datetime|date|ts|date_?time|time_?stamp|t_?utc|utc)$", re.IGNORECASE)


class BadInput(SpinlineError):
    """A value or column of the user's table that cannot be used; the message is one line."""


@dataclass(frozen=True, slots=True)
class ColumnReport:
    column: str
    kept: bool
    reason: str
    floor: float | None = None
    n_unique: int | None = None


@dataclass(slots=True)
class Screening:
    columns: list[ColumnReport] = field(default_factory=list)
    time_column: str | None = None

    @property
    def features(self) -> list[str]:
        return [c.column for c in self.columns if c.kept]

    @property
    def floors(self) -> dict[str, float]:
        return {c.column: float(c.floor or 0.0) for c in self.columns if c.kept}

    def to_dict(self) -> dict[str, Any]:
        return {"time_column": self.time_column, "columns": [asdict(c) for c in self.columns]}

    def lines(self) -> list[str]:
        """One line per column for the ``fit`` report."""
        w = max((len(c.column) for c in self.columns), default=4)
        return [f"  {'keep' if c.kept else 'drop'}  {c.column:<{w}}  {c.reason}" for c in self.columns]


def numeric_column(df: pd.DataFrame, col: str, source: str) -> np.ndarray:
    """The column as float64; a text value among numbers is a ``BadInput`` naming file, column, row, value."""
    s = df[col]
    if pd.api.types.is_bool_dtype(s):
        return s.to_numpy(dtype=np.float64)
    if pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    v = pd.to_numeric(s, errors="coerce")
    bad = v.isna() & s.notna() & (s.astype(str).str.strip() != "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise BadInput(f"{source}: column {col!r}, row {i} (0-based, as --normal counts): {s.iloc[i]!r} is not a "
                       f"number ({int(bad.sum())} such value(s)); fix it or leave the cell empty")
    return v.to_numpy(dtype=np.float64, na_value=np.nan)


def _is_text(s: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s))


def _mostly_text(s: pd.Series) -> bool:
    """A text column (ids, names, dates), as opposed to numbers with a few stray text values."""
    nn = s.dropna()
    if nn.empty:
        return True
    parsed = pd.to_numeric(nn, errors="coerce")
    return bool(parsed.notna().mean() < 0.9)


def _looks_like_time(s: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(s):
        return True
    if not _is_text(s):
        return False
    sample = s.dropna().astype(str).head(50)
    if sample.empty:
        return False
    parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() > 0.9 and sample.str.contains(r"\d[-/:.]\d", regex=True).mean() > 0.9)


def find_time_column(df: pd.DataFrame) -> str | None:
    """The time column: a conventional name, else the first column whose text parses as dates."""
    for c in df.columns:
        if _TIME_NAME.match(str(c)) and (_looks_like_time(df[c]) or pd.api.types.is_numeric_dtype(df[c])):
            return str(c)
    for c in df.columns:
        if _looks_like_time(df[c]):
            return str(c)
    return None


def _increases_every_row(x: np.ndarray, groups: np.ndarray | None) -> bool:
    """A clock or counter: strictly increasing with every row (within each asset)."""
    if groups is None:
        d = np.diff(x)
        return bool(d.size > 10 and np.all(np.isfinite(d)) and np.all(d > 0))
    ok = True
    for g in pd.unique(groups):
        d = np.diff(x[groups == g])
        if d.size < 3 or not np.all(np.isfinite(d)) or not np.all(d > 0):
            ok = False
            break
    return ok


def resolution(values: np.ndarray) -> float:
    """Smallest step between distinct finite values (0 if fewer than two)."""
    u = np.unique(values[np.isfinite(values)])
    if u.size < 2:
        return 0.0
    return float(np.min(np.diff(u)))


def screen(df: pd.DataFrame, normal: np.ndarray, *, source: str, features: Sequence[str] | None = None,
           labels: Iterable[str] = (), normal_column: str | None = None, asset_column: str | None = None,
           speed: str | None = None) -> Screening:
    """Sort every column of ``df`` into kept features (with scale floors) and dropped ones, with reasons.

    ``normal`` is the boolean mask of the rows the user declared normal. ``features``, when given,
    is the user's explicit choice: only those are considered, but constant ones are still dropped.
    Raises ``BadInput`` for a text value among numbers in a candidate feature column.
    """
    rep = Screening()
    rep.time_column = find_time_column(df)
    roles: dict[str, str] = {}
    if asset_column:
        roles[asset_column] = "asset column (--asset-column): each asset gets its own baseline"
    if rep.time_column:
        roles.setdefault(rep.time_column, "time column: orders the rows, sets the alarm delays and the RUL unit")
    if normal_column:
        roles.setdefault(normal_column, "marks the normal rows (--normal): a label, never a feature")
    for lab in labels:
        roles.setdefault(lab, "label column (--label): never a feature")
    if speed:
        roles.setdefault(speed, "operating speed (--speed): conditions the model, not a symptom")
    wanted = set(features) if features is not None else None
    groups = df[asset_column].astype(str).to_numpy() if asset_column else None
    for col in map(str, df.columns):
        s = df[col]
        if col in roles:
            rep.columns.append(ColumnReport(col, False, roles[col]))
            continue
        if wanted is not None and col not in wanted:
            rep.columns.append(ColumnReport(col, False, "not in --features"))
            continue
        if wanted is None and _ID_NAME.search(col):
            rep.columns.append(ColumnReport(col, False, "id (by its name); name it in --features to use it"))
            continue
        if wanted is None and _LABEL_NAME.match(col):
            rep.columns.append(ColumnReport(col, False, "reads as a label (by its name); name it in --features "
                                                        "to use it"))
            continue
        if _is_text(s) and _mostly_text(s):
            hint = ""
            nun = s.nunique(dropna=True)
            if not asset_column and 1 < nun <= max(50, len(s) // 20):
                hint = f"; {nun} distinct values: an asset name? use --asset-column {col}"
            rep.columns.append(ColumnReport(col, False, f"text{hint}"))
            continue
        x = numeric_column(df, col, source)
        if wanted is None and _increases_every_row(x, groups):
            rep.columns.append(ColumnReport(col, False, "id, clock or counter (increases with every row): every "
                                                        "later row would look new"))
            continue
        xn = x[normal]
        fin = xn[np.isfinite(xn)]
        if fin.size < max(4, 0.5 * xn.size):
            rep.columns.append(ColumnReport(col, False, f"mostly missing over the normal rows ({fin.size} of "
                                                        f"{xn.size} values)"))
            continue
        u = np.unique(fin)
        if u.size == 1:
            rep.columns.append(ColumnReport(col, False, f"constant over the normal rows (= {u[0]:.6g}): any "
                                                        "change would divide by a zero scale", n_unique=1))
            continue
        step = float(np.min(np.diff(u)))
        med = float(np.median(fin))
        mad = 1.4826 * float(np.median(np.abs(fin - med)))
        if u.size == 2:
            reason = (f"two values over the normal rows ({u[0]:.6g}, {u[1]:.6g}): kept, scale floor = the step "
                      f"{step:.3g}")
        elif mad < step:
            reason = (f"quantised / near-constant (step {step:.3g} > robust spread {mad:.3g}): kept, scale floor "
                      f"{step:.3g}")
        else:
            reason = f"varies over the normal rows (robust spread {mad:.3g}, resolution {step:.3g})"
        rep.columns.append(ColumnReport(col, True, reason, floor=step, n_unique=int(min(u.size, 10**9))))
    return rep
