"""The carbon routes over a real EmbeddedStore holding three simulated days of mill A (examples/zone.yaml).

Only the points the carbon service reads are written (as tests/carbon/conftest.py does): the same
figures, a fraction of the write time.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from spinline.core.site import Site
from spinline.sim.history import generate

from .conftest import Api

CARBON_POINTS = ("energy", "power", "output", "spindle_hours")
OCT_2026 = int(dt.datetime(2026, 10, 1, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()) * 10**9
BASE = "/api/v1/mills/{mill}/carbon/2026-10"


def fill(api: Api, site: Site, mill: str, days: float = 3) -> None:
    store = api.cloud.store
    keep = np.array(sorted(p.key for p in store.points(mill) if p.name in CARBON_POINTS), dtype=np.int64)
    for b in generate(site, mill, OCT_2026, days * 86400.0, 60.0, seed=7):
        store.write(b.take(np.isin(b.point, keep)))
    store.refresh_rollups()


async def test_month_figures_and_pact_export(api: Api, zone_site: Site) -> None:
    fill(api, zone_site, "mill-a")
    h = await api.login("alice")
    r = await api.client.get(BASE.format(mill="mill-a"), headers=h)
    assert r.status_code == 200, r.text
    d = r.json()
    assert (d["mill"], d["month"], d["allocation_rule"]) == ("mill-a", "2026-10", "mass")
    inv = d["inventory"]
    total = d["energy"]["total_kwh"]
    assert total > 1000 and d["energy"]["yarn_kg"] > 100
    # three days of data in October: the figures cover those hours, energy and yarn alike, with
    # nothing filled before the first or after the last reading (so nothing estimated or flagged)
    # (the last reading, at 3 days exactly, opens a 73rd hour)
    assert d["period"]["hours"] == 73 and d["period"]["month_to_date"] is True
    assert d["period"]["covered_start"] == "2026-09-30T16:00:00Z"
    assert d["energy"]["estimated_share"] == 0.0 and d["energy"]["estimated_flagged"] is False
    # Scope 2 both ways: location-based (grid average) and market-based (residual mix), both positive
    assert inv["scope2_location_kg"] > 0 and inv["scope2_market_kg"] > 0
    assert inv["consumption_kwh"] == pytest.approx(total, rel=1e-6)
    assert any(line["scope"] == 2 or str(line["scope"]).startswith("2") for line in inv["lines"])
    # kWh/kg per count, and the stages add up to the total (shares to 1, kWh/kg to the mill's)
    counts = {c["count"]: c for c in d["counts"]}
    assert counts and all(c["kwh_per_kg"] > 0 and c["yarn_kg"] > 0 for c in counts.values())
    assert sum(c["kwh"] for c in counts.values()) == pytest.approx(total, rel=1e-4)
    stages = d["stages"]
    assert sum(s["kwh"] for s in stages) == pytest.approx(total, rel=1e-4)
    assert sum(s["share"] for s in stages) == pytest.approx(1.0, abs=1e-4)
    assert sum(s["kwh_per_kg_yarn"] for s in stages) == pytest.approx(d["energy"]["kwh_per_kg"], rel=1e-4)

    r = await api.client.get(BASE.format(mill="mill-a") + "/pact", headers=h, params={"rule": "energy"})
    assert r.status_code == 200, r.text
    pact = json.loads(r.text)  # valid JSON, one ProductFootprint per count
    assert isinstance(pact, list) and len(pact) == len(counts)
    for fp in pact:
        assert {"id", "specVersion", "version", "created", "status", "companyName", "companyIds",
                "productDescription", "productIds", "productCategoryCpc", "productNameCompany", "comment",
                "pcf"} <= set(fp)
        pcf = fp["pcf"]
        assert pcf["declaredUnit"] == "kilogram" and float(pcf["pCfExcludingBiogenic"]) > 0
        assert pcf["referencePeriodStart"].startswith("2026-09-30T16:00:00")  # October in Beijing time
        assert pcf["geographyCountry"] == "CN" and "shared loads allocated by energy" in fp["comment"]
    assert any(c in fp["productDescription"] for fp in pact for c in counts)

    # the report as a file: a Chinese PDF by default, English on request, HTML
    from spinline.core.pdf import text_of

    r = await api.client.get(BASE.format(mill="mill-a") + "/report", headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf", r.text[:200]
    assert 'filename="carbon_mill-a_2026-10_zh-CN.pdf"' in r.headers["content-disposition"]
    assert "能源与碳排放月报" in text_of(r.content)
    r = await api.client.get(BASE.format(mill="mill-a") + "/report", headers=h, params={"lang": "en"})
    assert "Energy and carbon report" in text_of(r.content)
    r = await api.client.get(BASE.format(mill="mill-a") + "/report", headers=h, params={"format": "html"})
    assert r.status_code == 200 and r.text.startswith("<!doctype html>")
    # HTML in the reader's language (lang, else Accept-Language), with the PDF's charts inline, same figures
    zh_html = r.text
    assert '<html lang="zh-CN">' in zh_html and "能源与碳排放月报" in zh_html and "各工序单位电耗" in zh_html
    assert zh_html.count("<svg") >= 2 and '<td class="l">细纱</td>' in zh_html
    assert "Energy and carbon report" not in zh_html
    r = await api.client.get(BASE.format(mill="mill-a") + "/report", headers={**h, "Accept-Language": "en-GB,en;q=0.8"},
                             params={"format": "html"})
    en_html = r.text
    assert '<html lang="en">' in en_html and "Energy and carbon report" in en_html and "能源" not in en_html
    assert en_html.count("<svg") == zh_html.count("<svg")
    assert 'filename="carbon_mill-a_2026-10.html"' in r.headers["content-disposition"]
    import re

    def figures(html: str) -> list[str]:  # the table cells' numbers, wherever the words around them are
        return sorted(re.findall(r"<td>([-0-9.,%]+)</td>", re.sub(r"<svg.*?</svg>", "", html, flags=re.S)))
    assert figures(en_html) and figures(en_html) == figures(zh_html)
    r = await api.client.get(BASE.format(mill="mill-a") + "/report", headers=h, params={"lang": "fr"})
    assert r.status_code == 422

    # a bad rule is refused by validation; a mill-A user does not see mill B
    assert (await api.client.get(BASE.format(mill="mill-a"), headers=h, params={"rule": "x"})).status_code == 422
    for path in (BASE, BASE + "/pact", BASE + "/report"):
        r = await api.client.get(path.format(mill="mill-b"), headers=h)
        assert r.status_code == 404 and "mill-b" in r.json()["detail"] and "kwh" not in r.text
