"""Messages on the read side: one message with its timeline, the message lists (filtered, and
those that went quiet), READ confirmations, and the follow-up lists."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from domain import followup
from projections import messages as message_tables
from projections import rules
from projections.personal import open_map, open_metadata, open_rows
from projections.read_model.consent import of_contact
from projections.read_model.paging import Conditions, KeysetPage, all_pages, keyset_page
from projections.rules import SUBMITTED, iso
from store.backend import Cursor, Row, time_window
from store.vault import Vault, plaintext

# The latest report says the message is on its way and nothing has been heard since.
QUIET_STATUSES = (SUBMITTED, "QUEUED_ON_CHANNEL", "SWITCHING_CHANNEL")

BY_FIRST_EVENT = ("first_event_time", "project_id", "message_id")
BY_LAST_EVENT = ("last_event_time", "project_id", "message_id")
BY_READ_AT = ("read_at", "project_id", "message_id")

Shape = Callable[[Row], dict[str, Any]]


HIDDEN = ("reports", "identities_shown", "metadata_shown")


def message_view(
    row: Mapping[str, Any], with_timeline: bool = False, vault: Vault | None = None
) -> dict[str, Any]:
    """A message_status row as answered (metadata as shown), with `with_timeline` each report
    (identities as shown). A row without `metadata_shown` had its metadata opened already."""
    vault = vault or plaintext()
    view = {c: row[c] for c in message_tables.STATUS_COLUMNS if c not in HIDDEN}
    if "metadata_shown" in row:
        [metadata] = open_metadata(
            vault, [{"metadata": row["metadata"], "metadata_shown": row["metadata_shown"]}]
        )
    else:
        metadata = {"metadata": row["metadata"], "erased": row.get("erased", False)}
    view["metadata"] = metadata["metadata"]
    if metadata.get("erased"):
        view["erased"] = True
    if with_timeline:
        shown = identities_shown(row, vault)
        view["timeline"] = [
            {
                "status": r["status"],
                "channel": r["channel"],
                "identity": shown.get(r["identity"], r["identity"]) if r["identity"] else None,
                "event_time": r["at"],
                "reason_code": r["reason_code"],
                "reason_sub_code": r["reason_sub_code"],
                "reason_description": r["reason_description"],
                "reference": r["source_ref"],
            }
            | ({"erased": True} if r["identity"] and shown.get(r["identity"], "") is None else {})
            for r in rules.expanded_reports(row)
        ]
    return view


def identities_shown(row: Mapping[str, Any], vault: Vault) -> dict[str, str | None]:
    """A message_status row's identity names -> the identities as shown (None: erased). A
    plaintext row without copies has none: its names are the identities."""
    text = row.get("identities_shown")
    if not text:
        if not vault.encrypted:
            return {}
        return {r["identity"]: None for r in rules.expanded_reports(row) if r["identity"]}
    return open_map(vault, orjson.loads(text))


def message_rows(cur: Cursor, message_id: str, project_id: str | None = None) -> list[Row]:
    """The rows of message `message_id` (in `project_id`): several when the id is in several
    projects."""
    sql, params = "SELECT * FROM message_status WHERE message_id = ?", [message_id]
    if project_id:
        sql += " AND project_id = ?"
        params.append(project_id)
    return cur.execute(sql + " ORDER BY project_id LIMIT 20", params).fetchall()


@dataclass(frozen=True)
class MessageFilter:
    """Which messages a list holds; None: any. `status` and `reason` as stored (upper case);
    `since`/`until` bound the first report (UTC, as the projections store it)."""

    project_id: str | None = None
    contact_id: str | None = None
    conversation_id: str | None = None
    metadata: str | None = None
    status: str | None = None
    reason: str | None = None
    since: str | None = None
    until: str | None = None
    next_action: str | None = None  # one of domain.followup.ACTIONS, consent override included


def messages_page(
    cur: Cursor,
    where: MessageFilter,
    after: Sequence[Any] | None,
    limit: int,
    shape: Shape,
    vault: Vault | None = None,
) -> KeysetPage:
    """A page of messages in first-report order; `shape` gets rows with their metadata opened.
    With `next_action`, `shape` must give the effective `next_action` (service.followups):
    rows the consent override turns into another action are left out."""
    vault = vault or plaintext()
    metadata = vault.metadata_name(where.metadata) if where.metadata is not None else None
    conditions: Conditions = [
        (f"{column} = ?", value)
        for column, value in (
            ("project_id", where.project_id),
            ("conversation_id", where.conversation_id),
            ("metadata", metadata),
            ("status", where.status),
            ("reason_code", where.reason),
        )
        if value is not None
    ]
    if where.contact_id is not None:  # and the contacts merged with it: one person
        conditions.append(of_contact(cur, where.contact_id))
    if metadata is not None:
        # The index holds the prefix (see projections/messages.py).
        prefix = message_tables.METADATA_PREFIX
        condition = f"substr(metadata, 1, {prefix}) = substr(?, 1, {prefix})"
        conditions.append((condition, metadata))
    conditions += time_window("first_event_time", where.since, where.until)
    wanted: list[Callable[[dict[str, Any]], bool]] = []
    if (action := where.next_action) is not None:
        conditions.append(action_filter(action))
        wanted.append(lambda item: item["next_action"] == action)
    if metadata is not None and vault.encrypted:
        # Names shared by values differing only in spaces, "+" or "-": the value decides.
        wanted.append(lambda item: item["metadata"] == where.metadata)
    keep = (lambda item: all(test(item) for test in wanted)) if wanted else None
    return keyset_page(
        cur,
        "message_status",
        BY_FIRST_EVENT,
        conditions,
        after,
        limit,
        shape,
        keep,
        lambda rows: open_metadata(vault, rows),
    )


def stalled_page(
    cur: Cursor,
    project_id: str | None,
    quiet_s: int,
    after: Sequence[Any] | None,
    limit: int,
    shape: Shape,
    vault: Vault | None = None,
) -> KeysetPage:
    """A page of the messages whose latest report (submitted, queued, switching channel) is
    older than `quiet_s`; `shape` gets rows with their metadata opened."""
    conditions: Conditions = [("project_id = ?", project_id)] if project_id is not None else []
    conditions += quiet_filter(quiet_s)
    opened = vault or plaintext()
    return keyset_page(
        cur,
        "message_status",
        BY_LAST_EVENT,
        conditions,
        after,
        limit,
        shape,
        prepare=lambda rows: open_metadata(opened, rows),
    )


def read_confirmations_page(
    cur: Cursor,
    project_id: str | None,
    contact_id: str | None,
    since: str | None,
    until: str | None,
    after: Sequence[Any] | None,
    limit: int,
    vault: Vault | None = None,
) -> KeysetPage:
    """A page of READ confirmations in the order they were read; `since`/`until` bound that.
    Identities as shown (opened with `vault`)."""
    conditions: Conditions = [("project_id = ?", project_id)] if project_id is not None else []
    if contact_id is not None:  # and the contacts merged with it: one person
        conditions.append(of_contact(cur, contact_id))
    conditions += time_window("read_at", since, until)
    page = keyset_page(cur, "read_confirmations", BY_READ_AT, conditions, after, limit, dict)
    return KeysetPage(open_rows(vault or plaintext(), page.items), page.next_key)


# ---- follow-up --------------------------------------------------------------------------------


def action_filter(action: str) -> tuple[str, list[Any]]:
    """The SQL condition that finds every candidate for an effective action: the consent
    override can turn any actionable row into do_not_retry, never a row needing nothing."""
    if action == followup.NONE:
        return "next_action IS NULL", []
    if action == followup.DO_NOT_RETRY:
        return "next_action IS NOT NULL", []
    return "next_action = ?", [action]


def quiet_filter(older_than_s: int) -> Conditions:
    try:
        cutoff = iso((datetime.now(UTC) - timedelta(seconds=older_than_s)).isoformat())
    except OverflowError:  # before the calendar's first day: nothing is that old
        cutoff = "0001-01-01T00:00:00.000000Z"
    placeholders = ", ".join("?" * len(QUIET_STATUSES))
    return [
        (f"status IN ({placeholders})", list(QUIET_STATUSES)),
        ("last_event_time < ?", [cutoff]),
    ]


def follow_up_list(
    cur: Cursor,
    view: Callable[[Row], dict[str, Any]],
    since: str | None = None,
    action: str | None = None,
    quiet_s: int | None = None,
    vault: Vault | None = None,
) -> Iterator[dict[str, Any]]:
    """For `callback-ledger followup`: every message with something to do (or, with `quiet_s`,
    every one that went quiet), oldest first, in the shape `view` gives (with the effective
    `next_action`); `view` gets rows with their metadata opened. Read a page at a time."""
    conditions: Conditions = []
    if quiet_s is not None:
        conditions += quiet_filter(quiet_s)
        order = BY_LAST_EVENT
    else:
        sql, values = action_filter(action) if action else ("next_action IS NOT NULL", [])
        conditions.append((sql, values))
        order = BY_FIRST_EVENT
    if since:
        conditions.append((f"{order[0]} >= ?", [since]))
    for rows in all_pages(cur, "message_status", conditions, order, 1000):
        for row in open_metadata(vault or plaintext(), rows):
            shown = view(row)
            if quiet_s is None and shown["next_action"] == followup.NONE:
                continue
            if not action or shown["next_action"] == action:
                yield shown
