"""The site model: zone -> mill -> workshop -> line -> machine -> point, loaded from YAML.

A real mill has hundreds of machines of a few models, and every machine of one model has the same
register map. So points are declared once per machine *template* (the device model) and a machine
names its template and its link (host, port, unit id, OPC UA endpoint, MQTT topic). ``Site.points``
expands the templates into the flat list every other part of spinline uses.

Every point gets a stable tag ``"{mill}/{machine}/{point}"`` and a stable 64-bit key derived from
the tag (``point_key``), so the edge and the cloud agree on ids from the same file with no
coordination and the columnar batch stays all-numeric.

Size: the whole site-file schema and the point set derived from it in one module, so the edge and
the cloud read one vocabulary and a schema change is one diff.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spinline.core.errors import SiteConfigError
from spinline.core.units import check_unit

_ID = r"^[a-z0-9][a-z0-9_\-]{0,62}$"
Ident = Annotated[str, Field(pattern=_ID, description="lower-case id: letters, digits, - and _")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: A BCP 47 language tag as the console's catalogues name them (``zh-CN``, ``en``, ``de-DE``).
_LANG = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"


def _check_names(v: dict[str, str]) -> dict[str, str]:
    for tag, text in v.items():
        if not re.match(_LANG, tag):
            raise ValueError(f"names: {tag!r} is not a language tag such as 'zh-CN' or 'en'")
        if not text.strip() or len(text) > 200:
            raise ValueError(f"names[{tag!r}]: a name of 1-200 characters is needed, got {len(text.strip())}")
    return v


#: The name in other languages, by language tag (``names: {zh-CN: 前纺车间}``): a mill's people read its
#: site in their language while a zone operator may read it in another; ``name`` stays the default.
#: Fields default to ``{}``: pydantic copies a mutable default per instance.
Names = Annotated[dict[str, str], AfterValidator(_check_names)]


def local_name(name: str, names: dict[str, str], lang: str, fallback: str = "") -> str:
    """The name for ``lang`` (then for its language alone, ``zh`` for ``zh-CN``), else ``name``, else ``fallback``.

    The console does the same in ``format.ts: localName``; reports rendered on the server use this."""
    return names.get(lang) or names.get(lang.split("-")[0]) or name or fallback


class MachineType(StrEnum):
    BLOWROOM = "blowroom"
    CARD = "card"
    DRAW_FRAME = "draw_frame"
    COMBER = "comber"
    ROVING_FRAME = "roving_frame"
    RING_FRAME = "ring_frame"
    WINDER = "winder"
    AIR_COMPRESSOR = "air_compressor"
    HVAC = "hvac"
    ENERGY_METER = "energy_meter"


#: Process order of the production stages, blowroom to winding (utilities are not stages).
STAGE_ORDER: tuple[MachineType, ...] = (
    MachineType.BLOWROOM,
    MachineType.CARD,
    MachineType.COMBER,
    MachineType.DRAW_FRAME,
    MachineType.ROVING_FRAME,
    MachineType.RING_FRAME,
    MachineType.WINDER,
)


class DataType(StrEnum):
    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"


#: Modbus registers (16-bit words) each data type occupies.
REGISTER_WIDTH: dict[DataType, int] = {
    DataType.BOOL: 1, DataType.INT16: 1, DataType.UINT16: 1, DataType.INT32: 2,
    DataType.UINT32: 2, DataType.FLOAT32: 2, DataType.INT64: 4, DataType.UINT64: 4,
    DataType.FLOAT64: 4,
}


class PointKind(StrEnum):
    GAUGE = "gauge"        # an instantaneous value (rpm, kW, degC)
    COUNTER = "counter"    # a cumulative, monotonically rising total (kWh, doffs, breaks)
    STATE = "state"        # an enumerated state code (running / idle / stopped / fault)


class Priority(StrEnum):
    """A point's priority, one type end to end (site file -> edge filter -> buffer -> forwarder).

    ``rank`` (low 0 < normal 1 < high 2) is the same value as a number, for numpy columns and the
    buffer's SQLite column; ``of_rank`` reads it back.
    """

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        return _PRIORITY_RANK[self]

    @classmethod
    def of_rank(cls, rank: int) -> Priority:
        return _RANK_PRIORITY[int(rank)]


_PRIORITY_RANK: dict[Priority, int] = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2}
_RANK_PRIORITY: dict[int, Priority] = {r: p for p, r in _PRIORITY_RANK.items()}


class ModbusTable(StrEnum):
    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE = "discrete"


class ModbusAddress(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    table: ModbusTable = ModbusTable.HOLDING
    #: Starting register (0-based protocol address). Named ``reg`` in code because pydantic models
    #: already have a ``register`` attribute; the file says ``register``.
    reg: int = Field(alias="register", ge=0, le=65535)
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0

    @field_validator("scale")
    @classmethod
    def _scale_nonzero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("scale must not be 0 (every value would read as the offset)")
        return v


class OpcUaAddress(_Model):
    #: Node id; ``{mill}``, ``{machine}`` and ``{point}`` are filled in per machine.
    node_id: str = "ns=2;s={machine}.{point}"


class MqttAddress(_Model):
    #: Topic; ``{mill}`` and ``{machine}`` are filled in per machine.
    topic: str = "spinline/{mill}/{machine}/telemetry"
    #: Field of the JSON payload holding this point (dotted path allowed).
    field: str | None = None


class Point(_Model):
    name: Ident
    unit: str
    dtype: DataType = DataType.FLOAT32
    kind: PointKind = PointKind.GAUGE
    interval_s: float = Field(default=1.0, gt=0, le=86400)
    deadband: float = Field(default=0.0, ge=0)
    priority: Priority = Priority.NORMAL
    description: str = ""
    #: Counter roll-over value (e.g. 2**32 / scale for a uint32 kWh register).
    rollover: float | None = Field(default=None, gt=0)
    #: State codes for ``kind: state``.
    states: dict[int, str] | None = None
    #: Plausible range; values outside are flagged ``uncertain`` at the edge.
    min: float | None = None
    max: float | None = None
    modbus: ModbusAddress | None = None
    opcua: OpcUaAddress | None = None
    mqtt: MqttAddress | None = None

    @field_validator("unit")
    @classmethod
    def _unit_known(cls, v: str) -> str:
        check_unit(v)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Point:
        if self.modbus is not None and self.modbus.table in (ModbusTable.COIL, ModbusTable.DISCRETE) \
                and self.dtype != DataType.BOOL:
            raise ValueError(f"a {self.modbus.table.value} holds one bit: dtype must be bool, not {self.dtype.value}")
        if self.kind == PointKind.STATE and not self.states:
            raise ValueError("a state point needs 'states' (code: name)")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class Bearing(_Model):
    """Rolling-element bearing geometry, enough for the defect frequencies."""

    name: Ident
    model: str = ""
    n_balls: int = Field(ge=3, le=64)
    ball_diameter_mm: float = Field(gt=0)
    pitch_diameter_mm: float = Field(gt=0)
    contact_angle_deg: float = Field(default=0.0, ge=0, lt=90)

    @model_validator(mode="after")
    def _geometry(self) -> Bearing:
        if self.ball_diameter_mm >= self.pitch_diameter_mm:
            raise ValueError("ball diameter must be smaller than the pitch diameter")
        return self


class VibrationChannel(_Model):
    name: Ident
    bearing: Ident | None = None
    #: Shaft the sensor sits on: "motor", "fan", "spindle_drive", ...
    shaft: str = "motor"
    shaft_rpm: float = Field(gt=0, le=200000)


class Vibration(_Model):
    fs_hz: float = Field(default=25600.0, gt=0, le=200000)
    snapshot_s: float = Field(default=1.0, gt=0, le=60)
    every_s: float = Field(default=300.0, gt=0)
    continuous: bool = False
    channels: list[VibrationChannel] = Field(min_length=1)


class TemplatePoints(_Model):
    points: list[Point] = Field(min_length=1)
    #: Machine classes for ISO 20816 severity zones (I small, II medium, III large rigid, IV large soft).
    iso_class: Literal["I", "II", "III", "IV"] | None = None


class ModbusLink(_Model):
    protocol: Literal["modbus"]
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=0, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    timeout_s: float = Field(default=1.0, gt=0)


#: How often the edge re-emits a deadbanded point whose value has not moved (its report filter's
#: heartbeat, ``spinline.edge.filter.PointTable``), so a flat signal still proves it is alive.
EDGE_HEARTBEAT_S = 60.0

#: How a point's samples arrive: every interval, or only on change (report by exception).
ReportMode = Literal["interval", "on_change"]


class OpcUaLink(_Model):
    protocol: Literal["opcua"]
    endpoint: str = "opc.tcp://127.0.0.1:4840/spinline"
    #: Monitored items report on change: a value that does not move sends nothing. When the server
    #: is set to re-send unchanged values (e.g. a sampling with a maximum age), that period in
    #: seconds; None: no keep-alive per item is guaranteed, so silence is never judged a gap.
    keepalive_s: float | None = Field(default=None, gt=0)

    @field_validator("endpoint")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith("opc.tcp://"):
            raise ValueError(f"OPC UA endpoint must start with opc.tcp://, got {v!r}")
        return v


class MqttLink(_Model):
    protocol: Literal["mqtt"]
    broker: str | None = None
    format: Literal["json", "sparkplug_b"] = "json"
    #: Whether devices publish every interval or only on change; None: on change for Sparkplug B
    #: (report by exception is its norm), every interval for JSON.
    report: ReportMode | None = None
    #: For on-change devices: the period in seconds at which they re-publish unchanged values
    #: (None: none guaranteed, so silence is never judged a gap).
    keepalive_s: float | None = Field(default=None, gt=0)


Link = Annotated[ModbusLink | OpcUaLink | MqttLink, Field(discriminator="protocol")]


class Machine(_Model):
    id: Ident
    type: MachineType
    name: str = ""
    names: Names = {}
    template: Ident | None = None
    link: Link | None = None
    #: Extra points beyond the template (or all of them, without a template).
    points: list[Point] = Field(default_factory=list)
    rated_kw: float | None = Field(default=None, gt=0)
    spindles: int | None = Field(default=None, ge=1, le=3000)
    bearings: list[Bearing] = Field(default_factory=list)
    vibration: Vibration | None = None
    #: For an energy meter: the machines (or sub-meters) it feeds, for reconciliation.
    feeds: list[Ident] = Field(default_factory=list)
    #: Free parameters for the simulator (speeds, efficiency ...), documented in docs/simulator.md.
    sim: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _by_type(self) -> Machine:
        if self.type == MachineType.RING_FRAME and self.spindles is None:
            raise ValueError("a ring_frame needs 'spindles' (typically 1008-1824)")
        if self.type != MachineType.ENERGY_METER and self.feeds:
            raise ValueError("only an energy_meter 'feeds' other machines")
        return self


class Line(_Model):
    id: Ident
    name: str = ""
    names: Names = {}
    count_ne: float | None = Field(default=None, ge=4, le=200, description="yarn count, English (Ne)")
    product: str = ""
    machines: list[Machine] = Field(min_length=1)


class Workshop(_Model):
    id: Ident
    name: str = ""
    names: Names = {}
    lines: list[Line] = Field(min_length=1)


class FaultType(StrEnum):
    BEARING_OUTER = "bearing_outer"
    BEARING_INNER = "bearing_inner"
    BEARING_BALL = "bearing_ball"
    IMBALANCE = "imbalance"
    MISALIGNMENT = "misalignment"
    LOOSENESS = "looseness"
    BELT_SLIP = "belt_slip"
    AIR_LEAK = "air_leak"
    HVAC_DRIFT = "hvac_drift"
    METER_DROPOUT = "meter_dropout"


class Fault(_Model):
    machine: Ident
    type: FaultType
    #: Seconds of simulated time after the simulation start when the fault begins.
    start_s: float = Field(ge=0)
    #: Seconds from onset to full severity (failure); 0 = a step change.
    ramp_s: float = Field(default=0.0, ge=0)
    severity: float = Field(default=1.0, gt=0, le=10)
    #: Vibration channel for bearing faults; defaults to the machine's first channel.
    channel: Ident | None = None


class Shift(_Model):
    name: str
    start: str = Field(pattern=r"^\d{2}:\d{2}$")
    hours: float = Field(gt=0, le=24)


class Mill(_Model):
    id: Ident
    name: str = ""
    names: Names = {}
    province: str = ""
    grid_region: str = ""
    timezone: str = "Asia/Shanghai"
    shifts: list[Shift] = Field(default_factory=lambda: [
        Shift(name="A", start="06:00", hours=8), Shift(name="B", start="14:00", hours=8),
        Shift(name="C", start="22:00", hours=8)])
    workshops: list[Workshop] = Field(min_length=1)
    faults: list[Fault] = Field(default_factory=list)
    sim: dict[str, Any] = Field(default_factory=dict)
    #: Federated mode: the mill's feature rows and raw snapshots never go to the cloud; it takes part in
    #: fleet training only through Flower rounds (``spinline.cloud.models.federated``; docs/models.md).
    federated: bool = False


class Zone(_Model):
    id: Ident
    name: str = ""
    names: Names = {}


class Site(_Model):
    version: Literal[1] = 1
    zone: Zone = Zone(id="zone")
    templates: dict[Ident, TemplatePoints] = Field(default_factory=dict)
    mills: list[Mill] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Site:
        problems: list[str] = []
        dup = [k for k, n in Counter(m.id for m in self.mills).items() if n > 1]
        if dup:
            problems.append(f"duplicate mill id(s): {', '.join(dup)}")
        for mi, mill in enumerate(self.mills):
            machines = {m.id: m for m in mill_machines(mill)}
            dupm = [k for k, n in Counter(m.id for m in mill_machines(mill)).items() if n > 1]
            if dupm:
                problems.append(f"mills[{mi}]: duplicate machine id(s): {', '.join(dupm)}")
            for wi, ws in enumerate(mill.workshops):
                for li, line in enumerate(ws.lines):
                    for ci, m in enumerate(line.machines):
                        where = f"mills[{mi}].workshops[{wi}].lines[{li}].machines[{ci}]"
                        problems.extend(_machine_problems(self, m, machines, where))
            for fi, f in enumerate(mill.faults):
                if f.machine not in machines:
                    problems.append(f"mills[{mi}].faults[{fi}].machine: unknown machine {f.machine!r}")
                elif f.channel is not None:
                    vib = machines[f.machine].vibration
                    if vib is None or f.channel not in {c.name for c in vib.channels}:
                        problems.append(f"mills[{mi}].faults[{fi}].channel: machine {f.machine!r} "
                                        f"has no vibration channel {f.channel!r}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # --- derived views -------------------------------------------------------------------------

    def mill(self, mill_id: str) -> Mill:
        for m in self.mills:
            if m.id == mill_id:
                return m
        raise KeyError(f"no mill {mill_id!r} in this site (have: {', '.join(m.id for m in self.mills)})")

    def machine_points(self, machine: Machine) -> list[Point]:
        """Template points followed by the machine's own points."""
        base = list(self.templates[machine.template].points) if machine.template else []
        return base + list(machine.points)

    def points(self, mill_id: str | None = None) -> list[PointRef]:
        """Every point of the site (or one mill), expanded from templates, in file order."""
        out: list[PointRef] = []
        for mill in self.mills:
            if mill_id is not None and mill.id != mill_id:
                continue
            for ws, line, machine in iter_machines(mill):
                for p in self.machine_points(machine):
                    out.append(PointRef(mill=mill, workshop=ws, line=line, machine=machine, point=p))
        return out


def mill_machines(mill: Mill) -> list[Machine]:
    return [m for _, _, m in iter_machines(mill)]


def iter_machines(mill: Mill) -> Iterator[tuple[Workshop, Line, Machine]]:
    for ws in mill.workshops:
        for line in ws.lines:
            for m in line.machines:
                yield ws, line, m


def _machine_problems(site: Site, m: Machine, machines: dict[str, Machine], where: str) -> list[str]:
    problems: list[str] = []
    if m.template is not None and m.template not in site.templates:
        known = ", ".join(sorted(site.templates)) or "none defined"
        return [f"{where}.template: unknown template {m.template!r} (known: {known})"]
    pts = site.machine_points(m)
    dup = [k for k, n in Counter(p.name for p in pts).items() if n > 1]
    if dup:
        problems.append(f"{where}.points: duplicate point name(s) {', '.join(dup)} (template + own)")
    for f in m.feeds:
        if f not in machines:
            problems.append(f"{where}.feeds: unknown machine {f!r}")
        elif f == m.id:
            problems.append(f"{where}.feeds: a meter cannot feed itself")
    channel_bearings = {c.bearing for c in (m.vibration.channels if m.vibration else []) if c.bearing}
    unknown = channel_bearings - {b.name for b in m.bearings}
    if unknown:
        problems.append(f"{where}.vibration.channels: unknown bearing(s) {', '.join(sorted(unknown))}")
    if m.link is None:
        return problems
    proto = m.link.protocol
    used: dict[tuple[str, int], str] = {}
    for pi, p in enumerate(pts):
        addr = {"modbus": p.modbus, "opcua": p.opcua, "mqtt": p.mqtt}[proto]
        if addr is None and proto == "modbus":
            problems.append(f"{where}: point {p.name!r} (#{pi}) has no modbus address but the link is modbus")
            continue
        if isinstance(addr, ModbusAddress):
            width = 1 if addr.table in (ModbusTable.COIL, ModbusTable.DISCRETE) else REGISTER_WIDTH[p.dtype]
            for r in range(addr.reg, addr.reg + width):
                other = used.get((addr.table.value, r))
                if other is not None:
                    problems.append(f"{where}: point {p.name!r} overlaps {other!r} at "
                                    f"{addr.table.value} register {r}")
                    break
                used[(addr.table.value, r)] = p.name
    return problems


@dataclass(frozen=True, slots=True)
class PointRef:
    """A point in its place in the site, with its derived tag and key."""

    mill: Mill
    workshop: Workshop
    line: Line
    machine: Machine
    point: Point

    @property
    def tag(self) -> str:
        return f"{self.mill.id}/{self.machine.id}/{self.point.name}"

    @property
    def key(self) -> int:
        return point_key(self.tag)

    def report(self) -> tuple[ReportMode, float | None]:
        """How this point's samples arrive and, for on-change points, the longest silence that is
        still normal (keep-alive, seconds; None: unknown, so silence is never a gap).

        OPC UA monitored items and on-change MQTT devices send nothing while a value stands still;
        a deadbanded point is re-emitted by the edge at least every ``EDGE_HEARTBEAT_S``. The cloud's
        completeness (``spinline.cloud.storage.gaps``) uses this so that silence is not called a gap.
        """
        link = self.machine.link
        keepalive: float | None
        if isinstance(link, OpcUaLink):
            mode: ReportMode = "on_change"
            keepalive = link.keepalive_s
        elif isinstance(link, MqttLink):
            mode = link.report or ("on_change" if link.format == "sparkplug_b" else "interval")
            keepalive = link.keepalive_s if mode == "on_change" else None
        else:
            mode, keepalive = "interval", None
        if self.point.deadband > 0:
            heartbeat = max(EDGE_HEARTBEAT_S, self.point.interval_s)
            if mode == "interval":
                return "on_change", heartbeat
            return "on_change", None if keepalive is None else max(keepalive, heartbeat)
        return mode, keepalive

    def opcua_node_id(self) -> str:
        addr = self.point.opcua or OpcUaAddress()
        return addr.node_id.format(mill=self.mill.id, machine=self.machine.id, point=self.point.name)

    def mqtt_topic(self) -> str:
        addr = self.point.mqtt or MqttAddress()
        return addr.topic.format(mill=self.mill.id, machine=self.machine.id)

    def mqtt_field(self) -> str:
        addr = self.point.mqtt
        return addr.field if addr is not None and addr.field else self.point.name


def point_key(tag: str) -> int:
    """Stable signed 64-bit key of a point tag (BLAKE2b), identical on edge and cloud."""
    digest = hashlib.blake2b(tag.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


# --- loading ------------------------------------------------------------------------------------

def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("modbus", "opcua", "mqtt") and out.endswith("link"):
            continue  # discriminated-union tag: pydantic adds the variant name to the path
        else:
            out += f".{part}" if out else str(part)
    return out


_LINE_RE = re.compile(r"\[(\d+)\]|\.?([^.\[]+)")


def _line_of(root: yaml.Node | None, path: str) -> int | None:
    """1-based line in the YAML file of the node at ``path`` (or its nearest ancestor)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for idx, key in _LINE_RE.findall(path):
        if node is None:
            break
        nxt: yaml.Node | None = None
        if idx and isinstance(node, yaml.SequenceNode) and int(idx) < len(node.value):
            nxt = node.value[int(idx)]
        elif key and isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if getattr(k, "value", None) == key:
                    nxt = v
                    break
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


def parse_site(data: Any, file: str = "<site>", root: yaml.Node | None = None) -> Site:
    """Validate an already-parsed document; errors name ``file``, the path and the problem."""
    if not isinstance(data, dict):
        raise SiteConfigError(file, [("", f"the site file must be a mapping, got {type(data).__name__}")])
    try:
        return Site.model_validate(data)
    except ValidationError as exc:
        issues: list[tuple[str, str]] = []
        for err in exc.errors(include_url=False):
            path = _loc_to_path(tuple(err["loc"]))
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling)"
            for sub in msg.split("\n"):
                # Cross-reference errors carry their own path at the start of the message.
                if ": " in sub and not path and sub.split(": ", 1)[0].startswith("mills"):
                    p, m = sub.split(": ", 1)
                    issues.append((p, m))
                else:
                    issues.append((path, sub))
        if root is not None:
            issues = [(f"{p} (line {_line_of(root, p)})" if p else p, m) for p, m in issues]
        raise SiteConfigError(file, issues) from None


def load_site(path: str | Path) -> Site:
    """Load and validate a site file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SiteConfigError(str(p), [("", f"cannot read: {exc.strerror}")]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SiteConfigError(str(p), [("", f"not valid YAML at {where}: {problem}")]) from None
    return parse_site(data, str(p), root)


# --- derived points -----------------------------------------------------------------------------
# Points the edge computes rather than reads: link health per device, vibration features per
# channel, and the agent's own state. They are part of the site's point set so the cloud accepts
# them like any other and the dashboard can chart them.

#: Machine id of the edge agent's own points; ids in files cannot start with "_", so it never clashes.
EDGE_MACHINE_ID = "_edge"

LINK_POINTS: tuple[tuple[str, str, PointKind], ...] = (
    ("link_state", "dimensionless", PointKind.STATE),     # 0 up, 1 degraded, 2 down
    ("link_errors", "event", PointKind.COUNTER),
    ("link_latency_ms", "ms", PointKind.GAUGE),
)
LINK_STATES = {0: "up", 1: "degraded", 2: "down"}

VIB_FEATURES: tuple[tuple[str, str], ...] = (
    ("rms_g", "dimensionless"), ("peak_g", "dimensionless"), ("crest", "dimensionless"),
    ("kurtosis", "dimensionless"), ("skewness", "dimensionless"), ("velocity_rms", "mm/s"),
    ("iso_zone", "dimensionless"), ("env_bpfo", "dimensionless"), ("env_bpfi", "dimensionless"),
    ("env_bsf", "dimensionless"), ("env_ftf", "dimensionless"), ("anomaly_score", "dimensionless"),
    ("health_index", "dimensionless"),
)

EDGE_POINTS: tuple[tuple[str, str, PointKind], ...] = (
    ("buffer_rows", "dimensionless", PointKind.GAUGE),
    ("buffer_bytes", "byte", PointKind.GAUGE),
    ("buffer_dropped", "dimensionless", PointKind.COUNTER),
    ("uplink_state", "dimensionless", PointKind.STATE),   # 0 connected, 2 disconnected
    ("uplink_lag_s", "s", PointKind.GAUGE),
    ("points_collected", "dimensionless", PointKind.COUNTER),
    ("clock_skew_events", "event", PointKind.COUNTER),
)


def _derived(name: str, unit: str, kind: PointKind, interval_s: float = 1.0) -> Point:
    states = LINK_STATES if kind == PointKind.STATE else None
    return Point.model_construct(name=name, unit=unit, dtype=DataType.FLOAT64, kind=kind,
                                 interval_s=interval_s, deadband=0.0, priority=Priority.HIGH,
                                 description="derived at the edge", rollover=None, states=states,
                                 min=None, max=None, modbus=None, opcua=None, mqtt=None)


def derived_points(site: Site, mill_id: str | None = None) -> list[PointRef]:
    """Link-health, vibration-feature and edge-agent points of a site (or one mill)."""
    out: list[PointRef] = []
    for mill in site.mills:
        if mill_id is not None and mill.id != mill_id:
            continue
        first: tuple[Workshop, Line] | None = None
        for ws, line, m in iter_machines(mill):
            first = first or (ws, line)
            if m.link is not None:
                for name, unit, kind in LINK_POINTS:
                    out.append(PointRef(mill, ws, line, m, _derived(name, unit, kind)))
            if m.vibration is not None:
                for ch in m.vibration.channels:
                    for feat, unit in VIB_FEATURES:
                        p = _derived(f"vib_{ch.name}_{feat}", unit, PointKind.GAUGE, m.vibration.every_s)
                        out.append(PointRef(mill, ws, line, m, p))
        if first is not None:
            edge = Machine.model_construct(id=EDGE_MACHINE_ID, type=MachineType.ENERGY_METER,
                                           name="edge agent", template=None, link=None, points=[],
                                           rated_kw=None, spindles=None, bearings=[], vibration=None,
                                           feeds=[], sim={})
            for name, unit, kind in EDGE_POINTS:
                out.append(PointRef(mill, first[0], first[1], edge, _derived(name, unit, kind)))
    return out


def all_points(site: Site, mill_id: str | None = None) -> list[PointRef]:
    """Device points followed by derived points: the full set the cloud accepts for a mill."""
    return site.points(mill_id) + derived_points(site, mill_id)


def rebind(site: Site, ports: dict[int, int], host: str | None = None) -> Site:
    """A copy of ``site`` whose Modbus ports and OPC UA endpoint ports are remapped.

    Tests and the demo run the simulator on ephemeral ports; this points the edge at them.
    """
    def fix_link(link: ModbusLink | OpcUaLink | MqttLink | None) -> Any:
        if isinstance(link, ModbusLink):
            return link.model_copy(update={"port": ports.get(link.port, link.port),
                                           "host": host or link.host})
        if isinstance(link, OpcUaLink):
            m = re.match(r"^opc\.tcp://([^:/]+):(\d+)(.*)$", link.endpoint)
            if m:
                port = ports.get(int(m.group(2)), int(m.group(2)))
                return link.model_copy(update={"endpoint": f"opc.tcp://{host or m.group(1)}:{port}{m.group(3)}"})
        return link

    mills = []
    for mill in site.mills:
        wss = []
        for ws in mill.workshops:
            lines = [line.model_copy(update={"machines": [m.model_copy(update={"link": fix_link(m.link)})
                                                          for m in line.machines]}) for line in ws.lines]
            wss.append(ws.model_copy(update={"lines": lines}))
        mills.append(mill.model_copy(update={"workshops": wss}))
    return site.model_copy(update={"mills": mills})
