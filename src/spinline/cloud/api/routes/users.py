"""Users: the zone operator manages them; everyone may read themselves."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from spinline.cloud.api import schemas as s
from spinline.cloud.api.deps import CloudDep, CurrentUser, MetaDep, UserManager, forbidden, not_found
from spinline.cloud.meta.store import UserRecord

router = APIRouter(prefix="/users", tags=["users"])


def user_public(u: UserRecord) -> s.UserPublic:
    return s.UserPublic(id=u.id, username=u.username, full_name=u.full_name, role=u.role,  # type: ignore[arg-type]
                        mills=sorted(u.mills), disabled=u.disabled, created_at=s.ts(u.created_ns))


@router.get("/me")
def read_me(user: CurrentUser, meta: MetaDep) -> s.UserPublic:
    rec = meta.user(user.user_id)
    if rec is None:
        raise not_found("user")
    return user_public(rec)


@router.get("")
def list_users(manager: UserManager, meta: MetaDep) -> list[s.UserPublic]:
    del manager
    return [user_public(u) for u in meta.users()]


@router.post("", status_code=status.HTTP_201_CREATED, responses={409: {"model": s.ErrorPublic}})
def create_user(body: s.UserCreate, manager: UserManager, cloud: CloudDep) -> s.UserPublic:
    del manager
    return user_public(cloud.accounts.create_user(username=body.username, password=body.password, role=body.role,
                                                  mills=body.mills, full_name=body.full_name))


@router.get("/{user_id}")
def read_user(user_id: int, manager: UserManager, meta: MetaDep) -> s.UserPublic:
    del manager
    rec = meta.user(user_id)
    if rec is None:
        raise not_found("user")
    return user_public(rec)


@router.patch("/{user_id}")
def update_user(user_id: int, body: s.UserUpdate, manager: UserManager, cloud: CloudDep) -> s.UserPublic:
    """Change a user's role, mills, password, name or disabled flag (ends the user's sessions)."""
    del manager
    rec = cloud.accounts.update_user(user_id, role=body.role, mills=body.mills, password=body.password,
                                     disabled=body.disabled, full_name=body.full_name)
    if rec is None:
        raise not_found("user")
    return user_public(rec)


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_user(user_id: int, manager: UserManager, cloud: CloudDep) -> Response:
    """Delete a user (their sessions and open live streams end at once)."""
    if user_id == manager.user_id:
        raise forbidden("you cannot delete yourself")
    if not cloud.accounts.delete_user(user_id):
        raise not_found("user")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
