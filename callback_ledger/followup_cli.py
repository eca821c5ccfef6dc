"""`callback-ledger followup`: the messages the sending system should do something about (or,
with --stalled, the ones nothing has been heard of), as a table, JSON or CSV."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from callback_ledger.audit_cli import TABLE, emit, time_arg
from domain import followup
from projections.consent import NAME
from projections.faults import describe
from projections.read_model import messages
from service import followups
from service.runtime import Runtime
from service.settings import Settings
from store.backend import Cursor

COLUMNS = [
    "message_id",
    "metadata",
    "channel",
    "identity",
    "status",
    "reason_code",
    "reason_sub_code",
    "next_action",
    "next_action_why",
    "last_event_time",
]


def duration_arg(value: str) -> int:
    try:
        return followups.parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_commands(commands: Any) -> None:
    p = commands.add_parser(
        "followup", help="messages to send again, fix or drop; or those that went quiet"
    )
    p.add_argument("--since", type=time_arg, help="messages first reported at or after this")
    p.add_argument("--action", choices=followup.ACTIONS, help="only this next action")
    p.add_argument(
        "--stalled",
        nargs="?",
        const=followups.DEFAULT_QUIET_S,
        type=duration_arg,
        metavar="OLDER_THAN",
        help="instead, messages quiet for longer than this (default 24h)",
    )
    p.add_argument("--format", choices=TABLE, default="table")
    p.set_defaults(run=run_followup)


def consent_stale(runtime: Runtime) -> str | None:
    """Why the consent projection cannot be trusted now, as /consent/check decides it (without
    waiting: this command follows nothing itself)."""
    projector = runtime.projector()
    fault, pending = projector.freshness(NAME, projector.head())
    if fault is not None:
        return f"the consent projection cannot be trusted now: {describe(fault)}"
    if pending:
        return "the consent projection has not applied consent facts already recorded"
    return None


def run_followup(settings: Settings, args: argparse.Namespace) -> int:
    overrides = dict(settings.next_actions)
    with Runtime(settings) as runtime:
        stale = consent_stale(runtime)
        if stale is not None:
            sys.stderr.write(
                f"followup: consent cannot be checked now ({stale}); messages with something to "
                "do are listed as review\n"
            )
        vault = runtime.projector().vault

        def view(cur: Cursor, row: dict[str, Any]) -> dict[str, Any]:
            shown = messages.message_view(row, vault=vault) | followups.annotate(
                cur, row, overrides, settings.read_channels, stale
            )
            shown["identity"], erased = followups.recipient_shown(row, vault)
            if erased:
                shown["erased"] = True
            return shown

        with runtime.database().read() as cur:
            rows = list(
                messages.follow_up_list(
                    cur, lambda row: view(cur, row), args.since, args.action, args.stalled, vault
                )
            )
    title = "stalled messages" if args.stalled is not None else "follow-up"
    return emit(rows, args.format, title, COLUMNS)
