"""Delivery overview: for a time range and a channel, the funnel queued -> delivered -> read,
the failure reasons, and reports per minute, as charts drawn as inline SVG by
templates/_charts.html (no script, nothing fetched; labels stay text for the template to
escape)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.console.context import Context, query, time_or
from api.console.render import page
from projections.read_model import console as console_queries
from projections.rules import iso
from store.backend import Cursor

DEFAULT_RANGE = timedelta(days=1)
WIDTH = 640
BAR_HEIGHT = 26
LABEL_WIDTH = 230
MAX_LABEL = 30
MAX_COLUMN = 24
COLUMN_HEIGHT = 160


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    peak: int
    first: str = ""
    last: str = ""


def bars(items: list[tuple[str, int]]) -> Chart:
    """Horizontal bars, one per (label, value), scaled to the largest value."""
    peak = max((value for _, value in items), default=0)
    room = WIDTH - LABEL_WIDTH - 60
    drawn = [
        Bar(
            label=label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…",
            value=value,
            x=LABEL_WIDTH,
            y=i * (BAR_HEIGHT + 8),
            width=round(room * value / peak) if peak else 0,
            height=BAR_HEIGHT,
        )
        for i, (label, value) in enumerate(items)
    ]
    return Chart(WIDTH, max(len(items), 1) * (BAR_HEIGHT + 8), drawn, peak)


def columns(series: list[tuple[str, int]], max_columns: int = 240) -> Chart:
    """Vertical columns, one per minute that had any (the latest `max_columns` of them)."""
    series = series[-max_columns:]
    peak = max((value for _, value in series), default=0)
    # A few minutes stay thin columns at the left rather than a few wide blocks.
    step = min(WIDTH / max(len(series), 1), MAX_COLUMN)
    drawn = [
        Bar(
            label=minute,
            value=value,
            x=round(i * step),
            y=COLUMN_HEIGHT - (round(COLUMN_HEIGHT * value / peak) if peak else 0),
            width=max(1, round(step) - 1),
            height=round(COLUMN_HEIGHT * value / peak) if peak else 0,
        )
        for i, (minute, value) in enumerate(series)
    ]
    return Chart(
        WIDTH,
        COLUMN_HEIGHT,
        drawn,
        peak,
        series[0][0] if series else "",
        series[-1][0] if series else "",
    )


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
        funnel_chart=bars(
            [
                ("queued", funnel["queued"]),
                ("delivered", funnel["delivered"]),
                ("read", funnel["read"]),
                ("failed", funnel["failed"]),
            ]
        ),
        reasons_chart=bars([(r["reason"], r["count"]) for r in data["reasons"]]),
        minutes_chart=columns(data["per_minute"]),
        per_minute=data["per_minute"],
        cut=data["cut"],
    )
