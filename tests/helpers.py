"""Reading back what the store holds, through a Ledger of its own (a second reader proves
the events were committed, not merely cached)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from domain.callbacks import Receipt
from service.recorder import Outcome, Recorder, alone
from service.settings import Settings, backend_for, open_ledger
from store.ledger import Ledger
from store.vault import Secrets

# The suite's keys of personal data: every store the tests make is encrypted with them, unless
# a test says otherwise (conftest also puts them in the environment for the servers it starts).
KEYS = Secrets(os.urandom(32), os.urandom(32))


def stored_events(database_url: str) -> list[Any]:
    ledger = open_ledger(Settings(keys=KEYS, database_url=database_url))
    try:
        notifications = ledger.recorder.select_notifications(start=1, limit=1_000_000)
        return [ledger.mapper.to_domain_event(n) for n in notifications]
    finally:
        ledger.close()


def names(events: list[Any]) -> list[str]:
    return [type(e).__qualname__ for e in events]


# A message's reports: the first starts its stream (FirstReported; before, a Registered event
# came first and every report was a DeliveryReported).
REPORT_EVENTS = ("Message.FirstReported", "Message.DeliveryReported")


def delivery_reports(events: list[Any]) -> list[Any]:
    return [e for e in events if type(e).__qualname__ in REPORT_EVENTS]


def accept_all(ledger: Ledger, bodies: list[dict[str, Any]], signed: bool = True) -> list[Outcome]:
    """Records each body as `callback-ledger ingest` does (the Recorder, each command in a
    transaction of its own), received now. A body the recorder refuses is a mistake of the
    test."""
    recorder = Recorder(alone(ledger), keep_refused=False)
    outcomes = []
    with asyncio.Runner() as runner:
        for body in bodies:
            raw = orjson.dumps(body)
            receipt = Receipt(raw.decode(), datetime.now(UTC), signed)
            outcome = runner.run(recorder.record(raw, receipt))
            assert outcome.refusal is None, outcome.refusal
            outcomes.append(outcome)
    return outcomes


VIEWS = {
    "message_status": ("project_id", "message_id"),
    "read_confirmations": ("project_id", "message_id"),
    "consent": ("project_id", "contact_id", "channel", "identity"),
    "consent_history": ("source_ref",),
    "consent_review": ("source_ref",),
}


def projection_rows(
    database_url: str,
    shown: bool = True,
    views: dict[str, tuple[str, ...]] = VIEWS,
    project: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Every row of the read views (of one project, if given), in key order. With `shown`, as
    people see them: the sealed copies opened (identities as shown in place of their names),
    so that rows sealed at different times (live, and by a replay) compare equal."""
    from store.backend import Database

    where, params = ("WHERE project_id = ?", (project,)) if project is not None else ("", ())
    db = Database(backend_for(database_url))
    try:
        with db.read() as cur:
            rows = {
                view: cur.execute(
                    f"SELECT * FROM {view} {where} ORDER BY {', '.join(keys)}", params
                ).fetchall()
                for view, keys in views.items()
            }
        return {view: opened(db, found) for view, found in rows.items()} if shown else rows
    finally:
        db.close()


def opened(db: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Read-table rows with their sealed copies opened under the suite's keys."""
    import orjson

    from projections import rules
    from projections.personal import open_map, open_metadata, open_rows
    from store.data_keys import open_vault
    from store.vault import plaintext

    try:
        vault = open_vault(db, KEYS, False, "test")
    except Exception:  # no key table: a plaintext store's
        vault = plaintext()
    out = open_rows(vault, rows, texts=("text",))
    if out and "metadata_shown" in out[0]:
        out = open_metadata(vault, out)
    for row in out:
        if "reports" not in row:
            continue
        # A stored report leaves out a channel or identity equal to the one before it (the
        # first: the row's) and names a known status by a letter (projections.rules): put them
        # back, so stores compare field by field.
        names = rules.only_identity(row) if "identities_shown" in row else None  # old stores'
        first = {"channel": row["channel"], "identity": names}
        reports = []
        for report in rules.stored_reports(row["reports"]):
            if rules.CODE_KEY in report:
                report = {"status": rules.CODE_STATUS[report.pop(rules.CODE_KEY)], **report}
            before = reports[-1] if reports else first
            for field in rules.REPEATED:
                report.setdefault(field, before[field])
            reports.append(report)
        if row.get("identities_shown"):
            # The timeline's names as the identities they stand for: the same in a plaintext
            # store and an encrypted one.
            shown = open_map(vault, orjson.loads(row["identities_shown"]))
            for report in reports:
                report["identity"] = shown.get(report["identity"], report["identity"])
            row["identities_shown"] = sorted(v for v in shown.values() if v is not None)
        row["reports"] = orjson.dumps(reports).decode()
    return out


def cli(
    database_url: str, *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """`callback-ledger ARGS` as a real process on `database_url`."""
    return subprocess.run(
        [sys.executable, "-m", "callback_ledger.cli", *args],
        env={**os.environ, "LEDGER_DATABASE_URL": database_url, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make_key(
    database_url: str,
    name: str,
    scopes: tuple[str, ...] | None = None,
    expires_in_days: float | None = None,
) -> str:
    """A new API key in the store at `database_url` (all scopes by default), as `keys create`
    makes one."""
    from access.api_keys import SCOPES, KeyStore
    from store.backend import Database

    db = Database(backend_for(database_url))
    try:
        return KeyStore(db).create(name, SCOPES if scopes is None else scopes, expires_in_days)
    finally:
        db.close()


def printed_key(log: str) -> str | None:
    """The admin key `serve` printed on its first start, if this log holds it."""
    import re

    found = re.search(r'(?:Authorization: Bearer |"api_key":")(clk_[A-Za-z0-9_-]+)', log)
    return found.group(1) if found else None


def starlette_app(client: Any) -> Any:
    """The Starlette application inside the middleware around it (Observed, WebhookFirst and,
    with a private listener, PublicSide): its routes."""
    app = client.app
    while not hasattr(app, "routes"):
        app = app.app
    return app
