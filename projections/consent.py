"""The consent projection: consent (current state), consent_history (every fact) and
consent_review (inbound free text that reads like a revocation, for a human to decide)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.callbacks import normalise_identity
from projections import rules
from projections.log_reader import CONSENT_REPORTED, INBOUND_RECEIVED, REPORTS, LoggedEvent
from store.db import Cursor, select_by_keys, upsert

NAME = "consent"
# Delivery reports only for contact_identities: the numbers a contact was sent to.
TOPICS = frozenset({CONSENT_REPORTED, INBOUND_RECEIVED, *REPORTS})
TABLES = ("consent", "consent_history", "consent_review", "contact_identities")

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
)


def schema(g: int) -> list[str]:
    return [
        f"""CREATE TABLE consent_g{g} (
            project_id TEXT NOT NULL, contact_id TEXT NOT NULL, channel TEXT NOT NULL,
            identity TEXT NOT NULL, state TEXT NOT NULL, since TEXT NOT NULL,
            source_kind TEXT NOT NULL, source_ref TEXT NOT NULL, is_opt_out INTEGER NOT NULL,
            PRIMARY KEY (project_id, contact_id, channel, identity))""",
        f"CREATE INDEX ix_c_g{g}_identity ON consent_g{g} (channel, identity, since)",
        f"""CREATE TABLE consent_history_g{g} (
            project_id TEXT NOT NULL, contact_id TEXT NOT NULL, channel TEXT NOT NULL,
            identity TEXT NOT NULL, event_time TEXT NOT NULL, accepted_time TEXT,
            fact TEXT NOT NULL, effect TEXT, source_kind TEXT NOT NULL, keyword TEXT,
            request_id TEXT, inbound_message_id TEXT, source_ref TEXT NOT NULL PRIMARY KEY)""",
        f"CREATE INDEX ix_ch_g{g}_identity ON consent_history_g{g} (channel, identity, event_time)",
        f"CREATE INDEX ix_ch_g{g}_contact ON consent_history_g{g} (contact_id, event_time)",
        f"CREATE INDEX ix_ch_g{g}_time ON consent_history_g{g} (event_time)",
        # Which numbers a contact was seen with, so an opt-out naming only the contact (no
        # identity: consent for its whole channel) answers for those numbers too.
        f"""CREATE TABLE contact_identities_g{g} (
            project_id TEXT NOT NULL, contact_id TEXT NOT NULL, channel TEXT NOT NULL,
            identity TEXT NOT NULL, PRIMARY KEY (project_id, contact_id, channel, identity))""",
        f"CREATE INDEX ix_ci_g{g}_identity ON contact_identities_g{g} (channel, identity)",
        f"""CREATE TABLE consent_review_g{g} (
            project_id TEXT NOT NULL, contact_id TEXT NOT NULL, channel TEXT NOT NULL,
            identity TEXT NOT NULL, text TEXT NOT NULL, event_time TEXT NOT NULL,
            inbound_message_id TEXT, source_ref TEXT NOT NULL PRIMARY KEY,
            matched TEXT NOT NULL)""",
        f"CREATE INDEX ix_cr_g{g}_time ON consent_review_g{g} (event_time, source_ref)",
    ]


def apply(cur: Cursor, g: int, events: list[LoggedEvent], keywords: rules.Keywords) -> None:
    history: list[dict[str, Any]] = []
    links: set[tuple[str, str, str, str]] = set()
    review: list[tuple[Any, ...]] = []
    for event in events:
        state = event.state
        if state.get("contact_id") and state.get("identity") and state.get("channel"):
            links.add(
                (
                    state["project_id"],
                    state["contact_id"],
                    state["channel"],
                    normalise_identity(state["identity"]),
                )
            )
        if event.topic in REPORTS:
            continue
        inbound = event.topic != CONSENT_REPORTED
        # Read once: the keyword, its normalised form and the review rule come from one pass.
        reading = keywords.read(state.get("text")) if inbound else rules.NOTHING
        source_ref = f"{event.originator_id}/{state['dedupe_key']}"
        fact = rules.consent_fact(
            state["project_id"],
            state["contact_key"],
            "InboundMessageReceived" if inbound else "ConsentReported",
            state,
            source_ref,
            reading,
        )
        if fact is not None:
            history.append(fact)
        elif inbound and reading.review is not None:
            review.append(review_row(state, source_ref, reading.review))
    cur.executemany(
        f"INSERT INTO contact_identities_g{g} (project_id, contact_id, channel, identity) "
        "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        sorted(links),
    )
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


def review_row(state: Mapping[str, Any], source_ref: str, matched: str) -> tuple[Any, ...]:
    """A consent_review row (in REVIEW_COLUMNS order) for an inbound message that is not a
    keyword but reads like a request to stop, by the rule `matched`."""
    return (
        state["project_id"],
        state["contact_key"],
        state["channel"],
        normalise_identity(state["identity"]),
        state["text"],
        rules.effective_time(state),
        state.get("message_id"),
        source_ref,
        matched,
    )
