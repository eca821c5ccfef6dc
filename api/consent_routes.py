"""Consent audit endpoints: current state, history, state at an instant, the pre-send check,
the free-text review list, and the raw callback behind any fact."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from api.query_routes import (
    MAX_REFERENCE,
    Params,
    blank,
    encode_cursor,
    path_param,
    read_views,
)
from api.responses import JSON, error
from domain.callbacks import MAX_IDENTITY
from domain.identity import NotANumber, checked
from projections.consent import NAME
from projections.faults import describe
from projections.read_model import callbacks, consent
from projections.rules import iso
from service.runtime import Runtime
from store.backend import Cursor
from store.vault import Vault

REVIEW_PARAMS = ("since", "until", "limit", "cursor")


def now() -> str:
    return iso(datetime.now(UTC).isoformat())


def channel_and_identity(params: Params) -> tuple[str, str]:
    channel = params.word("channel")
    identity = params.text("identity", MAX_IDENTITY)
    if channel is None or identity is None:
        raise HTTPException(400, "query parameters 'channel' and 'identity' are both required")
    if blank(identity):
        # "" would stand for every contact-wide fact of the channel, whoever's.
        raise HTTPException(400, "query parameter 'identity' is blank")
    try:
        return channel.upper(), checked(channel, identity)
    except NotANumber as exc:
        raise HTTPException(400, f"query parameter 'identity' is {exc} on {channel}") from None


def time_ordered_page(
    rows: list[dict[str, Any]], limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of rows read `limit + 1` at a time in (event_time, source_ref) order, and the
    cursor of the next page if there is one."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor([rows[-1]["event_time"], rows[-1]["source_ref"]])


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


class ConsentQueries:
    def __init__(self, runtime: Runtime, wake: Callable[[], None], wait_s: float = 2.0) -> None:
        self.runtime = runtime
        self.wake = wake  # the in-process follower, if any
        self.wait_s = wait_s

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
            fault, pending = await run_in_threadpool(lambda: projector().freshness(NAME, head))
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

    async def _run(self, fn: Callable[[Cursor], Any]) -> Any:
        return await read_views(self.runtime, fn)

    def vault(self) -> Vault:
        """The store's vault: names numbers and opens what is shown (off the event loop)."""
        return self.runtime.projector().vault

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

        return JSON(await self._run(read))

    async def contact_history(self, request: Request) -> Response:
        params = Params(request, ["since", "until", "limit", "cursor"])
        contact_id = path_param(request, "contact_id")
        since, until = params.time("since"), params.time("until")
        limit, cursor = params.limit(), params.cursor(2)
        rows = await self._run(
            lambda cur: consent.history(
                cur,
                contact_id=contact_id,
                since=since,
                until=until,
                after=(cursor[0], cursor[1]) if cursor else None,
                limit=limit + 1,
                vault=self.vault(),
            )
        )
        rows, next_cursor = time_ordered_page(rows, limit)
        return JSON({"contact_id": contact_id, "items": rows, "next_cursor": next_cursor})

    async def review(self, request: Request) -> Response:
        params = Params(request, REVIEW_PARAMS)
        since, until = params.time("since"), params.time("until")
        limit, cursor = params.limit(), params.cursor(2)
        rows = await self._run(
            lambda cur: consent.review(
                cur,
                since=since,
                until=until,
                after=(cursor[0], cursor[1]) if cursor else None,
                limit=limit + 1,
                vault=self.vault(),
            )
        )
        rows, next_cursor = time_ordered_page(rows, limit)
        return JSON({"items": rows, "next_cursor": next_cursor})

    async def consent_at(self, request: Request) -> Response:
        params = Params(request, ["channel", "identity", "at", "project_id"])
        channel, identity = channel_and_identity(params)
        at = params.time("at") or now()
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

        return JSON(await self._run(read))

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
        answer = await self._run(
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
