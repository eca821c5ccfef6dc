"""service.recorder: the one entry point that records a callback, against a real store (each
test runs on SQLite and PostgreSQL), committing each command alone as `ingest` does."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from domain.callbacks import Receipt
from projections.read_model.quarantine import quarantined as read_quarantine
from service.recorder import Outcome, QuarantineFailed, Recorder, Store, alone
from store.ledger import Command, Ledger
from store.ledger import Outcome as Committed
from tests import payloads as p


def record(recorder: Recorder, raw: bytes) -> Outcome:
    receipt = Receipt(raw.decode("utf-8", errors="replace"), datetime.now(UTC), True)
    return asyncio.run(recorder.record(raw, receipt))


def quarantined(ledger: Ledger) -> list[int]:
    return [entry["status_code"] for entry in read_quarantine(ledger)]


def test_interpreted_then_duplicate(ledger: Ledger) -> None:
    recorder = Recorder(alone(ledger))
    raw = p.encode(p.delivery())
    first, again = record(recorder, raw), record(recorder, raw)
    assert (first.status, first.trigger, first.events) == ("accepted", "MESSAGE_DELIVERY", 1)
    assert (again.status, again.trigger, again.events) == ("duplicate", "MESSAGE_DELIVERY", 0)
    assert first.reference is not None and again.reference == first.reference


def test_other_triggers_are_kept_uninterpreted(ledger: Ledger) -> None:
    recorder = Recorder(alone(ledger))
    raw = p.encode(p.envelope(contact_create_notification={"contact": {"id": "C1"}}))
    outcome = record(recorder, raw)
    assert (outcome.status, outcome.trigger, outcome.kept_uninterpreted) == (
        "accepted",
        "CONTACT_CREATE",
        True,
    )
    assert record(recorder, raw).status == "duplicate"


@pytest.mark.parametrize(
    ("raw", "status_code", "code", "trigger"),
    [
        (b"{not json", 400, "not_json", "UNKNOWN"),
        (b"[1, 2]", 400, "not_an_object", "UNKNOWN"),
        (p.encode(p.delivery(status=5)), 422, "invalid_callback", "MESSAGE_DELIVERY"),
    ],
)
def test_refused_bodies_are_quarantined(
    ledger: Ledger, raw: bytes, status_code: int, code: str, trigger: str
) -> None:
    outcome = record(Recorder(alone(ledger)), raw)
    assert outcome.status == "refused" and outcome.quarantined
    assert outcome.trigger == trigger
    assert outcome.refusal is not None
    assert (outcome.refusal.status_code, outcome.refusal.code) == (status_code, code)
    assert outcome.refusal.problems and outcome.refusal.reason
    assert quarantined(ledger) == [status_code]


def test_refusals_only_reported_when_not_kept(ledger: Ledger) -> None:
    outcome = record(Recorder(alone(ledger), keep_refused=False), b"[1]")
    assert outcome.refusal is not None and outcome.refusal.reason == "not a JSON object"
    assert not outcome.quarantined
    assert quarantined(ledger) == []


def test_a_quarantine_that_fails_is_not_a_refusal(ledger: Ledger) -> None:
    async def opened() -> Ledger:
        return ledger

    async def broken(command: Command) -> Committed:
        raise OSError("disk full")

    with pytest.raises(QuarantineFailed) as failed:
        record(Recorder(Store(opened, broken)), b"{not json")
    assert isinstance(failed.value.__cause__, OSError)


def test_a_commit_that_fails_propagates(ledger: Ledger) -> None:
    async def opened() -> Ledger:
        return ledger

    async def broken(command: Command) -> Committed:
        raise OSError("disk full")

    with pytest.raises(OSError):
        record(Recorder(Store(opened, broken)), p.encode(p.delivery()))
