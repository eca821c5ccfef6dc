"""An evidence bundle for one subject (a channel and a number): its consent facts and the
messages sent to it, from the read tables; the raw callbacks behind them and their stored rows
and seals, from the log (store.evidence). The format: README, "Evidence".

The number is looked up by its name (projections.personal); what was erased shows as None with
`"erased": true`, and the subject's erasure, if any, is part of the bundle."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from domain.identity import normalise
from projections import rules
from projections.personal import open_rows
from projections.read_model import callbacks, consent, messages
from store import evidence
from store.db import Cursor, Database, time_window
from store.ledger import Ledger
from store.vault import Vault, plaintext


def consent_facts(
    cur: Cursor,
    channel: str,
    identity: str,
    since: str | None,
    until: str | None,
    vault: Vault | None = None,
) -> list[dict[str, Any]]:
    """The number's consent facts (`identity`: its name), and those naming only its contact
    (the whole channel), in event-time order."""
    window = time_window("t.event_time", since, until)
    sql, params = consent.facts_about(
        "consent_history", consent.HISTORY_COLUMNS, channel, identity,
        " AND ".join(c for c, _ in window), [v for _, v in window],
    )  # fmt: skip
    rows = cur.execute(sql + " ORDER BY event_time, source_ref", params).fetchall()
    return open_rows(vault or plaintext(), [consent.history_view(dict(row)) for row in rows])


def sent_messages(
    cur: Cursor,
    channel: str,
    identity: str,
    since: str | None,
    until: str | None,
    vault: Vault | None = None,
) -> list[dict[str, Any]]:
    """Messages with a report to this channel and number in the window; each timeline keeps
    only those reports. A report's number is not indexed (it is inside `reports`, and a
    report may name no contact), so the candidates are the messages now on that channel or
    of a contact seen with the number, within the window, and their reports are filtered
    here: a scan of the channel's messages, acceptable for an export made now and then."""
    window = time_window("first_event_time", None, until)
    window += time_window("last_event_time", since, None)
    bounds = "".join(f" AND {c}" for c, _ in window)
    rows = cur.execute(
        "SELECT * FROM message_status WHERE (channel = ? OR contact_id IN "
        "(SELECT contact_id FROM contact_identities WHERE channel = ? AND identity = ?))"
        f"{bounds} ORDER BY first_event_time, project_id, message_id",
        [channel, channel, identity, *(v for _, v in window)],
    ).fetchall()
    found = []
    for row in rows:
        view = messages.message_view(row, with_timeline=True, vault=vault)
        # The timeline is the reports in order: their names pick the entries.
        names = [r["identity"] for r in rules.expanded_reports(row)]
        view["timeline"] = [
            r for r, name in zip(view["timeline"], names, strict=True)
            if r["channel"] == channel and name == identity
            and (since is None or r["event_time"] >= since)
            and (until is None or r["event_time"] < until)
        ]  # fmt: skip
        if view["timeline"]:
            found.append(view)
    return found


def bundle(
    ledger: Ledger,
    store_db: Database,
    read_db: Database,
    channel: str,
    identity: str,
    since: str | None = None,
    until: str | None = None,
) -> dict[str, Any]:
    channel, identity = channel.upper(), normalise(channel, identity)
    vault = ledger.vault
    name = vault.index(channel, identity)
    with read_db.read() as cur:
        facts = consent_facts(cur, channel, name, since, until, vault)
        sent = sent_messages(cur, channel, name, since, until, vault)
        erased = consent.erasure(cur, name)
    events: list[dict[str, Any]] = []
    stored: list[evidence.StoredEvent] = []
    for reference in evidence.cited({"consent_facts": facts, "messages": sent}):
        row = evidence.stored_event(ledger, store_db, reference)
        if row is None:
            continue  # the check names a cited reference without its event
        stored.append(row)
        events.append(
            {"reference": reference, **row.as_json(),
             "callback": callbacks.callback(ledger, reference)}
        )  # fmt: skip
    events.sort(key=lambda e: int(e["notification_id"]))
    head, seals = evidence.chain_segment(store_db, ledger.events_table, stored)
    return {
        "format": evidence.FORMAT,
        "version": evidence.VERSION,
        "exported_at": rules.iso(datetime.now(UTC).isoformat()),
        "subject": {"channel": channel, "identity": identity, "since": since, "until": until}
        | ({"erasure": erased} if erased else {}),
        "head": head,
        "consent_facts": facts,
        "messages": sent,
        "events": events,
        "seals": seals,
    }
