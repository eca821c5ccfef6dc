"""The quarantine: list, view a body, and resolve an entry (re-ingest it through the webhook's
own decision now that this version may accept it, or mark it reviewed with a note). Both are
recorded as an event on the entry's stream (store/quarantine_resolution.py); nothing is deleted.
Also the raw callback behind any report or consent fact."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from api.console.context import Context, form, query, visitor
from api.console.render import page, problem
from api.console.session import csrf_ok
from api.query_routes import MAX_INTEGER, MAX_REFERENCE, path_param
from projections.read_model import callbacks
from service.recorder import Recorder, Store
from store import quarantine_resolution as resolutions
from store.ledger import Ledger
from store.quarantine_resolution import Entry

PAGE_ENTRIES = 50


def pretty(raw: str) -> str:
    """The body indented when it is JSON, else as it came."""
    try:
        return orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return raw


async def kept_entry(context: Context, request: Request) -> tuple[Ledger, Entry | None]:
    """The ledger, and the entry whose number (its log position) the path holds, if any."""
    ledger = await run_in_threadpool(context.runtime.ledger)
    text = str(request.path_params["entry_id"])
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and 0 < int(text) <= MAX_INTEGER):
        return ledger, None
    return ledger, await run_in_threadpool(lambda: resolutions.entry(ledger, int(text)))


def no_entry(request: Request) -> Response:
    return problem(request, 404, "No such entry", "No quarantine entry has this number.")


async def list_page(context: Context, request: Request) -> Response:
    after_text = query(request, "after", 20)
    after = int(after_text) if after_text.isascii() and after_text.isdigit() else 0
    after = min(after, MAX_INTEGER)
    ledger = await run_in_threadpool(context.runtime.ledger)
    items = await run_in_threadpool(lambda: list(resolutions.entries(ledger, after, PAGE_ENTRIES)))
    more = len(items) == PAGE_ENTRIES
    return page(
        request,
        "quarantine.html",
        items=items,
        next_after=items[-1].id if more else None,
    )


async def entry_page(context: Context, request: Request) -> Response:
    _, kept = await kept_entry(context, request)
    if kept is None:
        return no_entry(request)
    return page(
        request,
        "quarantine_entry.html",
        entry=kept,
        body=pretty(kept.text),
        may_resolve=visitor(request).may("admin"),
    )


async def resolve(context: Context, request: Request) -> Response:
    fields = await form(request)
    who = visitor(request)
    if not csrf_ok(who, fields.get("csrf")):
        return problem(request, 403, "Refused", "The form did not come from this console.")
    action = fields.get("action", "")
    note = fields.get("note", "").strip()
    ledger, kept = await kept_entry(context, request)
    if kept is None:
        return no_entry(request)
    if kept.resolution is not None:
        return problem(request, 409, "Already resolved", "This entry was resolved before.")
    if action == "reingest" and kept.erased:
        return problem(
            request,
            409,
            "Body erased",
            "This body's key was destroyed: there is nothing to feed back.",
        )
    at = datetime.now(UTC).isoformat()
    writer = context.runtime.writer()
    if action == "reingest":
        # The webhook's own path, with the body's original receipt; a refusal is not kept
        # again (the entry itself stays, open).
        async def opened() -> Ledger:
            return ledger

        recorder = Recorder(Store(opened, writer.commit), keep_refused=False)
        outcome = await recorder.record(kept.raw, kept.receipt())
        if outcome.refusal is not None:
            return problem(
                request,
                422,
                "Still refused",
                "This version still refuses the body: " + "; ".join(outcome.refusal.problems),
            )
        if outcome.events:
            context.queries.wake()
        result = f"{outcome.status} ({outcome.trigger})"
        done = resolutions.REINGESTED
    elif action == "review":
        if not note:
            return problem(request, 400, "A note is needed", "Say what was reviewed and why.")
        result, done = None, resolutions.REVIEWED
    else:
        return problem(request, 400, "Unknown action", "Choose re-ingest or mark reviewed.")
    await writer.commit(resolutions.resolve_command(kept.stream, done, who.name, at, note, result))
    return RedirectResponse(f"/console/quarantine/{kept.id}", 303)


async def callback_page(context: Context, request: Request) -> Response:
    reference = path_param(request, "reference", MAX_REFERENCE)
    ledger = await run_in_threadpool(context.runtime.ledger)
    found = await run_in_threadpool(lambda: callbacks.callback(ledger, reference))
    if found is None:
        return problem(request, 404, "No such callback", "No callback has this reference.")
    return page(request, "callback.html", callback=found, body=pretty(found["raw"] or ""))
