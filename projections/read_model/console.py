"""The read queries the web console needs that the API has no route for: one search box, a
number's contacts and messages, the delivery funnel, failure reasons and report counts per
minute. Each is bounded (LIMIT, or an aggregate over an indexed range). A number is looked up
by its name on each channel (projections.personal)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from domain.identity import normalise
from projections import rules
from projections.messages import METADATA_PREFIX
from projections.personal import open_metadata, open_rows
from projections.read_model import consent
from projections.read_model.messages import identities_shown
from projections.read_model.messages import message_rows as message_rows
from projections.read_model.paging import Conditions, where_sql
from store.backend import Cursor, time_window
from store.vault import Vault, plaintext

MESSAGE_COLUMNS = ", ".join(
    (
        *rules.TIMELINE_COLUMNS,
        *("status", "first_event_time", "last_event_time", "reason_code", "anomaly"),
        "metadata_shown",
    )
)
# The channels of the Conversation API: the identity indexes lead with the channel, so a lookup
# of a number names them all.
CHANNELS = (
    *("WHATSAPP", "RCS", "SMS", "MMS", "MESSENGER", "INSTAGRAM", "VIBER", "VIBERBM"),
    *("TELEGRAM", "KAKAOTALK", "KAKAOTALKCHAT", "LINE", "WECHAT", "APPLEBC"),
)
# A number on any channel: its name on each (domain.identity: its digits on number channels).
ON_ANY_CHANNEL = "(" + " OR ".join(["(channel = ? AND identity = ?)"] * len(CHANNELS)) + ")"


def names_on_channels(vault: Vault, identity: str) -> list[str]:
    """The parameters of ON_ANY_CHANNEL for this number (in any format)."""
    return [p for channel in CHANNELS for p in (channel, vault.index(channel, identity))]


# The most rows read to count reports per minute: a range beyond is cut short (and says so).
MAX_TIMELINE_ROWS = 5000


def _messages(
    cur: Cursor, where: str, params: list[Any], limit: int, vault: Vault | None = None
) -> list[dict[str, Any]]:
    """Message rows, their metadata as shown (projections.personal)."""
    rows = cur.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM message_status WHERE {where} "
        "ORDER BY first_event_time DESC, project_id, message_id LIMIT ?",
        [*params, limit],
    ).fetchall()
    return open_metadata(vault or plaintext(), rows)


def search(
    cur: Cursor, query: str, limit: int = 50, vault: Vault | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Everything `query` names, by kind: messages (by message, contact or conversation id, or
    an exact metadata value such as an order id), numbers (in any format) and contacts."""
    query = query.strip()
    found: dict[str, list[dict[str, Any]]] = {"messages": [], "numbers": [], "contacts": []}
    if not query:
        return found
    vault = vault or plaintext()
    metadata = vault.metadata_name(query)
    prefix = f"substr(metadata, 1, {METADATA_PREFIX}) = substr(?, 1, {METADATA_PREFIX})"
    seen: set[tuple[str, str]] = set()
    for where, params, matched in (
        ("message_id = ?", [query], "message id"),
        (f"{prefix} AND metadata = ?", [metadata, metadata], "metadata"),
        ("contact_id = ?", [query], "contact id"),
        ("conversation_id = ?", [query], "conversation id"),
    ):
        for row in _messages(cur, where, params, limit, vault):
            key = (row["project_id"], row["message_id"])
            # A metadata name is shared by values differing only in spaces, "+" or "-".
            wrong = matched == "metadata" and row["metadata"] != query
            if not wrong and key not in seen and len(found["messages"]) < limit:
                seen.add(key)
                found["messages"].append({**row, "matched": matched})
    identity = normalise(None, query)
    found["numbers"] = [
        {"channel": channel, "identity": identity}
        for channel in channels_of_number(cur, identity, vault)
    ]
    contacts = {
        (r["project_id"], r["contact_id"]) for r in contacts_of_number(cur, identity, vault=vault)
    }
    contacts |= {(project, query) for project in projects_of_contact(cur, query)}
    found["contacts"] = [
        {"project_id": project, "contact_id": contact} for project, contact in sorted(contacts)
    ][:limit]
    return found


def contacts_of_number(
    cur: Cursor, identity: str, limit: int = 100, vault: Vault | None = None
) -> list[dict[str, Any]]:
    """The contacts seen with this number (any format), per channel."""
    vault = vault or plaintext()
    rows = cur.execute(
        "SELECT project_id, contact_id, channel, identity, identity_shown FROM contact_identities "
        f"WHERE {ON_ANY_CHANNEL} ORDER BY project_id, contact_id, channel LIMIT ?",
        [*names_on_channels(vault, identity), limit],
    ).fetchall()
    return open_rows(vault, rows)


def channels_of_number(cur: Cursor, identity: str, vault: Vault | None = None) -> list[str]:
    """The channels this number has been seen on or has a consent fact on."""
    names = names_on_channels(vault or plaintext(), identity)
    rows = cur.execute(
        f"SELECT DISTINCT channel FROM contact_identities WHERE {ON_ANY_CHANNEL} "
        f"UNION SELECT DISTINCT channel FROM consent WHERE {ON_ANY_CHANNEL} "
        "ORDER BY channel",
        [*names, *names],
    ).fetchall()
    return [row["channel"] for row in rows]


def projects_of_contact(cur: Cursor, contact_id: str, limit: int = 20) -> list[str]:
    """The projects a contact id appears in (its messages, consent facts or merges)."""
    rows = cur.execute(
        "SELECT project_id FROM (SELECT project_id FROM message_status WHERE contact_id = ? "
        "UNION SELECT project_id FROM consent_history WHERE contact_id = ? "
        "UNION SELECT project_id FROM contact_merges WHERE contact_id = ?) p "
        "ORDER BY project_id LIMIT ?",
        [contact_id, contact_id, contact_id, limit],
    ).fetchall()
    return [row["project_id"] for row in rows]


def identities_of_contact(
    cur: Cursor, contact_id: str, limit: int = 100, vault: Vault | None = None
) -> list[dict[str, Any]]:
    """The numbers (channel identities) a contact was seen with, in each of its projects."""
    rows: list[dict[str, Any]] = []
    for project_id in projects_of_contact(cur, contact_id):
        rows += cur.execute(
            "SELECT project_id, contact_id, channel, identity, identity_shown "
            "FROM contact_identities "
            "WHERE project_id = ? AND contact_id = ? ORDER BY channel, identity LIMIT ?",
            [project_id, contact_id, limit],
        ).fetchall()
    return open_rows(vault or plaintext(), rows[:limit])


def messages_of_contacts(
    cur: Cursor, contact_ids: list[str], limit: int = 100, vault: Vault | None = None
) -> list[dict[str, Any]]:
    """The latest messages sent to any of these contacts (one indexed lookup each)."""
    rows: list[dict[str, Any]] = []
    for contact_id in sorted(set(contact_ids))[:50]:
        rows += _messages(cur, "contact_id = ?", [contact_id], limit, vault)
    rows.sort(key=lambda r: (r["first_event_time"], r["project_id"], r["message_id"]), reverse=True)
    return rows[:limit]


def _channel_filter(channel: str | None) -> Conditions:
    return [("channel = ?", channel)] if channel else []


def funnel(
    cur: Cursor, since: str | None, until: str | None, channel: str | None
) -> dict[str, int]:
    """Messages first reported in [since, until) (on `channel`: the channel of their latest
    status): how many were queued, delivered, read and failed."""
    where, params = where_sql(
        time_window("first_event_time", since, until) + _channel_filter(channel)
    )
    row = cur.execute(
        "SELECT count(*) AS messages, count(queued_at) AS queued, "
        "count(delivered_at) AS delivered, count(read_at) AS read_, "
        "sum(CASE WHEN status = 'FAILED' THEN 1 ELSE 0 END) AS failed "
        f"FROM message_status{where}",
        params,
    ).fetchone()
    assert row is not None
    return {
        "messages": int(row["messages"] or 0),
        "queued": int(row["queued"] or 0),
        "delivered": int(row["delivered"] or 0),
        "read": int(row["read_"] or 0),
        "failed": int(row["failed"] or 0),
    }


def failure_reasons(
    cur: Cursor, since: str | None, until: str | None, channel: str | None, limit: int = 10
) -> list[dict[str, Any]]:
    """The most frequent failure reasons of messages first reported in the range."""
    where, params = where_sql(
        [
            ("status = ?", "FAILED"),
            *time_window("first_event_time", since, until),
            *_channel_filter(channel),
        ]
    )
    rows = cur.execute(
        "SELECT coalesce(reason_code, 'UNKNOWN') AS reason, count(*) AS n "
        f"FROM message_status{where} "
        "GROUP BY coalesce(reason_code, 'UNKNOWN') ORDER BY n DESC, reason LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [{"reason": row["reason"], "count": int(row["n"])} for row in rows]


def reports_per_minute(
    cur: Cursor, since: str | None, until: str | None, channel: str | None
) -> tuple[list[tuple[str, int]], bool]:
    """Delivery reports and consent facts per minute of event time in the range, oldest first,
    and whether the count was cut short at MAX_TIMELINE_ROWS messages or facts."""
    filters = time_window("last_event_time", since, None)
    where, params = where_sql(
        filters + time_window("first_event_time", None, until) + _channel_filter(channel)
    )
    rows = cur.execute(
        f"SELECT {', '.join(rules.TIMELINE_COLUMNS)} "
        f"FROM message_status{where} ORDER BY first_event_time LIMIT ?",
        [*params, MAX_TIMELINE_ROWS],
    ).fetchall()
    cut = len(rows) >= MAX_TIMELINE_ROWS
    minutes: Counter[str] = Counter()
    for row in rows:
        for report in rules.expanded_reports(row):
            at = report["at"]
            if (since is None or at >= since) and (until is None or at < until):
                minutes[at[:16]] += 1
    if channel is None:
        where, params = where_sql(time_window("event_time", since, until))
        facts = cur.execute(
            f"SELECT event_time FROM consent_history{where} ORDER BY event_time LIMIT ?",
            [*params, MAX_TIMELINE_ROWS],
        ).fetchall()
        cut = cut or len(facts) >= MAX_TIMELINE_ROWS
        for fact in facts:
            minutes[fact["event_time"][:16]] += 1
    return sorted(minutes.items()), cut


def violations_of(
    cur: Cursor,
    messages: list[dict[str, Any]],
    identity: str | None = None,
    vault: Vault | None = None,
) -> list[dict[str, Any]]:
    """Of these messages, those sent on a channel to a number (this one, in any format, or any)
    that was opted out when the message was first reported there, with the opt-out fact that
    proves it: the violations report's rule, asked per message with `consent.state_at`."""
    vault = vault or plaintext()
    found: list[dict[str, Any]] = []
    for message in messages:
        first_on: dict[tuple[str, str], str] = {}
        for report in rules.expanded_reports(message):
            to = report["identity"]
            if report["status"] not in rules.STATUS_RANK or not report["channel"] or not to:
                continue
            if identity is not None and to != vault.index(report["channel"], identity):
                continue
            key = (report["channel"], to)
            first_on[key] = min(first_on.get(key, report["at"]), report["at"])
        for (channel, to), sent_at in sorted(first_on.items(), key=lambda kv: kv[1]):
            state = consent.state_at(cur, channel, to, sent_at, message["project_id"], vault)
            if state["state"] == rules.OPTED_OUT:
                shown = identities_shown(message, vault)
                found.append(
                    {
                        "project_id": message["project_id"],
                        "message_id": message["message_id"],
                        "channel": channel,
                        "identity": shown.get(to, to),
                        "sent_at": sent_at,
                        "opted_out_since": state["since"],
                        "proof": state["decided_by"],
                    }
                    | ({"erased": True} if shown.get(to, "") is None else {})
                )
    return found
