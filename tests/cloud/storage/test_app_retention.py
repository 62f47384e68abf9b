"""The app's periodic jobs: retention runs on its timer and logs a failure once and its recovery once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from spinline.cloud.app import _apply_retention
from spinline.core.errors import StorageError


class _Flaky:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def apply_retention(self, now_ns: int) -> dict[str, int]:
        self.calls.append(now_ns)
        if 2 <= len(self.calls) <= 4:
            raise StorageError("database down")
        return {"raw": 0, "1m": 0, "1h": 0}


def test_retention_task_runs_and_logs_failure_and_recovery_once(caplog: pytest.LogCaptureFixture) -> None:
    store = _Flaky()

    async def main() -> None:
        task = asyncio.create_task(_apply_retention(store, 0.01))  # type: ignore[arg-type]
        while len(store.calls) < 6:
            await asyncio.sleep(0.01)
        task.cancel()

    with caplog.at_level(logging.INFO, logger="spinline.cloud.app"):
        asyncio.run(asyncio.wait_for(main(), 10))
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs.count("retention failed") == 1 and msgs.count("retention recovered") == 1
    assert all(c > 1_700_000_000 * 10**9 for c in store.calls)     # wall-clock now, in ns
