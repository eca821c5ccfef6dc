"""The next-action table, as a pure function."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from domain import followup
from projections import rules

REFERENCE = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "reference"
    / "sinch-conversation-callbacks.md"
)


def documented_codes() -> list[str]:
    """The reason codes listed in the reference collected from Sinch's SDK enums."""
    text = REFERENCE.read_text()
    listed = text.split("Reason codes (SDK enums):", 1)[1].split("Sub-codes:", 1)[0]
    return re.findall(r"[A-Z][A-Z_]+[A-Z]", listed)


def test_every_documented_code_has_a_known_action() -> None:
    codes = documented_codes()
    assert len(codes) == 27  # the reference's list; a new one must be placed in the table
    for code in codes:
        assert code in followup.REASONS, code
        action, why = followup.next_action("FAILED", code)
        assert action in followup.ACTIONS
        assert why.startswith(code)


@pytest.mark.parametrize(
    ("code", "action"),
    [
        ("RATE_LIMITED", "retry_later"),
        ("INTERNAL_ERROR", "retry_later"),
        ("CHANNEL_FAILURE", "retry_later"),
        ("DELIVERY_TIMED_OUT", "retry_later"),
        ("OUTSIDE_ALLOWED_SENDING_WINDOW", "use_template"),
        ("RECIPIENT_NOT_OPTED_IN", "needs_opt_in"),
        ("MEDIA_TOO_LARGE", "fix_content"),
        ("TEMPLATE_NOT_FOUND", "fix_content"),
        ("CHANNEL_BAD_CONFIGURATION", "fix_configuration"),
        ("UNKNOWN_APP", "fix_configuration"),
        ("NO_PERMISSION", "fix_configuration"),
        ("RECIPIENT_NOT_REACHABLE", "do_not_retry"),
        ("RECIPIENT_INVALID_CHANNEL_IDENTITY", "do_not_retry"),
        ("CONTACT_NOT_FOUND", "do_not_retry"),
        ("UNKNOWN", "review"),
    ],
)
def test_the_issue_s_examples(code: str, action: str) -> None:
    assert followup.next_action("FAILED", code)[0] == action


def test_an_unknown_code_is_for_review_and_says_so() -> None:
    action, why = followup.next_action("FAILED", "SOMETHING_NEW_2027")
    assert action == "review"
    assert "SOMETHING_NEW_2027" in why
    assert followup.next_action("FAILED", None) == ("review", "failed without a reason code")


def test_a_sub_code_that_says_more_decides() -> None:
    assert followup.next_action("FAILED", "CHANNEL_REJECT", "ATTACHMENT_REJECTED")[0] == (
        "fix_content"
    )
    assert followup.next_action("FAILED", "CHANNEL_FAILURE", "INACTIVE_SENDER")[0] == (
        "fix_configuration"
    )
    # The unspecified sub-code adds nothing.
    assert followup.next_action("FAILED", "CHANNEL_FAILURE", "UNSPECIFIED_SUB_CODE")[0] == (
        "retry_later"
    )


@pytest.mark.parametrize("status", ["DELIVERED", "READ", "QUEUED_ON_CHANNEL", "SWITCHING_CHANNEL"])
def test_delivered_read_or_moving_needs_nothing(status: str) -> None:
    assert followup.next_action(status, "CHANNEL_FAILURE")[0] == "none"


def test_a_message_delivered_on_a_fallback_after_a_failure_needs_nothing() -> None:
    def report(status: str, channel: str, second: int, code: str | None = None) -> dict:
        return {
            "status": status,
            "channel": channel,
            "identity": "46700000001",
            "at": f"2024-06-15T14:00:0{second}.000000Z",
            "reason_code": code,
            "reason_sub_code": None,
            "reason_description": None,
            "source_ref": f"m/{channel}|{status}",
        }

    reports = rules.merge_reports(
        [],
        [
            report("FAILED", "WHATSAPP", 1, "RECIPIENT_NOT_REACHABLE"),
            report("DELIVERED", "SMS", 2),
        ],
    )
    row = rules.message_row("P", "M", reports)
    assert row["reason_code"] == "RECIPIENT_NOT_REACHABLE"  # kept as the timeline's fact
    assert followup.next_action(row["status"], row["reason_code"])[0] == "none"


def test_overrides_replace_an_action_and_are_checked() -> None:
    overrides = followup.parse_overrides(" channel_failure = review , UNKNOWN=retry_later")
    assert overrides == {"CHANNEL_FAILURE": "review", "UNKNOWN": "retry_later"}
    action, why = followup.next_action("FAILED", "CHANNEL_FAILURE", None, overrides)
    assert (action, why) == ("review", "CHANNEL_FAILURE: set by LEDGER_NEXT_ACTIONS")
    assert followup.next_action("FAILED", "RATE_LIMITED", None, overrides)[0] == "retry_later"
    for bad in ("CHANNEL_FAILURE", "CHANNEL_FAILURE=resend", "=none"):
        with pytest.raises(ValueError, match="LEDGER_NEXT_ACTIONS"):
            followup.parse_overrides(bad)
    assert followup.parse_overrides("") == {}


def test_read_is_expected_only_where_a_source_says_it_is_reported() -> None:
    assert followup.reports_read("WHATSAPP")
    assert followup.reports_read("rcs")
    assert not followup.reports_read("SMS")
    assert not followup.reports_read(None)
    assert followup.reports_read("VIBERBM", followup.parse_channels("viberbm, WHATSAPP"))


def test_the_documented_table_is_the_code_s_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    for code, (action, why) in followup.REASONS.items():
        assert f"| `{code}` | `{action}` | {why} |" in readme, code
