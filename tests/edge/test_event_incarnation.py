"""Issue 12 item 1, edge side: events payloads carry the buffer's incarnation, and an events ack of
another incarnation (this gateway before a wipe: same ids, other events) deletes nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from spinline.core import wire
from spinline.edge.buffer import EdgeBuffer
from spinline.edge.forwarder import AsyncBuffer, Forwarder

from .test_hardening import SECRET, until


class QueueUplink:
    def __init__(self) -> None:
        self.event_acks: asyncio.Queue[wire.EventsAck] = asyncio.Queue()


async def test_events_carry_the_incarnation_and_acks_of_another_one_are_ignored(tmp_path: Path) -> None:
    buf = EdgeBuffer(tmp_path / "b.sqlite").open()
    try:
        (ev,) = buf.append_events([wire.EdgeEvent(asset="m/a/ch", ts_ns=time.time_ns(), kind="alarm_raised",
                                                  severity="critical", model_version="v1", rule="r", id=0)])
        fwd = Forwarder(AsyncBuffer(buf), edge="e1", mill="m", secret=SECRET)
        payload = wire.decode_events(wire.encode_events("e1", "m", [ev], key=SECRET, incarnation=buf.incarnation),
                                     key_lookup={"e1": SECRET}.get)
        assert payload.incarnation == buf.incarnation and len(buf.incarnation) == 16
        up = QueueUplink()
        task = asyncio.create_task(fwd._consume_event_acks(up))  # type: ignore[arg-type]
        try:
            up.event_acks.put_nowait(wire.EventsAck((ev.id,), (), "an-old-incarnation"))
            await until(lambda: fwd.stats.acks_ignored == 1)
            assert [e.id for e in buf.pending_events()] == [ev.id]
            up.event_acks.put_nowait(wire.EventsAck((ev.id,), (), buf.incarnation))
            await until(lambda: buf.pending_events() == [])
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        buf.close()
