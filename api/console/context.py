"""What every console page may use: the runtime (store, ledger, writer), the API's reads, the
sessions, the health detail, and the reading of forms and query fields."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from api.console.session import Sessions, Visitor
from api.query_routes import UNSTORABLE, Queries
from projections.rules import iso
from service.runtime import Runtime

MAX_FORM_BYTES = 16 * 1024


@dataclass
class Context:
    runtime: Runtime
    queries: Queries  # the API's reads: the projections, the vault, consent freshness
    sessions: Sessions
    health_detail: Callable[[], Awaitable[Response]]


def time_or(value: str, default: str) -> tuple[str, bool]:
    """The time a form field gives, else `default`; and whether the field was fine."""
    if not value:
        return default, True
    with contextlib.suppress(ValueError, OverflowError):
        return iso(value), True
    return default, False


def time_range(request: Request) -> tuple[str, str, bool]:
    """The `since` and `until` fields ("" when not given), and whether both were fine."""
    since, since_ok = time_or(query(request, "since", 64), "")
    until, until_ok = time_or(query(request, "until", 64), "")
    return since, until, since_ok and until_ok


def visitor(request: Request) -> Visitor:
    found: Visitor = request.state.visitor
    return found


async def form(request: Request) -> dict[str, str]:
    """An url-encoded form, each field once (the last wins), at most MAX_FORM_BYTES."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, "the form is too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "the form could not be read") from None
    return {name: values[-1] for name, values in fields.items()}


def query(request: Request, name: str, max_length: int = 256) -> str:
    """A query parameter as text (absent: ""), cut to `max_length`, without what no store can
    compare (NUL, lone surrogates): a search box forgives what the API would refuse."""
    value = request.query_params.get(name, "")
    return UNSTORABLE.sub("", value[:max_length])


def mark_audited(request: Request) -> None:
    """A read-scope page that showed audit data (history, violations): logged as an audit read."""
    request.state.audited = True
