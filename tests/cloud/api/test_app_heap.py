"""The cloud freezes what start-up built out of the cyclic collector's reach, and lets go at shutdown.

A full collection walked the start-up heap (every mill's site models, schemas, caches) while a request
waited: bench/zone_overview.py showed a zone-overview call at ~135 ms instead of ~23 ms about once every
13 calls. The figure lives in the bench; this test pins the mechanism.
"""

from __future__ import annotations

import gc
from pathlib import Path

from spinline.cloud.app import create_app, open_stores
from spinline.core.site import Site

from .conftest import make_settings


async def test_startup_heap_is_frozen_while_serving_and_unfrozen_at_shutdown(tmp_path: Path, zone_site: Site) -> None:
    gc.unfreeze()
    settings = make_settings(tmp_path, freeze_startup_heap=True)
    store, meta = open_stores(settings, site=zone_site)
    app = create_app(settings, store=store, meta=meta)
    try:
        async with app.router.lifespan_context(app):
            frozen = gc.get_freeze_count()
            # the zone's site models and the app built from them are moved out of the collector's reach
            assert frozen > 10_000
        assert gc.get_freeze_count() == 0
    finally:
        store.close()
        meta.close()


async def test_tests_can_turn_it_off(tmp_path: Path, zone_site: Site) -> None:
    gc.unfreeze()
    settings = make_settings(tmp_path)
    store, meta = open_stores(settings, site=zone_site)
    app = create_app(settings, store=store, meta=meta)
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() == 0
    finally:
        store.close()
        meta.close()
