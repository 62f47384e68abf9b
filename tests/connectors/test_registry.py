"""The connector registry: every protocol of the site model has a plan, and plans cover every point."""

from __future__ import annotations

import typing
from pathlib import Path

from spinline.connectors.registry import CONNECTORS, LinkContext, plan, vibration_machines
from spinline.core.site import Link, ModbusLink, MqttLink, OpcUaLink, load_site


def test_every_link_protocol_of_the_site_model_is_registered() -> None:
    links = typing.get_args(typing.get_args(Link)[0])
    protocols = {typing.get_args(cls.model_fields["protocol"].annotation)[0] for cls in links}
    assert protocols == set(CONNECTORS)


def test_plan_of_the_example_mill(mill_yaml: Path) -> None:
    site = load_site(mill_yaml)
    pts = site.points(site.mills[0].id)
    ctx = LinkContext(edge_id="e1", mill=site.mills[0].id, device_mqtt="mqtt://127.0.0.1:1999",
                      featurizer=lambda *a, **k: {}, feature_sink=lambda f: None)
    planned = plan(pts, ctx)
    modbus = {p.machine.id for p in pts if isinstance(p.machine.link, ModbusLink)}
    endpoints = {p.machine.link.endpoint for p in pts if isinstance(p.machine.link, OpcUaLink)}
    polled = [c for c in planned if c.shape == "polled"]
    assert sorted(c.name for c in polled) == sorted(f"modbus {m}" for m in modbus)   # one per device
    assert {c.name for c in planned if c.name.startswith("opcua")} == {f"opcua {e}" for e in endpoints}
    mqtt = [c for c in planned if c.name.startswith("mqtt")]
    assert [c.name for c in mqtt] == ["mqtt 127.0.0.1:1999"]          # one per broker (the device broker)
    # every MQTT-linked point is served, and the vibration channels ride on that connector
    served = {p.key for c in planned for p in c.points}
    assert {p.key for p in pts if isinstance(p.machine.link, MqttLink)} <= served
    assert vibration_machines(pts), "the example mill has vibration channels"
    vib = mqtt[0].connector.vib  # type: ignore[union-attr]
    assert {m.id for m in vibration_machines(pts)} == {vib.machine_of(t) for t in vib.topics}


def test_a_broker_url_can_say_it_speaks_only_mqtt_311(mill_yaml: Path) -> None:
    """``?protocol=3.1.1`` (the demo's embedded broker) opens the session in 3.1.1 terms at once."""
    site = load_site(mill_yaml)
    pts = site.points(site.mills[0].id)

    def mqtt_of(url: str) -> list[typing.Any]:
        ctx = LinkContext(edge_id="e1", mill=site.mills[0].id, device_mqtt=url,
                          featurizer=lambda *a, **k: {}, feature_sink=lambda f: None)
        return [c.connector for c in plan(pts, ctx) if c.name.startswith("mqtt")]

    (old,) = mqtt_of("mqtt://127.0.0.1:1999?protocol=3.1.1")
    (v5,) = mqtt_of("mqtt://127.0.0.1:1999")
    assert old._mqtt311 and not v5._mqtt311   # noqa: SLF001 - the session choice made at plan time
    try:
        mqtt_of("mqtt://127.0.0.1:1999?protocol=4")
    except ValueError as exc:
        assert "protocol='4'" in str(exc) and "5, 3.1.1" in str(exc)
    else:
        raise AssertionError("an unknown MQTT protocol version was accepted")
