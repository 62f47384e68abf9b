"""A federated mill's feature rows, kept on its edge: the data its Flower client trains on.

A federated mill sends no feature row to the cloud (``Mill.federated``, docs/models.md), so the edge keeps
them itself: one row per scored snapshot and channel, in ``features.sqlite`` in the edge's data directory
(WAL; a snapshot every few minutes per channel is a few rows a minute). At most ``max_rows_per_asset``
per asset are kept (the oldest go first): about a month at one snapshot every five minutes.

``labelled`` applies the fault windows of the mill's verified work orders (``asset`` ->
[start_ns, end_ns), what the cloud's ``training.fault_windows`` computes) to the rows: 1 inside a
window, 0 elsewhere, the same rule as the cloud's training.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

FILE = "features.sqlite"


class FeatureLog:
    """Append-only rows (asset, ts_ns, features as JSON) with a per-asset cap."""

    def __init__(self, data_dir: Path, *, max_rows_per_asset: int = 10_000) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / FILE
        self.max_rows = max_rows_per_asset
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, asset TEXT NOT NULL, "
                        "ts_ns INTEGER NOT NULL, features TEXT NOT NULL)")
        self.db.execute("CREATE INDEX IF NOT EXISTS rows_asset_ts ON rows (asset, ts_ns)")
        self.path.chmod(0o600)

    def append(self, asset: str, ts_ns: int, features: Mapping[str, float]) -> None:
        self.db.execute("INSERT INTO rows (asset, ts_ns, features) VALUES (?, ?, ?)",
                        (asset, int(ts_ns), json.dumps({k: float(v) for k, v in features.items()})))
        self.db.execute("DELETE FROM rows WHERE asset = ? AND id <= (SELECT id FROM rows WHERE asset = ? "
                        "ORDER BY id DESC LIMIT 1 OFFSET ?)", (asset, asset, self.max_rows))

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM rows").fetchone()[0])

    def labelled(self, assets: Iterable[str], features: Sequence[str], windows: Mapping[str, list[tuple[int, int]]],
                 start_ns: int, end_ns: int) -> tuple[list[list[float]], list[int]]:
        """Rows of ``assets`` in [start, end) in ``features`` order (NaN where missing) and their labels."""
        rows: list[list[float]] = []
        labels: list[int] = []
        for a in sorted(set(assets)):
            win = windows.get(a.split("/", 1)[1] if a.count("/") == 2 else a, [])
            for ts, doc in self.db.execute("SELECT ts_ns, features FROM rows WHERE asset = ? AND ts_ns >= ? AND "
                                           "ts_ns < ? ORDER BY ts_ns", (a, start_ns, end_ns)):
                f = json.loads(doc)
                rows.append([float(f.get(k, float("nan"))) for k in features])
                labels.append(int(any(s <= ts < e for s, e in win)))
        return rows, labels

    def close(self) -> None:
        self.db.close()
