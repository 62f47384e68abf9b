"""The carbon trend by month: measured months with figures, months without production as nulls."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from spinline.carbon import inputs as ci
from spinline.core.site import Site
from spinline.sim.history import generate

from .conftest import Api

CARBON_POINTS = ("energy", "power", "output", "spindle_hours")


def _this_month() -> str:
    t = dt.datetime.now(ZoneInfo("Asia/Shanghai"))
    return f"{t.year:04d}-{t.month:02d}"


async def test_trend_by_month(api: Api, zone_site: Site) -> None:
    last = ci.shift_month(_this_month(), -1)
    start = ci.month_bounds_ns(last, "Asia/Shanghai")[0]
    store = api.cloud.store
    keep = np.array(sorted(p.key for p in store.points("mill-a") if p.name in CARBON_POINTS), dtype=np.int64)
    for b in generate(zone_site, "mill-a", start, 86400.0, 60.0, seed=7):
        store.write(b.take(np.isin(b.point, keep)))
    store.refresh_rollups()
    h = await api.login("erin")
    r = await api.client.get("/api/v1/mills/mill-a/carbon/trend", headers=h, params={"months": 3})
    assert r.status_code == 200, r.text
    months = r.json()["months"]
    assert [m["month"] for m in months] == [ci.shift_month(last, -1), last, _this_month()]
    before, measured, now = months
    assert before["kwh_per_kg"] is None and not before["partial"]
    assert measured["yarn_t"] > 0 and measured["kwh_per_kg"] > 0 and measured["kgce_per_t"] > 0
    assert measured["kgco2e_per_kg"] == pytest.approx(measured["kwh_per_kg"] * 0.5, rel=0.6)  # grid ~0.5 kg/kWh
    assert now["partial"] and now["kwh_per_kg"] is None          # nothing produced this month yet
    assert (await api.client.get("/api/v1/mills/mill-a/carbon/trend", headers=h,
                                 params={"months": 37})).status_code == 422
