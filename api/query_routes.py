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
from projections import messages as message_tables
from projections import rules
from projections.rules import iso
from service import followups
from service.runtime import Runtime
from store.db import Cursor, keyset_rows, time_window

MAX_LIMIT = 1000
# Integers past 64 bits overflow SQLite's integers and PostgreSQL's bigint.
MAX_INTEGER = 2**63 - 1
MAX_TEXT = 1024
MAX_NUMBER_TEXT = 20
MAX_TIME_TEXT = 64
MAX_IDENTITY = 256
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
        try:
            decoded = orjson.loads(base64.urlsafe_b64decode(value.encode() + b"=="))
        except (binascii.Error, orjson.JSONDecodeError, ValueError):
            decoded = None
        if not (
            isinstance(decoded, list)
            and len(decoded) == size
            and all(isinstance(v, str) and not _UNSTORABLE.search(v) for v in decoded)
        ):
            raise HTTPException(400, "query parameter 'cursor' is not a cursor this API gave out")
        return decoded


def equal_text(params: Params, columns: Sequence[str]) -> list[tuple[str, Any]]:
    """`column = value` for each of these query parameters that was given (named as the column)."""
    return [
        (f"{column} = ?", value) for column in columns if (value := params.text(column)) is not None
    ]


def encode_cursor(values: Sequence[str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


def page(
    cur: Cursor,
    table: str,
    order: tuple[str, str, str],
    filters: list[tuple[str, Any]],
    cursor: list[str] | None,
    limit: int,
    shape: Callable[[dict[str, Any]], dict[str, Any]],
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """One keyset page of `table` ordered by `order`; `filters` are (SQL condition, value).
    With `keep`, shaped items it refuses are left out: the page may then hold fewer than
    `limit` items while `next_cursor` still leads on."""
    rows = keyset_rows(cur, table, filters, order, cursor, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [shape(row) for row in rows]
    return {
        "items": [item for item in items if keep(item)] if keep else items,
        "next_cursor": encode_cursor([rows[-1][c] for c in order]) if more else None,
    }


def message_view(row: dict[str, Any], with_timeline: bool = False) -> dict[str, Any]:
    view = {c: row[c] for c in message_tables.STATUS_COLUMNS if c != "reports"}
    if with_timeline:
        view["timeline"] = [
            {
                "status": r["status"],
                "channel": r["channel"],
                "identity": r["identity"],
                "event_time": r["at"],
                "reason_code": r["reason_code"],
                "reason_sub_code": r["reason_sub_code"],
                "reason_description": r["reason_description"],
                "reference": r["source_ref"],
            }
            for r in rules.expanded_reports(row)
        ]
    return view


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
        return message_view(row, with_timeline) | followups.annotate(
            cur, row, self._overrides, self._read_channels, stale
        )

    async def _run(self, fn: Callable[[Cursor], Any]) -> Any:
        return await read_views(self.runtime, fn)

    async def message(self, request: Request) -> Response:
        message_id = path_param(request, "message_id")
        params = Params(request, ["project_id"])
        project_id = params.text("project_id")

        def query(cur: Cursor) -> list[dict[str, Any]]:
            sql = "SELECT * FROM message_status WHERE message_id = ?"
            args = [message_id]
            if project_id:
                sql += " AND project_id = ?"
                args.append(project_id)
            return cur.execute(sql + " LIMIT 2", args).fetchall()

        rows = await self._run(query)
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
        filters = equal_text(params, ("project_id", "contact_id", "conversation_id", "metadata"))
        if (metadata := params.text("metadata")) is not None:
            # The index holds the prefix (see projections/messages.py).
            prefix = message_tables.METADATA_PREFIX
            filters.append((f"substr(metadata, 1, {prefix}) = substr(?, 1, {prefix})", metadata))
        for name, column in [("status", "status"), ("reason", "reason_code")]:
            if (value := params.word(name)) is not None:
                filters.append((f"{column} = ?", value.upper()))
        filters += time_window("first_event_time", params.time("since"), params.time("until"))
        action = params.word("next_action")
        keep = None
        if action is not None:
            if action not in followup.ACTIONS:
                raise HTTPException(
                    400,
                    f"query parameter 'next_action' must be one of {', '.join(followup.ACTIONS)}",
                )
            filters.append(followups.action_filter(action))
            keep = lambda item: item["next_action"] == action  # noqa: E731
        return await self._messages(
            params, ("first_event_time", "project_id", "message_id"), filters, keep
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
        filters: list[tuple[str, Any]] = [*equal_text(params, ("project_id",))]
        filters += followups.quiet_filter(quiet_s)
        return await self._messages(
            params, ("last_event_time", "project_id", "message_id"), filters
        )

    async def _messages(
        self,
        params: Params,
        order: tuple[str, str, str],
        filters: list[tuple[str, Any]],
        keep: Callable[[dict[str, Any]], bool] | None = None,
    ) -> Response:
        """A page of messages, each with its follow-up fields."""
        limit, cursor = params.limit(), params.cursor(3)
        stale = await self._stale()
        return JSON(
            await self._run(
                lambda cur: page(
                    cur,
                    "message_status",
                    order,
                    filters,
                    cursor,
                    limit,
                    lambda row: self._view(cur, row, stale),
                    keep,
                )
            )
        )

    async def read_confirmations(self, request: Request) -> Response:
        params = Params(request, READ_PARAMS)
        filters = equal_text(params, ("project_id", "contact_id"))
        filters += time_window("read_at", params.time("since"), params.time("until"))
        limit, cursor = params.limit(), params.cursor(3)
        order = ("read_at", "project_id", "message_id")
        return JSON(
            await self._run(
                lambda cur: page(cur, "read_confirmations", order, filters, cursor, limit, dict)
            )
        )
