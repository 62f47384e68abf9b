"""Users, roles, sessions and edge credentials of the cloud."""

from spinline.cloud.auth.passwords import Passwords
from spinline.cloud.auth.roles import ROLE_PERMISSIONS, Permission, Principal, Role
from spinline.cloud.auth.sealing import SecretBox
from spinline.cloud.auth.service import Accounts, EdgeCredentials, InvalidRequest, LoginRateLimited, Session

__all__ = ["ROLE_PERMISSIONS", "Accounts", "EdgeCredentials", "InvalidRequest", "LoginRateLimited", "Passwords",
           "Permission", "Principal", "Role", "SecretBox", "Session"]
