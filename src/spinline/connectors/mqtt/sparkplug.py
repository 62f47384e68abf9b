"""Sparkplug B (Eclipse Tahu ``sparkplug_b.proto``) payload codec, descriptors built in code.

Only the fields a telemetry reader needs are declared (Payload: timestamp, metrics, seq, uuid,
body; Metric: name, alias, timestamp, datatype, is_historical, is_transient, is_null and the
scalar value oneof); the field numbers and types are Tahu's, so payloads from any Sparkplug B
device parse, and unknown fields (metadata, properties, datasets, templates) are skipped.

Topics: ``spBv1.0/{group}/{NBIRTH|NDATA|NDEATH|DBIRTH|DDATA|DDEATH}/{edge_node}[/{device}]``.
spinline maps group = mill id, edge node = machine id, metric name = the point's ``mqtt.field``
(default: the point name). NBIRTH declares metric aliases; NDATA may use aliases only; NDEATH
means the node is offline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from spinline.core.errors import DecodeError

NAMESPACE = "spBv1.0"
_PKG = "org.eclipse.tahu.protobuf"

# Sparkplug B data types (Tahu DataType enum) this codec reads.
INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64 = 1, 2, 3, 4, 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING = 9, 10, 11, 12
_SIGNED_32 = {INT8: 8, INT16: 16, INT32: 32}


def _build() -> tuple[type[Any], type[Any]]:
    f = descriptor_pb2.FileDescriptorProto(name="spinline_sparkplug_b.proto", package=_PKG, syntax="proto2")
    T = descriptor_pb2.FieldDescriptorProto
    opt, rep = T.LABEL_OPTIONAL, T.LABEL_REPEATED
    metric = f.message_type.add(name="Metric")
    metric.oneof_decl.add(name="value")
    for name, num, typ in (("name", 1, T.TYPE_STRING), ("alias", 2, T.TYPE_UINT64), ("timestamp", 3, T.TYPE_UINT64),
                           ("datatype", 4, T.TYPE_UINT32), ("is_historical", 5, T.TYPE_BOOL),
                           ("is_transient", 6, T.TYPE_BOOL), ("is_null", 7, T.TYPE_BOOL)):
        metric.field.add(name=name, number=num, type=typ, label=opt)
    for name, num, typ in (("int_value", 10, T.TYPE_UINT32), ("long_value", 11, T.TYPE_UINT64),
                           ("float_value", 12, T.TYPE_FLOAT), ("double_value", 13, T.TYPE_DOUBLE),
                           ("boolean_value", 14, T.TYPE_BOOL), ("string_value", 15, T.TYPE_STRING),
                           ("bytes_value", 16, T.TYPE_BYTES)):
        metric.field.add(name=name, number=num, type=typ, label=opt, oneof_index=0)
    payload = f.message_type.add(name="Payload")
    payload.field.add(name="timestamp", number=1, type=T.TYPE_UINT64, label=opt)
    payload.field.add(name="metrics", number=2, type=T.TYPE_MESSAGE, label=rep, type_name=f".{_PKG}.Metric")
    payload.field.add(name="seq", number=3, type=T.TYPE_UINT64, label=opt)
    payload.field.add(name="uuid", number=4, type=T.TYPE_STRING, label=opt)
    payload.field.add(name="body", number=5, type=T.TYPE_BYTES, label=opt)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PKG}.Payload")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PKG}.Metric")))


Payload, Metric = _build()


@dataclass(frozen=True, slots=True)
class MetricValue:
    name: str | None
    alias: int | None
    timestamp_ms: int | None
    datatype: int
    value: float          # NaN for null / non-numeric
    #: False for a value that is not a number (string, bytes, no value); a null is numeric (just absent).
    numeric: bool = True


@dataclass(frozen=True, slots=True)
class Topic:
    group: str
    message_type: str
    edge_node: str
    device: str | None


def parse_topic(topic: str) -> Topic | None:
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE:
        return None
    return Topic(parts[1], parts[2], parts[3], parts[4] if len(parts) == 5 else None)


def topic(group: str, message_type: str, edge_node: str, device: str | None = None) -> str:
    return "/".join([NAMESPACE, group, message_type, edge_node] + ([device] if device else []))


def _numeric(m: Any) -> float:
    if m.is_null:
        return math.nan
    which = m.WhichOneof("value")
    if which is None:
        return math.nan
    if which == "int_value":
        bits = _SIGNED_32.get(m.datatype)
        v = m.int_value
        if bits is not None and v >= 1 << (bits - 1):
            v -= 1 << (32 if v >= 1 << (bits) else bits)
        return float(v)
    if which == "long_value":
        v = m.long_value
        return float(v - (1 << 64) if m.datatype == INT64 and v >= 1 << 63 else v)
    if which in ("float_value", "double_value"):
        return float(getattr(m, which))
    if which == "boolean_value":
        return 1.0 if m.boolean_value else 0.0
    return math.nan


def decode(data: bytes) -> tuple[int | None, int | None, list[MetricValue]]:
    """(payload timestamp ms, seq, metrics) of a Sparkplug B payload; raises ``DecodeError``."""
    p = Payload()
    try:
        p.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError of its own, not a common base
        raise DecodeError(f"not a Sparkplug B payload: {exc}") from None
    out = [MetricValue(m.name if m.HasField("name") else None, m.alias if m.HasField("alias") else None,
                       m.timestamp if m.HasField("timestamp") else None, m.datatype, _numeric(m),
                       m.is_null or m.WhichOneof("value") not in ("string_value", "bytes_value", None))
           for m in p.metrics]
    return (p.timestamp if p.HasField("timestamp") else None, p.seq if p.HasField("seq") else None, out)


def encode(metrics: list[tuple[str | None, int | None, int, Any]], *, timestamp_ms: int,
           seq: int | None = None) -> bytes:
    """Build a payload from (name, alias, datatype, value) tuples (for devices, tests and the simulator)."""
    p = Payload(timestamp=timestamp_ms)
    if seq is not None:
        p.seq = seq
    for name, alias, dtype, value in metrics:
        m = p.metrics.add(datatype=dtype, timestamp=timestamp_ms)
        if name is not None:
            m.name = name
        if alias is not None:
            m.alias = alias
        if value is None:
            m.is_null = True
        elif dtype in (INT8, INT16, INT32, UINT8, UINT16, UINT32):
            m.int_value = int(value) & 0xFFFFFFFF
        elif dtype in (INT64, UINT64):
            m.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
        elif dtype == FLOAT:
            m.float_value = float(value)
        elif dtype == DOUBLE:
            m.double_value = float(value)
        elif dtype == BOOLEAN:
            m.boolean_value = bool(value)
        elif dtype == STRING:
            m.string_value = str(value)
        else:
            raise ValueError(f"unsupported Sparkplug datatype {dtype}")
    return bytes(p.SerializeToString())
