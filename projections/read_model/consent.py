"""Consent on the read side: consent now, history, point-in-time answers, the pre-send check,
the violations report and the free-text review list, over the consent views.

Numbers are looked up by name (`name_of`, projections.personal); what is shown is opened with
the vault, erased values as None with `"erased": true`. An erased subject's consent facts stay,
so its opt-out still stands, and its answers say it was erased (`erasure`)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson

from domain.identity import normalise
from projections import consent as consent_tables
from projections import rules
from projections.personal import open_metadata, open_rows
from projections.read_model.paging import Conditions, all_pages, in_time_order
from projections.rules import OPTED_OUT, STATUS_RANK
from store.backend import Cursor, time_window
from store.vault import Vault, plaintext

UNKNOWN = "UNKNOWN"
HISTORY_COLUMNS = ", ".join(consent_tables.HISTORY_COLUMNS)
# Said of the consent facts of an erased subject: their references stand, their bodies do not.
ERASED_BODIES = "unreadable: the subject's data keys were destroyed"


def name_of(vault: Vault, channel: str | None, identity: str) -> str:
    """The name the read tables hold a channel identity by (projections.personal)."""
    return vault.index(channel.upper() if channel else channel, identity)


def erasure(cur: Cursor, name: str) -> dict[str, Any] | None:
    """The erasure of this subject (a name), if it was erased."""
    row = cur.execute(
        "SELECT subject, erased_at, erased_by, reason, scope, forget_consent FROM erasures "
        "WHERE subject = ?",
        (name,),
    ).fetchone()
    return dict(row) if row is not None else None


# A number's consent facts in the deciding order: their event times, and the rows.
Facts = tuple[list[str], list[dict[str, Any]]]
# The same order as projections.rules.merge_consent: latest time, then opt-out, then source.
DECIDING_ORDER = (
    "event_time DESC, CASE WHEN effect = 'OPTED_OUT' THEN 1 ELSE 0 END DESC, source_ref DESC"
)


# A consent row's columns as a consent_history row gives them (a merged contact's facts).
AS_CONSENT = {
    "state": "t.effect",
    "since": "t.event_time",
    "is_opt_out": "CASE WHEN t.effect = 'OPTED_OUT' THEN 1 ELSE 0 END",
}


def facts_about(
    table: str,
    columns: str,
    channel: str,
    identity: str,
    where: str = "",
    params: Sequence[Any] = (),
    merged_by: str | None = None,
    applies_from: bool = False,
) -> tuple[str, list[Any]]:
    """SQL selecting `columns` of the rows of `table` (consent or consent_history) about this
    channel and identity that also meet `where`: the number's own, and those naming no number
    (the contact's whole channel) of every contact seen with it (contact_identities): two
    indexed lookups, not an OR that scans the channel.

    And, as facts, those of every contact merged with one seen with it (`merged_by`: merged
    by then): an opt-out whenever it was, or a fact dated at or after the merge, so a merge
    never lifts an opt-out. A contact-wide suppression an erasure dropped no longer counts.
    With `applies_from`, each row says from when it counts (None: always)."""
    picked = ", ".join(f"t.{c.strip()}" for c in columns.split(","))
    extra = f" AND {where}" if where else ""
    since = ", NULL AS applies_from" if applies_from else ""
    sql = (
        f"SELECT {picked}{since} FROM {table} t WHERE t.channel = ? AND t.identity = ?{extra} "
        f"UNION ALL SELECT {picked}{since} FROM contact_identities l JOIN {table} t ON "
        "t.project_id = l.project_id AND t.contact_id = l.contact_id AND t.channel = l.channel "
        f"AND t.identity = '' WHERE l.channel = ? AND l.identity = ?{extra}"
    )
    history = table == "consent_history"
    merged = ", ".join(
        f"t.{c}" if history or c not in AS_CONSENT else f"{AS_CONSENT[c]} AS {c}"
        for c in (c.strip() for c in columns.split(","))
    )
    kept = (
        ""
        if history
        else " AND EXISTS (SELECT 1 FROM consent c WHERE c.project_id = t.project_id AND "
        "c.contact_id = t.contact_id AND c.channel = t.channel AND c.identity = '')"
    )
    by = " AND m.merged_at <= ?" if merged_by is not None else ""
    # From the number to its contacts, their merges and the merged contacts' facts, in that
    # order (SQLite keeps a CROSS JOIN's order); `t.identity || ''` is no index key, so the
    # facts are found by contact, not among every contact-wide fact of the channel.
    sql += (
        f" UNION ALL SELECT {merged}{', m.merged_at AS applies_from' if applies_from else ''} "
        "FROM contact_identities l CROSS JOIN contact_merges m CROSS JOIN consent_history t "
        "WHERE m.contact_id = l.contact_id AND m.project_id = l.project_id AND "
        "t.project_id = m.project_id AND t.contact_id = m.partner_id AND "
        "t.channel = l.channel AND t.identity || '' = '' AND "
        "l.channel = ? AND l.identity = ? AND t.effect IS NOT NULL AND "
        "(t.effect = 'OPTED_OUT' OR t.event_time >= m.merged_at)"
        f"{by}{kept}{extra if history else _as_history(extra)} "
        "AND NOT EXISTS (SELECT 1 FROM contact_identities o WHERE o.channel = l.channel AND "
        "o.identity = l.identity AND o.project_id = m.project_id AND o.contact_id = m.partner_id)"
    )
    merged_params = [channel, identity, *([merged_by] if merged_by is not None else []), *params]
    return sql, [channel, identity, *params, channel, identity, *params, *merged_params]


def _as_history(where: str) -> str:
    """A condition on consent rows (`t.`) as one on consent_history rows."""
    for column, expression in AS_CONSENT.items():
        where = where.replace(f"t.{column}", expression)
    return where


def merged_group(cur: Cursor, contact_id: str) -> list[str]:
    """A contact and those merged with it (either way, in any project): one person."""
    rows = cur.execute(
        "SELECT DISTINCT partner_id FROM contact_merges WHERE contact_id = ? ORDER BY partner_id",
        (contact_id,),
    ).fetchall()
    return [contact_id, *(row["partner_id"] for row in rows)]


def of_contact(cur: Cursor, contact_id: str) -> tuple[str, list[str]]:
    """A condition (and its values) on rows' `contact_id`: this contact's or a merged one's."""
    group = merged_group(cur, contact_id)
    return f"contact_id IN ({', '.join('?' * len(group))})", group


def merged_with(cur: Cursor, contact_id: str) -> list[dict[str, Any]]:
    """The contacts merged with this one (either way), with when, and the merge that named
    both (None: joined through other merges)."""
    return cur.execute(
        "SELECT project_id, partner_id AS contact_id, merged_at, merged_directly_at, "
        "source_ref FROM contact_merges WHERE contact_id = ? ORDER BY project_id, partner_id",
        (contact_id,),
    ).fetchall()


def history_view(row: dict[str, Any]) -> dict[str, Any]:
    trigger = {"OPT_IN": "OPT_IN", "OPT_OUT": "OPT_OUT", "KEYWORD": "MESSAGE_INBOUND"}
    return {
        **row,
        "source_trigger": trigger[row["source_kind"]],
        "callback_url": f"/callbacks/{row['source_ref']}",
    }


def state_at(
    cur: Cursor,
    channel: str,
    name: str,
    at: str,
    project_id: str | None = None,
    vault: Vault | None = None,
) -> dict[str, Any]:
    """The consent of (channel, the identity named `name`) at instant `at`, with the fact that
    decided it."""
    where, extra = "t.effect IS NOT NULL AND t.event_time <= ?", [at]
    if project_id:
        where += " AND t.project_id = ?"
        extra.append(project_id)
    sql, params = facts_about(
        "consent_history", HISTORY_COLUMNS, channel, name, where, extra, merged_by=at
    )
    row = cur.execute(
        f"SELECT * FROM ({sql}) x ORDER BY {DECIDING_ORDER} LIMIT 1", params
    ).fetchone()
    answer: dict[str, Any] = {"channel": channel, "at": at}
    if row is None:
        return {**answer, "state": UNKNOWN, "since": None, "decided_by": None}
    decided_by = open_rows(vault or plaintext(), [history_view(row)])[0]
    return {**answer, "state": row["effect"], "since": row["event_time"], "decided_by": decided_by}


def _in_project(project_id: str | None) -> tuple[str, list[str]]:
    return ("t.project_id = ?", [project_id]) if project_id else ("", [])


def check(cur: Cursor, channel: str, name: str, project_id: str | None = None) -> dict[str, Any]:
    """May we send to (channel, the identity named `name`) now?"""
    columns = "contact_id, identity, state, since, source_kind, source_ref, is_opt_out"
    sql, params = facts_about("consent", columns, channel, name, *_in_project(project_id))
    row = cur.execute(
        f"SELECT * FROM ({sql}) x ORDER BY since DESC, is_opt_out DESC, source_ref DESC LIMIT 1",
        params,
    ).fetchone()
    answer: dict[str, Any]
    if row is None:
        answer = {
            "may_send": True,
            "state": UNKNOWN,
            "reason": "no opt-in or opt-out is on record for this channel and identity",
        }
    else:
        scope = ", for the contact's whole channel" if row["identity"] == "" else ""
        opted_out = row["state"] == OPTED_OUT
        answer = {
            "may_send": not opted_out,
            "state": row["state"],
            "reason": f"{'opted out' if opted_out else 'opted in'} since {row['since']} "
            f"({row['source_kind']}{scope})",
            "since": row["since"],
            "source_ref": row["source_ref"],
        }
    # An erased number's opt-out stands; the answer says it was erased, with the erasure and
    # the references of its consent facts as proof.
    erased = erasure(cur, name)
    if erased is None:
        return answer
    columns = "source_ref, event_time"
    sql, params = facts_about("consent_history", columns, channel, name, *_in_project(project_id))
    facts = cur.execute(f"SELECT source_ref FROM ({sql}) x ORDER BY event_time, source_ref", params)
    return answer | {
        "reason": f"{answer['reason']}; erased subject: its personal data was erased at "
        f"{erased['erased_at']}",
        "erased": True,
        "erasure": {
            **{key: value for key, value in erased.items() if key != "forget_consent"},
            # "dropped": the erasure asked for the opt-out suppression to go too.
            "consent_suppression": "dropped" if erased["forget_consent"] else "kept",
            "consent_facts": [row["source_ref"] for row in facts.fetchall()],
            "raw_bodies": ERASED_BODIES,
        },
    }


def history(
    cur: Cursor,
    *,
    contact_id: str | None = None,
    project_id: str | None = None,
    channel: str | None = None,
    identity: str | None = None,
    since: str | None = None,
    until: str | None = None,
    after: tuple[str, str] | None = None,
    limit: int | None = None,
    vault: Vault | None = None,
) -> list[dict[str, Any]]:
    """Consent facts in event-time order, filtered; `after` is a keyset cursor. `contact_id`
    finds the contacts merged with it too."""
    filters: Conditions = [
        (f"{column} = ?", value)
        for column, value in (
            ("project_id", project_id),
            ("channel", channel),
            ("identity", normalise(channel, identity) if identity else None),
        )
        if value is not None
    ]
    if contact_id is not None:
        filters.append(of_contact(cur, contact_id))
    filters += time_window("event_time", since, until)
    rows = in_time_order(cur, "consent_history", HISTORY_COLUMNS, filters, after, limit)
    return open_rows(vault or plaintext(), [history_view(row) for row in rows])


def review(
    cur: Cursor,
    *,
    since: str | None = None,
    until: str | None = None,
    after: tuple[str, str] | None = None,
    limit: int | None = None,
    vault: Vault | None = None,
) -> list[dict[str, Any]]:
    """Inbound free text that reads like a request to stop, for a human to decide."""
    filters = time_window("event_time", since, until)
    columns = ", ".join(consent_tables.REVIEW_COLUMNS)
    rows = in_time_order(cur, "consent_review", columns, filters, after, limit)
    return open_rows(
        vault or plaintext(),
        [{**row, "callback_url": f"/callbacks/{row['source_ref']}"} for row in rows],
        texts=("text",),
    )


def current(cur: Cursor, contact_id: str, vault: Vault | None = None) -> list[dict[str, Any]]:
    """The consent rows of a contact and of the contacts merged with it (either way)."""
    condition, group = of_contact(cur, contact_id)
    rows = cur.execute(
        "SELECT project_id, contact_id, channel, identity, state, since, source_kind, source_ref, "
        f"identity_shown FROM consent WHERE {condition} ORDER BY channel, identity, contact_id",
        group,
    ).fetchall()
    return open_rows(vault or plaintext(), rows)


def violations(
    cur: Cursor,
    since: str | None = None,
    until: str | None = None,
    page_size: int = 2000,
    vault: Vault | None = None,
) -> Iterator[dict[str, Any]]:
    """Messages sent (any ranked report) on a channel to an identity that was OPTED_OUT when
    the message was first reported on that channel, with the opt-out fact that proves it;
    `since`/`until` bound the first report. Each number's consent facts are read once, not
    per message. Sends to an erased number still count (identity None, `"erased": true`)."""
    vault = vault or plaintext()
    facts: dict[tuple[str, str, str], Facts] = {}

    def consent_facts(project_id: str, channel: str, identity: str) -> Facts:
        key = (project_id, channel, identity)
        if key not in facts:
            sql, params = facts_about(
                "consent_history",
                HISTORY_COLUMNS,
                channel,
                identity,
                "t.project_id = ? AND t.effect IS NOT NULL",
                [project_id],
                applies_from=True,
            )
            rows = cur.execute(
                f"SELECT * FROM ({sql}) x ORDER BY event_time, "
                "CASE WHEN effect = 'OPTED_OUT' THEN 1 ELSE 0 END, source_ref",
                params,
            ).fetchall()
            facts[key] = ([row["event_time"] for row in rows], rows)
        return facts[key]

    window = time_window("first_event_time", since, until)
    order = ("first_event_time", "project_id", "message_id")
    for messages in all_pages(cur, "message_status", window, order, page_size):
        found = [v for message in messages for v in _message_violations(message, consent_facts)]
        yield from shown_violations(vault, found)


def _message_violations(
    message: dict[str, Any], consent_facts: Callable[[str, str, str], Facts]
) -> Iterator[dict[str, Any]]:
    first_on: dict[tuple[str, str], str] = {}
    for report in rules.expanded_reports(message):
        if report["status"] not in STATUS_RANK or not report["channel"] or not report["identity"]:
            continue
        key = (report["channel"], normalise(report["channel"], report["identity"]))
        first_on[key] = min(first_on.get(key, report["at"]), report["at"])
    for (channel, identity), sent_at in sorted(first_on.items(), key=lambda kv: kv[1]):
        times, rows = consent_facts(message["project_id"], channel, identity)
        # Sorted in the deciding order, so the last fact at or before sent_at is the one
        # that stood then (as state_at decides it).
        index = bisect_right(times, sent_at) - 1
        # A merged contact's fact counts only from the merge on.
        while index >= 0 and (rows[index]["applies_from"] or "") > sent_at:
            index -= 1
        if index >= 0 and rows[index]["effect"] == OPTED_OUT:
            yield {
                "project_id": message["project_id"],
                "message_id": message["message_id"],
                "contact_id": message["contact_id"],
                "metadata": message["metadata"],
                "metadata_shown": message["metadata_shown"],
                "channel": channel,
                "identity": identity,
                "identity_shown": shown_of(message).get(identity),
                "sent_at": sent_at,
                "opted_out_since": rows[index]["event_time"],
                "proof": history_view(
                    {k: v for k, v in rows[index].items() if k != "applies_from"}
                ),
            }


def shown_of(message: dict[str, Any]) -> dict[str, str | None]:
    text = message.get("identities_shown")
    found: dict[str, str | None] = orjson.loads(text) if text else {}
    return found


def shown_violations(vault: Vault, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Violations as shown: identities, metadata and proofs opened as /messages/{id} opens
    them."""
    if not found:
        return []
    proofs = open_rows(vault, [v["proof"] for v in found])
    shown = open_metadata(vault, open_rows(vault, found))
    return [{**v, "proof": proof} for v, proof in zip(shown, proofs, strict=True)]
