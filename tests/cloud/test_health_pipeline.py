"""The cloud health pipeline over real stores: a bearing fault develops on rf01/main_motor and is repaired.

The feature series is what the edge publishes for one vibration channel: synthetic snapshots
(``spinline.health.synthetic``, outer-race fault of the site's bearing) featurised with
``featurize`` and scored by the edge's ``AssetMonitor`` (anomaly score, health index). The pipeline
reads it from the store, raises each rule's alarm once, opens one work order with the diagnosis,
clears the alarms when the repaired bearing runs healthy, and a restart re-raises nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from spinline.cloud.api.routes import maintenance as maintenance_routes
from spinline.cloud.app import open_stores
from spinline.cloud.maintenance.pipeline import HealthPipeline, assets_of, latest_health, measured_health, split_feature
from spinline.cloud.maintenance.store import HealthStore
from spinline.cloud.settings import Settings
from spinline.cloud.storage.base import TimeSeriesStore
from spinline.core import texts
from spinline.core.batch import Batch
from spinline.core.site import Site, load_site, point_key
from spinline.core.wire import (
    EVENTS_CONTENT_TYPE,
    EVENTS_PATH,
    TOPIC_EVENTS,
    TOPIC_EVENTS_ACK,
    EdgeEvent,
    EventsAck,
    decode_events_ack,
    encode_events,
)
from spinline.health.alarms import InvalidTransition
from spinline.health.features import featurize
from spinline.health.monitor import AssetMonitor
from spinline.health.synthetic import snapshot

from .api.conftest import FAST, Api, api, zone_site  # noqa: F401  (fixtures of the API tests, used here too)

MILL, MACHINE, CHANNEL = "mill-a", "rf01", "main_motor"
ASSET = f"{MACHINE}/{CHANNEL}"
T0 = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp()) * 10**9
S = 10**9
STEP_NS = 300 * S  # the site's every_s
#: healthy (baseline), the fault developing, the repaired bearing
PHASES = {"healthy": [0.0] * 30, "fault": [0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.0, 1.0, 1.0],
          "more_fault": [1.0] * 4, "repaired": [0.0] * 10}


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(Path(__file__).resolve().parents[2] / "examples" / "zone.yaml")


@pytest.fixture(scope="module")
def series(site: Site) -> dict[str, list[tuple[int, dict[str, float]]]]:
    """Per phase: (ts_ns, feature values) as the edge emits them for rf01/main_motor."""
    m = next(m for ws in site.mill(MILL).workshops for ln in ws.lines for m in ln.machines if m.id == MACHINE)
    bearing, shaft_hz = m.bearings[0], 1480 / 60
    mon = AssetMonitor(ASSET, baseline_n=24, speed_key=None)
    out: dict[str, list[tuple[int, dict[str, float]]]] = {}
    i = 0
    for phase, sev in PHASES.items():
        rows = []
        for s in sev:
            sig = snapshot(bearing=bearing, fault="bearing_outer", severity=s, seed=i, shaft_hz=shaft_hz)
            f = {k: float(v[0]) for k, v in featurize(sig, 25600.0, shaft_hz, bearing).items()}
            ts = T0 + i * STEP_NS
            st = mon.update(datetime.fromtimestamp(ts / 1e9, UTC).replace(tzinfo=None), f)
            assert st is not None
            rows.append((ts, f | {"anomaly_score": st.anomaly_score, "health_index": st.health.value}))
            i += 1
        out[phase] = rows
    return out


def write(store: TimeSeriesStore, rows: list[tuple[int, dict[str, float]]], mill: str = MILL,
          machine: str = MACHINE, channel: str = CHANNEL) -> None:
    keys, ts, vals = [], [], []
    for t, f in rows:
        for feat, v in f.items():
            keys.append(point_key(f"{mill}/{machine}/vib_{channel}_{feat}"))
            ts.append(t)
            vals.append(v)
    store.write(Batch.of(keys, ts, vals))


@pytest.fixture(params=["embedded", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path, site: Site) -> Iterator[tuple[TimeSeriesStore, HealthStore]]:
    db = f"embedded:{tmp_path / 'cloud'}" if request.param == "embedded" else request.getfixturevalue("postgres_url")
    store, meta = open_stores(Settings(db=db, **FAST), site=site)
    try:
        yield store, HealthStore(meta.engine)
    finally:
        store.close()
        meta.close()


def pipeline(store: TimeSeriesStore, hs: HealthStore, last: list[tuple[int, dict[str, float]]]) -> HealthPipeline:
    """A pipeline whose clock stands just past the last sample written."""
    p = HealthPipeline(store, hs, settle_s=0.0, lookback_s=7 * 86400, clock=lambda: last[-1][0] + 10**9)
    p.create_schema()
    return p


def by_rule(hs: HealthStore) -> dict[str, Any]:
    alarms = hs.list_alarms(MILL, asset=ASSET)
    rules = [a.rule for a in alarms]
    assert len(rules) == len(set(rules)), f"an alarm was raised twice: {rules}"
    return {a.rule: a for a in alarms}


def test_asset_naming() -> None:
    assert split_feature("vib_main_motor_velocity_rms") == ("main_motor", "velocity_rms")
    assert split_feature("vib_supply_fan_health_index") == ("supply_fan", "health_index")
    assert split_feature("vib_cylinder_rms_g") == ("cylinder", "rms_g")
    assert split_feature("spindle_speed") is None and split_feature("vib_rms_g") is None


def test_fault_alarm_order_clear_verify_and_restart(stores: tuple[TimeSeriesStore, HealthStore],
                                                   series: dict[str, list[tuple[int, dict[str, float]]]]) -> None:
    store, hs = stores
    assert ASSET in {a.id for a in assets_of(store.points(MILL), MILL)}

    # healthy: nothing raised, the watermark follows the data
    write(store, series["healthy"])
    rep = pipeline(store, hs, series["healthy"]).run_once()
    assert rep.samples == len(series["healthy"]) and not rep.raised and not rep.orders
    assert hs.list_alarms(MILL) == []

    # the fault develops: each rule raises once, one work order with the diagnosis
    write(store, series["fault"])
    rep = pipeline(store, hs, series["fault"]).run_once()
    alarms = by_rule(hs)
    assert {"anomaly", "health_low"} <= set(alarms), alarms
    assert all(a.state == "active" and a.evidence["source"] == "cloud" for a in alarms.values())
    low = alarms["health_low"]
    assert low.severity == "critical" and low.count > 1  # repeats counted, not re-raised
    assert low.evidence["fault"] == "bearing_outer"
    assert low.evidence["dominant_envelope"]["feature"] == "env_bpfo"
    orders = hs.list_work_orders(MILL, asset=ASSET)
    assert len(orders) == 1 and [o.id for o in rep.orders] == [orders[0].id]
    wo = orders[0]
    assert (wo.fault, wo.priority, wo.created_by, wo.alarm_id) == ("bearing_outer", "urgent", "health-pipeline",
                                                                   low.id)
    assert wo.hi_at_open is not None and wo.hi_at_open < 30
    for text in ("env_bpfo", "BPFO", "velocity RMS", "ISO 20816 zone"):
        assert text in wo.description, wo.description
    hi_fault = measured_health(store, MILL, ASSET)
    assert hi_fault is not None and hi_fault < 30
    assert measured_health(store, MILL, MACHINE) == hi_fault  # a machine: its worst channel

    # a restart: a fresh pipeline over the same stores reads nothing old and re-raises nothing
    write(store, series["more_fault"])
    rep = pipeline(store, hs, series["more_fault"]).run_once()
    assert rep.samples == len(series["more_fault"]) and rep.raised == [] and rep.orders == []
    again = by_rule(hs)
    assert set(again) == set(alarms) and again["health_low"].count == low.count + len(series["more_fault"])
    assert len(hs.list_work_orders(MILL)) == 1
    assert pipeline(store, hs, series["more_fault"]).run_once().samples == 0

    # the fitter repairs it; verify is refused while the machine still reads faulty
    at = datetime(2026, 10, 1, 6)
    wo.assign("fitter-7", by="alice", at=at)
    wo.start(by="alice", at=at)
    wo.resolve(by="alice", at=at, comment="bearing replaced")
    with pytest.raises(InvalidTransition):
        wo.verify(hi_fault, by="alice", at=at)

    # the repaired bearing runs healthy: the alarms clear, the health recovers, verify passes
    write(store, series["repaired"])
    rep = pipeline(store, hs, series["repaired"]).run_once()
    assert rep.raised == [] and {a.rule for a in rep.cleared} == set(alarms)
    final = by_rule(hs)
    assert all(a.state == "cleared" and a.history[-1].by == "system" for a in final.values())
    hi = measured_health(store, MILL, ASSET)
    assert hi is not None and hi >= 80
    wo.verify(hi, by="alice", at=at)
    assert wo.state == "verified" and wo.hi_at_verify == hi


def test_an_alarm_acknowledged_by_hand_stays_acknowledged(
        tmp_path: Path, site: Site, series: dict[str, list[tuple[int, dict[str, float]]]]) -> None:
    store, meta = open_stores(Settings(db=f"embedded:{tmp_path / 'c'}", **FAST), site=site)
    try:
        hs = HealthStore(meta.engine)
        write(store, series["healthy"] + series["fault"])
        pipeline(store, hs, series["fault"]).run_once()
        low = by_rule(hs)["health_low"]
        low.acknowledge("alice", datetime(2026, 10, 1, 5), "on it")
        hs.save_alarm(MILL, low)
        write(store, series["more_fault"])
        pipeline(store, hs, series["more_fault"]).run_once()
        got = by_rule(hs)["health_low"]
        assert got.state == "acknowledged" and got.count > low.count
        # the same asset in another mill is another asset
        assert {"mill-a", "mill-b"} <= {a.mill for a in assets_of(store.points())}
        assert hs.list_alarms("mill-b") == []
    finally:
        store.close()
        meta.close()


async def test_health_route_and_verify_use_the_measured_index(
        api: Api, series: dict[str, list[tuple[int, dict[str, float]]]]) -> None:  # noqa: F811
    store = api.cloud.store
    alice = await api.login("alice")
    r = await api.client.get(f"/api/v1/mills/{MILL}/health", headers=alice)
    assert r.status_code == 200 and r.json()["assets"] == [] and r.json()["rollup"] is None

    # the series shifted to the last hours, so the app's own pipeline (real clock) reads it
    shift = (datetime.now(UTC) - timedelta(hours=5)).timestamp() * 1e9 - T0
    rows = [(int(t + shift), f) for ph in ("healthy", "fault") for t, f in series[ph]]
    write(store, rows)
    write(store, [(rows[-1][0], {"velocity_rms": 0.4, "anomaly_score": 0.2, "iso_zone": 0.0, "env_bpfo": 1.5,
                                 "env_bpfi": 1.2, "env_bsf": 1.1})], machine="ca01", channel="cylinder")
    rep = api.app.state.health_pipeline.run_once()
    assert {a.rule for a in rep.raised} >= {"health_low"} and len(rep.orders) == 1

    r = await api.client.get(f"/api/v1/mills/{MILL}/health", headers=alice)
    body = r.json()
    assert r.status_code == 200, r.text
    by_asset = {a["asset"]: a for a in body["assets"]}
    bad, good = by_asset[ASSET], by_asset["ca01/cylinder"]
    assert bad["value"] < 30 and bad["source"] == "edge" and bad["status"] == "act now"
    assert bad["driver"] == "anomaly_score" and bad["dominant_envelope"] == "env_bpfo"
    assert "env_bpfo" in bad["explanation"] and "velocity RMS" in bad["explanation"]
    # the explanation in parts with console message keys (issue 10 item 5), saying the same as the English
    assert "; ".join(p["text"] for p in bad["explanation_parts"]) == bad["explanation"]
    assert [p["key"] for p in bad["explanation_parts"]][0] == "health.explain"
    assert all(texts.render(p["key"], p["params"]) == p["text"] for p in bad["explanation_parts"])
    assert good["source"] == "cloud" and good["value"] >= 80 and good["iso_zone"] == "A"
    assert body["value"] == bad["value"] and body["status"] == "act now"
    tree = body["rollup"]
    assert tree["level"] == "mill" and tree["id"] == MILL and tree["value"] == bad["value"]
    line = next(c for c in tree["children"] if c["id"] == tree["worst"])
    machine = next(c for c in line["children"] if c["id"] == line["worst"])
    assert machine["id"] == MACHINE and machine["worst"] == ASSET and machine["children"][0]["level"] == "asset"

    # the pipeline's work order is in the maintenance routes; verify checks the measured index
    base = f"/api/v1/mills/{MILL}/maintenance"
    r = await api.client.get(f"{base}/work-orders", headers=alice)
    (wo,) = r.json()
    assert wo["fault"] == "bearing_outer" and "env_bpfo" in wo["description"]
    for action, b in [("assign", {"assignee": "fitter-7"}), ("start", {}), ("resolve", {})]:
        assert (await api.client.post(f"{base}/work-orders/{wo['id']}/{action}", headers=alice, json=b)).status_code \
            == 200
    r = await api.client.post(f"{base}/work-orders/{wo['id']}/verify", headers=alice, json={"health_index": 95})
    assert r.status_code == 409, r.text  # the fitter's 95 does not beat the machine's reading

    # mill B is not visible to a mill-A user
    assert (await api.client.get("/api/v1/mills/mill-b/health", headers=alice)).status_code == 404
    bob = await api.login("bob")
    r = await api.client.get("/api/v1/mills/mill-b/health", headers=bob)
    assert r.status_code == 200 and r.json()["assets"] == []
    assert latest_health(store, "mill-b") == []


# --- edge events (the contract in spinline.core.wire) -----------------------------------------------

def _events(ts: int) -> list[EdgeEvent]:
    tag = f"{MILL}/{ASSET}"
    key = f"{tag}:health_low:{ts}"
    return [EdgeEvent(asset=tag, ts_ns=ts, kind="alarm_raised", severity="critical", model_version="hst-3",
                      rule="health_low", value=12.0, fault="bearing_outer", confidence=0.8,
                      evidence="env_bpfo 14x the background", alarm_key=key, id=1),
            EdgeEvent(asset=tag, ts_ns=ts + S, kind="model_replaced", severity="info", model_version="hst-4", id=2),
            EdgeEvent(asset=tag, ts_ns=ts + 2 * S, kind="alarm_cleared", severity="info", model_version="hst-4",
                      rule="health_low", alarm_key=key, id=3),
            EdgeEvent(asset="mill-b/rf01/main_motor", ts_ns=ts, kind="alarm_raised", severity="warning",
                      model_version="hst-3", rule="anomaly", id=4),
            EdgeEvent(asset=tag, ts_ns=ts, kind="alarm_cleared", severity="info", model_version="hst-3",
                      alarm_key=f"{tag}:anomaly:1", id=5)]



async def test_edge_events_over_http_are_recorded_once(api: Api) -> None:  # noqa: F811
    ts = T0 + 3600 * S
    hs: HealthStore = api.app.state.health_store
    url, ctype = EVENTS_PATH, {"Content-Type": EVENTS_CONTENT_TYPE}
    body = encode_events("edge-a", MILL, _events(ts)[:2], key=api.secrets["edge-a"].encode())
    for _ in range(2):  # a re-send changes nothing and is acked again
        r = await api.client.post(url, content=body, headers=ctype)
        assert r.status_code == 200, r.text
        assert decode_events_ack(r.content) == EventsAck((1, 2), ())
    (alarm,) = hs.list_alarms(MILL)
    assert (alarm.asset, alarm.rule, alarm.severity, alarm.state) == (ASSET, "health_low", "critical", "active")
    assert alarm.evidence["source"] == "edge" and alarm.evidence["fault"] == "bearing_outer"
    shown = maintenance_routes.alarm_public(MILL, alarm)
    assert (shown.message_key, (shown.message_params or {}).get("fault")) == ("alarm.edge_event_fault", "bearing_outer")
    (wo,) = hs.list_work_orders(MILL)
    assert wo.alarm_id == alarm.id and wo.fault == "bearing_outer" and "env_bpfo 14x" in wo.description

    body = encode_events("edge-a", MILL, _events(ts)[2:], key=api.secrets["edge-a"].encode())
    r = await api.client.post(url, content=body, headers=ctype)
    # event 5 clears an alarm not raised here (yet): recorded and acked, it raises nothing
    assert decode_events_ack(r.content) == EventsAck((3, 5), ((4, "wrong_mill"),))
    (alarm,) = hs.list_alarms(MILL)
    assert alarm.state == "cleared" and alarm.history[-1].by == "edge"

    # another mill's edge, a forged signature, or an unsigned payload: refused whole, nothing recorded
    for payload in (encode_events("edge-b", MILL, _events(ts + S)[:1], key=api.secrets["edge-b"].encode()),
                    encode_events("edge-a", MILL, _events(ts + S)[:1], key=api.secrets["edge-b"].encode()),
                    encode_events("edge-a", MILL, _events(ts + S)[:1])):
        r = await api.client.post(url, content=payload, headers=ctype)
        assert (r.status_code, r.json()["reason"]) == (401, "unauthorised")
    assert (await api.client.post(url, content=b"{", headers=ctype)).status_code == 400
    assert len(hs.list_alarms(MILL)) == 1 and hs.list_alarms("mill-b") == []


def test_edge_events_over_mqtt_are_acked(mqtt_broker: tuple[str, int], tmp_path: Path, site: Site) -> None:
    import threading
    import uuid

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from spinline.cloud.app import build_cloud
    from spinline.cloud.ingest.mqtt_worker import IngestWorker
    from spinline.cloud.maintenance.events import EdgeEvents

    settings = Settings(db=f"embedded:{tmp_path / 'c'}", **FAST)
    store, meta = open_stores(settings, site=site)
    cloud = build_cloud(settings, store, meta)
    secret = cloud.edges.create(edge_id="edge-a", mill=MILL, created_by="test")[1].encode()
    hs = HealthStore(meta.engine)
    events = EdgeEvents(hs, store, cloud.edges.key, cloud.edges.mill_of)
    events.create_schema()
    ns = f"t-{uuid.uuid4().hex[:8]}/"
    acks: list[bytes] = []
    got = threading.Event()
    edge = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        acks.append(bytes(msg.payload))
        got.set()

    edge.on_message = on_message
    edge.connect(*mqtt_broker)
    edge.loop_start()
    try:
        edge.subscribe(ns + TOPIC_EVENTS_ACK.format(mill=MILL, edge="edge-a"), qos=1)
        with IngestWorker(cloud.ingest, *mqtt_broker, group=f"g{uuid.uuid4().hex[:6]}", namespace=ns, events=events):
            ts = T0 + 3600 * S
            topic = ns + TOPIC_EVENTS.format(mill=MILL, edge="edge-a")
            # on another edge's topic: no ack, nothing recorded
            edge.publish(ns + TOPIC_EVENTS.format(mill=MILL, edge="edge-z"),
                         encode_events("edge-a", MILL, _events(ts)[:1], key=secret), qos=1).wait_for_publish(5)
            edge.publish(topic, encode_events("edge-a", MILL, _events(ts)[:2], key=secret), qos=1).wait_for_publish(5)
            assert got.wait(15)
        assert [decode_events_ack(a) for a in acks] == [EventsAck((1, 2), ())]
        (alarm,) = hs.list_alarms(MILL)
        assert alarm.evidence["edge"] == "edge-a" and len(hs.list_work_orders(MILL)) == 1
    finally:
        edge.loop_stop()
        edge.disconnect()
        store.close()
        meta.close()


def test_cloud_index_uses_the_registered_iso_class(stores: tuple[TimeSeriesStore, HealthStore],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    # rf01 is a ring frame, whose template says ISO class II: the class travels with its points.
    from spinline.cloud.maintenance.pipeline import Asset, asset_class
    from spinline.health.features import iso_zone
    from spinline.health.health_index import vibration_penalty

    store, _ = stores
    rf01 = [p for p in store.points(MILL) if p.machine == MACHINE]
    assert rf01 and {p.iso_class for p in rf01} == {"II"}
    # No index from the edge: the cloud computes it. 2.0 mm/s is zone B for class II (C for class I).
    vel = 2.0
    write(store, [(T0, {"velocity_rms": vel})])
    got = next(h for h in latest_health(store, MILL) if h.asset.id == ASSET)
    assert got.asset.iso_class == "II" and got.health.source == "cloud"
    assert iso_zone(vel, "II").tolist() == 1 and iso_zone(vel, "I").tolist() == 2
    assert got.health.value == pytest.approx(100.0 - vibration_penalty(vel, "II"), abs=0.01)
    assert got.health.value > 100.0 - vibration_penalty(vel, "I")
    # An asset whose class is not known is judged as class I, with a note in the log.
    with caplog.at_level("INFO", logger="spinline.cloud.maintenance.pipeline"):
        assert asset_class(Asset("m", "l", f"unknown-{id(store)}", "ch", {})) == "I"  # noted once per machine
    assert "not known" in caplog.text
    assert asset_class(Asset("m", "l", "x", "ch", {}, "III"), override=lambda mill, machine: "IV") == "IV"


async def test_a_clear_that_arrives_before_its_raise_is_kept_and_applied(api: Api) -> None:  # noqa: F811
    """Found by the cloud-faults no-loss test: with two ingest workers (or one killed holding the raise while
    the edge re-sends it) an ``alarm_cleared`` can be recorded before its ``alarm_raised``. It was refused
    for good (``unknown_alarm``) and the edge dead-lettered it: the event was lost and the alarm stayed open."""
    ts = T0 + 9000 * S
    hs: HealthStore = api.app.state.health_store
    url, ctype = EVENTS_PATH, {"Content-Type": EVENTS_CONTENT_TYPE}
    key = api.secrets["edge-a"].encode()
    tag = f"{MILL}/{ASSET}"
    alarm_key = f"{tag}:vib_late:{ts}"
    raised = EdgeEvent(asset=tag, ts_ns=ts, kind="alarm_raised", severity="warning", model_version="hst-3",
                       rule="vib_late", value=7.0, alarm_key=alarm_key, id=11)
    cleared = EdgeEvent(asset=tag, ts_ns=ts + 5 * S, kind="alarm_cleared", severity="warning", model_version="hst-3",
                        rule="vib_late", alarm_key=alarm_key, id=12)
    acks = []
    for ev in (cleared, cleared, raised, raised):          # the clear first, and each sent twice
        r = await api.client.post(url, content=encode_events("edge-a", MILL, [ev], key=key, incarnation="c" * 16),
                                  headers=ctype)
        assert r.status_code == 200, r.text
        acks.append(decode_events_ack(r.content))
    assert acks == [EventsAck((12,), (), "c" * 16)] * 2 + [EventsAck((11,), (), "c" * 16)] * 2
    (alarm,) = [a for a in hs.list_alarms(MILL) if a.rule == "vib_late"]
    assert alarm.state == "cleared" and alarm.history[-1].by == "edge", alarm
    assert int(alarm.history[-1].at.replace(tzinfo=UTC).timestamp()) == (ts + 5 * S) // S


async def test_a_wiped_edges_new_event_1_is_stored_not_a_duplicate(api: Api) -> None:  # noqa: F811
    """Issue 12 item 1: event ids restart at 1 in a new buffer file; the incarnation keeps them apart."""
    ts = T0 + 7200 * S
    hs: HealthStore = api.app.state.health_store
    url, ctype = EVENTS_PATH, {"Content-Type": EVENTS_CONTENT_TYPE}
    key = api.secrets["edge-a"].encode()
    tag = f"{MILL}/{ASSET}"

    def raised(at: int) -> EdgeEvent:
        return EdgeEvent(asset=tag, ts_ns=at, kind="alarm_raised", severity="critical", model_version="hst-3",
                         rule="health_low", value=9.0, alarm_key=f"{tag}:health_low:{at}", id=1)

    old = encode_events("edge-a", MILL, [raised(ts)], key=key)                       # an edge without incarnation
    first = encode_events("edge-a", MILL, [raised(ts + S)], key=key, incarnation="a" * 16)
    wiped = encode_events("edge-a", MILL, [raised(ts + 2 * S)], key=key, incarnation="b" * 16)
    acks = []
    for body in (old, first, first, wiped):
        r = await api.client.post(url, content=body, headers=ctype)
        assert r.status_code == 200, r.text
        acks.append(decode_events_ack(r.content))
    assert acks == [EventsAck((1,), ()), EventsAck((1,), (), "a" * 16), EventsAck((1,), (), "a" * 16),
                    EventsAck((1,), (), "b" * 16)]
    got = sorted(a.raised_at for a in hs.list_alarms(MILL) if a.rule == "health_low" and a.value == 9.0)
    assert len(got) == 3, got


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_edge_events_table_from_before_the_incarnation_is_migrated(tmp_path: Path, backend: str,
                                                                       request: pytest.FixtureRequest) -> None:
    import sqlalchemy as sa

    from spinline.cloud.maintenance.events import EdgeEvents, events_t

    url = f"sqlite:///{tmp_path / 'm.sqlite'}" if backend == "sqlite" else \
        request.getfixturevalue("postgres_url").replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE health_edge_events (edge VARCHAR(64) NOT NULL, event_id BIGINT NOT NULL, "
                          "mill VARCHAR(64) NOT NULL, kind VARCHAR(32) NOT NULL, ts_ns BIGINT NOT NULL, "
                          "alarm_id VARCHAR(64), received_ns BIGINT NOT NULL, PRIMARY KEY (edge, event_id))"))
        c.execute(sa.text("INSERT INTO health_edge_events VALUES ('e1', 1, 'm', 'alarm_raised', 5, 'AL1', 6)"))
    hs = HealthStore(engine)
    EdgeEvents(hs, None, lambda e: None, lambda e: None).create_schema()  # type: ignore[arg-type]
    with engine.begin() as c:
        assert c.execute(sa.select(events_t.c.edge, events_t.c.incarnation, events_t.c.event_id)).all() == [
            ("e1", "", 1)]
        c.execute(sa.insert(events_t).values(edge="e1", incarnation="x", event_id=1, mill="m", kind="alarm_raised",
                                             ts_ns=7, received_ns=8))
