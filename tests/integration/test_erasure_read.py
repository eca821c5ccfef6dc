"""The read side of crypto-shredding, on both backends: read tables hold numbers by
blind index with sealed copies to show; once a number's keys are destroyed and its erasure
recorded, its number and texts read as erased in the API, the console, evidence and follow-up
output, while its opt-out still stands and its violations still count."""

from __future__ import annotations

import argparse
import io
from typing import Any
from urllib.parse import quote

import orjson
from rich.console import Console
from starlette.testclient import TestClient

from api.app import create_app
from domain.erasure import Erasure
from evidence import claims as evidence
from projections.read_model import consent
from service.replay import replay
from service.runtime import Runtime
from service.settings import Settings
from store.ledger import Ledger
from tests import payloads as p
from tests.conftest import SECRET
from tests.helpers import make_key, projection_rows
from tests.integration.test_queries import feed, wait_for_projections

NUMBER = "+46 700 000 009"
NORMAL = "46700000009"
DAY = "2024-06-15T"
BODIES = [
    p.delivery("E1", "QUEUED_ON_CHANNEL", "SMS", NUMBER, f"{DAY}10:00:00Z"),
    p.delivery("E1", "DELIVERED", "SMS", NUMBER, f"{DAY}10:00:05Z"),
    p.delivery("E1", "READ", "SMS", NUMBER, f"{DAY}10:00:09Z"),
    p.opt("OPT_OUT", request_id="R-OUT", identity=NUMBER, event_time=f"{DAY}11:00:00Z"),
    p.inbound("IN-STOP", "STOP", identity=NUMBER, event_time=f"{DAY}11:05:00Z"),
    p.inbound("IN-FREE", "please stop texting me", identity=NUMBER, event_time=f"{DAY}11:06:00Z"),
    # Sent while opted out, and failed: a violation, and a follow-up that must not retry.
    p.delivery("E2", "QUEUED_ON_CHANNEL", "SMS", NUMBER, f"{DAY}12:00:00Z"),
    p.delivery(
        "E2", "FAILED", "SMS", NUMBER, f"{DAY}12:00:05Z", reason={"code": "RECIPIENT_NOT_REACHABLE"}
    ),
]


def quiet_replay(settings: Settings) -> None:
    replay(settings, console=Console(file=io.StringIO()))


def erase(ledger: Ledger, name: str, forget_consent: bool = False) -> None:
    """As the erase command does: destroy the subject's keys, then record the erasure."""
    ledger.vault.keys.destroy([name])  # type: ignore[union-attr]
    ledger.vault.forget([name])
    ledger.save(
        Erasure(
            subjects=[name],
            scope="identity",
            channel="SMS",
            project_id="PROJECT1",
            by="test-admin",
            reason="data subject request",
            erased_at="2024-07-01T09:00:00+00:00",
            keys_destroyed=1,
            forget_consent=forget_consent,
        )
    )


def check(client: TestClient) -> dict:
    response = client.get("/consent/check", params={"channel": "SMS", "identity": NUMBER})
    assert response.status_code == 200, response.text
    return response.json()


def test_an_erased_number_reads_as_erased_and_its_opt_out_stands(
    client: TestClient, ledger: Ledger, settings: Settings, database_url: str, capsys
) -> None:
    feed(client, BODIES)
    name = ledger.vault.index("SMS", NUMBER)
    assert name.startswith("b.")

    # Before: the tables hold the blind index, never the number; what is shown is the number.
    raw = projection_rows(database_url, shown=False)
    assert {r["identity"] for r in raw["consent_history"]} == {name}
    assert NORMAL not in orjson.dumps(raw).decode()
    assert "please stop" not in orjson.dumps(raw).decode()
    history = client.get("/contacts/CONTACT1/consent/history").json()["items"]
    assert {h["identity"] for h in history} == {NORMAL}
    assert [r["text"] for r in client.get("/consent/review").json()["items"]] == [
        "please stop texting me"
    ]
    timeline = client.get("/messages/E1").json()["timeline"]
    assert {e["identity"] for e in timeline} == {NORMAL}
    [read] = client.get("/read-confirmations").json()["items"]
    assert (read["message_id"], read["identity"]) == ("E1", NORMAL)
    assert NORMAL in client.get(f"/console/numbers/{NORMAL}").text
    # Metadata (an order id) is personal too: held by a keyed hash, found and shown as sent.
    assert "order-123" not in orjson.dumps(raw).decode()
    found = client.get("/messages", params={"metadata": "order-123"}).json()["items"]
    assert [(m["message_id"], m["metadata"]) for m in found] == [
        ("E1", "order-123"),
        ("E2", "order-123"),
    ]
    assert client.get("/messages", params={"metadata": "order123"}).json()["items"] == []
    assert "/console/messages/E1" in client.get("/console/search?q=order-123").text
    before = check(client)
    assert before["may_send"] is False and "erased" not in before

    erase(ledger, name)
    wait_for_projections(client)
    # At once, before any replay: the copies in the read tables are unreadable too, and the
    # keyword opt-out (its fact's public part) still stands beside the OPT_OUT.
    answer = check(client)
    assert answer["may_send"] is False and answer["erased"] is True
    history = client.get("/contacts/CONTACT1/consent/history").json()["items"]
    assert "KEYWORD_OPT_OUT" in {h["fact"] for h in history}
    assert all(h["identity"] is None and h["erased"] for h in history)
    assert [(r["text"], r["erased"]) for r in client.get("/consent/review").json()["items"]] == [
        (None, True)
    ]
    quiet_replay(settings)

    # The opt-out outlives the erasure, and says so.
    answer = check(client)
    assert answer["may_send"] is False
    assert answer["state"] == "OPTED_OUT"
    assert answer["erased"] is True
    assert "erased subject" in answer["reason"]
    proof = answer["erasure"]
    assert proof["erased_at"] == "2024-07-01T09:00:00.000000Z"
    assert proof["scope"] == "identity" and proof["erased_by"] == "test-admin"
    assert proof["consent_suppression"] == "kept"
    assert answer["source_ref"] in proof["consent_facts"]
    assert "unreadable" in proof["raw_bodies"]
    fact = client.get("/callbacks/" + quote(answer["source_ref"], safe="/")).json()
    assert fact["raw"] is None and fact["erased"] is True

    # Lookups by number still find the rows; the number and texts read as erased.
    history = client.get("/contacts/CONTACT1/consent/history").json()["items"]
    assert history and all(h["identity"] is None and h["erased"] for h in history)
    at = client.get("/consent", params={"channel": "SMS", "identity": NUMBER}).json()
    assert at["state"] == "OPTED_OUT" and at["decided_by"]["erased"] is True
    message = client.get("/messages/E1").json()
    timeline = message["timeline"]
    assert timeline and all(e["identity"] is None and e["erased"] for e in timeline)
    assert message["metadata"] is None
    [read] = client.get("/read-confirmations").json()["items"]
    assert (read["message_id"], read["identity"], read["erased"]) == ("E1", None, True)
    page = client.get("/console/messages/E1")
    assert page.status_code == 200
    assert NORMAL not in page.text and "order-123" not in page.text
    # The free text that read like a request to stop is erased; that it did, and by which
    # rule (read as it arrived, kept public), is still there to review.
    [review] = client.get("/consent/review").json()["items"]
    assert (review["text"], review["erased"], review["matched"]) == (None, True, "stop+contact")
    raw = projection_rows(database_url, shown=False)
    assert {r["identity"] for r in raw["consent_history"]} == {name}

    # The violations report still counts the send to it.
    runtime = Runtime(settings)
    try:
        with runtime.database().read() as cur:
            found = list(consent.violations(cur, vault=ledger.vault))
    finally:
        runtime.close()
    assert [(v["message_id"], v["identity"], v.get("erased")) for v in found] == [
        ("E2", None, True)
    ]

    # The console: the number page answers, with the erasure in its consent answer.
    page = client.get(f"/console/numbers/{quote(NUMBER)}")
    assert page.status_code == 200
    assert "erased subject" in page.text and "OPTED_OUT" in page.text
    contact = client.get("/console/contacts/CONTACT1")
    assert contact.status_code == 200 and "erased" in contact.text
    assert NORMAL not in contact.text
    report = client.get("/console/compliance")
    assert report.status_code == 200 and "erased" in report.text and "E2" in report.text
    csv = client.get("/console/compliance.csv")
    assert csv.status_code == 200 and "[erased]" in csv.text
    assert client.get(f"/console/search?q={quote(NUMBER)}").status_code == 200

    # Evidence: the facts and messages found by number, shown as erased, with the erasure.
    runtime = Runtime(settings)
    try:
        bundle = evidence.bundle(
            runtime.ledger(), runtime.store_database(), runtime.database(), "SMS", NUMBER
        )
    finally:
        runtime.close()
    assert bundle["subject"]["erasure"]["subject"] == name
    assert bundle["consent_facts"] and all(f["erased"] for f in bundle["consent_facts"])
    assert {m["message_id"] for m in bundle["messages"]} == {"E1", "E2"}
    # The erasure's own event is in the bundle too: it has no callback.
    assert all(e["callback"]["raw"] is None for e in bundle["events"] if e["callback"])
    assert sum(e["callback"] is None for e in bundle["events"]) == 1

    # `audit history` / `audit violations` as CSV: found by number, shown as [erased].
    from callback_ledger.audit_cli import run_history, run_violations

    common = {"since": None, "until": None, "format": "csv", "project": None}
    args = argparse.Namespace(
        **common, audit_command="history", contact=None, channel="sms", identity=NUMBER
    )
    assert run_history(settings, args) == 0
    out = capsys.readouterr().out
    assert "OPT_OUT_SUCCEEDED" in out and "[erased]" in out and NORMAL not in out
    assert run_violations(settings, argparse.Namespace(**common, audit_command="violations")) == 0
    out = capsys.readouterr().out
    assert "E2" in out and "[erased]" in out and NORMAL not in out

    # Follow-up: the failed message is not to be retried (opted out), its recipient erased.
    from callback_ledger.followup_cli import run_followup

    args = argparse.Namespace(since=None, action=None, stalled=None, format="csv")
    assert run_followup(settings, args) == 0
    out = capsys.readouterr().out
    assert "E2" in out and "do_not_retry" in out and "[erased]" in out
    assert NORMAL not in out


def test_a_plaintext_store_reads_as_before(database_url: str) -> None:
    settings = Settings(database_url=database_url, webhook_secrets=(SECRET,), db_timeout_s=3)
    runtime = Runtime(settings)
    try:
        ledger = runtime.ledger()
        assert not ledger.vault.encrypted
        key = make_key(database_url, "plain-admin")
        app = create_app(settings, ledger)
        with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
            feed(client, BODIES)
            raw = projection_rows(database_url, shown=False)
            assert {r["identity"] for r in raw["consent_history"]} == {NORMAL}
            assert [r["text"] for r in raw["consent_review"]] == ["please stop texting me"]
            answer = check(client)
            assert answer["may_send"] is False and "erased" not in answer
            history = client.get("/contacts/CONTACT1/consent/history").json()["items"]
            assert {h["identity"] for h in history} == {NORMAL}
            assert not any("erased" in h for h in history)
            timeline = client.get("/messages/E1").json()["timeline"]
            assert {e["identity"] for e in timeline} == {NORMAL}
            assert [r["metadata"] for r in raw["message_status"]] == ["order-123", "order-123"]
            found = client.get("/messages", params={"metadata": "order-123"}).json()["items"]
            assert [m["message_id"] for m in found] == ["E1", "E2"]
            assert NORMAL in client.get(f"/console/numbers/{quote(NUMBER)}").text
    finally:
        runtime.close()


def test_replay_after_retention_gives_the_same_rows_minus_the_shredded_fields(
    client: TestClient, ledger: Ledger, settings: Settings, database_url: str
) -> None:
    feed(client, BODIES)
    before = projection_rows(database_url)
    # Retention of message payloads: every message-class key goes; consent evidence stays.
    assert ledger.vault.keys.destroy_expired("m", "9999-12") > 0  # type: ignore[union-attr]
    ledger.vault.forget(everything=True)
    quiet_replay(settings)
    after = projection_rows(database_url)

    # Consent evidence (opt-out, keyword, the free text that reads like one) is untouched.
    for table in ("consent", "consent_history", "consent_review"):
        assert after[table] == before[table], table
    assert {h["identity"] for h in after["consent_history"]} == {NORMAL}
    # The messages keep every row and field but the number and the metadata.
    assert len(after["message_status"]) == len(before["message_status"]) == 2
    for old, new in zip(before["message_status"], after["message_status"], strict=True):
        assert old["metadata"] == "order-123" and new["metadata"] is None
        assert old["identities_shown"] == [NORMAL] and new["identities_shown"] == []
        assert {r["identity"] for r in orjson.loads(old["reports"])} == {NORMAL}
        assert {r["identity"] for r in orjson.loads(new["reports"])} == {None}
        # The row still names its metadata (by keyed hash, as before retention) and says it
        # is erased.
        assert new["erased"] is True and "erased" not in old
        shredded = {"metadata", "identities_shown", "reports", "erased"}
        assert {k: v for k, v in old.items() if k not in shredded} == {
            k: v for k, v in new.items() if k not in shredded
        }
    [read] = after["read_confirmations"]
    assert (read["message_id"], read["identity"], read["erased"]) == ("E1", None, True)
    # Lookups by number still find the messages' rows, and the violation still counts.
    check = client.get("/consent/check", params={"channel": "SMS", "identity": NUMBER}).json()
    assert check["may_send"] is False and "erased" not in check
    report = client.get("/console/compliance.csv")
    assert "E2" in report.text and "[erased]" in report.text


def test_an_erasure_that_forgets_consent_drops_the_suppression_and_keeps_the_history(
    client: TestClient, ledger: Ledger, settings: Settings
) -> None:
    feed(client, BODIES)
    erase(ledger, ledger.vault.index("SMS", NUMBER), forget_consent=True)
    wait_for_projections(client)
    for replayed in (False, True):  # as applied live, and by a replay alike
        if replayed:
            quiet_replay(settings)
        answer = check(client)
        assert answer["may_send"] is True and answer["state"] == "UNKNOWN", replayed
        assert answer["erased"] is True
        assert answer["erasure"]["consent_suppression"] == "dropped"
        # What was decided, and when, stays: the history and the violations report.
        history = client.get("/contacts/CONTACT1/consent/history").json()["items"]
        assert "OPT_OUT_SUCCEEDED" in {h["fact"] for h in history}
        assert "E2" in client.get("/console/compliance.csv").text
    # A new opt-out after the erasure suppresses again.
    feed(
        client, [p.opt("OPT_OUT", request_id="R-2", identity=NUMBER, event_time=f"{DAY}18:00:00Z")]
    )
    assert check(client)["may_send"] is False


def test_an_opt_out_by_keyword_alone_outlives_erasure_and_replay(
    client: TestClient, ledger: Ledger, settings: Settings
) -> None:
    """A number that opted out only by texting STOP: its text is erased with its key, but
    what it said (read as it arrived, kept in the event's public part) still opts it out
    after a replay."""
    feed(
        client,
        [
            p.delivery("K1", "DELIVERED", "SMS", NUMBER, f"{DAY}10:00:05Z"),
            p.inbound("IN-STOP", "STOP", identity=NUMBER, event_time=f"{DAY}11:05:00Z"),
        ],
    )
    assert check(client)["may_send"] is False
    erase(ledger, ledger.vault.index("SMS", NUMBER))
    quiet_replay(settings)
    wait_for_projections(client)
    answer = check(client)
    assert answer["may_send"] is False and answer["erased"] is True, answer
    history = client.get("/contacts/CONTACT1/consent/history").json()["items"]
    assert [h["fact"] for h in history] == ["KEYWORD_OPT_OUT"]
    assert history[0]["identity"] is None


class CountingSources:
    """The store's own event source (a real query each time), counting its reads."""

    def __init__(self, sources: Any) -> None:
        self.sources, self.reads = sources, 0

    def states(self, vault: Any, ids: Any) -> Any:
        self.reads += 1
        return self.sources.states(vault, ids)


def test_a_page_of_messages_opens_its_metadata_in_one_read_and_shows_it_as_sent(
    client: TestClient, ledger: Ledger, settings: Settings, capsys
) -> None:
    bodies = [
        p.delivery(f"M{i}", "QUEUED_ON_CHANNEL", "SMS", f"+4670000{i:04d}", f"{DAY}10:{i:02d}:00Z")
        for i in range(12)
    ]
    feed(client, bodies)
    counting = CountingSources(ledger.vault.sources)
    ledger.vault.sources = counting
    try:
        items = client.get("/messages", params={"limit": 10}).json()["items"]
        assert counting.reads == 1
        assert len(items) == 10 and {m["metadata"] for m in items} == {"order-123"}
        counting.reads = 0
        stalled = client.get("/messages/stalled", params={"older_than": "1s"}).json()["items"]
        assert counting.reads <= 2  # a page of at most 50: one read (two with the next page's)
        assert len(stalled) == 12 and {m["metadata"] for m in stalled} == {"order-123"}
    finally:
        ledger.vault.sources = counting.sources

    # `callback-ledger followup` shows the metadata as sent, not the name it is found by.
    from callback_ledger.followup_cli import run_followup

    args = argparse.Namespace(since=None, action=None, stalled=1, format="csv")
    assert run_followup(settings, args) == 0
    out = capsys.readouterr().out
    assert "order-123" in out and ledger.vault.metadata_name("order-123") not in out
