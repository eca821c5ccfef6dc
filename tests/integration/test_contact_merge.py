"""CONTACT_MERGE and CONTACT_DELETE: recorded on the contacts' streams; a merge joins the two
contacts' consent (never lifting an opt-out), whatever the order the callbacks arrive in, live
and replayed; a deletion lifts nothing."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from domain.callbacks import Receipt
from projections.read_model import consent
from service.replay import replay
from service.runtime import Runtime
from service.settings import Settings
from store.ledger import Ledger
from tests import payloads as p
from tests.helpers import accept_all, names, stored_events
from tests.integration.test_queries import feed
from tests.unit.test_real_callbacks import FIXTURES

MERGE_FIXTURES = [
    "CONTACT_MERGE__docs__1.json",
    "CONTACT_MERGE__sdk-dotnet__1.json",
    "CONTACT_MERGE__sdk-java__1.json",
    "CONTACT_MERGE__skills-script__1.json",
]
DELETE_FIXTURES = [
    "CONTACT_DELETE__docs__1.json",
    "CONTACT_DELETE__sdk-dotnet__1.json",
    "CONTACT_DELETE__sdk-java__1.json",
    "CONTACT_DELETE__skills-script__1.json",
]
MERGED_AT = "2024-06-15T11:00:00Z"
BEFORE, AFTER = "2024-06-15T10:00:00Z", "2024-06-15T12:00:00Z"


@pytest.fixture
def runtime(settings: Settings, ledger: Ledger) -> Iterator[Runtime]:
    rt = Runtime(settings, ledger)
    yield rt
    rt.close()


def fixture(name: str) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return body


def contact(contact_id: str, *numbers: str) -> dict[str, Any]:
    return {
        "id": contact_id,
        "channel_identities": [{"channel": "SMS", "identity": n} for n in numbers],
        "display_name": "",
    }


def merge(preserved: dict[str, Any], deleted: dict[str, Any], at: str = MERGED_AT) -> dict:
    return p.envelope(
        event_time=at,
        contact_merge_notification={"preserved_contact": preserved, "deleted_contact": deleted},
    )


def delete(gone: dict[str, Any], at: str = MERGED_AT) -> dict:
    return p.envelope(event_time=at, contact_delete_notification={"contact": gone})


def everyone(contact_id: str, kind: str, at: str, request_id: str) -> dict:
    """A consent notification for the contact's whole channel (no number)."""
    return p.opt(kind, contact_id=contact_id, identity="", request_id=request_id, event_time=at)


def state(runtime: Runtime, number: str, at: str | None = None) -> str:
    """The consent of an SMS number: now (the pre-send check), or at `at`."""
    vault = runtime.projector().vault
    with runtime.database().read() as cur:
        name = consent.name_of(vault, "SMS", number)
        if at is not None:
            return str(consent.state_at(cur, "SMS", name, at, vault=vault)["state"])
        answer = consent.check(cur, "SMS", name)
    assert answer["may_send"] == (answer["state"] != "OPTED_OUT")
    return str(answer["state"])


# ---- recording ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", MERGE_FIXTURES)
def test_a_merge_is_recorded_on_both_contacts(ledger: Ledger, database_url: str, name: str) -> None:
    body = fixture(name)
    note = body["contact_merge_notification"]
    [outcome] = accept_all(ledger, [body])
    assert (outcome.status, outcome.trigger) == ("accepted", "CONTACT_MERGE")
    assert accept_all(ledger, [body])[0].status == "duplicate"
    events = stored_events(database_url)
    assert "UnrecognisedCallback.Received" not in names(events)
    merged = [e for e in events if names([e]) == ["Contact.Merged"]]
    assert {e.contact_id: e.role for e in merged} == {
        note["preserved_contact"]["id"]: "preserved",
        note["deleted_contact"]["id"]: "deleted",
    }
    assert all(e.callback["raw"] == orjson.dumps(body).decode() for e in merged)
    identities = len(note["preserved_contact"]["channel_identities"]) + len(
        note["deleted_contact"]["channel_identities"]
    )
    assert all(len(e.identities) == identities for e in merged)


@pytest.mark.parametrize("name", DELETE_FIXTURES)
def test_a_deletion_is_recorded_on_its_contact(
    ledger: Ledger, database_url: str, name: str
) -> None:
    body = fixture(name)
    [outcome] = accept_all(ledger, [body])
    assert (outcome.status, outcome.trigger) == ("accepted", "CONTACT_DELETE")
    assert accept_all(ledger, [body])[0].status == "duplicate"
    [deleted] = [e for e in stored_events(database_url) if names([e]) == ["Contact.Deleted"]]
    assert deleted.contact_id == body["contact_delete_notification"]["contact"]["id"]


def test_merges_and_deletions_that_do_not_fit_are_kept_in_the_catch_all(
    ledger: Ledger, database_url: str
) -> None:
    bodies = [
        fixture("nonconforming/CONTACT_MERGE__skills__1.json"),
        fixture("nonconforming/CONTACT_DELETE__skills__1.json"),
    ]
    assert [o.status for o in accept_all(ledger, bodies)] == ["accepted", "accepted"]
    kept = stored_events(database_url)
    assert names(kept) == ["UnrecognisedCallback.Received"] * 2
    assert [e.trigger for e in kept] == ["CONTACT_MERGE", "CONTACT_DELETE"]


def test_the_fixture_merges_join_the_deleted_contacts_opt_out(
    runtime: Runtime, ledger: Ledger
) -> None:
    """Sinch's webhook script's merge: the deleted contact's opt-out for its whole channel
    reaches the preserved contact's number."""
    body = fixture("CONTACT_MERGE__skills-script__1.json")
    note = body["contact_merge_notification"]
    deleted = note["deleted_contact"]["id"]
    opt_out = everyone(deleted, "OPT_OUT", "2026-02-13T15:00:00Z", "R-DELETED")
    opt_out["project_id"] = body["project_id"]
    accept_all(ledger, [opt_out])
    runtime.projector().catch_up()
    assert state(runtime, "+15551234567") == "UNKNOWN"  # the preserved contact's number
    accept_all(ledger, [body])
    runtime.projector().catch_up()
    assert state(runtime, "+15551234567") == "OPTED_OUT"
    assert state(runtime, "+15559876543") == "OPTED_OUT"


# ---- consent, whatever the order ---------------------------------------------------------


def scenarios(world: int) -> dict[str, tuple[list[dict], dict[str, str]]]:
    """Each: the callbacks of one person (contacts A and B, B merged into A) and the consent
    the numbers must have once all arrived. Ids and numbers are the world's own, so many
    worlds share one store without meeting."""
    a, b = f"A{world}", f"B{world}"
    na, nb, nc = f"+4670{world:04d}1", f"+4670{world:04d}2", f"+4670{world:04d}3"
    together = merge(contact(a, na), contact(b, nb))
    return {
        # The deleted contact's opt-out (before the merge) reaches the preserved one's number.
        "deleted opts out": (
            [everyone(b, "OPT_OUT", BEFORE, f"R1{b}"), together],
            {na: "OPTED_OUT", nb: "OPTED_OUT"},
        ),
        # The merge never lifts: an opt-in given to B before the merge speaks for B only.
        "never lifted": (
            [
                p.opt("OPT_OUT", contact_id=a, identity=na, request_id=f"R2{a}", event_time=BEFORE),
                everyone(b, "OPT_IN", "2024-06-15T10:30:00Z", f"R3{b}"),
                together,
            ],
            {na: "OPTED_OUT", nb: "OPTED_IN"},
        ),
        # A late opt-out of the deleted contact dated after the merge still counts; the
        # preserved contact's opt-in from before the merge does not reach B's number.
        "late opt-out": (
            [
                together,
                everyone(b, "OPT_OUT", AFTER, f"R4{b}"),
                everyone(a, "OPT_IN", BEFORE, f"R5{a}"),
            ],
            {na: "OPTED_OUT", nb: "OPTED_OUT"},
        ),
        # After the merge the person opts in again on the preserved contact: all its numbers.
        "opted in after": (
            [
                everyone(b, "OPT_OUT", BEFORE, f"R6{b}"),
                everyone(a, "OPT_IN", AFTER, f"R7{a}"),
                together,
            ],
            {na: "OPTED_IN", nb: "OPTED_IN"},
        ),
        # A number seen only later, by an inbound message to B: still the person's.
        "number seen later": (
            [
                everyone(a, "OPT_OUT", BEFORE, f"R8{a}"),
                together,
                p.inbound(f"IN{world}", "hello", contact_id=b, identity=nc, event_time=AFTER),
            ],
            {na: "OPTED_OUT", nb: "OPTED_OUT", nc: "OPTED_OUT"},
        ),
        # A deletion lifts nothing.
        "deleted": (
            [everyone(b, "OPT_OUT", BEFORE, f"R9{b}"), delete(contact(b, nb))],
            {nb: "OPTED_OUT"},
        ),
    }


def orders() -> list[tuple[str, tuple[int, ...]]]:
    """Every scenario in every order of its callbacks."""
    return [
        (name, order)
        for name, (bodies, _) in scenarios(0).items()
        for order in itertools.permutations(range(len(bodies)))
    ]


def answers(runtime: Runtime, world: int, name: str) -> dict[str, str]:
    return {number: state(runtime, number) for number in scenarios(world)[name][1]}


def test_consent_is_the_same_in_every_order_live_and_replayed(
    runtime: Runtime, ledger: Ledger, settings: Settings
) -> None:
    """Each scenario in every order, one world each, projected after every callback (so a
    merge may be projected before or after the facts it joins), then replayed."""
    worlds = orders()
    steps = max(len(order) for _, order in worlds)
    for step in range(steps):
        for world, (name, order) in enumerate(worlds):
            if step < len(order):
                bodies = scenarios(world)[name][0]
                accept_all(ledger, [bodies[order[step]]])
        runtime.projector().catch_up()
    live = {world: answers(runtime, world, name) for world, (name, _) in enumerate(worlds)}
    for world, (name, order) in enumerate(worlds):
        expected = scenarios(world)[name][1]
        assert live[world] == expected, (name, order)
    live_rows = merge_rows(runtime)
    assert len(live_rows) == 2 * sum(1 for name, _ in worlds if name != "deleted")
    replay(settings)
    fresh = Runtime(settings)
    try:
        replayed = {world: answers(fresh, world, name) for world, (name, _) in enumerate(worlds)}
        assert merge_rows(fresh) == live_rows
    finally:
        fresh.close()
    assert replayed == live


def merge_rows(runtime: Runtime) -> list[dict[str, Any]]:
    with runtime.database().read() as cur:
        rows = cur.execute(
            "SELECT contact_id, project_id, partner_id, merged_at, merged_directly_at, "
            "source_ref FROM contact_merges ORDER BY contact_id, partner_id"
        ).fetchall()
    return [dict(row) for row in rows]


def test_a_merge_counts_from_its_time_on(runtime: Runtime, ledger: Ledger) -> None:
    """Point-in-time answers: before the merge, the deleted contact's opt-out was not about
    the preserved contact's number; from the merge on, it is."""
    a, b = merge(contact("A", "+46700000001"), contact("B", "+46700000002")), None
    del b
    accept_all(ledger, [everyone("B", "OPT_OUT", BEFORE, "R1"), a])
    runtime.projector().catch_up()
    assert state(runtime, "+46700000001", "2024-06-15T10:30:00Z") == "UNKNOWN"
    assert state(runtime, "+46700000001", MERGED_AT.replace("Z", ".000000Z")) == "OPTED_OUT"
    assert state(runtime, "+46700000002", "2024-06-15T10:30:00Z") == "OPTED_OUT"


def test_merges_in_a_chain_join_all_three_contacts(runtime: Runtime, ledger: Ledger) -> None:
    """C merged into B, B into A, in either order: C's opt-out reaches A's number."""
    chain = [
        merge(contact("B", "+46700000002"), contact("C", "+46700000003"), BEFORE),
        merge(contact("A", "+46700000001"), contact("B"), MERGED_AT),
        everyone("C", "OPT_OUT", "2024-06-15T09:00:00Z", "R1"),
    ]
    for body in reversed(chain):
        accept_all(ledger, [body])
        runtime.projector().catch_up()
    assert state(runtime, "+46700000001") == "OPTED_OUT"
    # From the later merge on: until then A and C were not one.
    assert state(runtime, "+46700000001", "2024-06-15T10:30:00Z") == "UNKNOWN"


# ---- lookups by either contact id --------------------------------------------------------


def test_either_contact_id_finds_the_whole_history(client: TestClient) -> None:
    feed(
        client,
        [
            everyone("B", "OPT_OUT", BEFORE, "R1"),
            p.opt("OPT_IN", contact_id="A", identity="+46700000001", request_id="R2"),
            p.delivery("TO-A", "READ", "SMS", "+46700000001", AFTER, contact_id="A"),
            p.delivery("TO-B", "READ", "SMS", "+46700000002", BEFORE, contact_id="B"),
            merge(contact("A", "+46700000001"), contact("B", "+46700000002")),
        ],
    )
    for asked in ("A", "B"):
        sent = client.get("/messages", params={"contact_id": asked}).json()["items"]
        assert sorted(m["message_id"] for m in sent) == ["TO-A", "TO-B"]
        read = client.get("/read-confirmations", params={"contact_id": asked}).json()["items"]
        assert sorted(r["message_id"] for r in read) == ["TO-A", "TO-B"]
        current = client.get(f"/contacts/{asked}/consent").json()
        assert {(r["contact_id"], r["state"]) for r in current["consent"]} == {
            ("A", "OPTED_IN"),
            ("B", "OPTED_OUT"),
        }
        assert {m["contact_id"] for m in current["merged_with"]} == {"A", "B"} - {asked}
        history = client.get(f"/contacts/{asked}/consent/history").json()["items"]
        assert sorted(r["request_id"] for r in history) == ["R1", "R2"]
    # The preserved number's own opt-in is later, but the merge lifts no opt-out of B's.
    check = client.get("/consent/check", params={"channel": "SMS", "identity": "+46700000002"})
    assert check.json()["may_send"] is False


# ---- a store that kept merges in the catch-all -------------------------------------------


def test_merges_kept_in_the_catch_all_are_interpreted_by_reinterpret(
    runtime: Runtime, ledger: Ledger, settings: Settings
) -> None:
    """An earlier version kept CONTACT_MERGE uninterpreted: `reinterpret` records it on the
    contacts with its original receipt, and the consent answers (live and replayed) join."""
    body = merge(contact("A", "+46700000001"), contact("B", "+46700000002"))
    receipt = Receipt(orjson.dumps(body).decode(), datetime.now(UTC), True)
    assert ledger.execute(ledger.unrecognised_command(body, receipt)).status == "accepted"
    accept_all(ledger, [everyone("B", "OPT_OUT", BEFORE, "R1")])
    runtime.projector().catch_up()
    assert state(runtime, "+46700000001") == "UNKNOWN"
    assert ledger.reinterpret_kept()["accepted"] == 1
    assert ledger.reinterpret_kept()["duplicate"] == 1
    runtime.projector().catch_up()
    assert state(runtime, "+46700000001") == "OPTED_OUT"
    replay(settings)
    fresh = Runtime(settings)
    try:
        assert state(fresh, "+46700000001") == "OPTED_OUT"
    finally:
        fresh.close()


def test_the_console_shows_a_merged_contact_whole_by_either_id(client: TestClient) -> None:
    feed(
        client,
        [
            everyone("B", "OPT_OUT", BEFORE, "R1"),
            p.inbound("IN1", "hello", contact_id="A", identity="+46700000001"),
            merge(contact("A", "+46700000001"), contact("B", "+46700000002")),
        ],
    )
    for asked, other in (("A", "B"), ("B", "A")):
        page = client.get(f"/console/contacts/{asked}").text
        assert f'<a href="/console/contacts/{other}">{other}</a>' in page
        assert "46700000001" in page and "46700000002" in page  # both contacts' numbers
        assert "OPTED_OUT" in page
    # The merge that joined them is a reference to its callback, as any fact is.
    [merged] = client.get("/contacts/A/consent").json()["merged_with"]
    callback = client.get(f"/callbacks/{merged['source_ref']}")
    assert callback.status_code == 200
    assert callback.json()["event"] == "Contact.Merged"
    assert "contact_merge_notification" in callback.json()["raw"]


def test_sends_after_the_merge_to_the_preserved_number_are_violations(
    runtime: Runtime, ledger: Ledger
) -> None:
    """The deleted contact opted out before the merge: a message to the preserved contact's
    number after the merge was sent while opted out; one before it was not."""
    accept_all(
        ledger,
        [
            p.delivery("EARLY", "DELIVERED", "SMS", "+46700000001", "2024-06-15T10:30:00Z"),
            p.delivery("LATE", "DELIVERED", "SMS", "+46700000001", AFTER),
            everyone("B", "OPT_OUT", BEFORE, "R1"),
            merge(contact("A", "+46700000001"), contact("B", "+46700000002")),
        ],
    )
    runtime.projector().catch_up()
    vault = runtime.projector().vault
    with runtime.database().read() as cur:
        found = list(consent.violations(cur, vault=vault))
    assert [(v["message_id"], v["opted_out_since"]) for v in found] == [
        ("LATE", "2024-06-15T10:00:00.000000Z")
    ]
    assert found[0]["proof"]["contact_id"] == "B" and "applies_from" not in found[0]["proof"]


def test_a_suppression_dropped_by_an_erasure_is_not_brought_back_by_a_merge(
    runtime: Runtime, ledger: Ledger, settings: Settings
) -> None:
    """An erasure of contact B that forgot its consent: B's opt-out no longer counts for
    B's own numbers, and a merge does not make it count for A's."""
    from privacy.erasure import erase

    accept_all(ledger, [everyone("B", "OPT_OUT", BEFORE, "R1")])
    runtime.projector().catch_up()
    erase(
        ledger,
        project_id="PROJECT1",
        contact_id="B",
        by="test",
        reason="asked",
        forget_consent=True,
        db=runtime.database(),
    )
    accept_all(ledger, [merge(contact("A", "+46700000001"), contact("B", "+46700000002"))])
    runtime.projector().catch_up()
    assert state(runtime, "+46700000001") == "UNKNOWN"


def test_a_number_erased_is_not_shown_by_the_merge_that_named_it(
    runtime: Runtime, ledger: Ledger, settings: Settings
) -> None:
    """The merge's copy of a number is sealed under the merge's key: an erasure of the number
    drops it from the contact's numbers, live and replayed; its opt-out still stands."""
    from privacy.erasure import erase
    from projections.read_model import console as console_queries

    accept_all(
        ledger,
        [
            everyone("B", "OPT_OUT", BEFORE, "R1"),
            merge(contact("A", "+46700000001"), contact("B", "+46700000002")),
        ],
    )
    runtime.projector().catch_up()

    def numbers(rt: Runtime) -> list[Any]:
        vault = rt.projector().vault
        with rt.database().read() as cur:
            rows = console_queries.identities_of_contact(cur, "B", vault=vault)
        return [row["identity"] for row in rows]

    assert numbers(runtime) == ["46700000002"]
    erase(ledger, channel="SMS", identity="+46700000002", by="test", reason="asked")
    runtime.projector().catch_up()
    assert numbers(runtime) == [None]
    assert state(runtime, "+46700000002") == "OPTED_OUT"
    replay(settings)
    fresh = Runtime(settings)
    try:
        assert numbers(fresh) == [None]
        assert state(fresh, "+46700000001") == "OPTED_OUT"
    finally:
        fresh.close()


def test_erasing_either_merged_contact_erases_the_person(
    runtime: Runtime, ledger: Ledger, settings: Settings
) -> None:
    """Merged contacts are one person, and each one's merge event holds the other's numbers:
    an erasure of either contact reaches both, their numbers and their streams' texts."""
    from privacy.erasure import contact_subjects, erase
    from projections.read_model import console as console_queries

    accept_all(
        ledger,
        [
            everyone("B", "OPT_OUT", BEFORE, "R1"),
            merge(contact("A", "+46700000001"), contact("B", "+46700000002")),
        ],
    )
    runtime.projector().catch_up()
    db = runtime.database()
    vault = ledger.vault
    subjects = contact_subjects(ledger, "PROJECT1", "B", db)
    for one in ("A", "B"):
        assert vault.contact_subject("PROJECT1", one) in subjects
    for number in ("+46700000001", "+46700000002"):
        assert vault.index("SMS", number) in subjects
    # Without the read tables only the contact's own stream is known.
    assert vault.contact_subject("PROJECT1", "A") not in contact_subjects(ledger, "PROJECT1", "B")

    erase(ledger, project_id="PROJECT1", contact_id="B", by="test", reason="asked", db=db)
    runtime.projector().catch_up()
    with db.read() as cur:
        for one in ("A", "B"):
            rows = console_queries.identities_of_contact(cur, one, vault=runtime.projector().vault)
            assert rows and all(row["identity"] is None for row in rows), one
    assert state(runtime, "+46700000001") == "OPTED_OUT"
