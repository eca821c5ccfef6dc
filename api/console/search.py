"""Search: one box for a message id, an order id in metadata, a phone number in any format, a
contact id or a conversation id."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.console.context import Context, query
from api.console.render import page
from domain.callbacks import MAX_IDENTITY
from domain.identity import normalise
from projections.read_model import console as console_queries


async def search_page(context: Context, request: Request) -> Response:
    q = query(request, "q", MAX_IDENTITY).strip()
    found: dict[str, list[dict[str, Any]]] = {"messages": [], "numbers": [], "contacts": []}
    if q:
        found = await context.queries.read(
            lambda cur: console_queries.search(cur, q, vault=context.queries.vault())
        )
    return page(
        request,
        "search.html",
        q=q,
        max_length=MAX_IDENTITY,
        number=normalise(None, q) if q else "",
        found=found,
        searched=bool(q),
    )
