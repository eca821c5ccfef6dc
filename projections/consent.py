"""The consent projection: consent (current state), consent_history (every fact),
consent_review (inbound free text that reads like a revocation, for a human to decide),
contact_identities, contact_merges and erasures (an erased subject's opt-out still stands
unless the erasure asked for the suppression to go too: `forget_consent`)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from domain.identity import normalise
from domain.keywords import Reading
from projections import rules
from projections.log_reader import (
    CONSENT_REPORTED,
    CONTACT_DELETED,
    CONTACT_MERGED,
    ERASED,
    INBOUND_RECEIVED,
    REPORTS,
    LoggedEvent,
)
from projections.personal import IDENTITY_SUBJECT, identity_name, shown_identity, shown_text
from store.backend import ROWLESS, Cursor, select_by_keys, upsert
from store.vault import Vault, plaintext

NAME = "consent"
# Delivery reports only for contact_identities: the numbers a contact was sent to.
TOPICS = frozenset(
    {CONSENT_REPORTED, INBOUND_RECEIVED, *REPORTS, ERASED, CONTACT_MERGED, CONTACT_DELETED}
)
TABLES = (
    "consent",
    "consent_history",
    "consent_review",
    "contact_identities",
    "erasures",
    "contact_merges",
)
# A contact's merge or deletion: no consent fact, but numbers that were the contact's.
CONTACT_EVENTS = frozenset({CONTACT_MERGED, CONTACT_DELETED})
CONSENT_COLUMNS = (
    "project_id",
    "contact_id",
    "channel",
    "identity",
    "state",
    "since",
    "source_kind",
    "source_ref",
    "is_opt_out",
    "identity_shown",
)
CONSENT_KEY = ("project_id", "contact_id", "channel", "identity")
HISTORY_COLUMNS = (
    "project_id",
    "contact_id",
    "channel",
    "identity",
    "event_time",
    "accepted_time",
    "fact",
    "effect",
    "source_kind",
    "keyword",
    "request_id",
    "inbound_message_id",
    "source_ref",
    "identity_shown",
)

REVIEW_COLUMNS = (
    "project_id",
    "contact_id",
    "channel",
    "identity",
    "text",
    "event_time",
    "inbound_message_id",
    "source_ref",
    "matched",
    "identity_shown",
)
ERASURE_COLUMNS = (
    "subject",
    "erased_at",
    "erased_by",
    "reason",
    "scope",
    "channel",
    "project_id",
    "erasure_id",
    "forget_consent",
)


def schema(g: int) -> list[str]:
    return [
        f"""CREATE TABLE consent_g{g} (
            project_id TEXT NOT NULL, contact_id TEXT NOT NULL, channel TEXT NOT NULL,
            identity TEXT NOT NULL, state TEXT NOT NULL, since TEXT NOT NULL,
            source_kind TEXT NOT NULL, source_ref TEXT NOT NULL, is_opt_out INTEGER NOT NULL,
            identity_shown TEXT, PRIMARY KEY (project_id, contact_id, channel, identity))""",
        f"CREATE INDEX ix_c_g{g}_identity ON consent_g{g} (channel, identity, since)",
        f"""CREATE TABLE consent_history_g{g} (
            project_id TEXT NOT NULL, contact_id TEXT NOT NULL, channel TEXT NOT NULL,
            identity TEXT NOT NULL, event_time TEXT NOT NULL, accepted_time TEXT,
            fact TEXT NOT NULL, effect TEXT, source_kind TEXT NOT NULL, keyword TEXT,
            request_id TEXT, inbound_message_id TEXT, source_ref TEXT NOT NULL PRIMARY KEY,
            identity_shown TEXT)""",
        f"CREATE INDEX ix_ch_g{g}_identity ON consent_history_g{g} (channel, identity, event_time)",
        f"CREATE INDEX ix_ch_g{g}_contact ON consent_history_g{g} (contact_id, event_time)",
        f"CREATE INDEX ix_ch_g{g}_time ON consent_history_g{g} (event_time)",
        # Which numbers a contact was seen with, so an opt-out naming only the contact answers
        # for those numbers too. All of it key (SQLite keeps it in the key's tree alone),
        # leading with the number, which the consent check looks up.
        f"""CREATE TABLE contact_identities_g{g} (
            project_id TEXT NOT NULL, contact_id TEXT NOT NULL, channel TEXT NOT NULL,
            identity TEXT NOT NULL, identity_shown TEXT,
            PRIMARY KEY (channel, identity, project_id, contact_id)){ROWLESS}""",
        f"CREATE INDEX ix_ci_g{g}_contact ON contact_identities_g{g} (project_id, contact_id)",
        # Contacts Sinch merged into one person: a row each way for every two contacts of a
        # merged group, `merged_at` when they became one, `merged_directly_at` when a merge
        # named both. Joined with the facts when read, so they may arrive in any order.
        f"""CREATE TABLE contact_merges_g{g} (
            contact_id TEXT NOT NULL, project_id TEXT NOT NULL, partner_id TEXT NOT NULL,
            merged_at TEXT NOT NULL, merged_directly_at TEXT, source_ref TEXT,
            PRIMARY KEY (contact_id, project_id, partner_id))""",
        f"""CREATE TABLE consent_review_g{g} (
            project_id TEXT NOT NULL, contact_id TEXT NOT NULL, channel TEXT NOT NULL,
            identity TEXT NOT NULL, text TEXT NOT NULL, event_time TEXT NOT NULL,
            inbound_message_id TEXT, source_ref TEXT NOT NULL PRIMARY KEY,
            matched TEXT NOT NULL, identity_shown TEXT)""",
        f"CREATE INDEX ix_cr_g{g}_time ON consent_review_g{g} (event_time, source_ref)",
        # One row per erased subject (a blind index).
        f"""CREATE TABLE erasures_g{g} (
            subject TEXT NOT NULL PRIMARY KEY, erased_at TEXT NOT NULL, erased_by TEXT NOT NULL,
            reason TEXT NOT NULL, scope TEXT NOT NULL, channel TEXT, project_id TEXT,
            erasure_id TEXT NOT NULL, forget_consent INTEGER NOT NULL)""",
    ]


def apply(
    cur: Cursor,
    g: int,
    events: list[LoggedEvent],
    keywords: rules.Keywords,
    vault: Vault | None = None,
) -> None:
    """A page of events. An erasure applies where it stands in the log: the facts before it
    first (an erasure that forgets consent drops what they decided), those after it later."""
    vault = vault if vault is not None else plaintext()
    run: list[LoggedEvent] = []
    for event in events:
        if event.topic == ERASED:
            _apply_facts(cur, g, run, keywords, vault)
            run = []
            _apply_erasure(cur, g, event, vault)
        else:
            run.append(event)
    _apply_facts(cur, g, run, keywords, vault)


def _apply_erasure(cur: Cursor, g: int, event: LoggedEvent, vault: Vault) -> None:
    """Records an erasure per subject; with `forget_consent`, the subjects' current consent
    goes too. Their consent history (the facts' public part) stays."""
    rows = erasure_rows(event)
    cur.executemany(
        f"INSERT INTO erasures_g{g} ({', '.join(ERASURE_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(ERASURE_COLUMNS))}) ON CONFLICT (subject) DO UPDATE SET "
        "forget_consent = excluded.forget_consent WHERE excluded.forget_consent = 1",
        rows,
    )
    subjects = [row[0] for row in rows]
    # A merge's copy of a number is sealed under the merge's key, not the number's: dropped
    # with the number (the other copies read as erased with their events' keys anyway).
    _drop_shown(cur, g, subjects)
    if not event.state.get("forget_consent"):
        return
    for subject in subjects:
        cur.execute(f"DELETE FROM consent_g{g} WHERE identity = ?", (subject,))
    # A contact's own subject: its consent for a whole channel (no identity).
    project_id = event.state.get("project_id")
    if project_id and any(not s.startswith(IDENTITY_SUBJECT) for s in subjects):
        contacts = cur.execute(
            f"SELECT DISTINCT contact_id FROM consent_g{g} WHERE project_id = ? AND identity = ''",
            (project_id,),
        ).fetchall()
        for row in contacts:
            if vault.contact_subject(project_id, row["contact_id"]) in subjects:
                cur.execute(
                    f"DELETE FROM consent_g{g} WHERE project_id = ? AND contact_id = ? "
                    "AND identity = ''",
                    (project_id, row["contact_id"]),
                )


def _apply_facts(
    cur: Cursor, g: int, events: list[LoggedEvent], keywords: rules.Keywords, vault: Vault
) -> None:
    if not events:
        return
    history: list[dict[str, Any]] = []
    links: dict[tuple[str, str, str, str], str | None] = {}
    review: list[tuple[Any, ...]] = []
    merges: list[tuple[str, str, str, str, str]] = []
    merged_names: set[str] = set()
    for event in events:
        state = event.state
        if event.topic in CONTACT_EVENTS:
            # The numbers Sinch says were each contact's, by name, with a copy to show under
            # the event's key.
            numbers = state.get("numbers") or []
            for i, named in enumerate(state.get("identities") or []):
                link = (state["project_id"], named["contact_id"], named["channel"], named["name"])
                number = numbers[i] if i < len(numbers) else None
                shown = normalise(named["channel"], number) if isinstance(number, str) else None
                links.setdefault(link, vault.seal_text(state.get("_key"), shown))
                merged_names.add(named["name"])
            if event.topic == CONTACT_MERGED:
                merges.append(
                    (
                        state["project_id"],
                        state["preserved_contact_id"],
                        state["deleted_contact_id"],
                        rules.effective_time(state),
                        f"{event.originator_id}/{state['dedupe_key']}",
                    )
                )
            continue
        name = identity_name(state, vault)
        if state.get("contact_id") and name and state.get("channel"):
            link = (state["project_id"], state["contact_id"], state["channel"], name)
            # The latest event's: the likeliest to be readable (retention shreds the oldest).
            links[link] = shown_identity(event, vault)
        if event.topic in REPORTS:
            continue
        inbound = event.topic != CONSENT_REPORTED
        reading = inbound_reading(state, keywords) if inbound else rules.NOTHING
        source_ref = f"{event.originator_id}/{state['dedupe_key']}"
        fact = rules.consent_fact(
            state["project_id"],
            state["contact_key"],
            "InboundMessageReceived" if inbound else "ConsentReported",
            state,
            source_ref,
            reading,
            name or "",
        )
        if fact is not None:
            fact["identity_shown"] = shown_identity(event, vault) if name else ""
            history.append(fact)
        elif inbound and reading.review is not None:
            review.append(review_row(event, source_ref, reading.review, vault))
    cur.executemany(
        f"INSERT INTO contact_identities_g{g} "
        "(project_id, contact_id, channel, identity, identity_shown) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (project_id, contact_id, channel, identity) DO UPDATE SET "
        "identity_shown = coalesce(excluded.identity_shown, "
        f"contact_identities_g{g}.identity_shown)",
        [(*link, shown) for link, shown in sorted(links.items())],
    )
    if vault.encrypted and merged_names:
        # A number erased before this merge was projected (a replay) is not shown again.
        erased = select_by_keys(
            cur, f"erasures_g{g}", ("subject",), ("subject",), [(n,) for n in merged_names]
        )
        _drop_shown(cur, g, [row["subject"] for row in erased])
    for merge in sorted(merges):
        _apply_merge(cur, g, *merge)
    cur.executemany(
        f"INSERT INTO consent_review_g{g} ({', '.join(REVIEW_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(REVIEW_COLUMNS))}) ON CONFLICT (source_ref) DO NOTHING",
        review,
    )
    if not history:
        return
    cur.executemany(
        f"INSERT INTO consent_history_g{g} ({', '.join(HISTORY_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(HISTORY_COLUMNS))}) ON CONFLICT (source_ref) DO NOTHING",
        [tuple(f[c] for c in HISTORY_COLUMNS) for f in history],
    )
    candidates: dict[tuple[str, ...], Any] = {}
    for fact in history:
        if fact["effect"] is None:  # a failed attempt: history only
            continue
        row = rules.consent_row(fact)
        key = tuple(row[c] for c in CONSENT_KEY)
        candidates[key] = rules.merge_consent(candidates.get(key), row)
    for current in select_by_keys(
        cur, f"consent_g{g}", CONSENT_COLUMNS, CONSENT_KEY, list(candidates)
    ):
        key = tuple(current[c] for c in CONSENT_KEY)
        candidates[key] = rules.merge_consent(current, candidates[key])
    upsert(
        cur,
        f"consent_g{g}",
        CONSENT_COLUMNS,
        CONSENT_KEY,
        [tuple(row[c] for c in CONSENT_COLUMNS) for row in candidates.values()],
    )


def _drop_shown(cur: Cursor, g: int, subjects: list[str]) -> None:
    for subject in subjects:
        cur.execute(
            f"UPDATE contact_identities_g{g} SET identity_shown = NULL WHERE identity = ?",
            (subject,),
        )


def inbound_reading(state: Mapping[str, Any], keywords: rules.Keywords) -> Reading:
    """What an inbound message's text says, read with `keywords`."""
    reading = keywords.read(state.get("text"))
    if state.get("erased") and isinstance(state.get("reading"), dict):
        # The text is erased: what it said as it arrived (store.envelope) still stands.
        reading = Reading(**state["reading"])
    return reading


def _apply_merge(
    cur: Cursor, g: int, project_id: str, preserved: str, deleted: str, at: str, ref: str
) -> None:
    """Records a merge and makes again the rows of the group it joins (`rules.merged_times`).
    Rows are only added and times only move earlier, so any order gives the same rows."""
    if preserved == deleted:
        return
    table = f"contact_merges_g{g}"
    cur.executemany(
        f"INSERT INTO {table} (contact_id, project_id, partner_id, merged_at, "
        "merged_directly_at, source_ref) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (contact_id, project_id, partner_id) DO UPDATE SET "
        "merged_directly_at = excluded.merged_directly_at, source_ref = excluded.source_ref "
        f"WHERE {table}.merged_directly_at IS NULL "
        f"OR excluded.merged_directly_at < {table}.merged_directly_at",
        [(a, project_id, b, at, at, ref) for a, b in ((preserved, deleted), (deleted, preserved))],
    )
    # The group's merges that named two of its contacts, found from `preserved` outwards.
    direct: dict[tuple[str, str], str] = {}
    seen, todo = {preserved}, [preserved]
    while todo:
        rows = cur.execute(
            f"SELECT contact_id, partner_id, merged_directly_at FROM {table} "
            "WHERE contact_id = ? AND project_id = ? AND merged_directly_at IS NOT NULL",
            (todo.pop(), project_id),
        ).fetchall()
        for row in rows:
            direct[row["contact_id"], row["partner_id"]] = row["merged_directly_at"]
            if row["partner_id"] not in seen:
                seen.add(row["partner_id"])
                todo.append(row["partner_id"])
    cur.executemany(
        f"INSERT INTO {table} (contact_id, project_id, partner_id, merged_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (contact_id, project_id, partner_id) DO UPDATE SET "
        f"merged_at = excluded.merged_at WHERE excluded.merged_at < {table}.merged_at",
        [(a, project_id, b, t) for (a, b), t in sorted(rules.merged_times(direct).items())],
    )


def review_row(
    event: LoggedEvent, source_ref: str, matched: str, vault: Vault | None = None
) -> tuple[Any, ...]:
    """A consent_review row (in REVIEW_COLUMNS order) for an inbound message that reads like a
    request to stop by the rule `matched`."""
    vault = vault if vault is not None else plaintext()
    state = event.state
    return (
        state["project_id"],
        state["contact_key"],
        state["channel"],
        identity_name(state, vault) or "",
        # Erased before this row was made (a replay): "" (the column is NOT NULL).
        shown_text(event, vault) or "",
        rules.effective_time(state),
        state.get("message_id"),
        source_ref,
        matched,
        shown_identity(event, vault),
    )


def erasure_rows(event: LoggedEvent) -> list[tuple[Any, ...]]:
    """The erasures rows (in ERASURE_COLUMNS order) of an Erasure.Erased event, one a subject."""
    state = event.state
    return [
        (
            subject,
            _time_of(state.get("erased_at"), event),
            str(state.get("by") or ""),
            str(state.get("reason") or ""),
            str(state.get("scope") or ""),
            state.get("channel"),
            state.get("project_id"),
            event.originator_id,
            int(bool(state.get("forget_consent"))),
        )
        for subject in state.get("subjects") or []
        if isinstance(subject, str) and subject
    ]


def _time_of(value: Any, event: LoggedEvent) -> str:
    """An erasure's time in the tables' form, else the event's own timestamp."""
    for candidate in (value, event.state.get("timestamp")):
        found = None
        with contextlib.suppress(ValueError, TypeError, OverflowError):
            found = rules.stored_time(candidate)
        if found:
            return found
    return str(value or "")
