"""Log in and out: a bearer token for API clients, or a browser session (cookies) for the console.

The browser session is an opaque token in an HttpOnly, SameSite=Strict cookie (``spinline_session``,
Secure over https) stored only as its hash, with an idle and an absolute expiry, plus a readable
``spinline_csrf`` cookie whose value a write must echo in the ``X-CSRF-Token`` header (the cookie
alone never authorises a write). No token ever travels in a URL.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Request, Response, status

from spinline.cloud.api import schemas as s
from spinline.cloud.api.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    ApiError,
    CallerDep,
    ClientAddress,
    CloudDep,
    CurrentUser,
    MetaDep,
    SettingsDep,
    TokenDep,
    not_found,
    unauthorised,
)
from spinline.cloud.auth.roles import ROLE_PERMISSIONS, Principal
from spinline.cloud.auth.service import LoginRateLimited, principal
from spinline.cloud.meta.store import MetaStore
from spinline.cloud.settings import Settings
from spinline.core.errors import AuthError

router = APIRouter(prefix="/auth", tags=["auth"])

_ERRORS: dict[int | str, dict[str, object]] = {401: {"model": s.ErrorPublic}, 403: {"model": s.ErrorPublic}}


def _rate_limited(exc: LoginRateLimited) -> HTTPException:
    return ApiError(status.HTTP_429_TOO_MANY_REQUESTS, "login_rate_limited", str(exc),
                    headers={"Retry-After": str(max(1, round(exc.retry_after_s)))})


@router.post("/login", responses={401: {"model": s.ErrorPublic}, 429: {"model": s.ErrorPublic}})
def login(body: s.LoginRequest, cloud: CloudDep, client: ClientAddress) -> s.TokenPublic:
    """Exchange a user name and password for a bearer token.

    After ``login_max_failures`` failures for one user from one address within ``login_window_s``
    every attempt is refused with 429 (``Retry-After``) until the window has passed.
    """
    try:
        session = cloud.accounts.login(body.username, body.password, client)
    except LoginRateLimited as exc:
        raise _rate_limited(exc) from None
    except AuthError as exc:
        raise unauthorised(str(exc), "login_failed") from None
    return s.TokenPublic(access_token=session.token, expires_at=s.ts(session.expires_ns))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(cloud: CloudDep, token: TokenDep, user: CurrentUser) -> Response:
    """End this token's session (and the live streams opened with it)."""
    del user  # authenticated above: only a valid token can be logged out
    cloud.accounts.logout(token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def me_public(user: Principal, meta: MetaStore, auth: str) -> s.MePublic:
    rec = meta.user(user.user_id)
    if rec is None:
        raise not_found("user")
    mills = [m.id for m in meta.mills()] if user.all_mills else sorted(user.mills)
    return s.MePublic(id=rec.id, username=rec.username, full_name=rec.full_name, role=user.role, mills=mills,
                      all_mills=user.all_mills, permissions=sorted(p.value for p in ROLE_PERMISSIONS[user.role]),
                      language=meta.language(rec.id), auth=auth)  # type: ignore[arg-type]


def _secure(request: Request, settings: Settings) -> bool:
    return settings.cookie_secure == "always" or (settings.cookie_secure == "auto" and request.url.scheme == "https")


def _clear_cookies(response: Response, request: Request, settings: Settings) -> None:
    secure = _secure(request, settings)
    for name, http_only in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
        response.delete_cookie(name, path="/", secure=secure, httponly=http_only, samesite="strict")


@router.post("/session", responses={**_ERRORS, 429: {"model": s.ErrorPublic}})
def start_session(body: s.SessionLogin, request: Request, response: Response, cloud: CloudDep,
                  settings: SettingsDep, client: ClientAddress) -> s.SessionPublic:
    """Log a browser in: sets the session cookie (HttpOnly) and the ``spinline_csrf`` cookie (readable).

    Same credentials check and rate limit as ``/auth/login``. The session ends after
    ``idle_timeout_s`` without a request, at ``expires_at`` in any case, at logout, and when the
    user's password, role or mills change or the user is disabled.
    """
    try:
        bs = cloud.accounts.start_session(body.username, body.password, client)
    except LoginRateLimited as exc:
        raise _rate_limited(exc) from None
    except AuthError as exc:
        raise unauthorised(str(exc), "login_failed") from None
    max_age = max(1, int((bs.expires_ns - time.time_ns()) / 1e9))
    secure = _secure(request, settings)
    response.set_cookie(SESSION_COOKIE, bs.token, max_age=max_age, path="/", secure=secure, httponly=True,
                        samesite="strict")
    response.set_cookie(CSRF_COOKIE, bs.csrf, max_age=max_age, path="/", secure=secure, httponly=False,
                        samesite="strict")
    me = me_public(principal(bs.user), cloud.meta, "session")
    return s.SessionPublic(**me.model_dump(), expires_at=s.ts(bs.expires_ns), idle_timeout_s=settings.session_idle_s)


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
def end_session(caller: CallerDep, request: Request, cloud: CloudDep, settings: SettingsDep) -> Response:
    """Log out: ends this session (or bearer token) and its open live streams at once; clears the cookies."""
    if caller.kind == "session":
        cloud.accounts.end_session(caller.credential, caller.principal.user_id)
    else:
        header = request.headers.get("Authorization", "")
        cloud.accounts.logout(header.partition(" ")[2])
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    _clear_cookies(response, request, settings)
    return response


@router.get("/me", responses=_ERRORS)
def read_me(caller: CallerDep, meta: MetaDep) -> s.MePublic:
    """The caller: role, mills in scope, permissions and chosen language."""
    return me_public(caller.principal, meta, caller.kind)


@router.put("/me/password", status_code=status.HTTP_204_NO_CONTENT,
            responses={**_ERRORS, 422: {"model": s.ErrorPublic}, 429: {"model": s.ErrorPublic}})
def change_password(body: s.PasswordChange, caller: CallerDep, request: Request, cloud: CloudDep,
                    settings: SettingsDep, client: ClientAddress) -> Response:
    """Change one's own password (the current one is required: 403 ``wrong_password``, counted like a
    failed login, 429 after too many).

    Every session and token of the user ends with it, this one included: log in again.
    """
    try:
        cloud.accounts.change_own_password(caller.principal.user_id, body.current_password, body.new_password,
                                           client)
    except LoginRateLimited as exc:
        raise _rate_limited(exc) from None
    except AuthError as exc:
        raise ApiError(status.HTTP_403_FORBIDDEN, "wrong_password", str(exc)) from None
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    _clear_cookies(response, request, settings)
    return response


@router.put("/me/language", responses=_ERRORS)
def change_language(body: s.LanguageChange, caller: CallerDep, cloud: CloudDep) -> s.MePublic:
    """Remember the caller's language (zh-CN or en; null: follow the browser)."""
    cloud.accounts.set_language(caller.principal.user_id, body.language)
    return me_public(caller.principal, cloud.meta, caller.kind)
