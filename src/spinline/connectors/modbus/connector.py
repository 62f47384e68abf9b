"""Modbus TCP connector: coalesced block reads over one pymodbus connection per device.

The connector owns no schedule; the edge coordinator calls ``read(points)`` with the points that
are due. Each distinct set of due points is planned once (``planner.plan``) and compiled into
block reads with a vectorised decoder, so a steady-state poll is one request per block and a
few numpy operations.

Failure mapping (the one boundary where pymodbus errors become spinline errors):

* no connection / timeout / broken socket -> ``ConnectTimeout`` or ``ConnectorError``; the
  connection is closed and reopened on the next read (pymodbus' own reconnect loop is off, so
  the coordinator's backoff decides when);
* the device answers with an exception code for one block (e.g. illegal address) -> the points
  of that block come back with quality BAD and the link is ``degraded``; the other blocks are
  still read. Each refused block is counted in ``health.bad_input["modbus_exception"]`` (so in
  ``link_errors``), logged once per exception code; a block whose registers do not decode is
  counted as ``modbus_decode``. Values outside a point's ``min``/``max`` are the agent's business
  (its report filter flags them UNCERTAIN and counts ``out_of_range``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from spinline.core.batch import Batch, Quality
from spinline.core.errors import ConnectorError, ConnectTimeout, DecodeError
from spinline.core.site import Machine, ModbusLink, ModbusTable, PointRef

from ..base import LinkHealth
from .codec import BlockDecoder, RegisterField, decode_bits
from .planner import BIT_TABLES, BlockRead, PlanItem, plan

log = logging.getLogger(__name__)
#: Modbus exception codes (Modbus application protocol v1.1b3, section 7).
EXCEPTION_CODES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                   4: "server device failure", 5: "acknowledge", 6: "server device busy", 8: "memory parity error",
                   10: "gateway path unavailable", 11: "gateway target device failed to respond"}


@dataclass(slots=True)
class _Compiled:
    block: BlockRead
    keys: npt.NDArray[np.int64]
    decoder: BlockDecoder | None        # registers
    bit_offsets: npt.NDArray[np.intp] | None  # coils / discrete inputs


def compile_plan(points: Sequence[PointRef], keys: Sequence[int], *, max_gap: int = 8) -> list[_Compiled]:
    """Plan and compile block reads for ``points`` (pure; ``keys`` are their point keys)."""
    items = []
    for p in points:
        if p.point.modbus is None:
            raise ValueError(f"point {p.tag} has no modbus address")
        items.append(PlanItem(p.point.modbus, p.point.dtype))
    out: list[_Compiled] = []
    for b in plan(items, max_gap=max_gap):
        k = np.asarray([keys[i] for i in b.items], dtype=np.int64)
        if b.table in BIT_TABLES:
            out.append(_Compiled(b, k, None, np.asarray(b.offsets, dtype=np.intp)))
        else:
            fields = []
            for i, off in zip(b.items, b.offsets, strict=True):
                a = items[i].address
                fields.append(RegisterField(off, items[i].dtype, a.byte_order, a.word_order, a.scale, a.offset))
            out.append(_Compiled(b, k, BlockDecoder(fields, b.count), None))
    return out


class ModbusConnector:
    """One Modbus TCP device (host, port, unit id)."""

    def __init__(self, machine: Machine, *, max_gap: int = 8, timeout_s: float | None = None) -> None:
        if not isinstance(machine.link, ModbusLink):
            raise ValueError(f"machine {machine.id} has no modbus link")
        self.machine = machine
        self.link: ModbusLink = machine.link
        self.max_gap = max_gap
        self.timeout_s = timeout_s if timeout_s is not None else self.link.timeout_s
        self.health = LinkHealth(f"modbus {machine.id} ({self.link.host}:{self.link.port}/{self.link.unit_id})")
        self._client: AsyncModbusTcpClient | None = None
        self._plans: dict[tuple[int, ...], list[_Compiled]] = {}
        self._keys: dict[int, int] = {}
        #: Requests sent (for the bench and diagnostics).
        self.requests = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._close()

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _connected(self) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        self._close()
        client = AsyncModbusTcpClient(self.link.host, port=self.link.port, timeout=self.timeout_s,
                                      retries=0, reconnect_delay=0, name=f"spinline-{self.machine.id}")
        try:
            ok = await asyncio.wait_for(client.connect(), self.timeout_s + 0.5)
        except (TimeoutError, OSError, ModbusException) as exc:
            client.close()
            raise ConnectTimeout(f"cannot connect to {self.link.host}:{self.link.port}: {exc}") from exc
        if not ok:
            client.close()
            raise ConnectTimeout(f"cannot connect to {self.link.host}:{self.link.port}")
        self._client = client
        return client

    def _plan_for(self, points: Sequence[PointRef]) -> list[_Compiled]:
        ident = tuple(map(id, points))
        compiled = self._plans.get(ident)
        if compiled is None:
            keys = []
            for p in points:
                k = self._keys.get(id(p))
                if k is None:
                    k = self._keys[id(p)] = p.key
                keys.append(k)
            compiled = compile_plan(points, keys, max_gap=self.max_gap)
            if len(self._plans) > 256:  # due-sets are few; bound the cache anyway
                self._plans.clear()
            self._plans[ident] = compiled
        return compiled

    def plan_size(self, points: Sequence[PointRef]) -> int:
        """Requests one read of ``points`` takes."""
        return len(self._plan_for(points))

    async def _request(self, client: AsyncModbusTcpClient, b: BlockRead) -> Any:
        unit = self.link.unit_id
        self.requests += 1
        if b.table == ModbusTable.HOLDING:
            return await client.read_holding_registers(b.start, count=b.count, device_id=unit)
        if b.table == ModbusTable.INPUT:
            return await client.read_input_registers(b.start, count=b.count, device_id=unit)
        if b.table == ModbusTable.COIL:
            return await client.read_coils(b.start, count=b.count, device_id=unit)
        return await client.read_discrete_inputs(b.start, count=b.count, device_id=unit)

    async def read(self, points: Sequence[PointRef]) -> Batch:
        compiled = self._plan_for(points)
        client = await self._connected()
        t0 = time.perf_counter()
        keys: list[npt.NDArray[np.int64]] = []
        values: list[npt.NDArray[np.float64]] = []
        quals: list[npt.NDArray[np.uint8]] = []
        stamps: list[npt.NDArray[np.int64]] = []
        refused = 0
        for c in compiled:
            try:
                rr = await self._request(client, c.block)
            except asyncio.CancelledError:
                raise
            except (ModbusException, OSError, TimeoutError) as exc:
                self._close()
                if "timeout" in str(exc).lower() or "no response" in str(exc).lower():
                    raise ConnectTimeout(f"{self.health.name}: no answer: {exc}") from exc
                raise ConnectorError(f"{self.health.name}: {exc}") from exc
            now = time.time_ns()
            n = len(c.keys)
            if rr.isError():
                refused += 1
                code = getattr(rr, "exception_code", None)
                b = c.block
                self.health.rejected("modbus_exception",
                                     f"{b.table.value} registers {b.start}..{b.start + b.count - 1}: exception code "
                                     f"{code} ({EXCEPTION_CODES.get(code or 0, 'unknown')}); {n} point(s) BAD",
                                     logger=log, log_key=f"modbus_exception:{code}")
                v = np.full(n, np.nan)
                q = np.full(n, Quality.BAD, dtype=np.uint8)
            else:
                try:
                    if c.decoder is not None:
                        v = c.decoder.decode(rr.registers)
                    else:
                        assert c.bit_offsets is not None
                        v = decode_bits(rr.bits, c.bit_offsets)
                except DecodeError as exc:
                    refused += 1
                    self.health.rejected("modbus_decode", f"{c.block.table.value} registers {c.block.start}.."
                                                          f"{c.block.start + c.block.count - 1}: {exc}", logger=log)
                    v = np.full(n, np.nan)
                q = np.where(np.isfinite(v), np.uint8(Quality.GOOD), np.uint8(Quality.BAD)).astype(np.uint8)
            keys.append(c.keys)
            values.append(v)
            quals.append(q)
            stamps.append(np.full(n, now, dtype=np.int64))
        latency = (time.perf_counter() - t0) * 1000.0
        if refused == len(compiled) and compiled:
            self.health.failed(f"device refused all {refused} block read(s)", logger=log, down=False)
        else:
            self.health.ok(latency, degraded=refused > 0, logger=log)
        if not keys:
            return Batch.empty()
        return Batch(np.concatenate(keys), np.concatenate(stamps), np.concatenate(values), np.concatenate(quals))
