"""Use cases of accounts and edge credentials (no HTTP here; the routes and the CLI call these).

- ``Accounts``: log in (argon2id check, rate limit per user and client and per user across all
  clients) for a bearer token or a browser session (cookie + CSRF token, idle and absolute expiry),
  authenticate either, log out, manage users; whoever must know when sessions end (open live
  streams) subscribes with ``on_sessions_ended``;
- ``EdgeCredentials``: create an edge bound to one mill (the secret is returned once), revoke it,
  and answer the ingest service's two questions: an edge's HMAC key and its mill.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from spinline.cloud.auth.passwords import Passwords
from spinline.cloud.auth.roles import Principal, Role
from spinline.cloud.auth.sealing import SecretBox, new_edge_secret
from spinline.cloud.auth.tokens import hash_token, new_token
from spinline.cloud.meta import tables as t
from spinline.cloud.meta.store import EdgeRecord, MetaStore, SessionRecord, UserRecord, ends_sessions
from spinline.core.errors import AuthError

Clock = Callable[[], int]
_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$")


class LoginRateLimited(AuthError):
    """Too many failed logins for this user (from this client, or from all); retry after ``retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"too many failed logins; retry in {retry_after_s:.0f} s")


class SessionExpired(AuthError):
    """A browser session that is unknown, ended, idle too long or past its absolute expiry."""


class InvalidRequest(ValueError):
    """A request that is well-formed but not acceptable (unknown mill, bad role ...)."""


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    expires_ns: int
    user: UserRecord


@dataclass(frozen=True, slots=True)
class BrowserSession:
    """A new browser session: the cookie's value and the CSRF token (both shown to the browser only)."""

    token: str
    csrf: str
    expires_ns: int
    user: UserRecord


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """Sessions that ended: one credential (by its hash), or every session of a user (``token_hash`` None)."""

    user_id: int
    token_hash: str | None = None


#: Languages a user may choose for the console and the text the server builds.
LANGUAGES = ("zh-CN", "en")


def principal(user: UserRecord) -> Principal:
    return Principal(user_id=user.id, username=user.username, role=Role(user.role), mills=user.mills)


class Accounts:
    def __init__(self, meta: MetaStore, passwords: Passwords, *, token_ttl_s: int = 8 * 3600,
                 max_failures: int = 5, window_s: float = 300.0, max_user_failures: int = 20,
                 session_idle_s: float = 3600.0, session_max_s: float = 12 * 3600.0,
                 clock: Clock = time.time_ns) -> None:
        self.meta = meta
        self.passwords = passwords
        self.token_ttl_ns = int(token_ttl_s * 1e9)
        #: Failed logins of one user from one client within the window before 429.
        self.max_failures = max_failures
        #: Failed logins of one user from all clients together within the window before 429.
        self.max_user_failures = max_user_failures
        self.window_ns = int(window_s * 1e9)
        #: A browser session ends after this long without a request, and after ``session_max_ns`` in any case.
        self.session_idle_ns = int(session_idle_s * 1e9)
        self.session_max_ns = int(session_max_s * 1e9)
        self.clock = clock
        self._ended: list[Callable[[SessionEnd], object]] = []

    def on_sessions_ended(self, callback: Callable[[SessionEnd], object]) -> None:
        """Call ``callback`` whenever a logout, a revocation or a user change ends sessions."""
        self._ended.append(callback)

    def _notify(self, end: SessionEnd) -> None:
        for cb in self._ended:
            cb(end)

    # --- sessions --------------------------------------------------------------------------------

    def login(self, username: str, password: str, client: str) -> Session:
        """A new bearer-token session, or ``AuthError`` (bad credentials) / ``LoginRateLimited``."""
        user = self.check_login(username, password, client)
        now = self.clock()
        token, digest = new_token()
        expires = now + self.token_ttl_ns
        self.meta.add_token(digest, user.id, created_ns=now, expires_ns=expires)
        return Session(token=token, expires_ns=expires, user=user)

    def check_login(self, username: str, password: str, client: str) -> UserRecord:
        """The user whose credentials these are, or ``AuthError`` (bad credentials) / ``LoginRateLimited``.

        The attempt is counted as a failure *before* the (slow) password check and the count taken
        with it, so parallel attempts cannot all pass the check before any is counted; a success
        clears this client's failures.
        """
        now = self.clock()
        key = username.lower()
        since = now - self.window_ns
        failures = self.meta.login_failures(key, client, since)          # also forgets old failures
        if len(failures) >= self.max_failures:
            raise LoginRateLimited((failures[0] + self.window_ns - now) / 1e9)
        attempt = self._count_attempt(key, client, now)
        ahead = self._failures_before(key, None, since, attempt)
        ahead_here = self._failures_before(key, client, since, attempt)
        if len(ahead_here) >= self.max_failures or len(ahead) >= self.max_user_failures:
            self._forget_attempt(attempt)
            first = ahead_here[0] if len(ahead_here) >= self.max_failures else ahead[0]
            raise LoginRateLimited(max(0.0, (first + self.window_ns - now) / 1e9))
        user = self.meta.user_by_name(username)
        if user is None:
            self.passwords.dummy_verify(password)
        ok = user is not None and not user.disabled and self.passwords.verify(user.password_hash, password)
        if not ok or user is None:
            raise AuthError("wrong user name or password")           # the attempt stays counted
        self.meta.clear_login_failures(key, client)
        if self.passwords.needs_rehash(user.password_hash):
            self.meta.update_user(user.id, password_hash=self.passwords.hash(password))
        return user

    # The attempt counting works on the failures table directly: it needs each row's id (the order
    # in which parallel attempts were counted), which ``MetaStore``'s helpers do not return.

    def _count_attempt(self, key: str, client: str, now: int) -> int:
        with self.meta.engine.begin() as con:
            res = con.execute(sa.insert(t.login_failures).values(username=key, client=client, ts_ns=now))
            pk = res.inserted_primary_key
            assert pk is not None
            return int(pk[0])

    def _failures_before(self, key: str, client: str | None, since: int, attempt: int) -> list[int]:
        """Times of the failures counted before ``attempt`` in the window (of ``client``, or of all), oldest first."""
        c = t.login_failures.c
        q = sa.select(c.ts_ns).where(c.username == key, c.ts_ns >= since, c.id < attempt).order_by(c.ts_ns)
        if client is not None:
            q = q.where(c.client == client)
        with self.meta.engine.connect() as con:
            return [int(x) for x in con.execute(q).scalars()]

    def _forget_attempt(self, attempt: int) -> None:
        with self.meta.engine.begin() as con:
            con.execute(sa.delete(t.login_failures).where(t.login_failures.c.id == attempt))

    def authenticate(self, token: str) -> Principal:
        found = self.meta.token_user(hash_token(token), self.clock())
        if found is None or found[0].disabled:
            raise AuthError("the token is unknown, expired or revoked")
        return principal(found[0])

    def logout(self, token: str) -> None:
        digest = hash_token(token)
        found = self.meta.token_user(digest, self.clock())
        self.meta.delete_token(digest)
        if found is not None:
            self._notify(SessionEnd(found[0].id, digest))

    def check_token(self, token_hash: str) -> bool:
        """Whether a bearer token (by its hash) still authenticates an enabled user."""
        found = self.meta.token_user(token_hash, self.clock())
        return found is not None and not found[0].disabled

    # --- browser sessions ------------------------------------------------------------------------

    def start_session(self, username: str, password: str, client: str) -> BrowserSession:
        """A browser session for these credentials (same checks and rate limit as ``login``)."""
        user = self.check_login(username, password, client)
        now = self.clock()
        token, digest = new_token()
        csrf, csrf_digest = new_token()
        expires = now + self.session_max_ns
        self.meta.add_session(SessionRecord(token_hash=digest, user_id=user.id, csrf_hash=csrf_digest,
                                            created_ns=now, seen_ns=now, expires_ns=expires))
        return BrowserSession(token=token, csrf=csrf, expires_ns=expires, user=user)

    def session(self, token_hash: str, *, touch: bool = True) -> tuple[Principal, SessionRecord]:
        """The principal of a live session (by the hash of its cookie), or ``SessionExpired``.

        ``touch`` counts this as activity (idle expiry), written at most once a minute.
        """
        now = self.clock()
        rec = self.meta.session(token_hash)
        if rec is None:
            raise SessionExpired("the session is unknown or ended; log in again")
        if now >= rec.expires_ns or now >= rec.seen_ns + self.session_idle_ns:
            self.meta.delete_session(token_hash)
            self._notify(SessionEnd(rec.user_id, token_hash))
            raise SessionExpired("the session expired; log in again")
        user = self.meta.user(rec.user_id)
        if user is None or user.disabled:
            raise SessionExpired("the session's user is disabled or gone")
        if touch and now - rec.seen_ns > min(60 * 10**9, self.session_idle_ns // 10):
            self.meta.touch_session(token_hash, now)
        return principal(user), rec

    def end_session(self, token_hash: str, user_id: int) -> None:
        self.meta.delete_session(token_hash)
        self._notify(SessionEnd(user_id, token_hash))

    # --- one's own account -----------------------------------------------------------------------

    def change_own_password(self, user_id: int, old: str, new: str, client: str) -> None:
        """Set a new password after checking the current one like a login (``AuthError``, ``LoginRateLimited``:
        a stolen session cannot guess its way to the password); ends every session of the user."""
        user = self.meta.user(user_id)
        if user is None:
            raise AuthError("the user is gone")
        self.check_login(user.username, old, client)
        if old == new:
            raise InvalidRequest("the new password is the current one")
        self.update_user(user_id, password=new)

    def set_language(self, user_id: int, language: str | None) -> None:
        if language is not None and language not in LANGUAGES:
            raise InvalidRequest(f"unknown language {language!r}: choose one of {', '.join(LANGUAGES)}")
        self.meta.set_language(user_id, language)

    # --- users -----------------------------------------------------------------------------------

    def _check_scope(self, role: Role, mills: Iterable[str]) -> list[str]:
        mills = sorted(set(mills))
        if role != Role.ZONE_OPERATOR and not mills:
            raise InvalidRequest(f"a {role.value} needs at least one mill")
        known = {m.id for m in self.meta.mills()}
        unknown = [m for m in mills if m not in known]
        if unknown:
            raise InvalidRequest(f"unknown mill(s): {', '.join(unknown)}")
        return mills

    def create_user(self, *, username: str, password: str, role: Role, mills: Iterable[str] = (),
                    full_name: str = "") -> UserRecord:
        if not _USERNAME.match(username):
            raise InvalidRequest("a user name is 1-64 letters, digits, '.', '_', '@' or '-'")
        scope = self._check_scope(role, mills)
        try:
            digest = self.passwords.hash(password)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        return self.meta.create_user(username=username, password_hash=digest, role=role.value, mills=scope,
                                     full_name=full_name, now_ns=self.clock())

    def update_user(self, user_id: int, *, role: Role | None = None, mills: Iterable[str] | None = None,
                    password: str | None = None, disabled: bool | None = None,
                    full_name: str | None = None) -> UserRecord | None:
        current = self.meta.user(user_id)
        if current is None:
            return None
        new_role = role or Role(current.role)
        scope = self._check_scope(new_role, current.mills if mills is None else mills) \
            if (role is not None or mills is not None) else None
        try:
            digest = None if password is None else self.passwords.hash(password)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        rec = self.meta.update_user(user_id, role=None if role is None else role.value, mills=scope,
                                    password_hash=digest, disabled=disabled, full_name=full_name)
        if ends_sessions(password_hash=digest, disabled=disabled, role=None if role is None else role.value,
                         mills=scope):
            self._notify(SessionEnd(user_id))
        return rec

    def delete_user(self, user_id: int) -> bool:
        gone = self.meta.delete_user(user_id)
        if gone:
            self._notify(SessionEnd(user_id))
        return gone


#: Most edges whose answers are cached at once (far above any real fleet: a spray of made-up ids
#: clears the cache instead of growing it).
_MAX_CACHED_EDGES = 100_000


class EdgeCredentials:
    """Edge secrets and their mills, with a bounded cache for the ingest path.

    Every payload needs its edge's key and mill; read from the metadata database and opened with
    AES-GCM each time that is a query and a decryption per lookup (three lookups per payload,
    ~0.5 ms, more than the write of a 150-row batch). So answers are cached, bounded three ways:

    - an entry lives at most ``ttl_s`` (default 60 s);
    - a revocation through this object (the API) drops the edge's entry at once;
    - a creation or revocation by another process (``spinline cloud revoke-edge``) is seen at the
      next ``sync()`` (the ingest calls it once per HTTP request and per group of MQTT payloads) and
      at the latest within ``recheck_s`` (default 1 s): ``MetaStore.edges_revision`` (one cheap
      query) is re-read and the cache forgotten when it changed.

    Unknown edges are cached too (a forger spraying made-up ids costs no query each), under the same
    bounds, so a new edge is known within ``recheck_s`` of its creation.
    """

    def __init__(self, meta: MetaStore, box: SecretBox, *, clock: Clock = time.time_ns, ttl_s: float = 60.0,
                 recheck_s: float = 1.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.meta = meta
        self.box = box
        self.clock = clock
        self.ttl_s = ttl_s
        self.recheck_s = recheck_s
        self._mono = monotonic
        self._cache: dict[str, tuple[float, bytes | None, str | None]] = {}
        self._lock = threading.Lock()
        self._revision: tuple[int, int] | None = None
        self._checked = -math.inf
        self._gen = 0
        #: Lookups answered from the cache / from the database (for the bench and diagnostics).
        self.hits = 0
        self.misses = 0

    def sync(self) -> None:
        """Forget every cached answer if an edge was created or revoked anywhere since the last look
        (one small query). The ingest calls it once per request or per group of payloads, so a
        revocation by another process is honoured from the next request on."""
        self._check(self._mono())

    def _check(self, now: float) -> None:
        rev = self.meta.edges_revision()
        with self._lock:
            if rev != self._revision:
                self._cache.clear()
                self._gen += 1
                self._revision = rev
            self._checked = now

    def _entry(self, edge_id: str) -> tuple[bytes | None, str | None]:
        now = self._mono()
        if now - self._checked >= self.recheck_s:
            self._check(now)
        with self._lock:
            hit = self._cache.get(edge_id)
        if hit is not None and hit[0] > now:
            self.hits += 1
            return hit[1], hit[2]
        self.misses += 1
        with self._lock:
            gen = self._gen
        rec = self.meta.edge(edge_id)
        if rec is None or not rec.active:
            key, mill = None, None
        else:
            key, mill = self.box.open(edge_id, rec.secret_sealed).encode(), rec.mill
        with self._lock:
            if gen == self._gen:             # no create/revoke meanwhile: the answer may be kept
                if len(self._cache) >= _MAX_CACHED_EDGES:
                    self._cache.clear()      # bounded memory under a spray of made-up ids
                self._cache[edge_id] = (now + self.ttl_s, key, mill)
        return key, mill

    def forget(self, edge_id: str | None = None) -> None:
        """Drop one edge's cached answer (None: all); a lookup already reading the database keeps
        its answer to itself (the generation moved on)."""
        with self._lock:
            self._gen += 1
            if edge_id is None:
                self._cache.clear()
            else:
                self._cache.pop(edge_id, None)

    def create(self, *, edge_id: str, mill: str, description: str = "", created_by: str = "") -> tuple[EdgeRecord, str]:
        """Register an edge of ``mill``; returns the record and its secret (shown this once only)."""
        if not _ID.match(edge_id):
            raise InvalidRequest("an edge id is 1-63 lower-case letters, digits, '-' or '_'")
        if self.meta.mill(mill) is None:
            raise InvalidRequest(f"unknown mill {mill!r}")
        secret = new_edge_secret()
        rec = self.meta.create_edge(edge_id=edge_id, mill=mill, description=description,
                                    secret_sealed=self.box.seal(edge_id, secret), created_ns=self.clock(),
                                    created_by=created_by)
        self.forget(edge_id)
        return rec, secret

    def revoke(self, edge_id: str) -> bool:
        """Revoke an edge: refused from this instant (its cached answer is dropped with the write)."""
        self.forget(edge_id)
        try:
            return self.meta.revoke_edge(edge_id, self.clock())
        finally:
            self.forget(edge_id)

    def key(self, edge_id: str) -> bytes | None:
        """The HMAC key of an active edge (``spinline.core.wire.KeyLookup``); None if unknown or revoked."""
        return self._entry(edge_id)[0]

    def mill_of(self, edge_id: str) -> str | None:
        """The mill an active edge is bound to; None if unknown or revoked."""
        return self._entry(edge_id)[1]
