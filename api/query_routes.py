"""The read routes: messages, READ confirmations, consent, stored callbacks, the quarantine,
the access log and the seal's head.

Parameters are checked strictly (an unknown or malformed one is a 400 naming it), lists are
paginated with an opaque keyset cursor, and all SQL is parameterised."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from access.api_keys import KeyStore
from api.responses import JSON, error
from domain import followup
from domain.callbacks import MAX_IDENTITY
from domain.identity import NotANumber, checked
from evidence import seal_reads
from projections.consent import NAME as CONSENT
from projections.faults import describe
from projections.read_model import callbacks, consent, messages
from projections.read_model.paging import KeysetPage
from projections.read_model.quarantine import quarantined
from projections.rules import iso
from service import followups
from service.runtime import Runtime
from store.backend import Cursor
from store.vault import Vault

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
# PostgreSQL refuses NUL in text, and a lone surrogate cannot be encoded for either store.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# An identity must hold something other than white space (spelled out: Python's and
# ECMAScript's \s differ, and the OpenAPI document states this same pattern).
NOT_BLANK_PATTERN = (
    "[^\\t\\n\\v\\f\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]"
)
_NOT_BLANK = re.compile(NOT_BLANK_PATTERN)


def path_param(request: Request, name: str, max_length: int = MAX_TEXT) -> str:
    """A path parameter every store can compare: 1 to `max_length` characters, no NUL byte and
    no lone surrogate. Every route that reads one reads it through here."""
    value: str = request.path_params[name]
    if not value or len(value) > max_length or UNSTORABLE.search(value):
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
        if len(value) > max_length or UNSTORABLE.search(value):
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

    def limit(self) -> int:
        value = self.whole("limit", 1, MAX_LIMIT)
        return 100 if value is None else value

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
        and all(isinstance(v, str) and not UNSTORABLE.search(v) for v in decoded)
    ):
        return None
    return decoded


def encode_cursor(values: Sequence[str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


def page_body(page: KeysetPage) -> dict[str, Any]:
    next_cursor = encode_cursor(page.next_key) if page.next_key is not None else None
    return {"items": page.items, "next_cursor": next_cursor}


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
BY_TIME_PARAMS = ("since", "until", "limit", "cursor")


# A page of the quarantine stops growing past this (bodies may be up to the body limit each):
# one request must not hold the process's memory hostage. At least one item is always sent.
QUARANTINE_PAGE_BYTES = 4 * 1024 * 1024


def channel_and_identity(params: Params) -> tuple[str, str]:
    channel = params.word("channel")
    identity = params.text("identity", MAX_IDENTITY)
    if channel is None or identity is None:
        raise HTTPException(400, "query parameters 'channel' and 'identity' are both required")
    if _NOT_BLANK.search(identity) is None:
        # "" would stand for every contact-wide fact of the channel, whoever's.
        raise HTTPException(400, "query parameter 'identity' is blank")
    try:
        return channel.upper(), checked(channel, identity)
    except NotANumber as exc:
        raise HTTPException(400, f"query parameter 'identity' is {exc} on {channel}") from None


def stale_answer(detail: str, channel: str, identity: str, **extra: Any) -> Response:
    response = error(
        503,
        "consent_stale",
        detail,
        channel=channel,
        identity=identity,
        state=consent.UNKNOWN,
        **extra,
    )
    response.headers["Retry-After"] = "5"
    return response


class Queries:
    def __init__(
        self,
        runtime: Runtime,
        keys: Callable[[], KeyStore],
        wake: Callable[[], None],
        wait_s: float = 2.0,
    ) -> None:
        self.runtime = runtime
        self.keys = keys  # the API keys' store: the access log is kept beside them
        self.wake = wake  # the in-process follower, if any
        self.wait_s = wait_s
        settings = runtime.settings
        self._overrides = dict(settings.next_actions)
        self._read_channels = settings.read_channels

    async def stale(self) -> str | None:
        """Why the consent projection cannot be trusted now, or None: it is stuck on an event,
        or consent facts already in the log are not applied yet and do not get applied within
        `wait_s` (the follower is woken and given that long)."""
        deadline = time.monotonic() + self.wait_s
        projector = self.runtime.projector
        # Facts recorded before this moment must be in the answer; later ones may not be:
        # waiting for those would chase a log that grows under load.
        head = await run_in_threadpool(lambda: projector().head())
        while True:
            fault, pending = await run_in_threadpool(lambda: projector().freshness(CONSENT, head))
            if fault is not None:
                return f"the consent projection cannot be trusted now: {describe(fault)}"
            if not pending:
                return None
            if time.monotonic() > deadline:
                return (
                    "the consent projection has not applied consent facts that are already "
                    f"recorded (waited {self.wait_s:g} s); is the projection worker running?"
                )
            self.wake()
            await asyncio.sleep(0.05)

    async def read(self, fn: Callable[[Cursor], Any]) -> Any:
        """Runs `fn` over a read connection to the projections, off the event loop."""

        def work() -> Any:
            with self.runtime.database().read() as cur:
                return fn(cur)

        return await run_in_threadpool(work)

    async def _page(self, fn: Callable[[Cursor], KeysetPage]) -> Response:
        return JSON(await self.read(lambda cur: page_body(fn(cur))))

    def vault(self) -> Vault:
        """The store's vault: names numbers and opens what is shown (off the event loop)."""
        return self.runtime.projector().vault

    def view(
        self,
        cur: Cursor,
        row: dict[str, Any],
        stale: str | None,
        with_timeline: bool = False,
    ) -> dict[str, Any]:
        return messages.message_view(row, with_timeline, self.vault()) | followups.annotate(
            cur, row, self._overrides, self._read_channels, stale
        )

    async def message(self, request: Request) -> Response:
        message_id = path_param(request, "message_id")
        params = Params(request, ["project_id"])
        project_id = params.text("project_id")
        rows = await self.read(lambda cur: messages.message_rows(cur, message_id, project_id))
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
        stale = await self.stale()
        return JSON(await self.read(lambda cur: self.view(cur, row, stale, with_timeline=True)))

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
        stale = await self.stale()
        return await self._page(
            lambda cur: messages.messages_page(
                cur, where, cursor, limit, lambda row: self.view(cur, row, stale), self.vault()
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
        stale = await self.stale()
        return await self._page(
            lambda cur: messages.stalled_page(
                cur,
                project_id,
                quiet_s,
                cursor,
                limit,
                lambda row: self.view(cur, row, stale),
                self.vault(),
            )
        )

    async def read_confirmations(self, request: Request) -> Response:
        params = Params(request, READ_PARAMS)
        project_id, contact_id = params.text("project_id"), params.text("contact_id")
        since, until = params.time("since"), params.time("until")
        limit, cursor = params.limit(), params.cursor(3)
        return await self._page(
            lambda cur: messages.read_confirmations_page(
                cur, project_id, contact_id, since, until, cursor, limit, self.vault()
            )
        )

    async def callbacks(self, request: Request) -> Response:
        """Stored callbacks, interpreted or kept in the catch-all, by arrival: no bodies (those
        are behind GET /callbacks/{reference})."""
        params = Params(request, CALLBACK_PARAMS)
        trigger = params.word("trigger")
        since, until = params.time("since"), params.time("until")
        limit, cursor = params.limit(), params.cursor(2)
        trigger = trigger.upper() if trigger else None
        return await self._page(
            lambda cur: callbacks.listed(cur, trigger, since, until, cursor, limit)
        )

    async def contact_consent(self, request: Request) -> Response:
        Params(request, [])
        contact_id = path_param(request, "contact_id")

        def read(cur: Cursor) -> dict[str, Any]:
            # A merged contact's rows are the person's: either id finds them all.
            return {
                "contact_id": contact_id,
                "consent": consent.current(cur, contact_id, self.vault()),
                "merged_with": consent.merged_with(cur, contact_id),
            }

        return JSON(await self.read(read))

    async def _by_time(
        self, params: Params, fn: Callable[..., list[dict[str, Any]]]
    ) -> dict[str, Any]:
        """A page of `fn`'s rows in (event_time, source_ref) order, read `limit + 1` at a time
        to tell whether another page follows."""
        since, until = params.time("since"), params.time("until")
        limit, cursor = params.limit(), params.cursor(2)
        rows = await self.read(
            lambda cur: fn(
                cur,
                since=since,
                until=until,
                after=(cursor[0], cursor[1]) if cursor else None,
                limit=limit + 1,
                vault=self.vault(),
            )
        )
        if len(rows) <= limit:
            return {"items": rows, "next_cursor": None}
        rows = rows[:limit]
        last = rows[-1]
        return {
            "items": rows,
            "next_cursor": encode_cursor([last["event_time"], last["source_ref"]]),
        }

    async def contact_history(self, request: Request) -> Response:
        params = Params(request, BY_TIME_PARAMS)
        contact_id = path_param(request, "contact_id")
        page = await self._by_time(params, partial(consent.history, contact_id=contact_id))
        return JSON({"contact_id": contact_id, **page})

    async def review(self, request: Request) -> Response:
        return JSON(await self._by_time(Params(request, BY_TIME_PARAMS), consent.review))

    async def consent_at(self, request: Request) -> Response:
        params = Params(request, ["channel", "identity", "at", "project_id"])
        channel, identity = channel_and_identity(params)
        at = params.time("at") or iso(datetime.now(UTC).isoformat())
        project_id = params.text("project_id")
        # Any instant's answer may depend on a fact not applied yet (they arrive late).
        why = await self.stale()
        if why is not None:
            return stale_answer(
                f"cannot tell the consent at {at}: {why}. Ask again later", channel, identity
            )

        def read(cur: Cursor) -> dict[str, Any]:
            vault = self.vault()
            name = consent.name_of(vault, channel, identity)
            answer = consent.state_at(cur, channel, name, at, project_id, vault)
            return {"channel": channel, "identity": identity, **answer}

        return JSON(await self.read(read))

    async def consent_check(self, request: Request) -> Response:
        params = Params(request, ["channel", "identity", "project_id"])
        channel, identity = channel_and_identity(params)
        project_id = params.text("project_id")
        # Checked before the answer is read: the answer then holds every fact recorded before.
        why = await self.stale()
        if why is not None:
            return stale_answer(
                f"cannot tell whether sending is allowed: {why}. Do not send; ask again later",
                channel,
                identity,
                may_send=False,
            )
        answer = await self.read(
            lambda cur: consent.check(
                cur, channel, consent.name_of(self.vault(), channel, identity), project_id
            )
        )
        return JSON({"channel": channel, "identity": identity, **answer})

    async def callback(self, request: Request) -> Response:
        Params(request, [])
        # Starlette matches {reference:path} with '.*' then '$', which leaves out a newline that
        # ends the path; put it back so that the reference looked up is the one asked for.
        if request.scope["path"].endswith("\n"):
            request.path_params["reference"] += "\n"
        reference = path_param(request, "reference", MAX_REFERENCE)
        ledger = self.runtime.ledger
        found = await run_in_threadpool(lambda: callbacks.callback(ledger(), reference))
        if found is None:
            return error(
                404,
                "not_found",
                f"no callback is recorded under reference "
                f"{reference!r}; references look like <stream uuid>/<key>",
            )
        return JSON(found)

    async def quarantine(self, request: Request) -> Response:
        params = Params(request, ["after", "limit"])
        after = params.whole("after", 0, MAX_INTEGER) or 0
        limit = params.limit()

        def read() -> tuple[list[dict[str, Any]], bool]:
            items, size = [], 0
            for item in quarantined(self.runtime.ledger(), after, limit):
                items.append(item)
                size += len(item["raw_base64"] or "") + 256  # None: the body was erased
                if size >= QUARANTINE_PAGE_BYTES:
                    return items, True
            return items, False

        items, full = await run_in_threadpool(read)
        next_after = items[-1]["id"] if full or len(items) == limit else None
        return JSON({"items": items, "next_after": next_after})

    async def access_log(self, request: Request) -> Response:
        params = Params(request, ["since", "key", "after", "limit"])
        since, actor = params.time("since"), params.text("key")
        after = params.whole("after", 0, MAX_INTEGER) or 0
        limit = params.limit()
        items = await run_in_threadpool(lambda: self.keys().accesses(since, actor, after, limit))
        next_after = items[-1]["id"] if len(items) == limit else None
        return JSON({"items": items, "next_after": next_after})

    async def seal(self, request: Request) -> Response:
        """The head of the seal chain (store.seal), for an operator to record elsewhere (a
        ticket, a timestamping service) and later check `callback-ledger verify` against."""

        def head() -> dict[str, Any]:
            self.runtime.ledger()  # creates the seal table if need be
            found = seal_reads.head(self.runtime.store_database())
            if found is None:
                return {"position": 0, "hash": None, "sealed_at": None}
            return found.head()

        return JSON(await run_in_threadpool(head))
