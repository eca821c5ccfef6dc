"""The compliance report: messages sent to numbers that had opted out, for a range of first
report times, with the opt-out fact that proves each; as a printable page and as CSV."""

from __future__ import annotations

import csv
import io
from itertools import islice
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.console.context import Context, query
from api.console.overview import time_or
from api.console.render import HEADERS, page
from projections.personal import ERASED_TEXT
from projections.read_model import consent
from service.csv_cells import cell
from store.backend import Cursor

PAGE_ROWS = 500
CSV_ROWS = 100_000
CSV_COLUMNS = (
    "project_id",
    "message_id",
    "contact_id",
    "metadata",
    "channel",
    "identity",
    "sent_at",
    "opted_out_since",
    "proof_fact",
    "proof_source_kind",
    "proof_event_time",
    "proof_source_ref",
)


def _range(request: Request) -> tuple[str | None, str | None, bool]:
    since, since_ok = time_or(query(request, "since", 64), "")
    until, until_ok = time_or(query(request, "until", 64), "")
    return since or None, until or None, since_ok and until_ok


def _rows(context: Context, since: str | None, until: str | None, limit: int) -> Any:
    def read(cur: Cursor) -> tuple[list[dict[str, Any]], bool]:
        vault = context.runtime.projector().vault
        rows = list(islice(consent.violations(cur, since, until, vault=vault), limit + 1))
        return rows[:limit], len(rows) > limit

    return read


def csv_line(row: dict[str, Any]) -> list[str]:
    proof = row.get("proof") or {}
    values = {
        **row,
        "proof_fact": proof.get("fact"),
        "proof_source_kind": proof.get("source_kind"),
        "proof_event_time": proof.get("event_time"),
        "proof_source_ref": proof.get("source_ref"),
    }
    if row.get("erased") and row.get("identity") is None:
        values["identity"] = ERASED_TEXT
    return [cell(values.get(column)) for column in CSV_COLUMNS]


async def report_page(context: Context, request: Request) -> Response:
    since, until, ok = _range(request)
    rows, more = await context.read(_rows(context, since, until, PAGE_ROWS))
    return page(
        request,
        "compliance.html",
        since=since or "",
        until=until or "",
        bad_range=not ok,
        rows=rows,
        more=more,
        page_rows=PAGE_ROWS,
    )


async def report_csv(context: Context, request: Request) -> Response:
    since, until, _ = _range(request)
    rows, more = await context.read(_rows(context, since, until, CSV_ROWS))
    request.state.results = len(rows)  # the access log counts what was handed out
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_line(row) for row in rows)
    name = "violations.csv"
    headers = {
        **HEADERS,
        "Content-Disposition": f'attachment; filename="{name}"',
        "X-Truncated": "true" if more else "false",
    }
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
