"""The pure decisions of the Ledger, without a store: `command_for` (which stream a callback
belongs to, and the key that names its fact) and `decide_all` (each command's decision on its
stream, in order, as one group commit takes them). Table cases follow Sinch's semantics
(/work/shared/reference: duplicates are normal, order is not guaranteed, a report is named by
its channel and status, a consent notification by its request_id); properties check that the
decisions do not depend on arrival order or repetition."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import Aggregate
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.callbacks import InvalidCallback, Receipt
from domain.contact import Contact
from domain.message import Message
from store.commands import Command, Fact, Planned, command_for, decide_all
from store.ledger import Ledger
from tests import payloads as p

RECEIVED = datetime(2024, 6, 15, 15, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ledger() -> Iterator[Ledger]:
    """An in-memory Ledger: `command_for` needs an instance, and never its store."""
    app = Ledger()
    yield app
    app.close()


def receipt(body: dict[str, Any]) -> Receipt:
    return Receipt(p.encode(body).decode(), RECEIVED, True)


def command(ledger: Ledger, body: dict[str, Any]) -> Command:
    found = command_for(body, receipt(body))
    assert found is not None
    return found


def decisions(planned: list[Planned]) -> list[tuple[bool, int]]:
    return [(accepted, events) for _, accepted, events in planned]


def committed(aggregate: Aggregate) -> Aggregate:
    """The aggregate as a stream loaded from the store: no pending events."""
    aggregate.collect_events()
    return aggregate


# --- command_for: which stream, which key ---------------------------------------------------


def test_every_status_of_a_message_goes_to_the_messages_stream(ledger: Ledger) -> None:
    statuses = ["QUEUED_ON_CHANNEL", "DELIVERED", "READ", "FAILED", "SWITCHING_CHANNEL"]
    commands = [command(ledger, p.delivery("MSG1", status)) for status in statuses]
    assert {c.aggregate_id for c in commands} == {Message.create_id("PROJECT1", "MSG1")}
    assert {c.trigger for c in commands} == {"MESSAGE_DELIVERY"}
    # A message's reports are told apart by the stream (channel, status), not a table key.
    assert {c.dedupe_key for c in commands} == {None}


def test_a_submission_goes_to_its_messages_stream(ledger: Ledger) -> None:
    found = command(ledger, p.submit("MSG1"))
    assert found.trigger == "MESSAGE_SUBMIT"
    assert found.aggregate_id == command(ledger, p.delivery("MSG1")).aggregate_id


def test_messages_are_streams_per_project(ledger: Ledger) -> None:
    one = command(ledger, p.delivery("MSG1"))
    other = p.delivery("MSG1")
    other["project_id"] = "PROJECT2"
    assert command(ledger, other).aggregate_id != one.aggregate_id


@pytest.mark.parametrize(
    ("body", "trigger", "key"),
    [
        (p.inbound("IN1"), "MESSAGE_INBOUND", "INBOUND|IN1"),
        (p.opt("OPT_OUT", request_id="R1"), "OPT_OUT", "OPT_OUT|request|R1"),
        (p.opt("OPT_IN", request_id="R1"), "OPT_IN", "OPT_IN|request|R1"),
        (
            p.opt("OPT_OUT", request_id=None),
            "OPT_OUT",
            "OPT_OUT|SMS|46732001122|OPT_OUT_SUCCEEDED|2024-06-15T15:00:00+00:00",
        ),
        (
            p.opt("OPT_OUT", status="OPT_OUT_FAILED", request_id=None),
            "OPT_OUT",
            "OPT_OUT|SMS|46732001122|OPT_OUT_FAILED|2024-06-15T15:00:00+00:00",
        ),
    ],
)
def test_contact_facts_are_named_by_their_natural_key(
    ledger: Ledger, body: dict[str, Any], trigger: str, key: str
) -> None:
    found = command(ledger, body)
    assert found.trigger == trigger
    assert found.dedupe_key == key
    assert found.aggregate_id == Contact.create_id("PROJECT1", "CONTACT1")


def test_an_inbound_message_without_an_id_is_named_by_its_body(ledger: Ledger) -> None:
    first, second = p.inbound("IN1", text="hi"), p.inbound("IN1", text="bye")
    for body in (first, second):
        del body["message"]["id"]
    keys = {command(ledger, b).dedupe_key for b in (first, second)}
    assert len(keys) == 2
    assert all(k is not None and k.startswith("INBOUND|body:") for k in keys)
    assert command(ledger, first).dedupe_key == command(ledger, dict(first)).dedupe_key


def test_without_a_contact_id_the_normalised_identity_names_the_contact(ledger: Ledger) -> None:
    plus = command(ledger, p.inbound("IN1", contact_id=None, identity="+46732001122"))
    bare = command(ledger, p.inbound("IN2", contact_id=None, identity="46732001122"))
    assert plus.aggregate_id == bare.aggregate_id
    assert plus.aggregate_id == Contact.create_id("PROJECT1", "~SMS:46732001122")


def test_consent_and_inbound_of_one_contact_share_its_stream(ledger: Ledger) -> None:
    bodies = [p.inbound("IN1"), p.opt("OPT_OUT"), p.opt("OPT_IN", request_id="R2")]
    assert len({command(ledger, b).aggregate_id for b in bodies}) == 1


@pytest.mark.parametrize(
    "body",
    [
        p.envelope(contact_create_notification={"contact": {"id": "C1"}}),
        p.envelope(event={"contact_event": {}}),
        p.envelope(),
        # A submission that does not fit the contract is kept, not refused (LENIENT_TRIGGERS).
        p.envelope(message_submit_notification={"message_id": 5}),
    ],
)
def test_triggers_kept_uninterpreted_have_no_command(ledger: Ledger, body: dict[str, Any]) -> None:
    assert command_for(body, receipt(body)) is None


def test_an_invalid_interpreted_callback_is_refused_naming_its_trigger(ledger: Ledger) -> None:
    body = p.delivery()
    del body["message_delivery_report"]["message_id"]
    with pytest.raises(InvalidCallback) as refused:
        command_for(body, receipt(body))
    assert refused.value.trigger == "MESSAGE_DELIVERY"
    assert any("message_id" in problem for problem in refused.value.problems)


def test_a_body_with_two_triggers_is_refused(ledger: Ledger) -> None:
    body = {**p.delivery(), **p.inbound()}
    with pytest.raises(InvalidCallback) as refused:
        command_for(body, receipt(body))
    assert refused.value.trigger == "UNKNOWN"


# --- decide_all: table cases -----------------------------------------------------------------


def test_a_report_sent_twice_is_a_duplicate(ledger: Ledger) -> None:
    commands = [command(ledger, p.delivery("M1", "DELIVERED")) for _ in range(2)]
    # The first report of a new message is its first event (FirstReported).
    assert decisions(decide_all(commands, {})) == [(True, 1), (False, 0)]


def test_every_status_is_kept_in_any_order(ledger: Ledger) -> None:
    statuses = ["READ", "QUEUED_ON_CHANNEL", "DELIVERED"]  # out of order, as Sinch may send
    commands = [command(ledger, p.delivery("M1", s)) for s in statuses]
    touched: dict[UUID, Aggregate] = {}
    assert decisions(decide_all(commands, touched)) == [(True, 1)] * 3
    [message] = touched.values()
    assert set(message.report_keys) == {f"WHATSAPP|{s}" for s in statuses}  # type: ignore[attr-defined]


def test_one_status_on_two_channels_is_two_reports(ledger: Ledger) -> None:
    commands = [
        command(ledger, p.delivery("M1", "FAILED", channel="WHATSAPP")),
        command(ledger, p.delivery("M1", "FAILED", channel="SMS")),
    ]
    assert decisions(decide_all(commands, {})) == [(True, 1), (True, 1)]


def test_a_submission_then_its_report(ledger: Ledger) -> None:
    commands = [command(ledger, b) for b in (p.submit("M1"), p.delivery("M1"), p.submit("M1"))]
    # Registered + Submitted, then a report, then the same submission again.
    assert decisions(decide_all(commands, {})) == [(True, 2), (True, 1), (False, 0)]


def test_a_new_contact_is_registered_with_its_first_fact(ledger: Ledger) -> None:
    commands = [command(ledger, p.inbound("IN1")), command(ledger, p.opt("OPT_OUT"))]
    assert decisions(decide_all(commands, {})) == [(True, 2), (True, 1)]


def test_a_consent_notification_is_named_by_its_request_id(ledger: Ledger) -> None:
    # A retry carries the same request_id, even with another event_time.
    commands = [
        command(ledger, p.opt("OPT_OUT", request_id="R1")),
        command(ledger, p.opt("OPT_OUT", request_id="R1", event_time="2024-06-15T16:00:00Z")),
        command(ledger, p.opt("OPT_OUT", request_id="R2")),
    ]
    assert decisions(decide_all(commands, {})) == [(True, 2), (False, 0), (True, 1)]


def test_opt_out_then_opt_in_are_both_facts(ledger: Ledger) -> None:
    commands = [
        command(ledger, p.opt("OPT_OUT", request_id="R1")),
        command(ledger, p.opt("OPT_IN", request_id="R1")),
        command(ledger, p.opt("OPT_OUT", request_id="R3")),
    ]
    assert [a for a, _ in decisions(decide_all(commands, {}))] == [True, True, True]


def test_a_fact_the_key_table_holds_is_a_duplicate_without_asking_the_stream(
    ledger: Ledger,
) -> None:
    inbound = command(ledger, p.inbound("IN1"))
    contact = committed(Contact(project_id="PROJECT1", contact_key="CONTACT1"))
    touched: dict[UUID, Aggregate] = {inbound.aggregate_id: contact}
    recorded: set[Fact] = {(inbound.aggregate_id, "INBOUND|IN1")}
    planned = decide_all([inbound], touched, recorded)
    assert decisions(planned) == [(False, 0)]
    assert contact.pending_events == []


def test_a_loaded_stream_decides_against_what_it_holds(ledger: Ledger) -> None:
    first = command(ledger, p.delivery("M1", "DELIVERED"))
    message = committed(first.create())
    assert first.decide(message)
    committed(message)
    again = [command(ledger, p.delivery("M1", "DELIVERED")), command(ledger, p.delivery("M1"))]
    touched: dict[UUID, Aggregate] = {first.aggregate_id: message}
    planned = decide_all(again, touched)
    assert decisions(planned) == [(False, 0), (False, 0)]


def test_decide_all_starts_new_streams_in_touched(ledger: Ledger) -> None:
    commands = [command(ledger, p.delivery("M1")), command(ledger, p.inbound("IN1"))]
    touched: dict[UUID, Aggregate] = {}
    decide_all(commands, touched)
    assert set(touched) == {c.aggregate_id for c in commands}


# --- decide_all: properties ------------------------------------------------------------------


def pool() -> list[dict[str, Any]]:
    """Distinct callbacks (no two share a natural key) over few streams, so that a drawn batch
    mixes streams, kinds and repeats."""
    bodies: list[dict[str, Any]] = []
    for message in ("M1", "M2"):
        for status in ("QUEUED_ON_CHANNEL", "DELIVERED", "READ", "FAILED"):
            for channel in ("WHATSAPP", "SMS"):
                bodies.append(p.delivery(message, status, channel=channel))
        bodies.append(p.submit(message))
    for contact in ("CONTACT1", "CONTACT2"):
        for i in range(3):
            bodies.append(p.inbound(f"IN-{contact}-{i}", contact_id=contact))
        for kind in ("OPT_IN", "OPT_OUT"):
            for request in ("R1", "R2"):
                bodies.append(p.opt(kind, contact_id=contact, request_id=f"{contact}-{request}"))
    return bodies


POOL = pool()
batches = st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=30)


def commands_of(ledger: Ledger, picks: list[int]) -> list[Command]:
    return [command(ledger, POOL[i]) for i in picks]


def accepted_picks(picks: list[int], planned: list[Planned]) -> list[int]:
    return [pick for pick, (_, accepted, _) in zip(picks, planned, strict=True) if accepted]


def facts_held(touched: dict[UUID, Aggregate]) -> dict[UUID, frozenset[str]]:
    """What each stream holds, by its facts' keys (not by version: that depends on order)."""
    return {
        stream: frozenset(getattr(aggregate, "recent", None) or aggregate.report_keys)  # type: ignore[attr-defined]
        for stream, aggregate in touched.items()
    }


@settings(max_examples=150, deadline=None)
@given(picks=batches)
def test_each_distinct_callback_is_accepted_exactly_once(ledger: Ledger, picks: list[int]) -> None:
    planned = decide_all(commands_of(ledger, picks), {})
    accepted = accepted_picks(picks, planned)
    assert sorted(accepted) == sorted(set(picks))
    # The first copy is the one accepted; every later copy is a duplicate with no events.
    for at, (pick, (_, taken, events)) in enumerate(zip(picks, planned, strict=True)):
        assert taken == (pick not in picks[:at])
        assert taken or events == 0


@settings(max_examples=150, deadline=None)
@given(picks=batches, data=st.data())
def test_decisions_do_not_depend_on_arrival_order(
    ledger: Ledger, picks: list[int], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(picks))
    touched: dict[UUID, Aggregate] = {}
    planned = decide_all(commands_of(ledger, picks), touched)
    touched_shuffled: dict[UUID, Aggregate] = {}
    planned_shuffled = decide_all(commands_of(ledger, shuffled), touched_shuffled)
    assert sorted(accepted_picks(picks, planned)) == sorted(
        accepted_picks(shuffled, planned_shuffled)
    )
    assert facts_held(touched) == facts_held(touched_shuffled)


@settings(max_examples=150, deadline=None)
@given(picks=batches)
def test_a_batch_sent_again_is_all_duplicates(ledger: Ledger, picks: list[int]) -> None:
    touched: dict[UUID, Aggregate] = {}
    first = decide_all(commands_of(ledger, picks), touched)
    held = facts_held(touched)
    for aggregate in touched.values():
        committed(aggregate)
    again = decide_all(commands_of(ledger, picks), touched)
    assert decisions(again) == [(False, 0)] * len(picks)
    assert facts_held(touched) == held
    assert all(not a.pending_events for a in touched.values())
    assert any(accepted for _, accepted, _ in first)


@settings(max_examples=150, deadline=None)
@given(picks=batches, more=batches)
def test_later_commands_never_change_earlier_decisions(
    ledger: Ledger, picks: list[int], more: list[int]
) -> None:
    alone = decide_all(commands_of(ledger, picks), {})
    longer = decide_all(commands_of(ledger, picks + more), {})
    assert decisions(longer[: len(picks)]) == decisions(alone)


@settings(max_examples=150, deadline=None)
@given(picks=batches, data=st.data())
def test_more_recorded_facts_only_turn_acceptances_into_duplicates(
    ledger: Ledger, picks: list[int], data: st.DataObject
) -> None:
    commands = commands_of(ledger, picks)
    facts = sorted(
        {(c.aggregate_id, c.dedupe_key) for c in commands if c.dedupe_key is not None}, key=str
    )
    fewer = set(data.draw(st.lists(st.sampled_from(facts), unique=True))) if facts else set()
    more = fewer | (set(data.draw(st.lists(st.sampled_from(facts)))) if facts else set())

    def taken(recorded: set[Fact]) -> set[int]:
        planned = decide_all(commands_of(ledger, picks), {}, recorded)
        return {at for at, (_, accepted, _) in enumerate(planned) if accepted}

    assert taken(more) <= taken(fewer) <= taken(set())
    for at, c in enumerate(commands):
        if (c.aggregate_id, c.dedupe_key) in more:
            assert at not in taken(more), "a recorded fact is a duplicate, whatever the stream"
    for at in taken(set()) - taken(more):
        fact = (commands[at].aggregate_id, commands[at].dedupe_key)
        assert fact in more, "only a recorded fact turns an acceptance into a duplicate"


@settings(max_examples=150, deadline=None)
@given(picks=batches)
def test_the_events_counted_are_the_events_to_commit(ledger: Ledger, picks: list[int]) -> None:
    touched: dict[UUID, Aggregate] = {}
    planned = decide_all(commands_of(ledger, picks), touched)
    pending = sum(len(a.pending_events) for a in touched.values())
    assert sum(events for _, _, events in planned) == pending
