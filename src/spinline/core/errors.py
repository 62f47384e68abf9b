"""One error hierarchy for the whole platform.

Library errors (pymodbus, asyncua, paho, duckdb, psycopg ...) are mapped to these at the boundary
where they occur, so callers catch exactly one family and the cause is kept (``raise ... from exc``)::

    SpinlineError
    ├── SiteConfigError        a site file is wrong: names file, path in it, and what is wrong
    ├── PayloadError           a wire payload cannot be decoded or is refused (carries a reason code)
    ├── ConnectorError         a device link failed (edge side)
    │   ├── ConnectTimeout
    │   └── DecodeError
    ├── UplinkError            the edge could not hand a batch to the cloud
    ├── StorageError           a store refused or failed a read/write
    └── AuthError              authentication or authorisation refused
"""

from __future__ import annotations


class SpinlineError(Exception):
    """Base of every error spinline raises on purpose."""


class SiteConfigError(SpinlineError):
    """A site file failed validation.

    ``issues`` holds every problem found (not just the first), each as (path, message), so a user
    fixes a file in one pass rather than one error per run.
    """

    def __init__(self, file: str, issues: list[tuple[str, str]]) -> None:
        self.file = file
        self.issues = issues
        lines = [f"{file}: {path}: {msg}" if path else f"{file}: {msg}" for path, msg in issues]
        super().__init__("\n".join(lines))


class PayloadError(SpinlineError):
    """A payload was refused. ``reason`` is a stable machine-readable code counted per edge."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class ConnectorError(SpinlineError):
    """A device link failed; the poll coordinator marks the device's points unavailable."""


class ConnectTimeout(ConnectorError):
    """The device did not answer in time."""


class DecodeError(ConnectorError):
    """The device answered, but the answer cannot be turned into values."""


class UplinkError(SpinlineError):
    """A batch could not be delivered upstream; it stays in the buffer."""


class StorageError(SpinlineError):
    """A store could not complete an operation."""


class AuthError(SpinlineError):
    """Authentication or authorisation refused."""
