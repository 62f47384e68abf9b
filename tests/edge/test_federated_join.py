"""The edge's side of a federated run's join request (``edge.federated.Joiner``): a bad or foreign request
is refused with the reason in the status; a re-sent one is not run twice; a client that cannot run fails
the run at this edge with the reason, and the rows file does not outlive it. (The joins that succeed, with
Flower, are tests/e2e/test_federated_zone.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

from spinline.core.fedjoin import FlowerEnvMissing, Join
from spinline.edge.feature_log import FeatureLog
from spinline.edge.federated import Joiner


def _join(run: str = "fl-1", asset: str = "mill-a/rf01/main_motor") -> dict[str, object]:
    return Join(run=run, server="127.0.0.1:9", machine_type="ring_frame", assets=[asset], features=["rms"],
                log_keys=[], start_ns=0, end_ns=10**19, windows={"rf01/main_motor": [[5, 6]]}).to_dict()


async def test_join_requests_are_checked_and_their_outcome_is_in_the_status(tmp_path: Path) -> None:
    log = FeatureLog(tmp_path)
    for ts in range(10):
        log.append("mill-a/rf01/main_motor", ts, {"rms": 1.0 + ts})

    def no_flower() -> Path:
        raise FlowerEnvMissing("no Flower environment at /nowhere")

    j = Joiner(log, tmp_path, "mill-a", fl_python=no_flower)
    assert j.status() == {}
    j.offer({"run": "fl-0", "server": 1})
    assert j.status()["state"] == "refused" and "server" in j.status()["error"]
    j.offer(_join(run="fl-x", asset="mill-b/rf01/main_motor"))
    assert j.status()["state"] == "refused" and "another mill" in j.status()["error"]
    assert j.status()["refused"] == 2

    j.offer(_join())
    j.offer(_join())    # the cloud re-sends until the status shows the run: not run twice
    assert j._task is not None
    await j._task
    st = j.status()
    assert st["run"] == "fl-1" and st["state"] == "failed" and "no Flower environment" in st["error"]
    assert st["asked"] == 1 and st["failed"] == 1
    j.offer(_join())
    await asyncio.sleep(0)
    assert j.status()["asked"] == 1     # a run it has is ignored, whatever its outcome
    assert not list(tmp_path.glob("fl-rows-*.json"))
    log.close()
