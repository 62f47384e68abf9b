"""The connector registry: which connectors a site's points need, one entry per protocol.

A protocol is one folder under ``spinline.connectors`` plus one line in ``CONNECTORS``: its
``plan(points, ctx)`` groups the site's points into connectors (Modbus: one per device, polled;
OPC UA: one per endpoint; MQTT: one per broker, with the vibration channels that publish there)
and builds them. Nothing connects here (constructors do no I/O); the edge agent wraps polled
connectors in its poll coordinators and runs push connectors as tasks. Each plan imports its
protocol library on use, so an edge without OPC UA devices never loads asyncua.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from spinline.core.site import Machine, ModbusLink, MqttLink, OpcUaLink, PointRef

from .base import PolledConnector, PushConnector
from .mqtt.vibration import FeatureSink, Featurizer


@dataclass(frozen=True, slots=True)
class LinkContext:
    """What the edge tells every plan (its settings and collaborators, nothing protocol-specific)."""

    #: This edge's id (client ids on brokers carry it).
    edge_id: str
    mill: str
    #: Broker of MQTT devices whose link names none; then the cloud URL when it is MQTT; then loopback.
    device_mqtt: str | None = None
    cloud_url: str | None = None
    modbus_max_gap: int = 8
    #: ISO 20816 class per machine id (vibration features are judged by it).
    iso_class: Mapping[str, str] | None = None
    #: Vibration: the feature code (``spinline.health.features.featurize``) and where features go to be scored.
    featurizer: Featurizer | None = None
    feature_sink: FeatureSink | None = None
    #: False for a federated mill: feature rows go to the sink (scored at the edge), never upstream.
    share_features: bool = True

    def broker(self, link: MqttLink | None) -> tuple[str, int, bool]:
        """(host, port, MQTT 3.1.1 only) of the broker a device link uses.

        ``?protocol=3.1.1`` on the URL says the broker speaks no MQTT 5 (the demo's embedded one), so
        the connector opens its persistent session in 3.1.1 terms at once instead of finding out from
        a dropped v5 CONNECT (which such a broker logs as a crash).
        """
        url = (link.broker if link is not None and link.broker else None) or self.device_mqtt
        if url is None and self.cloud_url and urlsplit(self.cloud_url).scheme == "mqtt":
            url = self.cloud_url
        u = urlsplit(url or "mqtt://127.0.0.1:1883")
        version = dict(parse_qsl(u.query)).get("protocol", "5")
        if version not in ("5", "3.1.1"):
            raise ValueError(f"MQTT broker URL {url!r}: protocol={version!r} is not one of 5, 3.1.1")
        return u.hostname or "127.0.0.1", u.port or 1883, version == "3.1.1"


@dataclass(frozen=True, slots=True)
class Planned:
    """One connector of the plan, with the points it serves."""

    name: str
    shape: Literal["polled", "push"]
    connector: PolledConnector | PushConnector
    points: tuple[PointRef, ...]
    #: Polled: how long one read may take before it counts as failed.
    timeout_s: float = 10.0


Plan = Callable[[Sequence[PointRef], LinkContext], list[Planned]]


def _by_machine(points: Sequence[PointRef]) -> dict[str, list[PointRef]]:
    out: dict[str, list[PointRef]] = defaultdict(list)
    for p in points:
        out[p.machine.id].append(p)
    return out


def plan_modbus(points: Sequence[PointRef], ctx: LinkContext) -> list[Planned]:
    from .modbus.connector import ModbusConnector

    out = []
    for mid, pts in _by_machine(points).items():
        link = pts[0].machine.link
        if isinstance(link, ModbusLink):
            out.append(Planned(f"modbus {mid}", "polled", ModbusConnector(pts[0].machine, max_gap=ctx.modbus_max_gap),
                               tuple(pts), timeout_s=link.timeout_s * 4 + 1))
    return out


def plan_opcua(points: Sequence[PointRef], ctx: LinkContext) -> list[Planned]:
    by_endpoint: dict[str, list[PointRef]] = defaultdict(list)
    for pts in _by_machine(points).values():
        link = pts[0].machine.link
        if isinstance(link, OpcUaLink):
            by_endpoint[link.endpoint].extend(pts)
    if not by_endpoint:
        return []
    from .opcua.connector import OpcUaConnector

    return [Planned(f"opcua {ep}", "push", OpcUaConnector(ep, pts), tuple(pts)) for ep, pts in by_endpoint.items()]


def plan_mqtt(points: Sequence[PointRef], ctx: LinkContext) -> list[Planned]:
    by_broker: dict[tuple[str, int, bool], list[PointRef]] = defaultdict(list)
    for pts in _by_machine(points).values():
        link = pts[0].machine.link
        if isinstance(link, MqttLink):
            by_broker[ctx.broker(link)].extend(pts)
    vib: dict[tuple[str, int, bool], list[Machine]] = defaultdict(list)
    for m in (p.machine for p in points):   # a vibration sensor publishes on MQTT whatever the data link
        if m.vibration is not None:
            key = ctx.broker(m.link if isinstance(m.link, MqttLink) else None)
            if m not in vib[key]:
                vib[key].append(m)
    if not by_broker and not vib:
        return []
    from .mqtt.connector import MqttConnector

    out = []
    for key in set(by_broker) | set(vib):
        host, port, mqtt311 = key
        pts = by_broker.get(key, [])
        out.append(Planned(f"mqtt {host}:{port}", "push", MqttConnector(
            host, port, pts, mill=ctx.mill, vibration_machines=vib.get(key, []), iso_class=ctx.iso_class,
            client_id=f"spinline-dev-{ctx.edge_id}-{port}", featurizer=ctx.featurizer,
            feature_sink=ctx.feature_sink, share_features=ctx.share_features, mqtt311=mqtt311), tuple(pts)))
    return out


#: protocol -> plan. A new protocol: its folder, and one line here.
CONNECTORS: dict[str, Plan] = {
    "modbus": plan_modbus,
    "opcua": plan_opcua,
    "mqtt": plan_mqtt,
}


def vibration_machines(points: Sequence[PointRef]) -> list[Machine]:
    """Machines with vibration channels (they need the featurizer and a scoring stage)."""
    out: list[Machine] = []
    for m in (p.machine for p in points):
        if m.vibration is not None and m not in out:
            out.append(m)
    return out


def plan(points: Sequence[PointRef], ctx: LinkContext) -> list[Planned]:
    """Every connector the points need, protocol by protocol in ``CONNECTORS`` order."""
    return [c for p in CONNECTORS.values() for c in p(points, ctx)]
