"""Third-party libraries stay at WARNING unless asked (issue 13, item 8): a real OPC UA exchange at
the default INFO level puts none of the library's lines, and none of the process values, in the log."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import pytest
from asyncua import Client, Server, ua

from spinline.core.logs import LIBRARIES, configure, library_levels

VALUE = 48213.0625          # a process value that must not reach the log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture()
def clean_levels() -> Iterator[Records]:
    names = [*LIBRARIES, "asyncua"]
    saved = {n: logging.getLogger(n).level for n in names}
    root = logging.getLogger()
    saved_root = root.level
    h = Records()
    root.addHandler(h)
    yield h
    root.removeHandler(h)
    root.setLevel(saved_root)
    for n, lvl in saved.items():
        logging.getLogger(n).setLevel(lvl)


async def _exchange(port: int) -> None:
    srv = Server()
    await srv.init()
    srv.set_endpoint(f"opc.tcp://127.0.0.1:{port}/spinline")
    idx = await srv.register_namespace("urn:spinline:test")
    node = await (await srv.nodes.objects.add_object(idx, "m1")).add_variable(ua.NodeId("m1.speed", idx), "speed", 1.0)
    await srv.start()
    try:
        async with Client(f"opc.tcp://127.0.0.1:{port}/spinline") as client:
            seen: list[float] = []

            class Handler:
                def datachange_notification(self, n: object, val: float, data: object) -> None:
                    seen.append(val)

            sub = await client.create_subscription(50, Handler())
            await sub.subscribe_data_change(client.get_node(node.nodeid))
            await node.write_value(VALUE)
            for _ in range(50):
                if VALUE in seen:
                    break
                await asyncio.sleep(0.05)
            assert VALUE in seen
    finally:
        await srv.stop()


async def test_opcua_library_is_quiet_at_info(clean_levels: Records) -> None:
    # Unconfigured, this exchange puts dozens of asyncua INFO lines in the log (every session,
    # subscription and publish); configured, none.
    configure("info")
    await _exchange(free_port())
    lines = [r.getMessage() for r in clean_levels.records]
    assert not [r for r in clean_levels.records if r.name.startswith("asyncua") and r.levelno < logging.WARNING]
    assert not any("48213" in line for line in lines)
    assert logging.getLogger("pymodbus").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("amqtt").getEffectiveLevel() == logging.WARNING


def test_libraries_can_be_asked_for(clean_levels: Records) -> None:
    configure("info", libraries="asyncua=DEBUG")
    assert logging.getLogger("asyncua").getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("pymodbus").getEffectiveLevel() == logging.WARNING
    with pytest.raises(ValueError, match="asyncua=INFO"):
        library_levels("asyncua")
