"""The one entry point that records a received callback: raw body -> JSON -> which stream and
what decision -> commit, or the quarantine for a refused body. Used by the webhook and by
`callback-ledger ingest`. Persistence errors propagate: the caller decides what the sender
is told (the webhook answers 503, so the sender retries)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import orjson

from domain.callbacks import UNKNOWN_TRIGGER, InvalidCallback, Receipt, loads_body
from store.commands import Command
from store.commands import Outcome as Committed
from store.ledger import Ledger

Status = Literal["accepted", "duplicate", "refused"]


@dataclass(frozen=True)
class Refusal:
    """Why a body was not recorded: the webhook's answer (`status_code`, `code`), what is wrong
    as the quarantine keeps it (`problems`), and in one line as `ingest` prints it (`reason`)."""

    status_code: int
    code: str
    problems: list[str]
    reason: str


@dataclass(frozen=True)
class Outcome:
    """What became of one callback: recorded on its stream (or in the catch-all,
    `kept_uninterpreted`), `reference` naming the stored callback (for a duplicate: the one
    stored before it); or refused, and `quarantined` or not."""

    status: Status
    trigger: str
    events: int = 0
    kept_uninterpreted: bool = False
    refusal: Refusal | None = None
    quarantined: bool = False
    reference: str | None = None


class QuarantineFailed(Exception):
    """A refused body could not be kept in the quarantine: the sender should send it again."""


@dataclass(frozen=True)
class Store:
    """The Ledger (opened on first use) and how a command is committed (the webhook's group
    commit, or `alone`)."""

    ledger: Callable[[], Awaitable[Ledger]]
    commit: Callable[[Command], Awaitable[Committed]]


def alone(ledger: Ledger) -> Store:
    """A Store that commits each command in a transaction of its own (nothing to batch)."""

    async def opened() -> Ledger:
        return ledger

    async def commit(command: Command) -> Committed:
        return ledger.execute(command)

    return Store(opened, commit)


def json_kind(value: object) -> str:
    return type(value).__name__.replace("dict", "object").replace("list", "array")


class Recorder:
    """`keep_refused`: a refused body is kept in the quarantine (the webhook: nothing a signed
    sender said is lost), or only reported (`ingest`: the operator reads the refusals)."""

    def __init__(self, store: Store, keep_refused: bool = True) -> None:
        self.store = store
        self.keep_refused = keep_refused

    async def record(self, raw: bytes, receipt: Receipt) -> Outcome:
        try:
            body = loads_body(raw)
        except orjson.JSONDecodeError as exc:
            refusal = Refusal(400, "not_json", [f"the body is not JSON: {exc}"], str(exc))
            return await self._refuse(raw, receipt, UNKNOWN_TRIGGER, refusal)
        if not isinstance(body, dict):
            problem = f"the body must be a JSON object, got a JSON {json_kind(body)}"
            refusal = Refusal(400, "not_an_object", [problem], "not a JSON object")
            return await self._refuse(raw, receipt, UNKNOWN_TRIGGER, refusal)
        try:
            ledger = await self.store.ledger()
            command = ledger.command_for(body, receipt)
            kept = command is None
            if command is None:
                command = ledger.unrecognised_command(body, receipt)
            committed = await self.store.commit(command)
        except InvalidCallback as exc:
            refusal = Refusal(422, "invalid_callback", exc.problems, str(exc))
            return await self._refuse(raw, receipt, exc.trigger, refusal)
        return Outcome(
            committed.status,
            committed.trigger,
            committed.events,
            kept,
            reference=command.reference,
        )

    async def _refuse(
        self, raw: bytes, receipt: Receipt, trigger: str, refusal: Refusal
    ) -> Outcome:
        if self.keep_refused:
            try:
                ledger = await self.store.ledger()
                await self.store.commit(
                    ledger.quarantine_command(
                        raw, trigger, refusal.status_code, refusal.problems, receipt
                    )
                )
            except Exception as exc:
                raise QuarantineFailed(str(exc)) from exc
        return Outcome("refused", trigger, refusal=refusal, quarantined=self.keep_refused)
