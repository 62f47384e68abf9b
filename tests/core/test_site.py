"""Site model: the examples load, and every kind of bad file gets an error naming file, path and problem."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from spinline.core.errors import SiteConfigError
from spinline.core.site import (
    EDGE_MACHINE_ID,
    MachineType,
    MqttLink,
    all_points,
    derived_points,
    load_site,
    point_key,
    rebind,
)


def test_examples_load(mill_yaml: Path, zone_yaml: Path) -> None:
    site = load_site(mill_yaml)
    assert len(site.mills) == 1
    pts = site.points()
    assert len(pts) > 300
    rings = [m for _, _, m in _machines(site) if m.type == MachineType.RING_FRAME]
    assert len(rings) >= 8
    assert all(1008 <= (m.spindles or 0) <= 1824 for m in rings)
    kinds = {m.type for _, _, m in _machines(site)}
    assert kinds >= {MachineType.BLOWROOM, MachineType.CARD, MachineType.DRAW_FRAME, MachineType.ROVING_FRAME,
                     MachineType.RING_FRAME, MachineType.WINDER, MachineType.AIR_COMPRESSOR, MachineType.HVAC,
                     MachineType.ENERGY_METER}
    zone = load_site(zone_yaml)
    assert len(zone.mills) == 3
    counts = {line.count_ne for mill in zone.mills for ws in mill.workshops for line in ws.lines if line.count_ne}
    assert len(counts) >= 4
    sizes = {sum(m.spindles or 0 for _, _, m in _machines_of(mill)) for mill in zone.mills}
    assert len(sizes) == 3


def _machines(site):  # type: ignore[no-untyped-def]
    for mill in site.mills:
        yield from _machines_of(mill)


def _machines_of(mill):  # type: ignore[no-untyped-def]
    for ws in mill.workshops:
        for line in ws.lines:
            for m in line.machines:
                yield ws, line, m


def test_tags_and_keys_are_stable_and_unique(mill_yaml: Path) -> None:
    site = load_site(mill_yaml)
    refs = all_points(site)
    tags = [r.tag for r in refs]
    assert len(set(tags)) == len(tags)
    keys = [r.key for r in refs]
    assert len(set(keys)) == len(keys)
    assert point_key("mill-a/rf01/spindle_speed") == point_key("mill-a/rf01/spindle_speed")
    assert refs[0].key == point_key(refs[0].tag)
    assert -(2**63) <= refs[0].key < 2**63


def test_derived_points_cover_links_vibration_and_edge(mill_yaml: Path) -> None:
    site = load_site(mill_yaml)
    d = {r.tag for r in derived_points(site)}
    assert "mill-a/rf01/link_state" in d
    assert "mill-a/rf01/vib_main_motor_env_bpfo" in d
    assert f"mill-a/{EDGE_MACHINE_ID}/buffer_rows" in d
    assert "mill-a/rf03/vib_main_motor_rms_g" not in d  # rf03 has no vibration sensor


def test_rebind_changes_ports_only(mill_yaml: Path) -> None:
    site = load_site(mill_yaml)
    moved = rebind(site, {5020: 15020, 4840: 14840})
    m = {r.machine.id: r.machine for r in moved.points()}
    assert m["rf01"].link.port == 15020  # type: ignore[union-attr]
    assert m["em-main"].link.port == 5021  # type: ignore[union-attr]
    assert m["ca01"].link.endpoint == "opc.tcp://127.0.0.1:14840/spinline"  # type: ignore[union-attr]
    assert [r.tag for r in moved.points()] == [r.tag for r in site.points()]


# --- bad files --------------------------------------------------------------------------------

def _base() -> dict:
    return {
        "version": 1,
        "templates": {"rf": {"points": [
            {"name": "speed", "unit": "rpm", "modbus": {"register": 0}},
            {"name": "energy", "unit": "kWh", "dtype": "float64", "kind": "counter", "modbus": {"register": 2}},
        ]}},
        "mills": [{"id": "m1", "workshops": [{"id": "w1", "lines": [{"id": "l1", "count_ne": 32, "machines": [
            {"id": "rf01", "type": "ring_frame", "template": "rf", "spindles": 1200,
             "link": {"protocol": "modbus", "port": 5020, "unit_id": 1},
             "points": [{"name": "temp", "unit": "degC", "modbus": {"register": 10}}]},
            {"id": "em1", "type": "energy_meter", "feeds": ["rf01"],
             "points": [{"name": "power", "unit": "kW"}]},
        ]}]}]}],
    }


def _machine(d: dict, i: int = 0) -> dict:
    return d["mills"][0]["workshops"][0]["lines"][0]["machines"][i]


def _write(tmp_path: Path, doc: object) -> Path:
    p = tmp_path / "site.yaml"
    p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return p


def test_base_document_is_valid(tmp_path: Path) -> None:
    site = load_site(_write(tmp_path, _base()))
    assert [r.tag for r in site.points()] == ["m1/rf01/speed", "m1/rf01/energy", "m1/rf01/temp", "m1/em1/power"]


MACHINE0 = "mills[0].workshops[0].lines[0].machines[0]"


def _bad_unit(d: dict) -> None:
    _machine(d)["points"][0]["unit"] = "kgg"


def _bad_type(d: dict) -> None:
    _machine(d)["type"] = "spinning_jenny"


def _no_spindles(d: dict) -> None:
    del _machine(d)["spindles"]


def _dup_machine(d: dict) -> None:
    _machine(d, 1)["id"] = "rf01"


def _unknown_template(d: dict) -> None:
    _machine(d)["template"] = "ringframe"


def _overlap(d: dict) -> None:
    _machine(d)["points"][0]["modbus"]["register"] = 3   # energy (float64) uses 2..5


def _neg_interval(d: dict) -> None:
    _machine(d)["points"][0]["interval_s"] = -1


def _typo_field(d: dict) -> None:
    _machine(d)["points"][0]["dedband"] = 1


def _coil_not_bool(d: dict) -> None:
    _machine(d)["points"][0]["modbus"] = {"register": 0, "table": "coil"}


def _bad_endpoint(d: dict) -> None:
    _machine(d)["link"] = {"protocol": "opcua", "endpoint": "http://plc:4840"}


def _unknown_feed(d: dict) -> None:
    _machine(d, 1)["feeds"] = ["rf99"]


def _fault_unknown_machine(d: dict) -> None:
    d["mills"][0]["faults"] = [{"machine": "rf77", "type": "bearing_outer", "start_s": 10}]


def _register_out_of_range(d: dict) -> None:
    _machine(d)["points"][0]["modbus"]["register"] = 70000


def _bad_id(d: dict) -> None:
    _machine(d)["id"] = "RF 01"


def _scale_zero(d: dict) -> None:
    _machine(d)["points"][0]["modbus"]["scale"] = 0


def _modbus_point_missing_address(d: dict) -> None:
    del _machine(d)["points"][0]["modbus"]


def _names_not_a_language(d: dict) -> None:
    d["mills"][0]["names"] = {"chinese": "示范厂"}


def _names_empty(d: dict) -> None:
    d["mills"][0]["workshops"][0]["names"] = {"zh-CN": " "}


BAD = [
    (_bad_unit, f"{MACHINE0}.points[0].unit", "unknown unit 'kgg'"),
    (_bad_type, f"{MACHINE0}.type", "ring_frame"),
    (_no_spindles, MACHINE0, "needs 'spindles'"),
    (_dup_machine, "mills[0]", "duplicate machine id(s): rf01"),
    (_unknown_template, f"{MACHINE0}.template", "unknown template 'ringframe' (known: rf)"),
    (_overlap, MACHINE0, "overlaps"),
    (_neg_interval, f"{MACHINE0}.points[0].interval_s", "greater than 0"),
    (_typo_field, f"{MACHINE0}.points[0].dedband", "unknown field"),
    (_coil_not_bool, f"{MACHINE0}.points[0]", "dtype must be bool"),
    (_bad_endpoint, f"{MACHINE0}.link.endpoint", "opc.tcp://"),
    (_unknown_feed, "mills[0].workshops[0].lines[0].machines[1].feeds", "unknown machine 'rf99'"),
    (_fault_unknown_machine, "mills[0].faults[0].machine", "unknown machine 'rf77'"),
    (_register_out_of_range, f"{MACHINE0}.points[0].modbus.register", "less than or equal to 65535"),
    (_bad_id, f"{MACHINE0}.id", "should match pattern"),
    (_scale_zero, f"{MACHINE0}.points[0].modbus.scale", "must not be 0"),
    (_modbus_point_missing_address, MACHINE0, "has no modbus address"),
    (_names_not_a_language, "mills[0].names", "'chinese' is not a language tag"),
    (_names_empty, "mills[0].workshops[0].names", "a name of 1-200 characters"),
]


@pytest.mark.parametrize(("mutate", "path", "message"), BAD, ids=[b[0].__name__.strip("_") for b in BAD])
def test_bad_file_names_file_path_and_problem(tmp_path: Path, mutate, path: str, message: str) -> None:  # type: ignore[no-untyped-def]
    doc = _base()
    mutate(doc)
    f = _write(tmp_path, doc)
    with pytest.raises(SiteConfigError) as exc:
        load_site(f)
    text = str(exc.value)
    assert str(f) in text
    assert any(p.startswith(path) and message in m for p, m in exc.value.issues), text
    assert "(line " in text  # the YAML line of the offending node is named too


def test_not_yaml(tmp_path: Path) -> None:
    f = _write(tmp_path, "mills: [\n  {id: m1,\n")
    with pytest.raises(SiteConfigError, match=r"not valid YAML at line \d+"):
        load_site(f)


def test_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(SiteConfigError, match="must be a mapping"):
        load_site(_write(tmp_path, "- a\n- b\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SiteConfigError, match="cannot read"):
        load_site(tmp_path / "nope.yaml")


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    doc = _base()
    _bad_unit(doc)
    _neg_interval(doc)
    with pytest.raises(SiteConfigError) as exc:
        load_site(_write(tmp_path, doc))
    assert len(exc.value.issues) >= 2


def test_report_mode_of_each_point_follows_its_link_and_deadband(mill_yaml: Path) -> None:
    """Completeness must know which points report by exception; derived from the site model alone."""
    from spinline.cloud.storage.catalog import point_infos
    from spinline.core.site import EDGE_HEARTBEAT_S

    site = load_site(mill_yaml)
    refs = all_points(site, site.mills[0].id)
    by = {(r.machine.link.protocol if r.machine.link else None, r.point.deadband > 0): r.report() for r in refs}
    assert by[("opcua", False)] == ("on_change", None)          # monitored items: silence is normal
    assert by[("mqtt", False)] == ("interval", None)            # JSON devices publish every interval
    assert by[("modbus", False)] == ("interval", None)          # polled, every sample emitted
    assert by[("modbus", True)][0] == "on_change" and by[("modbus", True)][1] >= EDGE_HEARTBEAT_S
    infos = {p.key: p for p in point_infos(site, site.mills[0].id)}
    assert all((infos[r.key].report, infos[r.key].keepalive_s) == r.report() for r in refs)
    opc = next(r for r in refs if r.machine.link is not None and r.machine.link.protocol == "opcua")
    spb = opc.machine.model_copy(update={"link": MqttLink(protocol="mqtt", format="sparkplug_b", keepalive_s=30)})
    assert dataclasses.replace(opc, machine=spb).report() == (
        "on_change", max(30.0, EDGE_HEARTBEAT_S) if opc.point.deadband > 0 else 30.0)
