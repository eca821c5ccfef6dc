"""`callback-ledger migrate --to URL`: a store written without encryption copied into a new,
encrypted one. Its events cannot be encrypted where they are (the log is append-only and
sealed, and an encrypted store's stream names hold blind indexes), so every stored callback
is recorded again, in log order, with its original receipt: the catch-all's and the
quarantine's entries as such, a resolution after its entry, everything else through the
webhook's decisions. Then the read tables are built and the API keys copied."""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from eventsourcing.utils import get_topic

from access.api_keys import KEYS_TABLE, KeyStore
from domain.callbacks import (
    InvalidCallback,
    QuarantinedCallback,
    Receipt,
    UnrecognisedCallback,
    loads_body,
)
from service.runtime import Runtime
from service.settings import Settings
from store.commands import quarantine_command, unrecognised_command
from store.ledger import Ledger
from store.quarantine_resolution import resolve_command

log = logging.getLogger("callback_ledger")

CATCH_ALL = get_topic(UnrecognisedCallback.Received)  # type: ignore[attr-defined]
QUARANTINED = get_topic(QuarantinedCallback.Quarantined)  # type: ignore[attr-defined]
RESOLVED = get_topic(QuarantinedCallback.Resolved)  # type: ignore[attr-defined]
KEY_COLUMNS = (
    "name",
    "key_hash",
    "scopes",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
)


class MigrationRefused(ValueError):
    """The target is not a place to migrate to (not empty, or not encrypted)."""


def _events(ledger: Ledger, page: int = 1000) -> Iterator[tuple[str, Any]]:
    """(topic, domain event) of every stored event, in log order."""
    after = 0
    while True:
        notifications = ledger.recorder.select_notifications(
            start=after, limit=page, inclusive_of_start=False
        )
        if not notifications:
            return
        after = notifications[-1].id
        for notification in notifications:
            yield notification.topic, ledger.mapper.to_domain_event(notification)


def migrate(settings: Settings, url: str) -> dict[str, int]:
    """Copies the store of `settings` into the empty store at `url`; counts of what was done."""
    # The same keys (a new SQLite target without keys configured gets its key file beside it).
    target = dataclasses.replace(settings, database_url=url)
    if url.strip() == settings.database_url:
        raise MigrationRefused("--to names the store being migrated: give a new, empty store")
    if target.secrets() is None:
        raise MigrationRefused(
            "no keys for the new store: set LEDGER_MASTER_KEY and LEDGER_INDEX_KEY "
            "(`callback-ledger secrets generate`), or LEDGER_KEY_FILE"
        )
    source_runtime, target_runtime = Runtime(settings), Runtime(target)
    try:
        source, into = source_runtime.ledger(), target_runtime.ledger()
        if into.ping():
            raise MigrationRefused(f"the store at --to already holds {into.ping()} events")
        if not into.vault.encrypted:
            raise MigrationRefused("the store at --to is not encrypted (it holds plaintext data)")
        counts = _copy(source, into)
        counts["pages_projected"] = target_runtime.projector().catch_up()
        counts["api_keys"] = _copy_keys(source_runtime, target_runtime)
        return counts
    finally:
        source_runtime.close()
        target_runtime.close()


def _copy(source: Ledger, into: Ledger) -> dict[str, int]:
    counts = dict.fromkeys(
        (
            "events_read",
            "accepted",
            "duplicate",
            "catch_all",
            "quarantined",
            "resolutions",
            "unreadable",
            "not_callbacks",
        ),
        0,
    )
    previous: tuple[str, str] | None = None
    for topic, event in _events(source):
        counts["events_read"] += 1
        if topic == RESOLVED:
            command = resolve_command(
                event.originator_id,
                event.outcome,
                event.by,
                event.at,
                event.note or "",
                event.result,
            )
            counts["resolutions"] += into.execute(command).status == "accepted"
            continue
        callback = getattr(event, "callback", None)
        if not isinstance(callback, dict) or not callback.get("received_at"):
            counts["not_callbacks"] += 1  # registrations, erasure facts: made anew or moot
            continue
        raw: str | None = callback.get("raw")
        if topic == QUARANTINED and raw is None and event.raw_base64:
            body = base64.b64decode(event.raw_base64)
            raw = body.decode("utf-8", errors="replace")
        elif raw is None:
            counts["unreadable"] += 1  # erased in the source (an encrypted one)
            continue
        else:
            body = raw.encode("utf-8", "surrogatepass")
        # One callback's events are adjacent in the log (one transaction): recorded once.
        this = (raw, callback["received_at"])
        if this == previous:
            continue
        previous = this
        receipt = Receipt(
            raw,
            datetime.fromisoformat(callback["received_at"]),
            bool(callback.get("signature_verified")),
            dict(callback.get("headers") or {}),
        )
        if topic == QUARANTINED:
            command = quarantine_command(
                body, event.trigger, event.status_code, list(event.problems or []), receipt
            )
            counts["quarantined"] += into.execute(command).status == "accepted"
            continue
        parsed = loads_body(body)
        try:
            found = None if topic == CATCH_ALL else into.command_for(parsed, receipt)
        except InvalidCallback:  # valid once: kept whole rather than lost
            found = None
        status = into.execute(found or unrecognised_command(parsed, receipt)).status
        if topic == CATCH_ALL:
            counts["catch_all"] += status == "accepted"
        else:
            counts[status] += 1
    return counts


def _copy_keys(source: Runtime, target: Runtime) -> int:
    """The API keys (hashes, scopes, dates) as they are; the access log is not copied."""
    from_db, to_db = source.store_database(), target.store_database()
    with from_db.read() as cur:
        if cur.backend.tables_present(cur, [KEYS_TABLE]) < 1:
            return 0
        rows = cur.execute(f"SELECT {', '.join(KEY_COLUMNS)} FROM {KEYS_TABLE}").fetchall()
    KeyStore(to_db).setup()
    with to_db.transaction() as cur:
        for row in rows:
            cur.execute(
                f"INSERT INTO {KEYS_TABLE} ({', '.join(KEY_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(KEY_COLUMNS))}) ON CONFLICT (name) DO NOTHING",
                [row[c] for c in KEY_COLUMNS],
            )
    return len(rows)
