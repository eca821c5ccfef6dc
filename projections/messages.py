"""The messages projection: message_status and read_confirmations. Identities are held by
name; message_status.identities_shown maps each name to what shows it (projections.personal)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from operator import itemgetter
from typing import Any

import orjson

from domain.message import report_key, submission_key
from projections import rules
from projections.log_reader import (
    FIRST_REPORTED,
    MESSAGE_REGISTERED,
    MESSAGE_SUBMITTED,
    REPORTS,
    LoggedEvent,
)
from projections.personal import identity_name, shown_identity, shown_text
from store.backend import Cursor, insert, select_by_keys, upsert
from store.envelope import METADATA_INDEX
from store.vault import METADATA_FIELD, Vault, plaintext

NAME = "messages"
TOPICS = frozenset({MESSAGE_REGISTERED, *REPORTS, MESSAGE_SUBMITTED})
TABLES = ("message_status", "read_confirmations")

STATUS_COLUMNS = (
    "project_id",
    "message_id",
    "app_id",
    "conversation_id",
    "contact_id",
    "status",
    "channel",
    "queued_at",
    "delivered_at",
    "read_at",
    "failed_at",
    "reason_code",
    "reason_sub_code",
    "reason_description",
    "switched_from",
    "metadata",
    "first_event_time",
    "last_event_time",
    "report_count",
    "anomaly",
    "reports",
    "submitted_at",
    "next_action",
    "identities_shown",
    "metadata_shown",
)
READ_COLUMNS = (
    "project_id",
    "message_id",
    "contact_id",
    "channel",
    "identity",
    "read_at",
    "identity_shown",
)
STATUS_VALUES = itemgetter(*STATUS_COLUMNS)
METADATA_PREFIX = 200
READ_VALUES = itemgetter(*READ_COLUMNS)


def schema(g: int) -> list[str]:
    # The keys lead with the message id: Sinch's are ULIDs, in time order, so a new row's key
    # goes at the index's end, and a lookup by the message id alone reads the index.
    return [
        f"""CREATE TABLE message_status_g{g} (
            project_id TEXT NOT NULL, message_id TEXT NOT NULL, app_id TEXT,
            conversation_id TEXT, contact_id TEXT, status TEXT NOT NULL, channel TEXT,
            queued_at TEXT, delivered_at TEXT, read_at TEXT, failed_at TEXT,
            reason_code TEXT, reason_sub_code TEXT, reason_description TEXT,
            switched_from TEXT, metadata TEXT, first_event_time TEXT NOT NULL,
            last_event_time TEXT NOT NULL, report_count INTEGER NOT NULL, anomaly TEXT,
            reports TEXT NOT NULL, submitted_at TEXT, next_action TEXT, identities_shown TEXT,
            metadata_shown TEXT, PRIMARY KEY (message_id, project_id))""",
        # Only messages with something to do are in it (next_action is NULL for "none").
        f"CREATE INDEX ix_ms_g{g}_action ON message_status_g{g} "
        "(next_action, first_event_time, project_id, message_id) WHERE next_action IS NOT NULL",
        f"CREATE INDEX ix_ms_g{g}_first ON message_status_g{g} (first_event_time, project_id, "
        "message_id)",
        f"CREATE INDEX ix_ms_g{g}_contact ON message_status_g{g} (contact_id)",
        f"CREATE INDEX ix_ms_g{g}_conversation ON message_status_g{g} (conversation_id)",
        f"CREATE INDEX ix_ms_g{g}_status ON message_status_g{g} (status, reason_code)",
        # An index entry has a size limit: metadata's prefix is indexed.
        f"CREATE INDEX ix_ms_g{g}_metadata_prefix ON message_status_g{g} "
        f"(substr(metadata, 1, {METADATA_PREFIX}))",
        f"""CREATE TABLE read_confirmations_g{g} (
            project_id TEXT NOT NULL, message_id TEXT NOT NULL, contact_id TEXT,
            channel TEXT, identity TEXT, read_at TEXT NOT NULL, identity_shown TEXT,
            PRIMARY KEY (message_id, project_id))""",
        f"CREATE INDEX ix_rc_g{g}_at ON read_confirmations_g{g} (read_at, project_id, message_id)",
        f"CREATE INDEX ix_rc_g{g}_contact ON read_confirmations_g{g} (contact_id, read_at)",
    ]


# A message's names -> the sealed copy of each identity to show (None: its key is gone).
Shown = dict[str, str | None]


def _load_reports(
    cur: Cursor, g: int, streams: dict[tuple[str, str], str]
) -> dict[tuple[str, str], tuple[list[dict[str, Any]], Shown, Shown]]:
    """The known messages' reports, identities to show, and metadata to show (by name)."""
    rows = select_by_keys(
        cur,
        f"message_status_g{g}",
        (*rules.TIMELINE_COLUMNS, "metadata_shown"),
        ("project_id", "message_id"),
        list(streams),
    )
    found = {}
    for row in rows:
        key = (row["project_id"], row["message_id"])
        shown = orjson.loads(row["identities_shown"]) if row["identities_shown"] else {}
        metadata = {row["metadata"]: row["metadata_shown"]} if row["metadata"] else {}
        # The row's own stream, not the event's: its stored references name the first.
        found[key] = (rules.expanded_reports(row), shown, metadata)
    return found


def _fact(event: LoggedEvent, vault: Vault) -> tuple[tuple[str, str], dict[str, Any]] | None:
    """The message a log event is about and its report fact; None for other events."""
    state = event.state
    if event.topic in REPORTS:
        ref = f"{event.originator_id}/{report_key(state.get('channel'), state['status'])}"
        fact = rules.report_fact(state, ref)
    elif event.topic == MESSAGE_SUBMITTED:
        ref = f"{event.originator_id}/{submission_key(state.get('channel'))}"
        fact = rules.submission_fact(state, ref)
    else:
        return None
    fact["identity"] = identity_name(state, vault)
    if vault.encrypted:  # named by its public part
        fact["metadata"] = state[METADATA_INDEX]
    return (state["project_id"], state["message_id"]), fact


# A message's names -> the latest event naming each (its key outlives earlier ones').
Sources = dict[str, LoggedEvent]


def apply(
    cur: Cursor,
    g: int,
    events: list[LoggedEvent],
    next_actions: Mapping[str, str] | None = None,
    vault: Vault | None = None,
) -> None:
    vault = vault if vault is not None else plaintext()
    new: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    identity_sources: dict[tuple[str, str], Sources] = defaultdict(dict)
    metadata_sources: dict[tuple[str, str], Sources] = defaultdict(dict)
    # A message registered in this page has no row yet: only the others are looked up.
    registered: set[str] = set()
    streams: dict[tuple[str, str], str] = {}
    older: set[tuple[str, str]] = set()
    for event in events:
        if event.topic == MESSAGE_REGISTERED:
            registered.add(event.originator_id)
            continue
        if event.topic == FIRST_REPORTED:
            registered.add(event.originator_id)
        found = _fact(event, vault)
        if found is None:
            continue
        key, fact = found
        new[key].append(fact)
        if fact["identity"]:
            identity_sources[key][fact["identity"]] = event
        if fact["metadata"] and vault.encrypted:
            metadata_sources[key][fact["metadata"]] = event
        streams[key] = event.originator_id
        if event.originator_id not in registered:
            older.add(key)
    if not new:
        return
    known = _load_reports(cur, g, {key: streams[key] for key in older})
    # Rows of messages registered in this page are new: they are inserted, not upserted.
    status_rows: dict[bool, list[Any]] = {True: [], False: []}
    read_rows: dict[bool, list[Any]] = {True: [], False: []}
    for key, facts in new.items():
        project_id, message_id = key
        fresh = key not in older
        known_reports, shown, metadata = known.get(key, ([], {}, {}))
        reports = rules.merge_reports(known_reports, facts)
        for name, event in identity_sources.get(key, {}).items():
            shown[name] = shown_identity(event, vault) or shown.get(name)
        row = rules.message_row(project_id, message_id, reports, next_actions)
        row["identities_shown"] = orjson.dumps(shown).decode() if shown else None
        row["reports"] = rules.compact_reports(row, reports, streams[key])
        row["metadata_shown"] = None
        if row["metadata"] and vault.encrypted:
            source = metadata_sources.get(key, {}).get(row["metadata"])
            if source is not None:
                metadata[row["metadata"]] = shown_text(source, vault, METADATA_FIELD)
            row["metadata_shown"] = metadata.get(row["metadata"])
        status_rows[fresh].append(STATUS_VALUES(row))
        read = rules.read_confirmation(project_id, message_id, reports)
        if read:
            read["identity_shown"] = shown.get(read["identity"]) if read["identity"] else None
            read_rows[fresh].append(READ_VALUES(read))
    keys = ("project_id", "message_id")
    upsert(cur, f"message_status_g{g}", STATUS_COLUMNS, keys, status_rows[False])
    upsert(cur, f"read_confirmations_g{g}", READ_COLUMNS, keys, read_rows[False])
    insert(cur, f"message_status_g{g}", STATUS_COLUMNS, status_rows[True])
    insert(cur, f"read_confirmations_g{g}", READ_COLUMNS, read_rows[True])
