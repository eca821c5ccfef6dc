"""Projections on SQLite and PostgreSQL: the rows, their order-independence, replay, and
exactly-once following."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.log_reader import EventLog
from projections.rebuild import ReadAhead, Rebuild
from service.replay import replay
from service.runtime import Runtime
from service.settings import Settings
from store.ledger import Ledger
from tests import payloads as p
from tests.helpers import KEYS, VIEWS, accept_all, projection_rows


@pytest.fixture
def runtime(settings: Settings, ledger: Ledger) -> Iterator[Runtime]:
    rt = Runtime(settings, ledger)
    yield rt
    rt.close()


def catch_up(runtime: Runtime) -> None:
    runtime.projector().catch_up()


SCENARIO = [
    # M1: WhatsApp fails over to SMS, delivered and read; reports arrive out of order, twice.
    p.delivery("M1", "READ", "SMS", event_time="2024-06-15T10:00:05Z"),
    p.delivery("M1", "QUEUED_ON_CHANNEL", "WHATSAPP", event_time="2024-06-15T10:00:00Z"),
    p.delivery(
        "M1",
        "SWITCHING_CHANNEL",
        "WHATSAPP",
        event_time="2024-06-15T10:00:01Z",
        reason={"code": "RECIPIENT_NOT_REACHABLE"},
    ),
    p.delivery("M1", "DELIVERED", "SMS", event_time="2024-06-15T10:00:03Z"),
    p.delivery("M1", "QUEUED_ON_CHANNEL", "SMS", event_time="2024-06-15T10:00:02Z"),
    p.delivery("M1", "READ", "SMS", event_time="2024-06-15T10:00:05Z"),
    # M2: failed for good.
    p.delivery("M2", "QUEUED_ON_CHANNEL", "SMS", event_time="2024-06-15T11:00:00Z"),
    p.delivery(
        "M2",
        "FAILED",
        "SMS",
        event_time="2024-06-15T11:00:01Z",
        reason={
            "code": "RECIPIENT_INVALID_CHANNEL_IDENTITY",
            "sub_code": "X",
            "description": "bad number",
        },
    ),
    # Consent: a STOP by SMS, a later opt-in by notification, a failed opt-out on Viber.
    p.inbound("IN1", "stop", identity="+46700000001", event_time="2024-06-15T12:00:00Z"),
    p.opt("OPT_IN", request_id="R1", identity="46700000001", event_time="2024-06-15T13:00:00Z"),
    p.opt(
        "OPT_OUT",
        status="OPT_OUT_FAILED",
        request_id="R2",
        channel="VIBERBM",
        event_time="2024-06-15T14:00:00Z",
    ),
    p.inbound("IN2", "don't stop the music", event_time="2024-06-15T12:30:00Z"),
]
FREE_TEXT_STOP = p.inbound("IN3", "please stop texting me", event_time="2024-06-15T12:40:00Z")


def test_scenario_rows(runtime: Runtime, ledger: Ledger, database_url: str) -> None:
    accept_all(ledger, [*SCENARIO, FREE_TEXT_STOP])
    catch_up(runtime)
    rows = projection_rows(database_url)

    m1, m2 = rows["message_status"]
    assert (m1["message_id"], m1["status"], m1["channel"]) == ("M1", "READ", "SMS")
    assert m1["queued_at"] == "2024-06-15T10:00:00.000000Z"
    assert m1["delivered_at"] == "2024-06-15T10:00:03.000000Z"
    assert m1["read_at"] == "2024-06-15T10:00:05.000000Z"
    assert (m1["switched_from"], m1["reason_code"], m1["report_count"]) == (
        "WHATSAPP",
        "RECIPIENT_NOT_REACHABLE",
        5,
    )
    assert (m1["metadata"], m1["contact_id"], m1["conversation_id"]) == (
        "order-123",
        "CONTACT1",
        "CONV1",
    )
    assert [r["status"] for r in orjson.loads(m1["reports"])] == [
        "QUEUED_ON_CHANNEL",
        "SWITCHING_CHANNEL",
        "QUEUED_ON_CHANNEL",
        "DELIVERED",
        "READ",
    ]
    assert (m2["status"], m2["failed_at"], m2["reason_code"], m2["reason_description"]) == (
        "FAILED",
        "2024-06-15T11:00:01.000000Z",
        "RECIPIENT_INVALID_CHANNEL_IDENTITY",
        "bad number",
    )

    assert [(r["message_id"], r["channel"], r["read_at"]) for r in rows["read_confirmations"]] == [
        ("M1", "SMS", "2024-06-15T10:00:05.000000Z")
    ]

    [sms] = rows["consent"]  # the failed Viber opt-out changes no state
    assert (sms["channel"], sms["identity"], sms["state"], sms["since"], sms["source_kind"]) == (
        "SMS",
        "46700000001",
        "OPTED_IN",
        "2024-06-15T13:00:00.000000Z",
        "OPT_IN",
    )
    history = sorted(rows["consent_history"], key=lambda r: r["event_time"])
    assert [(h["fact"], h["effect"], h["keyword"]) for h in history] == [
        ("KEYWORD_OPT_OUT", "OPTED_OUT", "STOP"),
        ("OPT_IN_SUCCEEDED", "OPTED_IN", None),
        ("OPT_OUT_FAILED", None, None),
    ]
    assert history[0]["inbound_message_id"] == "IN1"
    assert history[1]["request_id"] == "R1"
    # Free text that reads like a revocation is listed for a human; "don't stop" is not.
    [review] = rows["consent_review"]
    assert (review["inbound_message_id"], review["text"], review["matched"]) == (
        "IN3",
        "please stop texting me",
        "stop+contact",
    )
    assert (review["channel"], review["identity"], review["contact_id"]) == (
        "SMS",
        "46732001122",
        "CONTACT1",
    )
    assert review["event_time"] == "2024-06-15T12:40:00.000000Z"


def test_positions_and_lag(runtime: Runtime, ledger: Ledger) -> None:
    accept_all(ledger, SCENARIO[:3])
    before = runtime.projector().positions()
    assert before["messages"]["lag"] == before["consent"]["lag"] > 0
    catch_up(runtime)
    after = runtime.projector().positions()
    assert after["messages"]["lag"] == after["consent"]["lag"] == 0


def test_catch_up_applies_what_came_before_it_and_stops_while_callbacks_keep_arriving(
    runtime: Runtime, ledger: Ledger
) -> None:
    accept_all(ledger, SCENARIO)
    head = ledger.ping()
    projector = runtime.projector()
    projector.page_size = 4
    steps, late = projector.apply_next_page, iter(range(100))

    def step_then_a_callback_arrives(*args: Any, **kwargs: Any) -> dict[str, int]:
        moved = steps(*args, **kwargs)
        # Under load something is always newer than the page just applied.
        # A new contact's first message: two events (Registered and the message).
        n = next(late)
        accept_all(ledger, [p.inbound(f"LATE{n}", text="hi", contact_id=f"LATE{n}")])
        return moved

    projector.apply_next_page = step_then_a_callback_arrives  # type: ignore[method-assign]
    pages = projector.catch_up()
    positions = projector.positions()
    assert positions["messages"]["position"] >= head
    assert positions["consent"]["position"] >= head
    # Full pages while the backlog lasts (4 read and 2 new per page), the last one short.
    assert pages == -(-head // 2)
    assert positions["messages"]["lag"] > 0  # the late ones wait for the next call


def test_replay_equals_live_and_swaps_generation(
    runtime: Runtime, ledger: Ledger, settings: Settings, database_url: str
) -> None:
    accept_all(ledger, SCENARIO)
    catch_up(runtime)
    live = projection_rows(database_url)
    results = replay(settings, page_size=3)
    assert {name: r["generation"] for name, r in results.items()} == {
        "messages": 2,
        "consent": 2,
        "callbacks": 2,
    }
    assert projection_rows(database_url) == live
    # The live follower carries on in the new generation.
    accept_all(ledger, [p.delivery("M3", "DELIVERED")])
    catch_up(runtime)
    assert len(projection_rows(database_url)["message_status"]) == 3


def test_interrupted_replay_resumes(
    runtime: Runtime, ledger: Ledger, settings: Settings, database_url: str
) -> None:
    accept_all(ledger, SCENARIO)
    catch_up(runtime)
    live = projection_rows(database_url)
    projector = runtime.projector()
    projector.page_size = 2
    generation, _ = Rebuild(projector).start("messages")
    first = Rebuild(projector).steps(["messages"])["messages"]
    assert first > 0  # then the process "dies"; queries still answer from the live tables
    assert projection_rows(database_url) == live

    results = replay(settings, ["messages"], page_size=2)
    assert results["messages"]["generation"] == generation
    assert results["messages"]["events"] < ledger.ping()  # resumed, not started over
    assert projection_rows(database_url) == live


def test_replay_reading_ahead_meets_another_replay_and_new_events(
    runtime: Runtime, ledger: Ledger, settings: Settings, database_url: str
) -> None:
    """Replay reads the next pages on a second connection while it writes; pages read ahead
    that no longer start at the position (another replay moved it) are read again."""
    accept_all(ledger, SCENARIO[:8])
    projector = runtime.projector()
    projector.page_size = 2
    other = Runtime(settings, ledger)
    other.projector().page_size = 3
    names = ["messages", "consent"]
    for name in names:
        Rebuild(projector).start(name)
    pages = Rebuild(projector).build_all(names)
    first = next(pages)
    Rebuild(other.projector()).steps(names)  # the read-ahead pages no longer fit
    accept_all(ledger, SCENARIO[8:])  # and the log grows meanwhile
    positions = [first, *pages]
    assert positions == sorted(positions) and len(positions) > 2
    for name in names:
        Rebuild(projector).finish(name)
    replayed = projection_rows(database_url)
    other.close()

    fresh = Runtime(replace(settings), ledger)
    for name in names:
        Rebuild(fresh.projector()).start(name, fresh=True)
        Rebuild(fresh.projector()).finish(name)
    assert replayed == projection_rows(database_url)
    assert len(replayed["message_status"]) == 2 and len(replayed["consent"]) == 1
    fresh.close()


def test_an_abandoned_replay_stops_reading_ahead(runtime: Runtime, ledger: Ledger) -> None:
    accept_all(ledger, SCENARIO)
    projector = runtime.projector()
    projector.page_size = 1
    Rebuild(projector).start("messages")
    pages = Rebuild(projector).build_all(["messages"])
    next(pages)
    pages.close()
    assert not [t for t in threading.enumerate() if t.name == "ledger-read-ahead"]


def test_a_failing_read_ahead_fails_the_replay(runtime: Runtime) -> None:
    projector = runtime.projector()
    missing = EventLog("no_such_events_table", projector.db.backend)
    pages = ReadAhead(projector.db, missing, 0, 10, frozenset())
    with pages, pytest.raises(Exception, match="no_such_events_table"):
        next(iter(pages))
    assert not [t for t in threading.enumerate() if t.name == "ledger-read-ahead"]


# Enough message streams for both parts of a split replay, and the consent scenario beside them.
SPLIT_LOAD = [
    p.delivery(f"S{i}", status, "SMS", event_time=f"2024-06-15T10:{i % 60:02d}:{k:02d}Z")
    for i in range(40)
    for k, status in enumerate(("QUEUED_ON_CHANNEL", "DELIVERED", "READ")[: 1 + i % 3])
] + SCENARIO


def test_replay_split_across_processes_equals_one_process(
    ledger: Ledger, settings: Settings, database_url: str, backend: str
) -> None:
    accept_all(ledger, SPLIT_LOAD)
    if backend == "sqlite":
        with pytest.raises(SystemExit, match="needs PostgreSQL"):
            replay(settings, jobs=2)
        return
    replay(settings, page_size=7)
    one_process = projection_rows(database_url, views={**VIEWS, "callbacks": ("reference",)})
    results = replay(settings, page_size=7, jobs=2)
    assert projection_rows(database_url, views={**VIEWS, "callbacks": ("reference",)}) == (
        one_process
    )
    assert {name: r["generation"] for name, r in results.items()} == {
        "messages": 3,
        "consent": 3,
        "callbacks": 3,
    }


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_an_interrupted_split_replay_resumes_split(
    runtime: Runtime, ledger: Ledger, settings: Settings, database_url: str
) -> None:
    accept_all(ledger, SPLIT_LOAD)
    replay(settings, page_size=5)
    expected = projection_rows(database_url)
    projector = runtime.projector()
    projector.page_size = 5
    Rebuild(projector).start("messages", fresh=True)
    assert Rebuild(projector).plan_parts("messages", 2) == 2
    part = Rebuild(projector).build_part("messages", 0, 2, ledger.ping())
    next(part), next(part)  # part 0 two pages in, part 1 not started: then interrupted
    part.close()
    # Asked for one process, it resumes as it was split: the parts' rows are not applied twice.
    replay(settings, ["messages"], page_size=5)
    assert projection_rows(database_url) == expected
    assert Rebuild(projector).part_positions("messages") == [0]  # no parts left


def test_replay_with_changed_keywords_rederives_consent(
    runtime: Runtime, ledger: Ledger, settings: Settings, database_url: str
) -> None:
    accept_all(
        ledger,
        [
            p.inbound("IN1", "Arrêt !", event_time="2024-06-15T12:00:00Z"),
            p.inbound("IN2", "BASTA", identity="+46700000009", event_time="2024-06-15T12:00:00Z"),
        ],
    )
    catch_up(runtime)
    [row] = projection_rows(database_url)["consent"]  # ARRET: French, on by default
    assert (row["identity"], row["state"]) == ("46732001122", "OPTED_OUT")
    # English only, and BASTA added: the same stored texts read otherwise.
    replay(replace(settings, keyword_languages=("en",), opt_out_keywords=("basta",)), ["consent"])
    rows = projection_rows(database_url)
    [row] = rows["consent"]
    assert (row["identity"], row["state"], row["source_kind"]) == (
        "46700000009",
        "OPTED_OUT",
        "KEYWORD",
    )
    assert [(h["inbound_message_id"], h["keyword"]) for h in rows["consent_history"]] == [
        ("IN2", "BASTA")
    ]


def test_joined_words_are_no_opt_in_and_listed_opt_ins_replace_the_defaults(
    runtime: Runtime, ledger: Ledger, settings: Settings, database_url: str
) -> None:
    accept_all(
        ledger,
        [
            p.inbound("IN1", "un stop", event_time="2024-06-15T12:00:00Z"),
            p.inbound(
                "IN2", "Non arrêt", identity="+46700000008", event_time="2024-06-15T12:01:00Z"
            ),
            p.inbound("IN3", "Yes", identity="+46700000009", event_time="2024-06-15T12:02:00Z"),
            p.inbound(
                "IN4", "stop stop", identity="+46700000007", event_time="2024-06-15T12:03:00Z"
            ),
        ],
    )
    catch_up(runtime)
    rows = projection_rows(database_url)
    assert sorted((r["identity"], r["state"]) for r in rows["consent"]) == [
        ("46700000007", "OPTED_OUT"),
        ("46700000009", "OPTED_IN"),
    ]
    assert sorted((h["inbound_message_id"], h["keyword"]) for h in rows["consent_history"]) == [
        ("IN3", "YES"),
        ("IN4", "STOP STOP"),
    ]
    assert sorted((r["inbound_message_id"], r["matched"]) for r in rows["consent_review"]) == [
        ("IN1", "keyword+other"),
        ("IN2", "keyword+other"),
    ]
    # Listed opt-in words replace the languages' own: YES no longer opts anyone in.
    replay(replace(settings, opt_in_keywords=("START", "UNSTOP")), ["consent"])
    rows = projection_rows(database_url)
    assert [(r["identity"], r["state"]) for r in rows["consent"]] == [("46700000007", "OPTED_OUT")]
    assert [h["inbound_message_id"] for h in rows["consent_history"]] == ["IN4"]


def test_concurrent_followers_apply_each_page_once(
    settings: Settings, ledger: Ledger, database_url: str
) -> None:
    accept_all(ledger, SCENARIO)
    runtimes = [Runtime(settings, ledger) for _ in range(3)]
    for rt in runtimes:
        rt.projector().page_size = 1
    threads = [threading.Thread(target=rt.projector().catch_up) for rt in runtimes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = projection_rows(database_url)
    for rt in runtimes:
        rt.close()
    reference = Runtime(settings, ledger)
    replay(settings)
    assert projection_rows(database_url) == rows
    reference.close()


# ---- order independence, generated -----------------------------------------------------------

CHANNELS = ["WHATSAPP", "SMS", "RCS"]
STATUSES = ["QUEUED_ON_CHANNEL", "SWITCHING_CHANNEL", "FAILED", "DELIVERED", "READ"]
SECONDS = st.integers(0, 59).map(lambda s: f"2024-06-15T10:00:{s:02d}Z")
IDENTITIES = st.sampled_from(["+46700000001", "46700000001", "46700000002"])

callback = st.one_of(
    st.builds(
        lambda m, s, c, t, code: p.delivery(
            f"M{m}", s, c, event_time=t, reason={"code": code} if code else None
        ),
        st.integers(0, 3),
        st.sampled_from(STATUSES),
        st.sampled_from(CHANNELS),
        SECONDS,
        st.sampled_from([None, "RATE_LIMITED", "RECIPIENT_NOT_REACHABLE"]),
    ),
    st.builds(
        lambda k, ok, i, t, r: p.opt(
            k,
            status=f"{k}_{'SUCCEEDED' if ok else 'FAILED'}",
            identity=i,
            event_time=t,
            request_id=r,
        ),
        st.sampled_from(["OPT_IN", "OPT_OUT"]),
        st.booleans(),
        IDENTITIES,
        SECONDS,
        st.one_of(st.none(), st.sampled_from(["R1", "R2", "R3"])),
    ),
    st.builds(
        lambda n, text, i, t: p.inbound(f"IN{n}", text, identity=i, event_time=t),
        st.integers(0, 5),
        st.sampled_from(["STOP", "start", "hello", "Stop ", None, "stop texting me", "HELP"]),
        IDENTITIES,
        SECONDS,
    ),
)


@pytest.fixture
def second_database_url(backend: str, tmp_path_factory, request) -> Iterator[str]:
    from tests.conftest import fresh_database

    yield from fresh_database(backend, tmp_path_factory, request)


def natural_key(body: dict) -> tuple:
    """What the ledger treats as the same callback. Generated sets hold one body per key: a real
    repeat is the same body; two different bodies under one key do not happen (see
    docs/internals.md)."""
    if "message_delivery_report" in body:
        r = body["message_delivery_report"]
        return ("D", r["message_id"], r["channel_identity"]["channel"], r["status"])
    if "message" in body:
        return ("I", body["message"]["id"])
    kind, note = next((k, v) for k, v in body.items() if k.endswith("_notification"))
    if note.get("request_id"):
        return ("O", kind, note["request_id"])
    return (
        "O",
        kind,
        note["channel"],
        note["identity"].lstrip("+"),
        note["status"],
        body["event_time"],
    )


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    bodies=st.lists(callback, min_size=1, max_size=25, unique_by=natural_key),
    seed=st.integers(0, 2**32),
)
def test_every_permutation_and_duplication_gives_the_same_rows(
    database_url: str, second_database_url: str, bodies: list[dict], seed: int
) -> None:
    # Each example writes to a project of its own, so examples share the two databases.
    project = f"P{uuid.uuid4().hex}"
    bodies = [{**b, "project_id": project} for b in bodies]
    shuffled = bodies + random.Random(seed).sample(bodies, k=len(bodies) // 2)
    random.Random(seed + 1).shuffle(shuffled)

    for url, batch in ((database_url, bodies), (second_database_url, shuffled)):
        rt = Runtime(Settings(keys=KEYS, database_url=url))
        try:
            accept_all(rt.ledger(), batch)
            rt.projector().page_size = 7
            rt.projector().catch_up()
        finally:
            rt.close()

    live = projection_rows(second_database_url, project=project)
    assert projection_rows(database_url, project=project) == live
    replay(Settings(keys=KEYS, database_url=second_database_url), page_size=5)
    assert projection_rows(second_database_url, project=project) == live
