"""Concurrent callbacks for one aggregate: every distinct report kept exactly once, racing
duplicates stored once (optimistic-concurrency retry), on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from service.recorder import Outcome
from store.ledger import Ledger
from tests import payloads as p
from tests.helpers import accept_all, delivery_reports, names, stored_events

STATUSES = ["QUEUED_ON_CHANNEL", "SWITCHING_CHANNEL", "FAILED", "DELIVERED", "READ"]
CHANNELS = ["WHATSAPP", "RCS", "SMS", "VIBERBM"]


def accept(ledger: Ledger, body: dict) -> Outcome:
    [outcome] = accept_all(ledger, [body], signed=False)
    return outcome


def run_concurrently(ledger: Ledger, bodies: list[dict], threads: int = 16) -> list[Outcome]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda body: accept(ledger, body), bodies))


def test_concurrent_reports_for_one_message(ledger: Ledger, database_url: str) -> None:
    distinct = [p.delivery(status=s, channel=c) for s in STATUSES for c in CHANNELS]
    work = distinct * 3
    random.Random(7).shuffle(work)

    outcomes = run_concurrently(ledger, work)

    assert Counter(o.status for o in outcomes) == {"accepted": 20, "duplicate": 40}
    events = stored_events(database_url)
    reports = delivery_reports(events)
    assert len(reports) == 20
    assert {(e.channel, e.status) for e in reports} == {(c, s) for s in STATUSES for c in CHANNELS}
    assert names(events).count("Message.FirstReported") == 1
    assert "Message.Registered" not in names(events)


def test_concurrent_consent_and_inbound_for_one_contact(ledger: Ledger, database_url: str) -> None:
    distinct = [p.inbound(message_id=f"IN{i}", text=f"hello {i}") for i in range(12)]
    distinct += [p.opt("OPT_OUT", request_id=f"OUT{i}") for i in range(4)]
    distinct += [p.opt("OPT_IN", request_id=f"IN{i}") for i in range(4)]
    work = distinct * 2
    random.Random(3).shuffle(work)

    outcomes = run_concurrently(ledger, work)

    assert Counter(o.status for o in outcomes) == {"accepted": 20, "duplicate": 20}
    kept = Counter(names(stored_events(database_url)))
    assert kept == {
        "Contact.Registered": 1,
        "Contact.InboundMessageReceived": 12,
        "Contact.ConsentReported": 8,
    }


def test_many_messages_in_parallel(ledger: Ledger, database_url: str) -> None:
    work = [p.delivery(message_id=f"M{i % 25}", status=STATUSES[i // 25]) for i in range(125)]
    outcomes = run_concurrently(ledger, work + work[:25])
    assert Counter(o.status for o in outcomes) == {"accepted": 125, "duplicate": 25}
    assert len(delivery_reports(stored_events(database_url))) == 125
