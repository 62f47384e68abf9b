"""Shared fixtures: the machine's real services, and the shared data folder.

A test that needs PostgreSQL or Mosquitto fails (not skips) when the service is down under
``CI=true`` or ``SPINLINE_STRICT=1`` (``scripts/test``, the README's test command, sets it), so a
green run at a desk means the same as a green CI: the integration tests ran. Only a bare
``pytest`` outside both may skip them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def strict() -> bool:
    """A missing service fails the test: in CI, and under ``scripts/test`` (``SPINLINE_STRICT=1``)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("CI", "SPINLINE_STRICT"))


def require_service(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    msg = f"{name} is not reachable on {host}:{port} (see ../shared/services.md to start it)"
    if strict():
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def mqtt_broker() -> tuple[str, int]:
    """The machine's Mosquitto (MQTT 3.1.1 and 5)."""
    host, port = os.environ.get("SPINLINE_TEST_MQTT_HOST", "127.0.0.1"), int(
        os.environ.get("SPINLINE_TEST_MQTT_PORT", "1883"))
    require_service("Mosquitto", host, port)
    return host, port


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    url = os.environ.get("SPINLINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return url


@pytest.fixture()
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh schema-isolated database URL per test (a new schema in the ``test`` database)."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{postgres_admin_url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $SPINLINE_DATA): real machine measurements. Missing -> fail, never pass."""
    p = Path(os.environ.get("SPINLINE_DATA", ROOT.parent / "shared" / "data"))
    if not p.is_dir():
        pytest.fail(f"real-data folder {p} is missing: set SPINLINE_DATA to ../shared/data")
    return p


@pytest.fixture(scope="session")
def mill_yaml() -> Path:
    return EXAMPLES / "mill.yaml"


@pytest.fixture(scope="session")
def zone_yaml() -> Path:
    return EXAMPLES / "zone.yaml"
