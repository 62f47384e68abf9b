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


def test_monthly_maintenance_report_lines() -> None:
    from spinline.health.reports import MonthlyReport

    r = MonthlyReport("2026-11", {"imbalance": 2, "bearing_outer": 1}, 3, 2, 1, 1, 4.25, 5.0, 19.5,
                      {"bearing_outer": 24.0})
    parts = r.texts()
    assert [vue_format(entry(EN, t.key), t.params) for t in parts] == r.lines()
    assert r.lines()[1] == "faults found: 3 (bearing_outer 1, imbalance 2)"
    assert r.lines()[4] == "downtime avoided: 19.5 h (assumed unplanned downtime per fault: bearing_outer 24 h)"
    empty = MonthlyReport("2026-12", {}, 0, 0, 0, 0, float("nan"), float("nan"), 0.0)
    assert empty.texts()[1].key == "report.maint.faults_none" and empty.lines()[1] == "faults found: 0 (none)"


def test_parse_joined_splits_parts_that_contain_the_separator() -> None:
    hi = HealthIndex(41.0, "anomaly_score", {"anomaly_score": 45.0})
    ah = AssetHealth(hi, "cloud", {"velocity_rms": 3.456}, None, "B")
    got = texts.parse_joined(maintenance.WRITTEN_KEYS, ah.explain())
    assert got is not None and [t.key for t in got] == [t.key for t in ah.texts()]
    assert [t.params for t in got] == [t.params for t in ah.texts()]
    assert texts.parse_joined(maintenance.WRITTEN_KEYS, "replaced the bearing; greased") is None


def _flat(cat: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in cat.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_error_codes_and_named_values_have_both_languages() -> None:
    """Generic messages per error code and the ids the error parameters carry exist in both catalogues."""
    from spinline.health.alarms import AlarmState
    from spinline.health.workorders import WO_TRANSITIONS, WOState

    en, zh = _flat(EN), _flat(ZH)
    codes = {k for k in en if k.startswith("errors.code.")}
    assert codes and codes == {k for k in zh if k.startswith("errors.code.")}
    assert all(zh[k] != en[k] for k in codes)
    sid = lambda v: re.sub(r"^_+|_+$", "", re.sub(r"\W+", "_", v))  # noqa: E731 (serverId of format.ts)
    sent = {"kind": ["work order", "alarm", "mill", "user", "raw evidence store", "machine", "raw snapshot",
                     "vibration channel", "edge", "active edge", "model", "asset", "point"],
            "action": [*WO_TRANSITIONS, "acknowledge", "clear", "update the fault"],
            "state": [s.value for s in WOState] + [s.value for s in AlarmState], "what": ["queries", "KPIs",
                                                                                         "KPIs by shift"]}
    for group, values in sent.items():
        for v in values:
            assert en[f"server.{group}.{sid(v)}"] == v, (group, v)
            assert zh[f"server.{group}.{sid(v)}"] != v, (group, v)


async def test_plan_report_history_and_refusals_over_the_api(mapi) -> None:  # type: ignore[no-untyped-def]
    alice = await mapi.login("alice")
    c = mapi.client
    base = BASE.format(mill="mill-a")
    r = await c.post(f"{base}/alarms", headers=alice,
                     json={"asset": "rf01/main_motor", "rule": "vib", "severity": "critical",
                           "message": "vib: velocity_rms = 7.1 on rf01/main_motor", "evidence": {"fault": "imbalance"}})
    assert r.status_code == 201, r.text
    r = await c.post(f"{base}/work-orders", headers=alice, json={"alarm_id": r.json()["id"]})
    wo = r.json()
    # The description (the alarm's message) comes back line by line with its key.
    assert [line["parts"][0]["key"] for line in wo["description_lines"]] == ["alarm.rule_value"]

    plan = (await c.get(f"{base}/plan", headers=alice)).json()
    item = next(i for i in plan if i["work_order"] == wo["id"])
    assert_console_says(item["title_key"], item["title_params"], item["title"])
    assert item["reason"] == "due this week" and item["reason_key"] == "plan.reason.due_this_week"
    assert vue_format(entry(ZH, item["reason_key"]), {}) == "本周到期"

    for action, body in (("assign", {"assignee": "wang"}), ("start", {}),
                         ("resolve", {"comment": "replaced the bearing; greased"})):
        r = await c.post(f"{base}/work-orders/{wo['id']}/{action}", headers=alice, json=body)
        assert r.status_code == 200, r.text
    history = r.json()["history"]
    assigned = history[1]
    assert assigned["comment"] == "assigned to wang"
    [line] = assigned["comment_lines"]
    assert_console_says(line["parts"][0]["key"], line["parts"][0]["params"], assigned["comment"])
    typed = history[3]  # a person's words: no key, shown as typed
    assert typed["comment_lines"] == [{"text": "replaced the bearing; greased", "parts": [], "prefix": ""}]

    r = await c.post(f"{base}/work-orders/{wo['id']}/verify", headers=alice, json={"health_index": 55})
    assert r.status_code == 409, r.text
    err = r.json()
    assert err["code"] == "verify_refused" and err["key"] == "error.verify_refused"
    assert err["detail"] == f"work order {wo['id']}: cannot verify when resolved with health 55 < 80"
    assert_console_says("error.verify_refused", err["params"], err["detail"])
    assert "55" in vue_format(entry(ZH, "error.verify_refused"), err["params"])

    r = await c.post(f"{base}/work-orders/{wo['id']}/start", headers=alice, json={})
    err = r.json()
    assert r.status_code == 409 and err["code"] == "transition_refused"
    assert_console_says(err["key"].removeprefix("server."), err["params"], err["detail"])
    r = await c.get(f"{base}/work-orders/WO-nope", headers=alice)
    err = r.json()
    assert r.status_code == 404 and err["detail"] == "work order 'WO-nope' not found"
    assert_console_says(err["key"], err["params"], err["detail"])

    rep = (await c.get(f"{base}/report", headers=alice)).json()
    assert len(rep["text_parts"]) == len(rep["text"]) == 5
    for line, part in zip(rep["text"], rep["text_parts"], strict=True):
        assert part["text"] == line
        assert_console_says(part["key"], part["params"], line)


async def test_span_refusal_carries_its_figures(api) -> None:  # type: ignore[no-untyped-def]
    alice = await api.login("alice")
    r = await api.client.get("/api/v1/mills/mill-a/kpis", headers=alice,
                             params={"start": "2020-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"})
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["code"] == "span_too_large" and err["key"] == "error.span_too_large"
    assert_console_says(err["key"], err["params"], err["detail"])
    assert err["params"]["what"] == "KPIs"


def test_report_savings_titles_match_the_console() -> None:
    """The Chinese HTML/PDF reports title savings as the console does (its zh-CN catalogue)."""
    from spinline.carbon.report import OPPORTUNITY_ZH, opportunity_title

    for key, zh in OPPORTUNITY_ZH.items():
        assert entry(ZH, key) == zh
    assert set(OPPORTUNITY_ZH) == {k for k in texts.TEMPLATES if k.startswith("carbon.opp.")}
    o = {"title": "repair compressed-air leaks", "title_key": "carbon.opp.air_leaks", "title_params": {}}
    assert opportunity_title(o, "zh-CN") == "修复压缩空气泄漏" and opportunity_title(o, "en") == o["title"]
    assert opportunity_title({"title": "typed", "title_key": None}, "zh-CN") == "typed"


def test_diagnosis_evidence_lines_carry_keys() -> None:
    """A work order's description written from a diagnosis: the verdict and each "  - " evidence line keyed,
    the marker sent apart (``prefix``), every evidence template used by a real diagnosis."""
    from spinline.health.diagnosis import diagnose

    base = {"env_bpfo": 1.0, "env_bpfi": 1.0, "env_bsf": 1.0, "kurtosis": 3.0, "velocity_rms": 1.0,
            "order_0.5x": 0.1, "order_1x": 1.0, "order_2x": 0.5, "order_3x": 0.2, "order_sub": 0.1}
    bearing = {**base, "env_bpfo": 8.0, "env_bpfi": 1.3, "kurtosis": 5.2, "order_1x": 2.6}
    cases = [(bearing, base, {"bpfo": 87.3}), (bearing, None, {"bpfo": 87.3}), (bearing, base, None),
             (bearing, None, None), ({**base, "speed_deviation_pct": -4.0}, base, None), (base, base, None)]
    seen: set[str] = set()
    for x, b, fd in cases:
        description = diagnose(x, b, defect_hz=fd, shaft_hz=24.7).explain()
        lines = maintenance.text_lines(description)
        assert [line.text for line in lines] == description.splitlines()
        assert lines[0].prefix == "" and lines[0].parts[0].key == "diag.fault_confidence"
        for line in lines[1:]:
            assert line.prefix == "  - " and len(line.parts) == 1, line
            p = line.parts[0]
            assert p.key.startswith("diag.ev.") and line.text == line.prefix + p.text
            assert_console_says(p.key, p.params, p.text)
            seen.add(p.key)
    assert seen == {k for k in texts.TEMPLATES if k.startswith("diag.ev.")}
    typed = maintenance.text_lines("  - replaced the belt")
    assert typed[0].parts == [] and typed[0].prefix == ""


async def test_not_found_refusals_are_keyed(api) -> None:  # type: ignore[no-untyped-def]
    """A mill outside the caller's, an unknown machine, a machine with no snapshot: each 404 keyed, the
    console's English entry reading the detail and its kind named in Chinese."""
    alice = await api.login("alice")
    c = api.client
    answers = [await c.get("/api/v1/mills/mill-b/health", headers=alice),
               await c.get("/api/v1/mills/mill-a/machines/nope/health/history", headers=alice),
               await c.get("/api/v1/mills/mill-a/machines/nope/snapshots/latest", headers=alice)]
    expected = [("error.not_found", "mill 'mill-b' not found", "工厂 'mill-b' 不存在"),
                ("error.not_found", "machine 'nope' not found", "设备 'nope' 不存在")]
    for r, (key, detail, zh) in zip(answers, expected, strict=False):
        err = r.json()
        assert r.status_code == 404 and err["code"] == "not_found" and err["key"] == key, err
        assert err["detail"] == detail
        assert_console_says(err["key"], err["params"], err["detail"])
        kind = entry(ZH, "kind." + err["params"]["kind"])
        assert vue_format(entry(ZH, key), {**err["params"], "kind": kind}) == zh
    snap = answers[2].json()
    assert answers[2].status_code == 404 and snap["key"].startswith("error.not_found"), snap
    assert_console_says(snap["key"], snap["params"], snap["detail"])


def test_not_found_and_conflict_details_are_keyed() -> None:
    from spinline.cloud.api.deps import not_found
    from spinline.cloud.api.errors import ApiError
    from spinline.cloud.maintenance.store import RecordConflict

    for exc, detail in [(not_found("user"), "user not found"),
                        (not_found("vibration channel", "'ch9'", machine="'rf01'"),
                         "vibration channel 'ch9' of machine 'rf01' not found"),
                        (not_found("raw snapshot", machine="'rf01'"), "raw snapshot of machine 'rf01' not found")]:
        assert exc.detail == detail and exc.text is not None
        assert_console_says(exc.text.key, exc.text.params, detail)
        assert entry(ZH, "kind." + exc.text.params["kind"].replace(" ", "_")) != exc.text.params["kind"]
    with pytest.raises(ApiError) as caught, maintenance._http_errors():
        raise RecordConflict("WO-7")
    t = caught.value.text
    assert caught.value.status_code == 409 and caught.value.code == "conflict" and t is not None
    assert caught.value.detail == "WO-7 already exists"
    assert_console_says(t.key, t.params, caught.value.detail)


async def test_invalid_request_fields_are_keyed_by_pydantic_type(api) -> None:  # type: ignore[no-untyped-def]
    """Each invalid field of a 422 carries ``error.field.<type>`` with the figures its message names (the
    console's English entry reads ``<loc>: <msg>`` exactly), or ``error.field.invalid`` naming the field."""
    alice = await api.login("alice")
    c = api.client
    base = BASE.format(mill="mill-a")
    answers = [await c.post(f"{base}/alarms", headers=alice, json={"severity": "nope", "asset": 5}),
               await c.get(f"{base}/alarms", headers=alice, params={"limit": "lots"}),
               await c.get(f"{base}/alarms", headers=alice, params={"limit": "-3"})]
    types: set[str] = set()
    for r in answers:
        err = r.json()
        assert r.status_code == 422 and err["code"] == "invalid_request", err
        lines = []
        for e in err["errors"]:
            line = ".".join(str(x) for x in e["loc"]) + ": " + e["msg"]
            assert e["key"].startswith("error.field."), e
            assert_console_says(e["key"], e["params"], line)
            if e["key"] != "error.field.invalid":
                assert e["key"] == "error.field." + e["type"]
                assert "should" not in vue_format(entry(ZH, e["key"]), e["params"]), e
            types.add(e["key"])
            lines.append(line)
        assert err["detail"] == "; ".join(lines[:5]) + (f" (and {len(lines) - 5} more)" if len(lines) > 5 else "")
    assert {"error.field.missing", "error.field.int_parsing"} <= types, types
    assert len(types) >= 4, types


def test_field_text_falls_back_to_the_field_name() -> None:
    from spinline.cloud.api.errors import field_text

    t = field_text("query.limit", "less_than_equal", "Input should be less than or equal to 10")
    assert (t.key, t.params) == ("error.field.less_than_equal", {"field": "query.limit", "le": "10"})
    # pydantic's singular ("1 character") is not the template's plural: named generically, never mistranslated
    t = field_text("body.name", "string_too_long", "String should have at most 1 character")
    assert t.key == "error.field.invalid" and t.en == "body.name: String should have at most 1 character"
    assert vue_format(entry(ZH, t.key), t.params) == "body.name：输入无效（String should have at most 1 character）"
