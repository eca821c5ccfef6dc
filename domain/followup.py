"""What to do next about a message, from its deciding delivery report: Sinch's MESSAGE_DELIVERY
advice as one table, so the projection, the API and the `followup` command agree. Unknown codes
are data, not errors (providers add codes): they get `review`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

NONE: Final = "none"
RETRY_LATER: Final = "retry_later"
USE_TEMPLATE: Final = "use_template"
NEEDS_OPT_IN: Final = "needs_opt_in"
FIX_CONTENT: Final = "fix_content"
FIX_CONFIGURATION: Final = "fix_configuration"
DO_NOT_RETRY: Final = "do_not_retry"
REVIEW: Final = "review"

ACTIONS: Final = (
    NONE,
    RETRY_LATER,
    USE_TEMPLATE,
    NEEDS_OPT_IN,
    FIX_CONTENT,
    FIX_CONFIGURATION,
    DO_NOT_RETRY,
    REVIEW,
)

# Reason code -> (action, why). The README's "Following up on failed messages" prints this
# table; tests check that every code documented in Sinch's SDK enums is here.
REASONS: Final[Mapping[str, tuple[str, str]]] = {
    # Transient: the same message may well go through later.
    "RATE_LIMITED": (RETRY_LATER, "the channel or Sinch throttled the send"),
    "INTERNAL_ERROR": (RETRY_LATER, "an error inside Sinch, not about this message"),
    "CHANNEL_FAILURE": (RETRY_LATER, "the channel provider failed; Sinch calls it transient"),
    "DELIVERY_TIMED_OUT": (RETRY_LATER, "the channel did not confirm in time"),
    "MESSAGE_EXPIRED": (RETRY_LATER, "its time to live ran out before delivery"),
    # WhatsApp's 24-hour customer-service window closed: only a template may open it again.
    "OUTSIDE_ALLOWED_SENDING_WINDOW": (USE_TEMPLATE, "the channel's sending window closed"),
    "RECIPIENT_NOT_OPTED_IN": (NEEDS_OPT_IN, "the channel requires the recipient's opt-in"),
    # The message itself must change before it is sent again.
    "MEDIA_TYPE_UNSUPPORTED": (FIX_CONTENT, "the channel does not take this media type"),
    "MEDIA_TOO_LARGE": (FIX_CONTENT, "the media is over the channel's size limit"),
    "MEDIA_NOT_REACHABLE": (FIX_CONTENT, "the media URL could not be fetched"),
    "TEMPLATE_NOT_FOUND": (FIX_CONTENT, "the template does not exist"),
    "TEMPLATE_INSUFFICIENT_PARAMETERS": (FIX_CONTENT, "the template's parameters are missing"),
    "TEMPLATE_NON_EXISTING_LANGUAGE_OR_VERSION": (
        FIX_CONTENT,
        "the template has no such language or version",
    ),
    "DELIVERY_REJECTED_DUE_TO_POLICY": (FIX_CONTENT, "the content breaks the channel's policy"),
    "BAD_REQUEST": (FIX_CONTENT, "the message as sent was malformed"),
    "UNSUPPORTED_OPERATION": (FIX_CONTENT, "the channel cannot do what the message asks"),
    "MESSAGE_SPLIT_REQUIRED": (FIX_CONTENT, "the text must be split to fit the channel"),
    # Our side's set-up: nothing sent through it will go until it is fixed.
    "CHANNEL_BAD_CONFIGURATION": (FIX_CONFIGURATION, "the app's channel set-up is wrong"),
    "CHANNEL_CONFIGURATION_MISSING": (FIX_CONFIGURATION, "the app has no set-up for the channel"),
    "UNKNOWN_APP": (FIX_CONFIGURATION, "Sinch does not know the app"),
    "NO_PERMISSION": (FIX_CONFIGURATION, "the app may not use this channel or feature"),
    "INACTIVE_CREDENTIAL": (FIX_CONFIGURATION, "the channel credential is inactive"),
    # The recipient cannot be reached this way: sending again only fails again.
    "RECIPIENT_NOT_REACHABLE": (DO_NOT_RETRY, "the recipient is unavailable on the channel"),
    "RECIPIENT_INVALID_CHANNEL_IDENTITY": (DO_NOT_RETRY, "the number or identity is invalid"),
    "CONTACT_NOT_FOUND": (DO_NOT_RETRY, "the contact does not exist"),
    "NO_CHANNEL_IDENTITY_FOR_CONTACT": (DO_NOT_RETRY, "the contact has no identity to send to"),
    "NO_PROFILE_AVAILABLE": (DO_NOT_RETRY, "the recipient has no profile on the channel"),
    "NO_CHANNELS_LEFT": (DO_NOT_RETRY, "every channel of the fallback was tried and failed"),
    # Sinch could not say why: a person should look at the channel's own code.
    "UNKNOWN": (REVIEW, "Sinch did not classify the failure"),
    "CHANNEL_REJECT": (REVIEW, "the channel refused it; its channel_code says why"),
    "DELIVERY_REPORT_TIME_OUT": (REVIEW, "no report came back: the outcome is unknown"),
}

# A sub-code, when it names something more precise than its code, decides instead.
SUB_CODES: Final[Mapping[str, tuple[str, str]]] = {
    "ATTACHMENT_REJECTED": (FIX_CONTENT, "the channel rejected the attachment"),
    "MEDIA_TYPE_UNDETERMINED": (FIX_CONTENT, "the media's type could not be determined"),
    "INACTIVE_SENDER": (FIX_CONFIGURATION, "the sender is inactive on the channel"),
}

# Statuses after which nothing is to be done, or not yet: delivered or read, or still moving
# (a SWITCHING_CHANNEL report is a fallback in progress, not a failure).
SETTLED: Final = frozenset({"DELIVERED", "READ"})
IN_PROGRESS: Final = frozenset({"QUEUED_ON_CHANNEL", "SWITCHING_CHANNEL", "SUBMITTED"})


def parse_overrides(text: str) -> dict[str, str]:
    """`LEDGER_NEXT_ACTIONS`: "CODE=action,CODE=action" replacing the table's action for a
    code (or a sub-code). Raises ValueError naming the bad entry."""
    overrides: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        code, sep, action = (piece.strip() for piece in entry.partition("="))
        if not sep or not code or action not in ACTIONS:
            raise ValueError(
                f"LEDGER_NEXT_ACTIONS entry {entry!r}: expected CODE=action with action one of "
                + ", ".join(ACTIONS)
            )
        overrides[code.upper()] = action
    return overrides


def next_action(
    status: str,
    reason_code: str | None,
    sub_code: str | None = None,
    overrides: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """(action, why) for a message's current status and deciding failure (as
    `rules.message_row` computes them)."""
    if status in SETTLED:
        return NONE, f"{status.lower()}"
    if status in IN_PROGRESS:
        return NONE, "in progress"
    if status != "FAILED":
        return REVIEW, f"status {status} is not one we know"
    overrides = overrides or {}
    for code, table in ((sub_code, SUB_CODES), (reason_code, REASONS)):
        if not code:
            continue
        if code in overrides:
            return overrides[code], f"{code}: set by LEDGER_NEXT_ACTIONS"
        if code in table:
            action, why = table[code]
            return action, f"{code}: {why}"
    if reason_code:
        return REVIEW, f"{reason_code}: a code this version does not know"
    return REVIEW, "failed without a reason code"


# The channels that send READ reports (Sinch's MESSAGE_DELIVERY reference: "WhatsApp, RCS
# only"), so "delivered but not read" is counted only where a READ can arrive.
READ_CHANNELS: Final = frozenset({"WHATSAPP", "RCS"})


def parse_channels(text: str) -> frozenset[str]:
    """`LEDGER_READ_CHANNELS`: comma-separated channel names."""
    return frozenset(part.strip().upper() for part in text.split(",") if part.strip())


def reports_read(channel: str | None, read_channels: frozenset[str] = READ_CHANNELS) -> bool:
    return channel is not None and channel.upper() in read_channels
