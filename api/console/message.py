"""A message: its status, each channel's path, the timeline in event-time order with the time
each report reached us beside it (late and out-of-order arrivals marked), its anomaly flags and
each report's raw callback (audit)."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.console.context import Context, query
from api.console.render import page, problem
from api.query_routes import path_param
from domain.message import Message, report_key, submission_key
from projections.read_model import console as console_queries
from projections.rules import iso
from store.ledger import Ledger

# A report that reached us this long after its event time is marked late.
LATE_S = 60.0


def arrivals(ledger: Ledger, project_id: str, message_id: str) -> dict[str, str]:
    """When each of the message's reports reached us, by its reference (the stream is short:
    one event per distinct report)."""
    stream = ledger.message_stream(project_id, message_id)
    found: dict[str, str] = {}
    for stored in ledger.recorder.select_events(stream):
        event = ledger.mapper.to_domain_event(stored)
        if isinstance(event, Message.Submitted):
            key = submission_key(event.channel)
        elif isinstance(event, Message.DeliveryReported | Message.FirstReported):
            key = report_key(event.channel, event.status)
        else:
            continue
        found[f"{stream}/{key}"] = event.callback["received_at"]
    return found


def _seconds(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def annotate_timeline(timeline: list[dict[str, Any]], arrived: dict[str, str]) -> int:
    """Adds arrival, lateness and order to each report; returns how many arrived out of order
    (after a report whose event time is later)."""
    latest_arrival_before: float | None = None
    out_of_order = 0
    # In event-time order: a report that reached us before a report with an earlier event
    # time came out of order (it is the one marked).
    for entry in timeline:
        received = arrived.get(entry["reference"] or "")
        entry.update(received_at=None, late_s=None, late=False, out_of_order=False)
        if not received:
            continue
        entry["received_at"] = iso(received)
        got = _seconds(received)
        with contextlib.suppress(ValueError):
            entry["late_s"] = max(0.0, got - _seconds(entry["event_time"]))
            entry["late"] = entry["late_s"] > LATE_S
        if latest_arrival_before is not None and got < latest_arrival_before:
            entry["out_of_order"] = True
            out_of_order += 1
        latest_arrival_before = max(latest_arrival_before or got, got)
    return out_of_order


def channel_paths(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each channel's statuses in event-time order, with its failure reasons and switches."""
    paths: dict[str, dict[str, Any]] = {}
    for entry in timeline:
        channel = entry["channel"] or "(no channel)"
        path = paths.setdefault(channel, {"channel": channel, "steps": [], "failures": []})
        path["steps"].append(entry["status"])
        if entry["status"] in ("FAILED", "SWITCHING_CHANNEL"):
            path["failures"].append(entry)
    return list(paths.values())


async def message_page(context: Context, request: Request) -> Response:
    message_id = path_param(request, "message_id")
    project_id = query(request, "project_id") or None
    rows = await context.queries.read(
        lambda cur: console_queries.message_rows(cur, message_id, project_id)
    )
    if not rows:
        return problem(request, 404, "No such message", "No report was received for it.")
    if len(rows) > 1:
        return page(request, "choose_project.html", message_id=message_id, rows=rows)
    row = rows[0]
    stale = await context.queries.stale()
    view = await context.queries.read(
        lambda cur: context.queries.view(cur, row, stale, with_timeline=True)
    )
    ledger = await run_in_threadpool(context.runtime.ledger)
    arrived = await run_in_threadpool(
        lambda: arrivals(ledger, row["project_id"], row["message_id"])
    )
    timeline = view["timeline"]
    out_of_order = annotate_timeline(timeline, arrived)
    return page(
        request,
        "message.html",
        m=view,
        timeline=timeline,
        paths=channel_paths(timeline),
        out_of_order=out_of_order,
        late=sum(1 for e in timeline if e["late"]),
    )
