"""Modbus TCP faces of the simulated mill: one pymodbus server per configured port, one register
image per unit id, encoded from the site file's register map.

Register encoding (the same convention as ``spinline.connectors.modbus.codec``; kept separate so
the simulator does not depend on the edge): engineering value = raw * scale + offset; the raw
value is packed big-endian in the point's dtype; ``byte_order: little`` swaps the two bytes of
every register and ``word_order: little`` reverses the registers. Coils/discrete inputs hold bools.

pymodbus 3.16 deprecates its data-block contexts (it copies them into its own simulator at start,
so later updates would not show); this module serves reads from its own numpy register images
through the server's context hook instead, and makes a dropped-out unit not answer at all.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer

from spinline.connectors.modbus import codec
from spinline.connectors.modbus.codec import ByteOrder
from spinline.core.site import REGISTER_WIDTH, DataType, ModbusLink, ModbusTable, PointRef

log = logging.getLogger(__name__)

_LIMITS = {DataType.INT16: (-(2**15), 2**15 - 1), DataType.UINT16: (0, 2**16 - 1),
           DataType.INT32: (-(2**31), 2**31 - 1), DataType.UINT32: (0, 2**32 - 1),
           DataType.INT64: (-(2**63), 2**63 - 1), DataType.UINT64: (0, 2**64 - 1), DataType.BOOL: (0, 1)}
_FC_TABLE = {1: ModbusTable.COIL, 2: ModbusTable.DISCRETE, 3: ModbusTable.HOLDING, 4: ModbusTable.INPUT}


def encode_registers(value: float, dtype: DataType, byte_order: ByteOrder = "big", word_order: ByteOrder = "big",
                     scale: float = 1.0, offset: float = 0.0) -> list[int]:
    """Registers for one value, as a device writes them: integers saturate at their range (a real
    device clamps a gauge rather than wrapping it) and NaN writes 0; the layout is the edge codec's,
    so the simulator and the edge cannot disagree on byte and word order."""
    if dtype in _LIMITS:
        lo, hi = _LIMITS[dtype]
        raw = (value - offset) / scale
        clamped = 0 if not math.isfinite(raw) else min(max(round(raw), lo), hi)
        if dtype == DataType.BOOL:
            return [clamped]
        return codec.encode(clamped * scale + offset, dtype, byte_order=byte_order, word_order=word_order,
                            scale=scale, offset=offset)
    return codec.encode(value, dtype, byte_order=byte_order, word_order=word_order, scale=scale, offset=offset)


@dataclass
class _Unit:
    tables: dict[ModbusTable, np.ndarray] = field(default_factory=dict)
    online: bool = True


class SimModbusContext(ModbusServerContext):
    """Register images of all unit ids on one port, served to pymodbus' request handler."""

    def __init__(self, refs: list[PointRef]) -> None:  # deliberately not calling the deprecated base init
        self.old_simulator = True
        self.simdevices = []
        self.units: dict[int, _Unit] = {}
        self._refs: list[tuple[int, int, PointRef]] = []   # (column in MillSim.points, unit, ref)
        for ref in refs:
            link = ref.machine.link
            assert isinstance(link, ModbusLink) and ref.point.modbus is not None
            addr = ref.point.modbus
            unit = self.units.setdefault(link.unit_id, _Unit())
            bits = addr.table in (ModbusTable.COIL, ModbusTable.DISCRETE)
            end = addr.reg + (1 if bits else REGISTER_WIDTH[ref.point.dtype])
            size = max(len(unit.tables.get(addr.table, ())), end)
            old = unit.tables.get(addr.table, np.zeros(0, dtype=np.uint16))
            unit.tables[addr.table] = np.concatenate([old, np.zeros(size - len(old), dtype=np.uint16)])

    def bind(self, columns: list[int], refs: list[PointRef]) -> None:
        self._refs = [(c, r.machine.link.unit_id, r) for c, r in zip(columns, refs, strict=True)
                      if isinstance(r.machine.link, ModbusLink)]

    def update(self, values: np.ndarray, offline: set[int]) -> None:
        """Write the latest MillSim values (indexed by column) into the register images."""
        for col, unit_id, ref in self._refs:
            addr = ref.point.modbus
            assert addr is not None
            table = self.units[unit_id].tables[addr.table]
            v = float(values[col])
            if addr.table in (ModbusTable.COIL, ModbusTable.DISCRETE):
                table[addr.reg] = 1 if v else 0
                continue
            if not math.isfinite(v):
                continue                       # keep the last good registers
            words = encode_registers(v, ref.point.dtype, addr.byte_order, addr.word_order, addr.scale, addr.offset)
            table[addr.reg:addr.reg + len(words)] = words
        for unit_id, unit in self.units.items():
            unit.online = unit_id not in offline

    def device_ids(self) -> list[int]:
        return list(self.units)

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> list[int] | list[bool] | ExcCodes:
        unit = self.units.get(device_id)
        if unit is None or not unit.online:
            raise NoSuchIdException(f"unit {device_id} does not answer")
        table = _FC_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        regs = unit.tables.get(table)
        if regs is None or address + count > len(regs):
            return ExcCodes.ILLEGAL_ADDRESS
        block = regs[address:address + count]
        if table in (ModbusTable.COIL, ModbusTable.DISCRETE):
            return [bool(x) for x in block]
        return [int(x) for x in block]

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: object) -> ExcCodes | None:
        return ExcCodes.ILLEGAL_FUNCTION       # the simulated devices are read-only


class ModbusFace:
    """One TCP port: a pymodbus server over a ``SimModbusContext``; stoppable and restartable."""

    def __init__(self, host: str, port: int, context: SimModbusContext) -> None:
        self.host, self.port, self.context = host, port, context
        self.server: ModbusTcpServer | None = None
        self.actual_port: int | None = None

    async def start(self) -> int:
        port = self.actual_port if self.actual_port is not None else self.port
        self.server = ModbusTcpServer(self.context, address=(self.host, port), ignore_missing_devices=True)
        await self.server.serve_forever(background=True)
        transport = self.server.transport
        sockets = getattr(transport, "sockets", None)
        self.actual_port = int(sockets[0].getsockname()[1]) if sockets else port
        log.info("modbus server on %s:%d (configured %d), units %s", self.host, self.actual_port, self.port,
                 sorted(self.context.units))
        return self.actual_port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None
            await asyncio.sleep(0)
