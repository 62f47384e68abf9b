"""Server-built text carries a console message key and parameters, and the console's English entry says
exactly what the server says (issue 10 item 5): formatting ``web/.../en.json`` with the API's parameters
must give the API's English text, so the two catalogues cannot drift."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spinline.carbon.insight import analyse
from spinline.cloud.api.routes import maintenance
from spinline.cloud.maintenance.pipeline import AssetHealth
from spinline.core import texts
from spinline.health.health_index import HealthIndex

LOCALES = Path(__file__).parents[3] / "web" / "src" / "i18n" / "locales"
EN = json.loads((LOCALES / "en.json").read_text(encoding="utf-8"))
ZH = json.loads((LOCALES / "zh-CN.json").read_text(encoding="utf-8"))
BASE = "/api/v1/mills/{mill}/maintenance"


def entry(cat: dict[str, Any], key: str) -> str:
    node: Any = cat["server"]
    for part in key.split("."):
        node = node[part]
    assert isinstance(node, str), key
    return node


def vue_format(template: str, params: dict[str, str]) -> str:
    """vue-i18n named interpolation (``{name}``), done independently of ``str.format``."""
    return re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], template)


def assert_console_says(key: str | None, params: dict[str, str] | None, text: str) -> None:
    assert key is not None and params is not None, text
    assert vue_format(entry(EN, key), params) == text
    zh = vue_format(entry(ZH, key), params)  # every placeholder of the zh-CN entry is a parameter sent
    assert zh != text or not params


def test_catalogues_carry_the_server_templates() -> None:
    for key, tpl in texts.TEMPLATES.items():
        assert entry(EN, key) == tpl
        names = set(re.findall(r"\{(\w+)\}", tpl))
        assert set(re.findall(r"\{(\w+)\}", entry(ZH, key))) == names, key


def test_parse_and_keyed_only_claim_what_the_text_says() -> None:
    t = texts.parse("alarm.rule_value", "vib: velocity_rms = 7.1 on rf01/main_motor")
    assert t is not None and t.params == {"rule": "vib", "feature": "velocity_rms", "value": "7.1",
                                          "asset": "rf01/main_motor"}
    assert texts.parse("alarm.rule_value", "BPFO 12x") is None
    assert texts.keyed("wo.title.fault_on_asset", {"fault": "imbalance", "asset": "a"}, "grease") is None
    with pytest.raises(KeyError):
        texts.render("health.explain", {"value": "9"})


def test_health_explanation_parts() -> None:
    hi = HealthIndex(41.0, "anomaly", {"anomaly": 45.0, "vibration": 10.0})
    assert hi.text().en == hi.explain() == "health 41/100 (plan maintenance); driven by anomaly; penalties: " \
                                           "anomaly -45, vibration -10"
    assert HealthIndex(100.0, "none").explain() == "health 100/100 (good); driven by none; penalties: none"
    ah = AssetHealth(hi, "cloud", {"env_bpfo": 5.2, "env_bpfi": 1.1, "velocity_rms": 3.456}, ("env_bpfo", 5.2), "B")
    parts = ah.texts()
    assert [p.key for p in parts] == ["health.explain", "health.envelope_line_others", "health.velocity_zone"]
    assert "; ".join(vue_format(entry(EN, p.key), p.params) for p in parts) == ah.explain()
    assert "dominant envelope line env_bpfo (outer race (BPFO)) 5.2x the background (env_bpfi 1.1x)" in ah.explain()


def test_carbon_opportunity_titles() -> None:
    h = 48
    kg = np.r_[np.zeros(8), np.full(h - 8, 100.0)]
    ins = analyse(hours=h, line_kwh_h={}, line_kg_h={}, machine_kwh_h={"rf01": np.full(h, 50.0)},
                  machine_kg_h={"rf01": kg}, compressor_kwh_h=np.full(h, 10.0), mill_kg_h=kg, hvac_kwh=600.0,
                  total_kwh=1000.0, kg_co2_per_kwh=0.58)
    keys = {o.text.key for o in ins.opportunities if o.text is not None}
    assert {"carbon.opp.idle_off", "carbon.opp.air_leaks", "carbon.opp.hvac_share"} <= keys
    for o in ins.opportunities:
        assert o.text is not None
        assert_console_says(o.text.key, o.text.params, o.title)
    hvac = next(o for o in ins.opportunities if o.text and o.text.key == "carbon.opp.hvac_share")
    assert hvac.title == "HVAC at 60% of mill energy, above the 40% top of the usual band"


@pytest.fixture()
async def mapi(api):  # type: ignore[no-untyped-def]
    paths = {getattr(r, "path", "") for r in api.app.routes}
    if "/api/v1/mills/{mill}/maintenance/alarms" not in paths:
        api.app.include_router(maintenance.router, prefix="/api/v1")
    return api


async def test_alarm_and_work_order_keys_over_the_api(mapi) -> None:  # type: ignore[no-untyped-def]
    alice = await mapi.login("alice")
    c = mapi.client
    base = BASE.format(mill="mill-a")
    message = texts.render("alarm.rule_value", {"rule": "vib", "feature": "velocity_rms", "value": "7.1",
                                                "asset": "rf01/main_motor"})
    r = await c.post(f"{base}/alarms", headers=alice,
                     json={"asset": "rf01/main_motor", "rule": "vib", "severity": "warning", "message": message,
                           "value": 7.1, "evidence": {"fault": "bearing_outer"}})
    assert r.status_code == 201, r.text
    alarm = r.json()
    assert alarm["message_key"] == "alarm.rule_value"
    assert_console_says(alarm["message_key"], alarm["message_params"], alarm["message"])

    r = await c.post(f"{base}/work-orders", headers=alice, json={"alarm_id": alarm["id"]})
    assert r.status_code == 201, r.text
    wo = r.json()
    assert wo["title"] == "bearing_outer on rf01/main_motor"
    assert (wo["title_key"], wo["title_params"]) == ("wo.title.fault_on_asset",
                                                     {"fault": "bearing_outer", "asset": "rf01/main_motor"})
    assert_console_says(wo["title_key"], wo["title_params"], wo["title"])
    assert vue_format(entry(ZH, "wo.title.fault_on_asset"), {**wo["title_params"],
                                                             "fault": ZH["server"]["fault"]["bearing_outer"]}) \
        == "rf01/main_motor：外圈故障"

    # Text a person typed has no key: the console shows it as typed.
    r = await c.post(f"{base}/alarms", headers=alice,
                     json={"asset": "rf01/main_motor", "rule": "manual", "severity": "info", "message": "BPFO 12x"})
    assert r.status_code == 201 and r.json()["message_key"] is None and r.json()["message_params"] is None
    r = await c.post(f"{base}/work-orders", headers=alice, json={"asset": "rf01/main_motor", "title": "grease"})
    assert r.status_code == 201 and r.json()["title_key"] is None
    r = await c.get(f"{base}/work-orders", headers=alice)
    assert r.status_code == 200
    items = r.json()["items"] if isinstance(r.json(), dict) else r.json()
    assert {w["title"]: w["title_key"] for w in items} == {"bearing_outer on rf01/main_motor":
                                                           "wo.title.fault_on_asset", "grease": None}


def test_edge_event_alarm_messages_parse_back() -> None:
    p = {"rule": "anomaly", "asset": "rf01/main_motor", "edge": "edge-a", "model": "if-3"}
    with_fault = texts.render("alarm.edge_event_fault", {**p, "fault": "bearing_outer"})
    assert with_fault == "anomaly on rf01/main_motor (edge edge-a, model if-3): bearing_outer"
    for text in (with_fault, texts.render("alarm.edge_event", p)):
        t = texts.parse_any(maintenance.ALARM_MESSAGE_KEYS, text)
        assert t is not None
        assert_console_says(t.key, t.params, text)
    t = texts.parse_any(maintenance.ALARM_MESSAGE_KEYS, with_fault)
    assert t is not None and t.key == "alarm.edge_event_fault" and t.params["fault"] == "bearing_outer"


def test_translated_parameter_values_cover_what_the_server_sends() -> None:
    """Fault kinds, statuses, drivers and defects the console translates: every value the server can send
    has an entry (ids as ``serverId`` in web/src/format.ts makes them), and the English entry is the value."""
    from spinline.cloud.maintenance.pipeline import ENVELOPE
    from spinline.health.diagnosis import LABELS
    from spinline.health.health_index import STATUS_BANDS

    def sid(v: str) -> str:
        return re.sub(r"^_+|_+$", "", re.sub(r"\W+", "_", v))

    sent = {"fault": list(LABELS), "status": [s for _, s in STATUS_BANDS], "defect": [d for _, d in ENVELOPE],
            "driver": ["none", "no evidence", "anomaly_score", "velocity_rms (ISO 20816)"]}
    for group, values in sent.items():
        for v in values:
            assert EN["server"][group][sid(v)] == v, (group, v)
            assert ZH["server"][group][sid(v)] != v or group == "driver", (group, v)
