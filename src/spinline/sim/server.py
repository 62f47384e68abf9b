"""``SimServer``: MillSim in (warped) real time behind real Modbus TCP, OPC UA and MQTT faces.

Each tick (``tick_s`` of wall time) advances the model by ``tick_s * speed`` simulated seconds,
then writes the new values into every face. ``ephemeral=True`` binds every server to port 0 and
``ports`` maps configured to actual ports for ``spinline.core.site.rebind``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from spinline.core.site import Fault, MachineType, ModbusLink, Site
from spinline.sim.mill import MillSim
from spinline.sim.modbus_server import ModbusFace, SimModbusContext
from spinline.sim.mqtt_publisher import MqttFace, mqtt_refs, telemetry_payloads, vibration_payload, vibration_topic
from spinline.sim.opcua_server import OpcUaFace, opcua_endpoints

log = logging.getLogger(__name__)


class SimServer:
    """Async context manager: ``async with SimServer(site, "mill-a", speed=60, ephemeral=True) as s``."""

    def __init__(self, site: Site, mill_id: str, *, speed: float = 1.0, seed: int | None = None,
                 ephemeral: bool = False, mqtt: tuple[str, int] | None = None, tick_s: float = 1.0,
                 faults: Sequence[Fault] = (), ground_truth_path: str | Path | None = None,
                 start_ns: int | None = None, host: str = "127.0.0.1") -> None:
        if speed <= 0 or tick_s <= 0:
            raise ValueError("speed and tick_s must be positive")
        self.site, self.mill_id, self.speed, self.tick_s = site, mill_id, speed, tick_s
        self.ephemeral, self.host, self.mqtt_addr = ephemeral, host, mqtt
        now = time.time_ns() // 1_000_000_000 * 1_000_000_000
        self.sim = MillSim(site, mill_id, seed=seed, start_ns=start_ns if start_ns is not None else now,
                           faults=faults, ground_truth_path=ground_truth_path)
        self.modbus: dict[int, ModbusFace] = {}
        self.opcua: dict[int, OpcUaFace] = {}
        self.mqtt: MqttFace | None = None
        self._mqtt_refs = mqtt_refs(self.sim.points)
        self._task: asyncio.Task[None] | None = None
        self._vib_due: dict[tuple[str, str], float] = {}
        self.ticks = 0

    # --- faces ------------------------------------------------------------------------------------

    def _build(self) -> None:
        by_port: dict[int, list[tuple[int, object]]] = {}
        for col, ref in enumerate(self.sim.points):
            link = ref.machine.link
            if isinstance(link, ModbusLink) and ref.point.modbus is not None:
                by_port.setdefault(link.port, []).append((col, ref))
        for port, items in by_port.items():
            refs = [r for _, r in items]
            ctx = SimModbusContext(refs)  # type: ignore[arg-type]
            ctx.bind([c for c, _ in items], refs)  # type: ignore[arg-type]
            self.modbus[port] = ModbusFace(self.host, 0 if self.ephemeral else port, ctx)
            self.modbus[port].port = port
            if self.ephemeral:
                self.modbus[port].actual_port = 0
        for endpoint, refs2 in opcua_endpoints(self.sim.points).items():
            face = OpcUaFace(endpoint, refs2, self.host)
            if self.ephemeral:
                face.actual_port = 0
            self.opcua[face.port] = face

    @property
    def ports(self) -> dict[int, int]:
        """Configured port -> actual port of every Modbus and OPC UA server."""
        out = {p: f.actual_port or p for p, f in self.modbus.items()}
        out.update({p: f.actual_port or p for p, f in self.opcua.items()})
        return out

    def endpoints(self) -> list[str]:
        lines = [f"modbus tcp://{self.host}:{f.actual_port} units {sorted(f.context.units)}"
                 for f in self.modbus.values()]
        lines += [f"opc.tcp://{self.host}:{f.actual_port}{f.path}" for f in self.opcua.values()]
        if self.mqtt_addr:
            lines.append(f"mqtt://{self.mqtt_addr[0]}:{self.mqtt_addr[1]} (publishing)")
        return lines

    async def stop_port(self, port: int) -> None:
        """Stop the Modbus or OPC UA server configured on ``port`` (failure tests)."""
        face = self.modbus.get(port) or self.opcua.get(port)
        if face is None:
            raise KeyError(f"no server configured on port {port}")
        await face.stop()

    async def start_port(self, port: int) -> None:
        """Restart it on the same actual port."""
        face = self.modbus.get(port) or self.opcua.get(port)
        if face is None:
            raise KeyError(f"no server configured on port {port}")
        await face.start()
        await self._publish_faces()

    # --- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> SimServer:
        self._build()
        self.sim.step(self.tick_s * self.speed)
        try:
            for face in self.modbus.values():
                await face.start()
            for oface in self.opcua.values():
                await oface.start()
            if self.mqtt_addr is not None:
                self.mqtt = MqttFace(self.mqtt_addr[0], self.mqtt_addr[1], f"spinline-sim-{self.mill_id}-{id(self)}")
                await self.mqtt.start()
            await self._publish_faces()
        except BaseException:
            await self._close()
            raise
        self._task = asyncio.create_task(self._run(), name=f"sim-{self.mill_id}")
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for face in self.modbus.values():
            await face.stop()
        for oface in self.opcua.values():
            await oface.stop()
        if self.mqtt is not None:
            await self.mqtt.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while True:
            next_t += self.tick_s
            await asyncio.sleep(max(0.0, next_t - loop.time()))
            self.sim.step(self.tick_s * self.speed)
            try:
                await self._publish_faces()
            except Exception:  # the outermost loop: log and keep simulating
                log.exception("publishing tick %d failed", self.ticks)
            self.ticks += 1

    async def _publish_faces(self) -> None:
        sim = self.sim
        values, quality, ts = sim.last_values, sim.last_quality, sim.last_ts_ns
        t = np.array([sim.t_s])
        for face in self.modbus.values():
            offline = {unit for unit in face.context.units
                       if any(sim.faults.dropout(m.id, t)[0] > 0 for m in sim.machines.values()
                              if m.type == MachineType.ENERGY_METER and isinstance(m.link, ModbusLink)
                              and m.link.unit_id == unit and m.link.port == face.port)}
            face.context.update(values, offline)
        for oface in self.opcua.values():
            await oface.update(values, quality, ts)
        if self.mqtt is not None and self.mqtt.connected:
            for topic, payload in telemetry_payloads(self._mqtt_refs, values, quality, ts).items():
                await self.mqtt.publish(topic, payload)
            await self._publish_vibration()

    async def _publish_vibration(self) -> None:
        assert self.mqtt is not None
        sim = self.sim
        for m in sim.machines.values():
            if m.vibration is None:
                continue
            every = 1.0 if m.vibration.continuous else m.vibration.every_s
            dur = 1.0 if m.vibration.continuous else m.vibration.snapshot_s
            for ch in m.vibration.channels:
                due = self._vib_due.get((m.id, ch.name), 0.0)
                if sim.t_s + 1e-9 < due:
                    continue
                self._vib_due[(m.id, ch.name)] = sim.t_s + every
                samples, fs, rpm = sim.vibration_snapshot(m.id, ch.name, dur)
                await self.mqtt.publish(vibration_topic(sim.mill.id, m.id, ch.name),
                                        vibration_payload(sim.last_ts_ns // 1_000_000, samples, fs, rpm))
