"""Log in (a bearer token with an expiry) and log out.

The login is where an anonymous caller can make the server spend most (argon2 takes 64 MiB and
tens of ms per check), so its limits come before any work: per client address, globally, and
for a user name that is being guessed a delay instead of a lock-out (``spinline.cloud.api.limits``).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status
from fastapi.concurrency import run_in_threadpool

from spinline.cloud.api import schemas as s
from spinline.cloud.api.deps import ClientAddress, CloudDep, CurrentUser, TokenDep, slot, unauthorised
from spinline.cloud.api.errors import ApiError, ErrorPublic
from spinline.cloud.api.limits import name_delay_s, retry_after
from spinline.cloud.auth.passwords import PasswordsBusy
from spinline.cloud.auth.service import LoginRateLimited
from spinline.core.errors import AuthError

router = APIRouter(prefix="/auth", tags=["auth"])


def _limited(code: str, detail: str, seconds: float) -> ApiError:
    return ApiError(status.HTTP_429_TOO_MANY_REQUESTS, code, detail, headers={"Retry-After": retry_after(seconds)})


@router.post("/login", responses={401: {"model": ErrorPublic}, 429: {"model": ErrorPublic},
                                  503: {"model": ErrorPublic}})
async def login(body: s.LoginRequest, cloud: CloudDep, client: ClientAddress) -> s.TokenPublic:
    """Exchange a user name and password for a bearer token.

    Refused with 429 (``Retry-After``): after ``login_max_failures`` failures for one user from one
    address within ``login_window_s`` (that address only, code ``login_locked``); after
    ``login_client_failures`` failures of any names from one address (``rate_limited``); when all
    clients together pass ``login_global_rate`` (``rate_limited``). A user name that many clients fail
    on is slowed down (up to ``login_name_max_delay_s``), never locked for its real owner. 503
    ``login_busy`` when every password-check slot stays busy.
    """
    st = cloud.settings
    failed, wait = cloud.client_failures.count(client)
    if failed >= st.login_client_failures:
        raise _limited("rate_limited", f"too many failed logins from this address; retry in {wait:.0f} s", wait)
    wait = cloud.login_bucket.take()
    if wait > 0:
        raise _limited("rate_limited", "too many logins right now; retry in a moment", wait)
    failures = await run_in_threadpool(cloud.accounts.name_failures, body.username)
    delay = name_delay_s(failures, st.login_name_failures, st.login_name_max_delay_s)
    if delay > 0:
        await asyncio.sleep(delay)
    # Wait for a password-check slot here, in the event loop: a flood queues without holding threads.
    await slot(cloud.login_slots, st.argon2_wait_s, "login_busy",
               "too many logins are being checked; retry in a moment")
    try:
        session = await cloud.login_lane.run(cloud.accounts.login, body.username, body.password, client)
    except LoginRateLimited as exc:
        raise _limited("login_locked", str(exc), exc.retry_after_s) from None
    except PasswordsBusy:
        raise ApiError(status.HTTP_503_SERVICE_UNAVAILABLE, "login_busy", "too many logins are being checked; "
                       "retry in a moment", headers={"Retry-After": "2"}) from None
    except AuthError as exc:
        cloud.client_failures.add(client)
        raise unauthorised(str(exc)) from None
    finally:
        cloud.login_slots.release()
    return s.TokenPublic(access_token=session.token, expires_at=s.ts(session.expires_ns))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(cloud: CloudDep, token: TokenDep, user: CurrentUser) -> Response:
    """End this token's session."""
    del user  # authenticated above: only a valid token can be logged out
    cloud.accounts.logout(token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
