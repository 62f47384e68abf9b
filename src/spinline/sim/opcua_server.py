"""OPC UA face: one asyncua server per configured endpoint with a browsable address space.

Tree: Objects / <mill> / <workshop> / <line> / <machine> / <point>. Variable node ids are the site's
``PointRef.opcua_node_id()`` (``ns=2;s=ca01.delivery_speed``); the spinline namespace is the first
registered, so its index is 2. Every variable carries an ``EngineeringUnits`` property and is
updated each tick with the simulated source timestamp; a value the simulator marks bad is written
with status ``BadCommunicationError``.

asyncua's NewType-based annotations (UInt32, String, DateTime ...) are stricter than its runtime;
this module is excluded from those checks with one ``type: ignore`` per call that needs it.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime

import numpy as np
from asyncua import Server, ua

from spinline.core.site import DataType, OpcUaLink, PointRef

log = logging.getLogger(__name__)

NAMESPACE_URI = "urn:spinline:sim"
_VT = {DataType.BOOL: ua.VariantType.Boolean, DataType.INT16: ua.VariantType.Int16,
       DataType.UINT16: ua.VariantType.UInt16, DataType.INT32: ua.VariantType.Int32,
       DataType.UINT32: ua.VariantType.UInt32, DataType.INT64: ua.VariantType.Int64,
       DataType.UINT64: ua.VariantType.UInt64, DataType.FLOAT32: ua.VariantType.Float,
       DataType.FLOAT64: ua.VariantType.Double}


def endpoint_port(endpoint: str) -> int:
    m = re.match(r"^opc\.tcp://[^:/]+:(\d+)", endpoint)
    return int(m.group(1)) if m else 4840


def _cast(value: float, dtype: DataType) -> object:
    if dtype == DataType.BOOL:
        return bool(value)
    if dtype in (DataType.FLOAT32, DataType.FLOAT64):
        return float(value)
    return int(round(value))


class OpcUaFace:
    """One endpoint. ``start`` builds the address space (so a restart gives a fresh server)."""

    def __init__(self, endpoint: str, refs: list[tuple[int, PointRef]], host: str = "127.0.0.1") -> None:
        self.endpoint = endpoint
        self.port = endpoint_port(endpoint)
        self.path = re.sub(r"^opc\.tcp://[^/]+", "", endpoint) or "/"
        self.host = host
        self.refs = refs
        self.actual_port: int | None = None
        self.server: Server | None = None
        self._nodes: list[tuple[int, ua.NodeId, DataType]] = []

    async def start(self) -> int:
        server = Server()
        await server.init()
        port = self.actual_port if self.actual_port is not None else self.port
        server.set_endpoint(f"opc.tcp://{self.host}:{port}{self.path}")
        server.set_server_name("spinline simulated mill")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace(NAMESPACE_URI)
        folders: dict[str, object] = {}
        self._nodes = []
        objects = server.nodes.objects
        for col, ref in self.refs:
            parent = objects
            path = ""
            for part in (ref.mill.id, ref.workshop.id, ref.line.id, ref.machine.id):
                path = f"{path}/{part}" if path else part
                if path not in folders:
                    folders[path] = await parent.add_object(ua.NodeId(path, ns), ua.QualifiedName(part, ns))  # type: ignore[arg-type]
                parent = folders[path]  # type: ignore[assignment]
            nodeid = ua.NodeId.from_string(ref.opcua_node_id())
            vt = _VT[ref.point.dtype]
            var = await parent.add_variable(nodeid, ua.QualifiedName(ref.point.name, ns),
                                            ua.Variant(_cast(0.0, ref.point.dtype), vt))
            eu = ua.EUInformation(NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact", UnitId=-1,
                                  DisplayName=ua.LocalizedText(ref.point.unit),
                                  Description=ua.LocalizedText(ref.point.description or ref.point.unit))
            await var.add_property(ua.NodeId(f"{ref.opcua_node_id().split('s=', 1)[-1]}.EngineeringUnits", ns),  # type: ignore[arg-type]
                                   "EngineeringUnits", ua.Variant(eu, ua.VariantType.ExtensionObject))
            self._nodes.append((col, nodeid, ref.point.dtype))
        await server.start()
        self.server = server
        bserver = server.bserver
        self.actual_port = int(bserver.port) if bserver is not None else port
        log.info("opc ua server on opc.tcp://%s:%d%s (configured %d), %d variables", self.host, self.actual_port,
                 self.path, self.port, len(self._nodes))
        return self.actual_port

    async def update(self, values: np.ndarray, quality: np.ndarray, ts_ns: int) -> None:
        if self.server is None:
            return
        ts = datetime.fromtimestamp(ts_ns / 1e9, UTC)
        now = datetime.now(UTC)
        for col, nodeid, dtype in self._nodes:
            v = float(values[col])
            if quality[col] >= 0x80 or not math.isfinite(v):
                dv = ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadCommunicationError),  # type: ignore[arg-type]
                                  SourceTimestamp=ts, ServerTimestamp=now)  # type: ignore[arg-type]
            else:
                dv = ua.DataValue(ua.Variant(_cast(v, dtype), _VT[dtype]), SourceTimestamp=ts, ServerTimestamp=now)  # type: ignore[arg-type]
            await self.server.write_attribute_value(nodeid, dv)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


def opcua_endpoints(refs: list[PointRef]) -> dict[str, list[tuple[int, PointRef]]]:
    """Group the OPC UA-linked points (with their MillSim column) by endpoint."""
    out: dict[str, list[tuple[int, PointRef]]] = {}
    for col, ref in enumerate(refs):
        if isinstance(ref.machine.link, OpcUaLink):
            out.setdefault(ref.machine.link.endpoint, []).append((col, ref))
    return out
