from __future__ import annotations

import asyncio
import struct
from importlib import import_module

import numpy as np
import pytest

from spinline.connectors.base import LinkState
from spinline.connectors.modbus.connector import ModbusConnector
from spinline.core.batch import Quality
from spinline.core.errors import ConnectorError
from spinline.core.site import parse_site
from spinline.edge.coordinator import PollCoordinator

peers = import_module("spinline_test_peers")


def site_for(port: int, timeout: float = 0.5):
    pts = [
        {"name": "i16", "unit": "dimensionless", "dtype": "int16", "modbus": {"register": 0}},
        {"name": "u16s", "unit": "bar", "dtype": "uint16", "modbus": {"register": 1, "scale": 0.01}},
        {"name": "i32", "unit": "dimensionless", "dtype": "int32", "modbus": {"register": 2}},
        {"name": "u32cdab", "unit": "kWh", "dtype": "uint32", "modbus": {"register": 4, "word_order": "little"}},
        {"name": "f32", "unit": "kW", "modbus": {"register": 6}},
        {"name": "f32dcba", "unit": "kW", "modbus": {"register": 8, "byte_order": "little", "word_order": "little"}},
        {"name": "f64", "unit": "kWh", "dtype": "float64", "modbus": {"register": 12}},
        {"name": "i64badc", "unit": "dimensionless", "dtype": "int64",
         "modbus": {"register": 16, "byte_order": "little"}},
        {"name": "inp", "unit": "degC", "modbus": {"register": 0, "table": "input"}},
        {"name": "coil2", "unit": "dimensionless", "dtype": "bool", "modbus": {"register": 2, "table": "coil"}},
        {"name": "far", "unit": "kW", "modbus": {"register": 100}},
    ]
    return parse_site({"mills": [{"id": "m", "workshops": [{"id": "w", "lines": [{"id": "l", "machines": [
        {"id": "d1", "type": "energy_meter", "points": pts,
         "link": {"protocol": "modbus", "port": port, "unit_id": 1, "timeout_s": timeout}}]}]}]}]})


def words(fmt: str, v: float | int) -> list[int]:
    raw = struct.pack(fmt, v)
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


def swap(ws: list[int]) -> list[int]:
    return [((w & 0xFF) << 8) | (w >> 8) for w in ws]


async def test_reads_every_dtype_and_order_in_coalesced_blocks() -> None:
    async with peers.ModbusPeer({1: 128}, coils={1: [False, False, True] + [False] * 13}) as dev:
        hr = dev.hr[1]
        hr[0:1] = words(">h", -7)
        hr[1:2] = [1234]
        hr[2:4] = words(">i", -70000)
        hr[4:6] = words(">I", 3_000_000_000)[::-1]
        hr[6:8] = words(">f", 1.5)
        hr[8:10] = swap(words(">f", -2.25))[::-1]
        hr[12:16] = words(">d", 12345.678)
        hr[16:20] = swap(words(">q", -(2**40)))
        hr[100:102] = words(">f", 9.0)
        dev.ir[1][0:2] = words(">f", 21.5)
        site = site_for(dev.port)
        pts = site.points("m")
        async with ModbusConnector(pts[0].machine) as conn:
            b = await conn.read(pts)
            assert conn.plan_size(pts) == 4  # holding 0-19, holding 100, input, coil
            assert dev.requests >= 2
        got = dict(zip(b.point.tolist(), b.value.tolist(), strict=True))
        want = {"i16": -7, "u16s": 12.34, "i32": -70000, "u32cdab": 3_000_000_000, "f32": 1.5, "f32dcba": -2.25,
                "f64": 12345.678, "i64badc": -(2**40), "inp": 21.5, "coil2": 1.0, "far": 9.0}
        for p in pts:
            assert got[p.key] == pytest.approx(want[p.point.name]), p.point.name
        assert (b.quality == Quality.GOOD).all()
        assert conn.health.state == LinkState.UP


async def test_dead_device_fails_fast_and_recovers_after_restart() -> None:
    dev = peers.ModbusPeer({1: 128})
    port = await dev.start()
    pts = site_for(port, timeout=0.3).points("m")
    pts = [p for p in pts if p.point.modbus.table.value == "holding"]
    conn = ModbusConnector(pts[0].machine)
    got: list[int] = []
    coord = PollCoordinator("d1", conn, pts, lambda b: got.append(len(b)))
    task = asyncio.create_task(coord.run())
    try:
        await asyncio.sleep(1.5)
        assert coord.polls >= 1 and conn.health.state == LinkState.UP
        await dev.stop()
        await asyncio.sleep(2.0)
        assert conn.health.state == LinkState.DOWN and conn.health.errors >= 1
        assert not task.done()  # the poller survives the outage
        dev2 = peers.ModbusPeer({1: 128}, port=port)
        await dev2.start()
        n = len(got)
        await asyncio.sleep(3.0)
        assert conn.health.state == LinkState.UP, conn.health
        assert len(got) > n
        await dev2.stop()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_refused_block_is_bad_quality_and_link_degraded() -> None:
    async with peers.ModbusPeer({1: 50}) as dev:   # register 100 does not exist on this device
        pts = site_for(dev.port).points("m")
        async with ModbusConnector(pts[0].machine) as conn:
            b = await conn.read(pts)
        far = next(p for p in pts if p.point.name == "far")
        row = int(np.flatnonzero(b.point == far.key)[0])
        assert b.quality[row] == Quality.BAD and np.isnan(b.value[row])
        assert conn.health.state == LinkState.DEGRADED


async def test_unreachable_device_raises_connector_error() -> None:
    pts = site_for(peers.free_port(), timeout=0.3).points("m")
    async with ModbusConnector(pts[0].machine) as conn:
        with pytest.raises(ConnectorError):
            await conn.read(pts)
