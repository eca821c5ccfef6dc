"""A number (a channel identity, in any format) or a contact: current consent per channel with
the fact that decided it, messages sent to it, and, for a key with the audit scope, the consent
history, the consent at a chosen time and any messages sent while it was opted out, with proof."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.auth import AUDIT
from api.console.context import Context, mark_audited, query, time_or, visitor
from api.console.render import page
from api.query_routes import path_param
from domain.callbacks import MAX_IDENTITY
from domain.identity import normalise
from projections.read_model import consent
from projections.read_model import console as console_queries
from store.backend import Cursor

HISTORY_ROWS = 200


async def number_page(context: Context, request: Request) -> Response:
    identity = normalise(None, path_param(request, "identity", MAX_IDENTITY))
    auditor = visitor(request).may(AUDIT)
    at_text, at_channel = query(request, "at", 64), query(request, "channel", 64).upper()
    at, at_valid = time_or(at_text, "")
    stale = await context.queries.stale()

    def read(cur: Cursor) -> dict[str, Any]:
        # The number is looked up by its name on each channel (projections.personal).
        vault = context.queries.vault()
        channels = console_queries.channels_of_number(cur, identity, vault)
        contacts = console_queries.contacts_of_number(cur, identity, vault=vault)
        messages = console_queries.messages_of_contacts(
            cur, [c["contact_id"] for c in contacts], vault=vault
        )
        data: dict[str, Any] = {
            "channels": channels,
            "current": [
                {"channel": channel, **consent.check(cur, channel, vault.index(channel, identity))}
                for channel in channels
            ],
            "contacts": contacts,
            "messages": messages,
        }
        if auditor:
            data["history"] = [
                row
                for channel in channels
                for row in consent.history(
                    cur,
                    channel=channel,
                    identity=vault.index(channel, identity),
                    limit=HISTORY_ROWS,
                    vault=vault,
                )
            ]
            data["history"].sort(key=lambda r: (r["event_time"], r["source_ref"]))
            data["violations"] = console_queries.violations_of(cur, messages, identity, vault)
            if at and at_channel:
                name = vault.index(at_channel, identity)
                data["at_answer"] = consent.state_at(cur, at_channel, name, at, vault=vault)
        return data

    data = await context.queries.read(read)
    if auditor:
        mark_audited(request)
    return page(
        request,
        "number.html",
        identity=identity,
        auditor=auditor,
        stale=stale,
        at=at_text,
        at_valid=at_valid,
        at_channel=at_channel,
        **data,
    )


async def contact_page(context: Context, request: Request) -> Response:
    contact_id = path_param(request, "contact_id")
    auditor = visitor(request).may(AUDIT)
    stale = await context.queries.stale()

    def read(cur: Cursor) -> dict[str, Any]:
        vault = context.queries.vault()
        # Contacts Sinch merged are one person: the page shows them all, whichever id.
        group = consent.merged_group(cur, contact_id)
        messages = console_queries.messages_of_contacts(cur, group, vault=vault)
        data: dict[str, Any] = {
            "current": consent.current(cur, contact_id, vault),
            "identities": [
                row
                for member in group
                for row in console_queries.identities_of_contact(cur, member, vault=vault)
            ],
            "merged_with": consent.merged_with(cur, contact_id),
            "messages": messages,
        }
        if auditor:
            data["history"] = consent.history(
                cur, contact_id=contact_id, limit=HISTORY_ROWS, vault=vault
            )
            data["violations"] = console_queries.violations_of(cur, messages, vault=vault)
        return data

    data = await context.queries.read(read)
    if auditor:
        mark_audited(request)
    return page(
        request, "contact.html", contact_id=contact_id, auditor=auditor, stale=stale, **data
    )
