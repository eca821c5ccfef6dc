"""Delivery follow-up on the read side, for the HTTP API and `callback-ledger followup`: each
message's next action as the projection derived it, overridden when read by the recipient's
consent now (it can change after the message failed): a failed message to a number opted out
now is `do_not_retry`, with the consent fact as the why."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from domain import followup
from projections import rules
from projections.read_model import consent, messages
from store.backend import Cursor
from store.vault import Vault

# Sinch retries a callback for about 22 h 45 min: past a day, silence is not a late callback.
DEFAULT_QUIET_S = 24 * 3600
_DURATION = re.compile(r"^(\d{1,9})([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """'24h', '90m', '2d', '3600s' or '3600' as seconds; ValueError otherwise."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 24h, 90m, 2d or 3600s")
    return int(match.group(1)) * _UNITS[match.group(2)]


def recipient(row: Mapping[str, Any]) -> str | None:
    """The identity the message's deciding channel reported, by its name in the read tables."""
    reports = rules.expanded_reports(row)
    on_channel = [r for r in reports if r["channel"] == row["channel"] and r["identity"]]
    chosen = on_channel or [r for r in reports if r["identity"]]
    return chosen[-1]["identity"] if chosen else None


def recipient_shown(row: Mapping[str, Any], vault: Vault) -> tuple[str | None, bool]:
    """The recipient as shown, and whether it was erased (shown then as None)."""
    name = recipient(row)
    if name is None:
        return None, False
    shown = messages.identities_shown(row, vault)
    if name not in shown:
        return name, False  # a plaintext store's row from before the copies: its name
    return shown[name], shown[name] is None


def annotate(
    cur: Cursor,
    row: Mapping[str, Any],
    overrides: Mapping[str, str] | None = None,
    read_channels: frozenset[str] = followup.READ_CHANNELS,
    consent_stale: str | None = None,
) -> dict[str, Any]:
    """The follow-up fields of one message_status row. `consent_stale`: why the consent
    projection cannot be trusted now; then a message with something to do is `review`, never
    a retry that consent might forbid."""
    stored = row.get("next_action") or followup.NONE
    action, why = followup.next_action(
        row["status"], row["reason_code"], row["reason_sub_code"], overrides
    )
    if action != stored:
        why = "as derived when the row was projected (LEDGER_NEXT_ACTIONS changed since: replay)"
    consent_ref = None
    identity = recipient(row) if stored != followup.NONE else None
    if stored != followup.NONE and consent_stale is not None:
        stored = followup.REVIEW
        why = f"consent cannot be checked now ({consent_stale}): ask /consent/check first"
    elif identity and row["channel"]:
        answer = consent.check(cur, row["channel"], identity, row["project_id"])
        if not answer["may_send"]:
            stored, why = followup.DO_NOT_RETRY, f"the recipient is {answer['reason']}"
            consent_ref = answer.get("source_ref")
    return {
        "next_action": stored,
        "next_action_why": why,
        "next_action_consent_ref": consent_ref,
        "read_reported_on_channel": followup.reports_read(row["channel"], read_channels),
    }
