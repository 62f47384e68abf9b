"""Roles, permissions and the authenticated principal every API query is scoped by.

============================  =====  ===========================================================
role                          mills  may
============================  =====  ===========================================================
``zone_operator``             all    everything: users, edges, events, maintenance, energy
``mill_manager``              own    read; write events; create/revoke edges; maintenance; energy
``maintenance_engineer``      own    read; write events; maintenance (alarms, work orders)
``energy_officer``            own    read; write events; energy (meters, tariffs, carbon inputs)
``viewer``                    own    read only
============================  =====  ===========================================================

"own" = the mills listed on the user. A mill outside a user's scope does not exist for that user:
the API answers 404 for it, never 403, so a tenant cannot even learn another tenant's mill ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ZONE_OPERATOR = "zone_operator"
    MILL_MANAGER = "mill_manager"
    MAINTENANCE_ENGINEER = "maintenance_engineer"
    ENERGY_OFFICER = "energy_officer"
    VIEWER = "viewer"


class Permission(StrEnum):
    READ = "read"
    WRITE_EVENTS = "write_events"
    MANAGE_EDGES = "manage_edges"
    MANAGE_USERS = "manage_users"
    MANAGE_MAINTENANCE = "manage_maintenance"
    MANAGE_ENERGY = "manage_energy"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ZONE_OPERATOR: frozenset(Permission),
    Role.MILL_MANAGER: frozenset({Permission.READ, Permission.WRITE_EVENTS, Permission.MANAGE_EDGES,
                                  Permission.MANAGE_MAINTENANCE, Permission.MANAGE_ENERGY}),
    Role.MAINTENANCE_ENGINEER: frozenset({Permission.READ, Permission.WRITE_EVENTS, Permission.MANAGE_MAINTENANCE}),
    Role.ENERGY_OFFICER: frozenset({Permission.READ, Permission.WRITE_EVENTS, Permission.MANAGE_ENERGY}),
    Role.VIEWER: frozenset({Permission.READ}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a logged-in user, with the mills they may see."""

    user_id: int
    username: str
    role: Role
    mills: frozenset[str]

    @property
    def all_mills(self) -> bool:
        return self.role == Role.ZONE_OPERATOR

    def sees(self, mill: str) -> bool:
        """True when ``mill`` is in this user's scope."""
        return self.all_mills or mill in self.mills

    def has(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    def may(self, permission: Permission, mill: str) -> bool:
        return self.sees(mill) and self.has(permission)

    def scope(self, mills: list[str]) -> list[str]:
        """The mills of ``mills`` this user may see, in order."""
        return [m for m in mills if self.sees(m)]
