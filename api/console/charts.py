"""Geometry for the overview's charts, drawn as inline SVG by templates/_charts.html (no script,
nothing fetched). Labels stay text for the template to escape."""

from __future__ import annotations

from dataclasses import dataclass

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
