"""Logging of every spinline process, configured once at its entry point.

Third-party libraries log at INFO what a plant must not keep in its logs: asyncua logs every OPC UA
publish with the process values in it (tens of KB/s on a gateway), pymodbus every frame, amqtt
every client, uvicorn one line per request. So ``configure`` puts the libraries in ``LIBRARIES`` at
WARNING whatever the process's own level, unless asked: ``SPINLINE_LOG_LIBRARIES=asyncua=INFO,
uvicorn.access=INFO`` (or the ``libraries`` argument) sets them one by one. spinline's own loggers
never log process values; failures are logged when they start and when they end.
"""

from __future__ import annotations

import logging
import os

#: Loggers held at WARNING unless asked for (the names their libraries log under).
LIBRARIES = ("asyncua", "pymodbus", "amqtt", "transitions", "paho", "aiomqtt", "uvicorn.access", "httpx", "httpcore",
             "sqlalchemy.engine", "alembic", "hpack", "websockets", "passlib")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def library_levels(spec: str | None) -> dict[str, int]:
    """``"asyncua=INFO, pymodbus=debug"`` -> ``{"asyncua": 20, "pymodbus": 10}``; a bad entry raises ValueError.

    >>> library_levels("asyncua=INFO, pymodbus=debug")
    {'asyncua': 20, 'pymodbus': 10}
    """
    out: dict[str, int] = {}
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, level = part.partition("=")
        value = logging.getLevelName(level.strip().upper()) if sep else None
        if not isinstance(value, int) or not name.strip():
            raise ValueError(f"bad library log level {part!r}: use name=LEVEL, e.g. asyncua=INFO")
        out[name.strip()] = value
    return out


def configure(level: str = "info", libraries: str | None = None) -> None:
    """Root at ``level`` (one format for every process), the libraries at WARNING unless asked."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    logging.getLogger().setLevel(level.upper())
    asked = library_levels(libraries if libraries is not None else os.environ.get("SPINLINE_LOG_LIBRARIES"))
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(asked.get(name, logging.WARNING))
    for name, value in asked.items():
        logging.getLogger(name).setLevel(value)
