"""Read endpoints over the projections: messages and READ confirmations.

Parameters are checked strictly (an unknown or malformed one is a 400 naming it), lists are
paginated with an opaque keyset cursor, and all SQL is parameterised."""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from api.responses import JSON, error
from domain import followup
from projections.read_model import callbacks, messages
from projections.read_model.paging import KeysetPage
from projections.rules import iso
from service import followups
from service.runtime import Runtime
from store.backend import Cursor

MAX_LIMIT = 1000
# Integers past 64 bits overflow SQLite's integers and PostgreSQL's bigint.
MAX_INTEGER = 2**63 - 1
MAX_TEXT = 1024
MAX_NUMBER_TEXT = 20
MAX_TIME_TEXT = 64
MAX_CURSOR = 2048
MAX_REFERENCE = 2048
WORD_PATTERN = r"^[A-Za-z0-9_\-]{1,100}$"
_WORD = re.compile(WORD_PATTERN)
# On the calendar's first day a positive UTC offset, and on its last a negative one, can put the
# UTC time outside the years 1-9999; such times are refused, as the OpenAPI document says.
TIME_PATTERN = r"^(?!0001-01-01T[^+]*\+(?!00:00)|9999-12-31T[^-]*-(?!00:00))"
_TIME = re.compile(TIME_PATTERN)
# The width of the UTC times the projections store and compare as text.
# PostgreSQL refuses NUL in text, and a lone surrogate cannot be encoded for either store.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# An identity must hold something other than white space (spelled out: Python's and
# ECMAScript's \s differ, and the OpenAPI document states this same pattern).
NOT_BLANK_PATTERN = (
    "[^\\t\\n\\v\\f\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]"
)
_NOT_BLANK = re.compile(NOT_BLANK_PATTERN)


def blank(value: str) -> bool:
    return _NOT_BLANK.search(value) is None


def path_param(request: Request, name: str, max_length: int = MAX_TEXT) -> str:
    """A path parameter every store can compare: 1 to `max_length` characters, no NUL byte and
    no lone surrogate. Every route that reads one reads it through here."""
    value: str = request.path_params[name]
    if not value or len(value) > max_length or _UNSTORABLE.search(value):
        raise HTTPException(
            400,
            f"path parameter {name!r} must be 1-{max_length} characters "
            "with no NUL byte or lone surrogate",
        )
    return value


class Params:
    """Query parameters, checked one by one; every problem is a 400 that names the parameter."""

    def __init__(self, request: Request, allowed: Sequence[str]) -> None:
        self.query = request.query_params
        unknown = sorted(set(self.query) - set(allowed))
        if unknown:
            raise HTTPException(
                400,
                f"unknown query parameter(s): {', '.join(unknown)}; allowed: {', '.join(allowed)}",
            )
        for name in self.query:
            if len(self.query.getlist(name)) > 1:
                raise HTTPException(400, f"query parameter {name!r} is given more than once")

    def text(self, name: str, max_length: int = MAX_TEXT) -> str | None:
        value = self.query.get(name)
        if value is None or value == "":
            return None
        if len(value) > max_length or _UNSTORABLE.search(value):
            raise HTTPException(
                400,
                f"query parameter {name!r} is over {max_length} characters "
                "or has a NUL byte or lone surrogate",
            )
        return value

    def word(self, name: str) -> str | None:
        value = self.text(name)
        if value is not None and not _WORD.match(value):
            raise HTTPException(400, f"query parameter {name!r} must be letters, digits, _ or -")
        return value

    def time(self, name: str) -> str | None:
        value = self.text(name, MAX_TIME_TEXT)
        if value is None:
            return None
        utc = None
        if _TIME.match(value):
            # OverflowError: a form of ISO 8601 the pattern does not see, taken outside the years.
            with contextlib.suppress(ValueError, OverflowError):
                utc = iso(value)
        if utc is None:
            raise HTTPException(
                400,
                f"query parameter {name!r} must be an ISO 8601 time within the years 1-9999 UTC, "
                "e.g. 2024-06-15T15:00:00Z",
            )
        return utc

    def whole(self, name: str, minimum: int, maximum: int) -> int | None:
        value = self.text(name, MAX_NUMBER_TEXT)
        if value is None:
            return None
        # isascii too: str.isdigit accepts '²' and other digits that int() refuses.
        if not (value.isascii() and value.isdigit() and minimum <= int(value) <= maximum):
            raise HTTPException(
                400, f"query parameter {name!r} must be a whole number {minimum}-{maximum}"
            )
        return int(value)

    def limit(self, default: int = 100) -> int:
        value = self.whole("limit", 1, MAX_LIMIT)
        return default if value is None else value

    def cursor(self, size: int) -> list[str] | None:
        value = self.text("cursor", MAX_CURSOR)
        if value is None:
            return None
        decoded = decode_cursor(value, size)
        if decoded is None:
            raise HTTPException(400, "query parameter 'cursor' is not a cursor this API gave out")
        return decoded


def decode_cursor(value: str, size: int) -> list[str] | None:
    """The `size` keys a cursor of `encode_cursor` holds, or None if it is not one."""
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(value.encode() + b"=="))
    except (binascii.Error, orjson.JSONDecodeError, ValueError):
        return None
    if not (
        isinstance(decoded, list)
        and len(decoded) == size
        and all(isinstance(v, str) and not _UNSTORABLE.search(v) for v in decoded)
    ):
        return None
    return decoded


def encode_cursor(values: Sequence[str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


def cursor_of(page: KeysetPage) -> str | None:
    """The opaque cursor of a read-model page's next page, if any."""
    return encode_cursor(page.next_key) if page.next_key is not None else None


def page_body(page: KeysetPage) -> dict[str, Any]:
    return {"items": page.items, "next_cursor": cursor_of(page)}


MESSAGE_PARAMS = (
    "project_id",
    "status",
    "reason",
    "next_action",
    "contact_id",
    "conversation_id",
    "metadata",
    "since",
    "until",
    "limit",
    "cursor",
)
READ_PARAMS = ("project_id", "contact_id", "since", "until", "limit", "cursor")
STALLED_PARAMS = ("project_id", "older_than", "limit", "cursor")
CALLBACK_PARAMS = ("trigger", "since", "until", "limit", "cursor")


async def read_views(runtime: Runtime, fn: Callable[[Cursor], Any]) -> Any:
    """Runs `fn` over a read connection to the projections, off the event loop."""

    def work() -> Any:
        with runtime.database().read() as cur:
            return fn(cur)

    return await run_in_threadpool(work)


class Queries:
    def __init__(
        self, runtime: Runtime, consent_stale: Callable[[], Awaitable[str | None]] | None = None
    ) -> None:
        self.runtime = runtime
        # Why consent cannot be trusted now (api/consent.py), for the follow-up's override.
        self._consent_stale = consent_stale
        settings = runtime.settings
        self._overrides = dict(settings.next_actions)
        self._read_channels = settings.read_channels

    async def _stale(self) -> str | None:
        return await self._consent_stale() if self._consent_stale else None

    def _view(
        self,
        cur: Cursor,
        row: dict[str, Any],
        stale: str | None,
        with_timeline: bool = False,
    ) -> dict[str, Any]:
        return messages.message_view(
            row, with_timeline, self.runtime.projector().vault
        ) | followups.annotate(cur, row, self._overrides, self._read_channels, stale)

    async def _run(self, fn: Callable[[Cursor], Any]) -> Any:
        return await read_views(self.runtime, fn)

    async def message(self, request: Request) -> Response:
        message_id = path_param(request, "message_id")
        params = Params(request, ["project_id"])
        project_id = params.text("project_id")
        rows = await self._run(lambda cur: messages.message_rows(cur, message_id, project_id))
        if not rows:
            return error(
                404,
                "not_found",
                f"no delivery report has been received for message "
                f"{message_id!r}" + (f" in project {project_id!r}" if project_id else ""),
            )
        if len(rows) > 1:
            return error(
                409,
                "ambiguous",
                f"message {message_id!r} exists in several projects; add ?project_id=",
            )
        row = rows[0]
        stale = await self._stale()
        return JSON(await self._run(lambda cur: self._view(cur, row, stale, with_timeline=True)))

    async def messages(self, request: Request) -> Response:
        params = Params(request, MESSAGE_PARAMS)
        # Read in this order: with several bad parameters, the first is the one named.
        project_id, contact_id = params.text("project_id"), params.text("contact_id")
        conversation_id, metadata = params.text("conversation_id"), params.text("metadata")
        status, reason = params.word("status"), params.word("reason")
        since, until = params.time("since"), params.time("until")
        action = params.word("next_action")
        if action is not None and action not in followup.ACTIONS:
            raise HTTPException(
                400,
                f"query parameter 'next_action' must be one of {', '.join(followup.ACTIONS)}",
            )
        where = messages.MessageFilter(
            project_id=project_id,
            contact_id=contact_id,
            conversation_id=conversation_id,
            metadata=metadata,
            status=status.upper() if status is not None else None,
            reason=reason.upper() if reason is not None else None,
            since=since,
            until=until,
            next_action=action,
        )
        limit, cursor = params.limit(), params.cursor(3)
        stale = await self._stale()
        return JSON(
            await self._run(
                lambda cur: page_body(
                    messages.messages_page(
                        cur,
                        where,
                        cursor,
                        limit,
                        lambda row: self._view(cur, row, stale),
                        self.runtime.projector().vault,
                    )
                )
            )
        )

    async def stalled(self, request: Request) -> Response:
        """Messages whose latest report (submitted, queued, switching channel) is older than
        `older_than` (default 24h) as of now: nothing has been heard of them since."""
        params = Params(request, STALLED_PARAMS)
        older_than = params.text("older_than", MAX_NUMBER_TEXT)
        try:
            quiet_s = (
                followups.DEFAULT_QUIET_S
                if older_than is None
                else followups.parse_duration(older_than)
            )
        except ValueError as exc:
            raise HTTPException(400, f"query parameter 'older_than': {exc}") from None
        project_id = params.text("project_id")
        limit, cursor = params.limit(), params.cursor(3)
        stale = await self._stale()
        return JSON(
            await self._run(
                lambda cur: page_body(
                    messages.stalled_page(
                        cur,
                        project_id,
                        quiet_s,
                        cursor,
                        limit,
                        lambda row: self._view(cur, row, stale),
                        self.runtime.projector().vault,
                    )
                )
            )
        )

    async def read_confirmations(self, request: Request) -> Response:
        params = Params(request, READ_PARAMS)
        project_id, contact_id = params.text("project_id"), params.text("contact_id")
        since, until = params.time("since"), params.time("until")
        limit, cursor = params.limit(), params.cursor(3)
        return JSON(
            await self._run(
                lambda cur: page_body(
                    messages.read_confirmations_page(
                        cur,
                        project_id,
                        contact_id,
                        since,
                        until,
                        cursor,
                        limit,
                        self.runtime.projector().vault,
                    )
                )
            )
        )

    async def callbacks(self, request: Request) -> Response:
        """Stored callbacks, interpreted or kept in the catch-all, by arrival: no bodies (those
        are behind GET /callbacks/{reference})."""
        params = Params(request, CALLBACK_PARAMS)
        trigger = params.word("trigger")
        since, until = params.time("since"), params.time("until")
        limit, cursor = params.limit(), params.cursor(2)
        return JSON(
            await self._run(
                lambda cur: page_body(
                    callbacks.listed(
                        cur, trigger.upper() if trigger else None, since, until, cursor, limit
                    )
                )
            )
        )
