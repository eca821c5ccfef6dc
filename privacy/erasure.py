"""Erasure: a channel identity's or a contact's personal data made unreadable everywhere at once
by destroying its data keys (store.vault, store.data_keys), and the request recorded as an
`Erasure.Erased` fact (who, when, why, which blind indexes; never the data). The events stay,
sealed, with their public parts: the log is append-only and its seal chain must keep verifying."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from domain.callbacks import MAX_IDENTITY
from domain.contact import Contact
from domain.erasure import Erasure
from domain.identity import normalise
from projections.read_model.consent import merged_group
from store import envelope
from store.backend import Database
from store.data_keys import SQLKeyStore
from store.ledger import Ledger
from store.mapper import FastMapper

log = logging.getLogger("callback_ledger")

# The reason is kept in the log for ever, in the clear: a short note, not a case file.
MAX_REASON = 500
MAX_NAME = 200


class ErasureRefused(ValueError):
    """The request cannot be carried out as asked (said to the caller as it is)."""


@dataclass(frozen=True)
class ErasureReport:
    """What an erasure did (`subjects`: blind indexes; `erasure_id`: the fact's stream)."""

    erasure_id: str
    scope: str
    subjects: list[str]
    keys_destroyed: int
    erased_at: str
    by: str
    reason: str
    consent_suppression: str  # "kept" or "dropped"
    # Set when the keys were deleted but the database could not yet drop every older copy of
    # their rows (a SQLite WAL that other connections were reading): what to do about it.
    purge_pending: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(name: str, value: str | None, limit: int) -> str:
    text = (value or "").strip()
    if not text:
        raise ErasureRefused(f"{name} is required")
    if len(text) > limit:
        raise ErasureRefused(f"{name} must be at most {limit} characters")
    if "\x00" in text:
        raise ErasureRefused(f"{name} must not contain NUL")
    return text


def _encrypted(ledger: Ledger) -> SQLKeyStore:
    keys = ledger.vault.keys
    if not ledger.vault.encrypted or not isinstance(keys, SQLKeyStore):
        raise ErasureRefused(
            "this store holds its personal data in plaintext (it was written without "
            "LEDGER_MASTER_KEY / LEDGER_INDEX_KEY), so it cannot be erased by destroying keys: "
            "copy it into an encrypted store with `callback-ledger migrate --to URL` first "
            "(README: Personal data)"
        )
    return keys


def identity_subjects(ledger: Ledger, channel: str, identity: str) -> list[str]:
    """The subject of one channel identity: its blind index."""
    channel = _text("channel", channel, 64).upper()
    identity = _text("identity", identity, MAX_IDENTITY)
    if not normalise(channel, identity).strip():
        raise ErasureRefused("identity holds nothing once normalised")
    return [ledger.vault.index(channel, identity)]


def contact_subjects(
    ledger: Ledger, project_id: str, contact_id: str, db: Database | None = None
) -> list[str]:
    """A contact's own subject, every subject its stream's events name, and, with the read
    tables (`db`), every identity its messages went to; the same for every contact merged
    with it (Sinch merged them because they are one person)."""
    project_id = _text("project", project_id, MAX_NAME)
    contact_id = _text("contact", contact_id, MAX_NAME)
    contacts = [contact_id]
    if db is not None:
        with db.read() as cur:
            contacts = merged_group(cur, contact_id)
    found = (s for one in contacts for s in _one_contact(ledger, project_id, one, db))
    return list(dict.fromkeys(found))  # each once, in the order found


def _one_contact(
    ledger: Ledger, project_id: str, contact_id: str, db: Database | None
) -> list[str]:
    subjects = [ledger.vault.contact_subject(project_id, contact_id)]
    mapper = ledger.mapper
    assert isinstance(mapper, FastMapper) and mapper.zstd is not None
    stream = Contact.create_id(project_id, contact_id)
    for stored in ledger.recorder.select_events(stream):
        if envelope.is_sealed(stored.state):
            public = orjson.loads(envelope.public_json(stored.state, mapper.zstd))
            if isinstance(subject := public.get("subject"), str):
                subjects.append(subject)
    if db is not None:
        with db.read() as cur:
            rows = cur.execute(
                "SELECT DISTINCT channel, identity FROM contact_identities "
                "WHERE project_id = ? AND contact_id = ? ORDER BY channel, identity",
                (project_id, contact_id),
            ).fetchall()
        for row in rows:
            # A blind index, or an identity in tables projected before they kept indexes.
            identity = row["identity"]
            if not identity.startswith("b."):
                identity = ledger.vault.index(row["channel"], identity)
            subjects.append(identity)
    return subjects


def erase(
    ledger: Ledger,
    *,
    channel: str | None = None,
    identity: str | None = None,
    project_id: str | None = None,
    contact_id: str | None = None,
    by: str,
    reason: str,
    forget_consent: bool = False,
    db: Database | None = None,
) -> ErasureReport:
    """Erases one channel identity or one contact (`db`: the read tables). The keys go first:
    if recording the fact then fails, the data is already unreadable and a second request
    records it (with 0 keys destroyed)."""
    keys = _encrypted(ledger)
    by = _text("by", by, MAX_NAME)
    reason = _text("reason", reason, MAX_REASON)
    if contact_id is not None and (identity is not None or channel is not None):
        raise ErasureRefused("name either a channel identity or a contact, not both")
    if contact_id is not None:
        scope = "contact"
        subjects = contact_subjects(ledger, project_id or "", contact_id, db)
    elif identity is not None or channel is not None:
        scope = "identity"
        subjects = identity_subjects(ledger, channel or "", identity or "")
    else:
        raise ErasureRefused("name a channel identity (channel and identity) or a contact")
    held = keys.subjects(subjects)
    purge_pending = None
    try:
        destroyed = keys.destroy(subjects)
    except Exception as exc:
        if keys.subjects(subjects):  # not deleted: nothing happened, said as it is
            raise
        # Deleted (unreadable from now on), but an older copy may linger until the database
        # recycles it: the fact is recorded all the same, and the caller told.
        destroyed = held
        purge_pending = (
            f"the keys are deleted, but the database could not drop every older copy of them "
            f"yet ({exc}); run the same erasure again when the store is quiet to finish that"
        )
        log.warning("erasure: keys deleted, purge pending: %s", exc)
    ledger.vault.forget(subjects)
    erased_at = datetime.now(UTC).isoformat()
    fact = Erasure(
        subjects=subjects,
        scope=scope,
        channel=channel.upper() if scope == "identity" and channel else None,
        project_id=project_id if scope == "contact" else None,
        by=by,
        reason=reason,
        erased_at=erased_at,
        keys_destroyed=destroyed,
        forget_consent=forget_consent,
    )
    ledger.save(fact)
    # Counts and the fact's id only: the subjects are blind indexes, but a log line is no
    # place to collect them.
    log.info(
        "erasure %s: %s scope, %d subject(s), %d key(s) destroyed, by %s",
        fact.id,
        scope,
        len(subjects),
        destroyed,
        by,
    )
    suppression = "dropped" if forget_consent else "kept"
    return ErasureReport(
        str(fact.id), scope, subjects, destroyed, erased_at, by, reason, suppression, purge_pending
    )
