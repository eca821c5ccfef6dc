"""The compliance report: messages sent to numbers that had opted out, for a range of first
report times, with the opt-out fact that proves each; as a printable page and as CSV."""

from __future__ import annotations

import csv
import io
from itertools import islice
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.console.context import Context, time_range
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


def _rows(context: Context, since: str, until: str, limit: int) -> Any:
    def read(cur: Cursor) -> tuple[list[dict[str, Any]], bool]:
        vault = context.queries.vault()
        found = consent.violations(cur, since or None, until or None, vault=vault)
        rows = list(islice(found, limit + 1))
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
    since, until, ok = time_range(request)
    rows, more = await context.queries.read(_rows(context, since, until, PAGE_ROWS))
    return page(
        request,
        "compliance.html",
        since=since,
        until=until,
        bad_range=not ok,
        rows=rows,
        more=more,
        page_rows=PAGE_ROWS,
    )


async def report_csv(context: Context, request: Request) -> Response:
    since, until, _ = time_range(request)
    rows, more = await context.queries.read(_rows(context, since, until, CSV_ROWS))
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
