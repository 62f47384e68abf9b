"""Every point of the example sites has a name in both console catalogues.

The machine view shows a point by ``point.<name>``; a vibration feature point (``vib_<channel>_<feature>``)
by ``vibChannel.<channel>`` and ``vibFeature.<feature>`` (``web/src/format.ts: pointLabel``, which tries
the ``vibFeature`` keys as suffixes, longest first, as the cloud's ``split_feature`` does). A name
missing here reached the zh-CN console in English (``fan speed``, ``hall temp`` on the HVAC page).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spinline.cloud.maintenance.pipeline import split_feature
from spinline.core.site import VIB_FEATURES, all_points, load_site

ROOT = Path(__file__).resolve().parents[2]
LOCALES = ROOT / "web/src/i18n/locales"


def _names() -> set[str]:
    names: set[str] = set()
    for yaml in sorted((ROOT / "examples").glob("*.yaml")):
        site = load_site(yaml)
        names |= {ref.point.name for ref in all_points(site)}
    return names


def _label(cat: dict[str, dict[str, str]], name: str) -> str | None:
    if name in cat["point"]:
        return cat["point"][name]
    split = split_feature(name)         # the cloud's split, the same rule as pointLabel's
    if split and split[0] in cat["vibChannel"] and split[1] in cat["vibFeature"]:
        return f"{cat['vibChannel'][split[0]]} {cat['vibFeature'][split[1]]}"
    return None


@pytest.mark.parametrize("locale", ["zh-CN", "en"])
def test_every_example_point_is_named_in_the_catalogue(locale: str) -> None:
    cat = json.loads((LOCALES / f"{locale}.json").read_text(encoding="utf-8"))
    names = _names()
    assert len(names) > 50 and any(n.startswith("vib_") for n in names)
    missing = sorted(n for n in names if not _label(cat, n))
    assert not missing, f"{locale}: points without a name: {missing}"


def test_the_catalogue_knows_every_vibration_feature_the_edge_derives() -> None:
    for locale in ("zh-CN", "en"):
        cat = json.loads((LOCALES / f"{locale}.json").read_text(encoding="utf-8"))
        assert {f for f, _ in VIB_FEATURES} <= set(cat["vibFeature"]), locale
