"""The protocol faces, read with real clients over loopback on ephemeral ports."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import aiomqtt
import numpy as np
import pytest
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from spinline.core.site import Fault, FaultType, load_site
from spinline.sim.modbus_server import encode_registers
from spinline.sim.mqtt_publisher import decode_samples
from spinline.sim.server import SimServer


def f32(regs: list[int], word_order: str = "big") -> float:
    if word_order == "little":
        regs = list(reversed(regs))
    return float(struct.unpack(">f", struct.pack(">HH", *regs))[0])


def test_encoder_layouts() -> None:
    from spinline.core.site import DataType
    assert encode_registers(1.0, DataType.FLOAT32) == [0x3F80, 0x0000]
    assert encode_registers(1.0, DataType.FLOAT32, word_order="little") == [0x0000, 0x3F80]
    assert encode_registers(1.0, DataType.FLOAT32, byte_order="little") == [0x803F, 0x0000]
    assert encode_registers(6.8, DataType.UINT16, scale=0.01) == [680]
    assert encode_registers(70000.5, DataType.UINT32, scale=0.001) == list(divmod(70000500, 65536))


async def test_modbus_and_opcua_agree_with_the_model(mill_yaml: Path) -> None:
    site = load_site(mill_yaml)
    faults = [Fault(machine="em-wind", type=FaultType.METER_DROPOUT, start_s=0.0)]
    async with SimServer(site, "mill-a", speed=60, ephemeral=True, tick_s=0.2, faults=faults) as srv:
        ports = srv.ports
        assert set(ports) == {5020, 5021, 4840} and all(p not in (5020, 5021, 4840) for p in ports.values())
        client = AsyncModbusTcpClient("127.0.0.1", port=ports[5020], timeout=2, retries=0)
        await client.connect()
        meters = AsyncModbusTcpClient("127.0.0.1", port=ports[5021], timeout=0.5, retries=0)
        await meters.connect()
        try:
            srv._task.cancel()   # freeze the clock so all three views see the same tick  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
            rr = await client.read_holding_registers(0, count=48, device_id=1)
            assert not rr.isError()
            regs = rr.registers
            rpm, state = f32(regs[2:4]), regs[0]
            assert rpm == pytest.approx(srv.sim.value("rf01", "spindle_speed"), rel=1e-6)
            assert state == srv.sim.value("rf01", "state")
            assert f32(regs[8:10]) == 32.0
            energy = struct.unpack(">d", struct.pack(">HHHH", *regs[36:40]))[0]
            assert energy == pytest.approx(srv.sim.value("rf01", "energy"))
            # Ring meter (little word order) = sum of the nine frames' power + losses.
            rm = await meters.read_holding_registers(0, count=10, device_id=3)
            ring_kw = f32(rm.registers[0:2], "little")
            frames = sum(srv.sim.value(f"rf0{i}", "power") for i in range(1, 10))
            assert 1.0 < ring_kw / frames < 1.02
            comp = await meters.read_holding_registers(0, count=15, device_id=11)
            assert 6.0 < comp.registers[2] * 0.01 < 7.2                             # bar, uint16 x 0.01
            with pytest.raises(Exception):   # noqa: B017 - the dropped-out meter does not answer at all
                r = await meters.read_holding_registers(0, count=10, device_id=4)
                if r.isError():
                    raise RuntimeError(r)
            async with Client(f"opc.tcp://127.0.0.1:{ports[4840]}/spinline", timeout=5) as ua_client:
                ns = await ua_client.get_namespace_index("urn:spinline:sim")
                assert ns == 2
                node = ua_client.get_node("ns=2;s=ca01.delivery_speed")
                dv = await node.read_data_value()
                assert dv.Value.Value == pytest.approx(srv.sim.value("ca01", "delivery_speed"), rel=1e-6)
                assert dv.SourceTimestamp is not None
                prod = await ua_client.get_node("ns=2;s=ca01.production_rate").read_value()
                assert prod == pytest.approx(srv.sim.value("ca01", "delivery_speed") * 5.0 * 60 / 1000, rel=0.01)
                props = await node.get_properties()
                names = {(await p.read_browse_name()).Name: p for p in props}
                eu = await names["EngineeringUnits"].read_value()
                assert eu.DisplayName.Text == "m/min"
                # Browse Objects/mill-a/prep/prep-c32/ca01
                path = ["0:Objects", f"{ns}:mill-a", f"{ns}:prep", f"{ns}:prep-c32", f"{ns}:ca01", f"{ns}:state"]
                state_node = await ua_client.nodes.root.get_child(path)
                assert state_node.nodeid == ua.NodeId.from_string("ns=2;s=ca01.state")
                rh = await ua_client.get_node("ns=2;s=hv01.hall_rh").read_value()
                assert 45 < rh < 70
        finally:
            client.close()
            meters.close()


async def test_stop_and_restart_a_port(mill_yaml: Path) -> None:
    site = load_site(mill_yaml)
    async with SimServer(site, "mill-a", speed=60, ephemeral=True, tick_s=0.2) as srv:
        port = srv.ports[5021]
        await srv.stop_port(5021)
        c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0)
        assert not await c.connect()
        await srv.start_port(5021)
        assert srv.ports[5021] == port
        assert await c.connect()
        rr = await c.read_holding_registers(0, count=2, device_id=1)
        assert not rr.isError() and f32(rr.registers, "little") > 100
        c.close()


@pytest.mark.mqtt
async def test_mqtt_telemetry_and_vibration(mill_yaml: Path, mqtt_broker: tuple[str, int]) -> None:
    site = load_site(mill_yaml)
    got: dict[str, dict] = {}
    async with aiomqtt.Client(*mqtt_broker, identifier="sim-test-sub") as sub:
        await sub.subscribe("spinline/mill-a/#")
        async with SimServer(site, "mill-a", speed=60, ephemeral=True, tick_s=0.2, mqtt=mqtt_broker) as srv:
            async def collect() -> None:
                async for msg in sub.messages:
                    got[str(msg.topic)] = json.loads(msg.payload)  # type: ignore[arg-type]
                    if "spinline/mill-a/wd01/telemetry" in got and \
                            "spinline/mill-a/rf01/vibration/main_motor" in got:
                        return
            await asyncio.wait_for(collect(), 10)
            wd = got["spinline/mill-a/wd01/telemetry"]
            assert {"ts", "state", "winding_speed", "production_rate", "output", "power", "energy"} <= set(wd)
            assert abs(wd["ts"] - srv.sim.last_ts_ns / 1e6) < 3600 * 1000
            vib = got["spinline/mill-a/rf01/vibration/main_motor"]
            assert vib["fs_hz"] == 25600 and vib["encoding"] == "f32le-b64" and vib["unit"] == "g"
            x = decode_samples(vib)
            assert len(x) == 25600 and np.isfinite(x).all() and 0.005 < float(np.std(x)) < 1.0
