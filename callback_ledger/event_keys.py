"""Finding one event by its reference (`<stream uuid>/<natural key>`) without reading its
stream. A contact's events name themselves by `dedupe_key`; an index on (stream, dedupe_key)
over those two topics finds one in a single lookup however long the contact's stream is. A
message's events are one per distinct report, so its stream stays short and is read whole."""

from __future__ import annotations

from eventsourcing.utils import get_topic

from callback_ledger.domain.contact import Contact

KEY_INDEX = "ledger_event_keys"
# Literals in the index and in the query alike: a partial index is only used when the query's
# WHERE visibly implies the index's, which a bound parameter does not.
KEYED_TOPICS = (get_topic(Contact.ConsentReported), get_topic(Contact.InboundMessageReceived))
_TOPICS_SQL = ", ".join(f"'{topic}'" for topic in KEYED_TOPICS)
# SQLite keeps states as BLOBs; JSON functions read text.
_SQLITE_KEY = "json_extract(CAST(state AS TEXT), '$.dedupe_key')"


def sqlite_index(table: str) -> str:
    return (
        f"CREATE INDEX IF NOT EXISTS {KEY_INDEX} ON {table} (originator_id, {_SQLITE_KEY}) "
        f"WHERE topic IN ({_TOPICS_SQL})"
    )


def sqlite_query(table: str) -> str:
    return (
        f"SELECT originator_version FROM {table} WHERE originator_id = ? AND {_SQLITE_KEY} = ? "
        f"AND topic IN ({_TOPICS_SQL}) LIMIT 1"
    )
