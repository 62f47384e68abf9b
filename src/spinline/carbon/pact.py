"""Export a product footprint in the WBCSD PACT (Pathfinder) Technical Specification v2 data model.

One ``ProductFootprint`` per yarn count and month, so a buyer's system can read it. Decimal values
are strings, as the specification requires; the declared unit is the kilogram. The carbon figure is
the spinning stage (cradle-to-gate of the mill) unless a fibre factor is given, then it includes
fibre (cradle-to-gate), and ``boundaryProcessesDescription`` says which.

Biogenic carbon content: cotton is almost pure cellulose (C6H10O5)n, 72.06 / 162.14 = 0.4444 kg C
per kg; the content is reported from that stoichiometry and the comment says so.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from spinline.carbon.inputs import month_bounds_ns

SPEC_VERSION = "2.2.0"
#: kg C per kg of cellulose, (6 x 12.011) / 162.141.
CELLULOSE_C = 6 * 12.011 / 162.141


def _dec(x: float, nd: int = 4) -> str:
    return f"{x:.{nd}f}"


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def product_footprint(*, mill_id: str, mill_name: str, month: str, timezone: str, count: str,
                      kgco2e_per_kg: float, spinning_kgco2e_per_kg: float, cradle_to_gate: bool,
                      company_name: str = "", company_ids: list[str] | None = None, product_name: str = "",
                      product_ids: list[str] | None = None, cpc: str = "", factor_sources: list[tuple[str, str]],
                      rule: str, estimated_share: float, custom_factors: list[str],
                      created: dt.datetime | None = None) -> dict[str, Any]:
    """A PACT v2 ``ProductFootprint`` (dict, ready for ``json.dumps``)."""
    start, end = month_bounds_ns(month, timezone)
    pid = uuid.uuid5(uuid.NAMESPACE_URL, f"spinline:{mill_id}:{count}:{month}")
    boundary = ("cradle-to-gate: cotton fibre (supplier factor) plus the spinning mill, blowroom to winding"
                if cradle_to_gate else "gate-to-gate of the spinning mill, blowroom to winding (fibre excluded)")
    comment = (f"spinline carbon report {month}; shared loads allocated by {rule}; "
               f"{estimated_share:.1%} of kWh estimated (gap fill); biogenic carbon content from cellulose "
               f"stoichiometry ({_dec(CELLULOSE_C)} kgC/kg)")
    if custom_factors:
        comment += f"; CUSTOM factors used: {', '.join(custom_factors)}"
    return {
        "id": str(pid),
        "specVersion": SPEC_VERSION,
        "version": 1,
        "created": (created or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "status": "Active",
        "companyName": company_name or mill_name or mill_id,
        "companyIds": company_ids or [f"urn:pathfinder:company:customcode:vendor-assigned:{mill_id}"],
        "productDescription": f"Ring-spun cotton yarn {count}, produced at {mill_name or mill_id}",
        "productIds": product_ids or [f"urn:pathfinder:product:customcode:vendor-assigned:{mill_id}-{count}"],
        "productCategoryCpc": cpc or "2631",
        "productNameCompany": product_name or f"Cotton yarn {count}",
        "comment": comment,
        "pcf": {
            "declaredUnit": "kilogram",
            "unitaryProductAmount": "1.0",
            "pCfExcludingBiogenic": _dec(kgco2e_per_kg),
            "fossilGhgEmissions": _dec(kgco2e_per_kg),
            "fossilCarbonContent": "0.0",
            "biogenicCarbonContent": _dec(CELLULOSE_C),
            "characterizationFactors": "AR6",
            "ipccCharacterizationFactorsSources": ["AR6"],
            "crossSectoralStandardsUsed": ["GHG Protocol Product standard", "ISO Standard 14067"],
            "productOrSectorSpecificRules": [],
            "boundaryProcessesDescription": boundary
            + f"; spinning stage {spinning_kgco2e_per_kg:.4f} kgCO2e/kg (MEE/NBS/NEA life-cycle electricity factor)",
            "referencePeriodStart": _iso(start),
            "referencePeriodEnd": _iso(end),
            "geographyCountry": "CN",
            "secondaryEmissionFactorSources": [{"name": n, "version": v} for n, v in factor_sources],
            "exemptedEmissionsPercent": 0.0,
            "exemptedEmissionsDescription": "",
            "packagingEmissionsIncluded": False,
            "primaryDataShare": round(100.0 * (1.0 - estimated_share), 1),
        },
    }
