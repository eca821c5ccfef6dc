"""Who is asking, for the console: a signed session cookie made at sign-in, or a Bearer key.

The cookie holds the key's name and hash (never the key) and a CSRF token, signed with
itsdangerous (HMAC-SHA1 over a key derived from the console secret: store/console_secret.py,
or LEDGER_CONSOLE_SECRET). It is HttpOnly, SameSite=Strict, Secure when the request came over
https, and lives `SESSION_S` at most. Every request looks the key up again, uncached: a key
revoked or expired ends its sessions at once."""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from typing import Any

import orjson
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Denied, Guard
from store.console_secret import console_secret
from store.keys import Key, key_hash, utc_now

SESSION_COOKIE = "ledger_console"
SIGN_IN_COOKIE = "ledger_console_signin"
SESSION_S = 12 * 3600
SIGN_IN_S = 3600
SECRET_ENV = "LEDGER_CONSOLE_SECRET"


class SignIn(Exception):
    """No session: the page sends the browser to the sign-in form."""


class Refused(Exception):
    """A key was given but cannot be used (unknown, revoked, expired, malformed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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

    def serializer(self) -> URLSafeTimedSerializer:
        if self._serializer is None:
            secret = os.environ.get(SECRET_ENV) or console_secret(self.guard.runtime.database())
            self._serializer = URLSafeTimedSerializer(secret, salt="callback-ledger console")
        return self._serializer

    async def visitor(self, request: Request) -> Visitor:
        """The request's key, from its Authorization header or its session cookie."""
        if request.headers.get("authorization"):
            try:
                key = await self.guard.authenticate(request)
            except Denied as denied:
                raise Refused(denied.response.status_code, _detail(denied)) from None
            return Visitor(key, None, False)
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            raise SignIn()
        serializer = await run_in_threadpool(self.serializer)
        try:
            data: Any = serializer.loads(cookie, max_age=SESSION_S)
        except BadSignature:
            raise SignIn() from None
        if not (isinstance(data, dict) and {"h", "c"} <= data.keys()):
            raise SignIn()
        found = await run_in_threadpool(lambda: self.guard.store().find(str(data["h"])))
        if found is None or found.revoked or found.expired(utc_now()):
            raise Refused(401, "this session's key was revoked or has expired: sign in again")
        return Visitor(found, str(data["c"]), True)

    async def key_of(self, token: str) -> Key | None:
        """A pasted key, checked as a Bearer key would be."""
        key = await run_in_threadpool(lambda: self.guard.store().find(key_hash(token)))
        if key is None or key.revoked or key.expired(utc_now()):
            return None
        return key

    async def start(self, response: Response, request: Request, key: Key) -> None:
        serializer = await run_in_threadpool(self.serializer)
        value = serializer.dumps({"n": key.name, "h": key.key_hash, "c": secrets.token_urlsafe(24)})
        _set(response, request, SESSION_COOKIE, value, SESSION_S)

    @staticmethod
    def end(response: Response, request: Request) -> None:
        response.delete_cookie(
            SESSION_COOKIE,
            path="/console",
            secure=https(request),
            httponly=True,
            samesite="strict",
        )

    async def sign_in_token(self, request: Request) -> tuple[str, str | None]:
        """The sign-in form's CSRF token, and the cookie to keep it in when it is new: the
        token travels in its own signed cookie and in the form; the POST must bring both."""
        serializer = await run_in_threadpool(self.serializer)
        given = request.cookies.get(SIGN_IN_COOKIE)
        if given:
            try:
                return str(serializer.loads(given, max_age=SIGN_IN_S, salt="sign-in")), None
            except BadSignature:
                pass
        token = secrets.token_urlsafe(24)
        return token, serializer.dumps(token, salt="sign-in")

    @staticmethod
    def keep_sign_in_token(response: Response, request: Request, cookie: str) -> None:
        _set(response, request, SIGN_IN_COOKIE, cookie)

    async def sign_in_token_matches(self, request: Request, sent: str) -> bool:
        given = request.cookies.get(SIGN_IN_COOKIE)
        if not given or not sent:
            return False
        serializer = await run_in_threadpool(self.serializer)
        try:
            kept = str(serializer.loads(given, max_age=SIGN_IN_S, salt="sign-in"))
        except BadSignature:
            return False
        return hmac.compare_digest(kept, sent)


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


def _detail(denied: Denied) -> str:
    try:
        return str(orjson.loads(denied.response.body)["detail"])
    except Exception:
        return "this API key cannot be used"
