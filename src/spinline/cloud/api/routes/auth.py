"""Log in (a bearer token with an expiry) and log out."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status

from spinline.cloud.api import schemas as s
from spinline.cloud.api.deps import ClientAddress, CloudDep, CurrentUser, TokenDep, unauthorised
from spinline.cloud.auth.service import LoginRateLimited
from spinline.core.errors import AuthError

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", responses={401: {"model": s.ErrorPublic}, 429: {"model": s.ErrorPublic}})
def login(body: s.LoginRequest, cloud: CloudDep, client: ClientAddress) -> s.TokenPublic:
    """Exchange a user name and password for a bearer token.

    After ``login_max_failures`` failures for one user from one address within ``login_window_s``
    every attempt is refused with 429 (``Retry-After``) until the window has passed.
    """
    try:
        session = cloud.accounts.login(body.username, body.password, client)
    except LoginRateLimited as exc:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc),
                            headers={"Retry-After": str(max(1, round(exc.retry_after_s)))}) from None
    except AuthError as exc:
        raise unauthorised(str(exc)) from None
    return s.TokenPublic(access_token=session.token, expires_at=s.ts(session.expires_ns))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(cloud: CloudDep, token: TokenDep, user: CurrentUser) -> Response:
    """End this token's session."""
    del user  # authenticated above: only a valid token can be logged out
    cloud.accounts.logout(token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
