"""Real protocol peers on loopback for the connector and edge tests (not a test module).

* ``ModbusPeer``: a pymodbus TCP server on an ephemeral port whose holding/input registers are
  plain Python lists the test writes (values encoded with the connector's own codec is avoided:
  tests write raw registers from independent ``struct`` packing);
* ``Mosquitto``: a private broker on a free port (``/usr/sbin/mosquitto -p PORT``) that a test
  can stop and start to cut the uplink.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from typing import Any

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ModbusPeer:
    """Devices by unit id; ``hr[unit]`` / ``ir[unit]`` are lists of register values (mutable)."""

    def __init__(self, units: dict[int, int] | None = None, *, coils: dict[int, list[bool]] | None = None,
                 port: int = 0) -> None:
        self.units = units or {1: 256}
        self.hr = {u: [0] * n for u, n in self.units.items()}
        self.ir = {u: [0] * n for u, n in self.units.items()}
        self.coils = coils or {}
        self.port = port
        self.requests = 0
        self.server: ModbusTcpServer | None = None

    def _device(self, unit: int, n: int) -> SimDevice:
        async def action(fc: int, start: int, addr: int, count: int, current: list[int], setv: Any) -> None:
            self.requests += 1
            src = self.hr[unit] if fc == 3 else self.ir[unit] if fc == 4 else None
            if src is not None:
                for i in range(len(current)):
                    current[i] = src[start + i] if start + i < len(src) else 0
            return None

        bits = self.coils.get(unit, [False] * 16)
        return SimDevice(id=unit, action=action, simdata=(
            [SimData(0, values=list(bits), datatype=DataType.BITS)],
            [SimData(0, values=list(bits), datatype=DataType.BITS)],
            [SimData(0, count=n, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=n, values=0, datatype=DataType.REGISTERS)]))

    async def start(self) -> int:
        self.server = ModbusTcpServer([self._device(u, n) for u, n in self.units.items()],
                                      address=("127.0.0.1", self.port))
        await self.server.serve_forever(background=True)
        self.port = int(self.server.transport.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None
            await asyncio.sleep(0.05)

    async def __aenter__(self) -> ModbusPeer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class Mosquitto:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["/usr/sbin/mosquitto", "-p", str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
