"""The cloud's metadata: mills (tenants), users, login tokens, edges and events."""

from spinline.cloud.meta.store import (
    ConflictError,
    EdgeRecord,
    EventRecord,
    MetaStore,
    MillRecord,
    SessionRecord,
    UserRecord,
)

__all__ = ["ConflictError", "EdgeRecord", "EventRecord", "MetaStore", "MillRecord", "SessionRecord", "UserRecord"]
