"""The stored callbacks, interpreted or kept uninterpreted in the catch-all (CONTACT_MERGE and
the other triggers this version does not interpret), by trigger and arrival time, in pages.
References and times only; each links to its raw body (the audited page by reference)."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from api.console.context import Context, query, time_range
from api.console.render import page
from api.query_routes import MAX_CURSOR, WORD_PATTERN, decode_cursor, encode_cursor
from domain.callbacks import TRIGGER_KEYS, UNKNOWN_TRIGGER
from projections.read_model import callbacks

PAGE_ROWS = 50
TRIGGERS = sorted({*TRIGGER_KEYS.values(), UNKNOWN_TRIGGER})
_WORD = re.compile(WORD_PATTERN)


async def list_page(context: Context, request: Request) -> Response:
    trigger = query(request, "trigger", 100).strip().upper()
    bad_trigger = bool(trigger) and not _WORD.match(trigger)
    since, until, times_ok = time_range(request)
    cursor_text = query(request, "cursor", MAX_CURSOR)
    cursor = decode_cursor(cursor_text, 2) if cursor_text else None
    found = await context.queries.read(
        lambda cur: callbacks.listed(
            cur,
            None if bad_trigger or not trigger else trigger,
            since or None,
            until or None,
            cursor,
            PAGE_ROWS,
        )
    )
    request.state.results = len(found.items)  # the access log counts what was shown
    return page(
        request,
        "callbacks.html",
        items=found.items,
        trigger="" if bad_trigger else trigger,
        since=since,
        until=until,
        triggers=TRIGGERS,
        bad_trigger=bad_trigger,
        bad_range=not times_ok,
        bad_cursor=bool(cursor_text) and cursor is None,
        next_cursor=encode_cursor(found.next_key) if found.next_key is not None else None,
    )
