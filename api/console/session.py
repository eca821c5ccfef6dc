"""Who is asking, for the console: a session cookie made at sign-in, or a Bearer key.

The cookie holds a random session id only (HttpOnly, SameSite=Strict, Secure over https); the
store keeps the session with its key and CSRF token. Every request looks the session and the key
up again, uncached: a key revoked or expired ends its sessions at once. The sign-in form's CSRF
token rides in a cookie signed with the console secret."""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from access.api_keys import Key, key_hash, utc_now
from access.console_sessions import ConsoleSessions, console_secret
from api.auth import Denied, Guard

SESSION_COOKIE = "ledger_console"
SIGN_IN_COOKIE = "ledger_console_signin"
SESSION_S = 12 * 3600
SIGN_IN_S = 3600
SECRET_ENV = "LEDGER_CONSOLE_SECRET"


class SignIn(Exception):
    """No session: the page sends the browser to the sign-in form."""


@dataclass(frozen=True)
class Visitor:
    key: Key
    csrf: str | None  # None with a Bearer key: no cookie rides along, so no CSRF to fear
    via_cookie: bool

    @property
    def name(self) -> str:
        return self.key.name

    def may(self, scope: str) -> bool:
        return scope in self.key.scopes


class Sessions:
    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self._serializer: URLSafeTimedSerializer | None = None
        self._sessions: ConsoleSessions | None = None

    def kept(self) -> ConsoleSessions:
        if self._sessions is None:
            self._sessions = ConsoleSessions(self.guard.runtime.store_database(), SESSION_S)
        return self._sessions

    def serializer(self) -> URLSafeTimedSerializer:
        if self._serializer is None:
            secret = os.environ.get(SECRET_ENV) or console_secret(self.guard.runtime.database())
            self._serializer = URLSafeTimedSerializer(secret, salt="callback-ledger console")
        return self._serializer

    async def visitor(self, request: Request) -> Visitor:
        """The request's key, from its Authorization header or its session cookie."""
        if request.headers.get("authorization"):
            return Visitor(await self.guard.authenticate(request), None, False)
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            raise SignIn()
        session = await run_in_threadpool(lambda: self.kept().find(cookie))
        if session is None:
            raise SignIn()
        found = await self._usable(session.key_hash)
        if found is None:
            raise Denied(
                "revoked_key", "this session's key was revoked or has expired: sign in again"
            )
        return Visitor(found, session.csrf, True)

    async def _usable(self, hashed: str) -> Key | None:
        key = await run_in_threadpool(lambda: self.guard.store().find(hashed))
        return None if key is None or key.revoked or key.expired(utc_now()) else key

    async def key_of(self, token: str) -> Key | None:
        """A pasted key, checked as a Bearer key would be."""
        return await self._usable(key_hash(token))

    async def start(self, response: Response, request: Request, key: Key) -> None:
        session_id, _ = await run_in_threadpool(lambda: self.kept().start(key.key_hash))
        _set(response, request, SESSION_COOKIE, session_id, SESSION_S)

    async def end(self, response: Response, request: Request) -> None:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            await run_in_threadpool(lambda: self.kept().end(cookie))
        response.delete_cookie(
            SESSION_COOKIE,
            path="/console",
            secure=https(request),
            httponly=True,
            samesite="strict",
        )

    async def _sign_in_cookie(self, request: Request) -> str | None:
        """The token the sign-in cookie holds, if it is signed by us and not too old."""
        given = request.cookies.get(SIGN_IN_COOKIE)
        if not given:
            return None
        serializer = await run_in_threadpool(self.serializer)
        try:
            return str(serializer.loads(given, max_age=SIGN_IN_S, salt="sign-in"))
        except BadSignature:
            return None

    async def sign_in_token(self, request: Request) -> tuple[str, str | None]:
        """The sign-in form's CSRF token, and the cookie to keep it in when it is new: the
        token travels in its own signed cookie and in the form; the POST must bring both."""
        kept = await self._sign_in_cookie(request)
        if kept is not None:
            return kept, None
        token = secrets.token_urlsafe(24)
        serializer = await run_in_threadpool(self.serializer)
        return token, serializer.dumps(token, salt="sign-in")

    @staticmethod
    def keep_sign_in_token(response: Response, request: Request, cookie: str) -> None:
        _set(response, request, SIGN_IN_COOKIE, cookie)

    async def sign_in_token_matches(self, request: Request, sent: str) -> bool:
        kept = await self._sign_in_cookie(request) if sent else None
        return kept is not None and hmac.compare_digest(kept, sent)


def csrf_ok(visitor: Visitor, sent: str | None) -> bool:
    """A form POST from a cookie session must carry the session's CSRF token."""
    if visitor.csrf is None:
        return True
    return sent is not None and hmac.compare_digest(visitor.csrf, sent)


def https(request: Request) -> bool:
    return request.url.scheme == "https"


def _set(
    response: Response, request: Request, name: str, value: str, max_age: int = SIGN_IN_S
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/console",
        secure=https(request),
        httponly=True,
        samesite="strict",
    )
