"""The order-independence rules, as pure functions."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections import rules

T = "2024-06-15T14:00:0{}.000000Z"


def fact(status: str, channel: str | None = "WHATSAPP", second: int = 0, **extra) -> dict:
    base = {
        "status": status,
        "channel": channel,
        "identity": "4673",
        "at": T.format(second),
        "reason_code": None,
        "reason_sub_code": None,
        "reason_description": None,
        "contact_id": "C1",
        "conversation_id": "CV1",
        "metadata": "order-1",
        "app_id": "A1",
        "source_ref": f"m/{channel}|{status}",
    }
    return {**base, **extra}


def row_of(*facts: dict) -> dict:
    return rules.message_row("P", "M", rules.merge_reports([], facts))


def test_a_late_queued_or_delivered_never_moves_read_back() -> None:
    row = row_of(fact("READ", second=3), fact("DELIVERED", second=2), fact("QUEUED_ON_CHANNEL"))
    assert row["status"] == "READ"
    assert (row["queued_at"], row["delivered_at"], row["read_at"]) == (
        T.format(0),
        T.format(2),
        T.format(3),
    )


def test_read_without_delivered_still_reads_as_read() -> None:
    row = row_of(fact("QUEUED_ON_CHANNEL"), fact("READ", second=1))
    assert row["status"] == "READ" and row["delivered_at"] is None


def test_delivery_on_a_fallback_channel_beats_the_failure() -> None:
    row = row_of(
        fact("QUEUED_ON_CHANNEL", "WHATSAPP"),
        fact("SWITCHING_CHANNEL", "WHATSAPP", 1, reason_code="RECIPIENT_NOT_REACHABLE"),
        fact("QUEUED_ON_CHANNEL", "SMS", 2),
        fact("FAILED", "RCS", 3, reason_code="CHANNEL_FAILURE"),
        fact("DELIVERED", "SMS", 4),
    )
    assert (row["status"], row["channel"]) == ("DELIVERED", "SMS")
    assert row["switched_from"] == "WHATSAPP"
    assert row["reason_code"] == "CHANNEL_FAILURE"  # the failure is still on record
    assert row["anomaly"] is None
    assert row["report_count"] == 5


def test_failed_and_delivered_on_one_channel_is_an_anomaly() -> None:
    row = row_of(fact("DELIVERED", "SMS"), fact("FAILED", "SMS", 1, reason_code="X"))
    assert row["status"] == "DELIVERED"
    assert row["anomaly"] == "FAILED and delivered on the same channel: SMS"


def test_unknown_status_is_kept_but_does_not_rank() -> None:
    row = row_of(fact("DELIVERED"), fact("SOMETHING_NEW", second=5))
    assert row["status"] == "DELIVERED" and row["report_count"] == 2
    assert row_of(fact("SOMETHING_NEW"))["status"] == "SOMETHING_NEW"


STATUSES = ["QUEUED_ON_CHANNEL", "SWITCHING_CHANNEL", "FAILED", "DELIVERED", "READ"]
facts_strategy = st.lists(
    st.builds(
        fact,
        st.sampled_from(STATUSES),
        st.sampled_from(["WHATSAPP", "SMS", None]),
        st.integers(0, 9),
    ),
    min_size=1,
    max_size=12,
)


@given(facts_strategy, st.randoms())
def test_any_order_and_split_gives_the_same_row(facts: list, random) -> None:
    expected = row_of(*facts)
    shuffled = facts + facts[: len(facts) // 2]
    random.shuffle(shuffled)
    cut = random.randint(0, len(shuffled))
    merged = rules.merge_reports(rules.merge_reports([], shuffled[:cut]), shuffled[cut:])
    assert rules.message_row("P", "M", merged) == expected


def consent(effect: str | None, second: int, ref: str) -> dict:
    return {
        "project_id": "P",
        "contact_id": "C",
        "channel": "SMS",
        "identity": "4673",
        "effect": effect,
        "event_time": T.format(second),
        "source_kind": "OPT_OUT",
        "source_ref": ref,
    }


def test_consent_latest_event_time_wins_and_opt_out_wins_ties() -> None:
    out_early = rules.consent_row(consent(rules.OPTED_OUT, 1, "a"))
    in_late = rules.consent_row(consent(rules.OPTED_IN, 2, "b"))
    in_tie = rules.consent_row(consent(rules.OPTED_IN, 1, "z"))
    for order in itertools.permutations([out_early, in_late, in_tie]):
        current = None
        for row in order:
            current = rules.merge_consent(current, row)
        assert current == in_late
    for order in itertools.permutations([out_early, in_tie]):
        assert rules.merge_consent(order[0], order[1]) == out_early


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("STOP", "OPT_OUT"),
        ("  stop \n", "OPT_OUT"),
        ("Revoke", "OPT_OUT"),
        ("optout", "OPT_OUT"),
        ("START", "OPT_IN"),
        ("unstop", "OPT_IN"),
        ("yes", "OPT_IN"),
        ("don't stop", None),
        ("STOP please", "OPT_OUT"),  # an opt-out keyword and courtesy only
        ("un stop", None),  # "a stop", not UNSTOP
        ("non arrêt", None),  # a refusal, not NONARRET
        ("", None),
        (None, None),
        ("HELP", "HELP"),
    ],
)
def test_keywords_match_the_whole_message_only(text: str | None, action: str | None) -> None:
    assert rules.DEFAULT_KEYWORDS.read(text).action == action


def test_keyword_lists_are_configurable() -> None:
    keywords = rules.Keywords.of(["ARRET"], ["OUI"])
    assert keywords.read("arrêt").action == "OPT_OUT"
    assert keywords.read("oui").action == "OPT_IN"
    assert keywords.read("STOP").action is None


def test_times_are_fixed_width_utc_text() -> None:
    assert rules.iso("2024-06-15T16:00:00+02:00") == "2024-06-15T14:00:00.000000Z"
    assert rules.iso("2024-06-15T14:00:00.5Z") == "2024-06-15T14:00:00.500000Z"
    assert (
        rules.stored_time({"_type_": "datetime_iso", "_data_": "2024-06-15T14:00:00+00:00"})
        == "2024-06-15T14:00:00.000000Z"
    )
