"""/api/v1/models by role: the zone operator steers the fleet, a mill manager his mill's edges, a viewer
reads; another mill's per-asset models do not exist for a tenant."""

from __future__ import annotations

import httpx

from .conftest import PASSWORD, Zone, fitted_params

RF = "ring_frame.mahalanobis"


def _h(z: Zone, who: str) -> dict[str, str]:
    r = httpx.post(f"{z.url}/api/v1/auth/login", json={"username": who, "password": PASSWORD})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_roles_and_scopes(zone: Zone) -> None:
    reg = zone.registry
    v1 = reg.register(name=RF, scope_kind="machine_type", scope="ring_frame", kind="asset_monitor/mahalanobis",
                      params=fitted_params(0), actor="trainer").version
    b_asset = reg.register(name="mill-b.rf01.main_motor", scope_kind="asset", scope="mill-b/rf01/main_motor",
                           mill="mill-b", kind="asset_monitor/mahalanobis", params=fitted_params(1),
                           actor="trainer").version
    zone_h, alice, vera = _h(zone, "zone"), _h(zone, "alice"), _h(zone, "vera")
    api = f"{zone.url}/api/v1/models"
    # alice may not change a fleet model's status; the zone operator may
    r = httpx.post(f"{api}/{RF}/{v1}/promote", headers=alice, json={"reason": "mine", "mills": ["mill-a"]})
    assert r.status_code == 403
    r = httpx.post(f"{api}/{RF}/{v1}/promote", headers=zone_h, json={"reason": "fleet model", "mills": ["mill-b"]})
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert r.json()["transitions"][-1] | {"ts_ns": 0} == {"from": "candidate", "to": "active", "actor": "zone",
                                                           "reason": "fleet model", "ts_ns": 0}
    # alice pins the active fleet model for her mill's rf01 only; not in mill-b; a viewer not at all
    body = {"mill": "mill-a", "selector_kind": "asset", "selector": "mill-a/rf01/main_motor"}
    assert httpx.post(f"{api}/{RF}/{v1}/deploy", headers=alice, json=body).status_code == 204
    assert httpx.post(f"{api}/{RF}/{v1}/deploy", headers=vera, json=body).status_code == 403
    assert httpx.post(f"{api}/{RF}/{v1}/deploy", headers=alice, json=body | {
        "mill": "mill-b", "selector": "mill-b/rf01/main_motor"}).status_code == 404
    edge = zone.edge("edge-a")
    edge.check_once()
    assert {a: s.version for a, s in edge.slots.items()} == {"mill-a/rf01/main_motor": v1,
                                                             "mill-a/rf02/main_motor": None}
    # mill-b's per-asset model: invisible to alice (list, show, steer), visible to the zone operator
    assert all(m["name"] != "mill-b.rf01.main_motor" for m in httpx.get(api, headers=alice).json())
    assert httpx.get(f"{api}/mill-b.rf01.main_motor", headers=alice).status_code == 404
    assert httpx.post(f"{api}/mill-b.rf01.main_motor/{b_asset}/retire", headers=alice,
                      json={"reason": "not mine"}).status_code == 404
    assert httpx.get(f"{api}/mill-b.rf01.main_motor", headers=zone_h).json()["version"] == b_asset
    # a refused step answers 409 with the reason; a bad reason 422
    r = httpx.post(f"{api}/{RF}/{v1}/canary", headers=zone_h, json={"reason": "again", "mills": ["mill-a"]})
    assert r.status_code == 409 and "cannot become canary" in r.json()["detail"]
    assert httpx.post(f"{api}/{RF}/rollback", headers=zone_h, json={"reason": ""}).status_code == 422
    # the fleet view per mill: alice sees mill-a only, with rf01 converged
    fleet = httpx.get(f"{api}/fleet", headers=alice).json()
    assert list(fleet) == ["mill-a"]
    assert fleet["mill-a"]["edge-a"]["assets"]["mill-a/rf01/main_motor"]["converged"] is True
