"""Delivery overview: for a time range and a channel, the funnel queued -> delivered -> read,
the failure reasons, and reports per minute, as server-rendered SVG charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.console import charts
from api.console.context import Context, query, time_or
from api.console.render import page
from projections.read_model import console as console_queries
from projections.rules import iso
from store.backend import Cursor

DEFAULT_RANGE = timedelta(days=1)


async def overview_page(context: Context, request: Request) -> Response:
    now = datetime.now(UTC)
    until, until_ok = time_or(query(request, "until", 64), iso(now.isoformat()))
    try:
        start = datetime.fromisoformat(until.replace("Z", "+00:00")) - DEFAULT_RANGE
    except OverflowError:  # an `until` within a day of year 1: the range starts there
        start = datetime.fromisoformat(until.replace("Z", "+00:00"))
    default_since = iso(start.isoformat())
    since, since_ok = time_or(query(request, "since", 64), default_since)
    channel = query(request, "channel", 32).upper() or None
    if channel not in (None, *console_queries.CHANNELS):
        channel = None

    def read(cur: Cursor) -> dict[str, Any]:
        per_minute, cut = console_queries.reports_per_minute(cur, since, until, channel)
        return {
            "funnel": console_queries.funnel(cur, since, until, channel),
            "reasons": console_queries.failure_reasons(cur, since, until, channel),
            "per_minute": per_minute,
            "cut": cut,
        }

    data = await context.queries.read(read)
    funnel = data["funnel"]
    return page(
        request,
        "overview.html",
        since=since,
        until=until,
        channel=channel or "",
        channels=console_queries.CHANNELS,
        bad_range=not (since_ok and until_ok),
        funnel=funnel,
        reasons=data["reasons"],
        funnel_chart=charts.bars(
            [
                ("queued", funnel["queued"]),
                ("delivered", funnel["delivered"]),
                ("read", funnel["read"]),
                ("failed", funnel["failed"]),
            ]
        ),
        reasons_chart=charts.bars([(r["reason"], r["count"]) for r in data["reasons"]]),
        minutes_chart=charts.columns(data["per_minute"]),
        per_minute=data["per_minute"],
        cut=data["cut"],
    )
