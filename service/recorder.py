"""The one entry point that records a received callback: raw body -> JSON -> which stream and
what decision -> commit, or the quarantine for a body that is refused. Used by the webhook
(which only translates HTTP around it) and by `callback-ledger ingest`.

How a command is committed is the caller's: the webhook hands it to the group commit of its
event loop, `ingest` executes it alone. Persistence errors propagate: the caller decides what
the sender is told (the webhook answers 503, so the sender retries)."""

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
    """Why a body was not recorded. `status_code` and `code`: the webhook's answer; `problems`:
    what is wrong, as the quarantine keeps it; `reason`: the same in one line, as `ingest`
    prints it."""

    status_code: int
    code: str
    problems: list[str]
    reason: str


@dataclass(frozen=True)
class Outcome:
    """What became of one callback. `accepted` / `duplicate`: recorded on its stream (or kept
    in the catch-all, `kept_uninterpreted`, for a trigger this version does not interpret),
    `events` appended, `reference` naming the stored callback (for a duplicate: the one stored
    before it). `refused`: see `refusal`; `quarantined` says whether the body was kept
    in the quarantine for an operator."""

    status: Status
    trigger: str
    events: int = 0
    kept_uninterpreted: bool = False
    refusal: Refusal | None = None
    quarantined: bool = False
    reference: str | None = None


class QuarantineFailed(Exception):
    """A refused body could not be kept in the quarantine (its cause: the store's error). It
    must not be refused for good then: the sender should send it again."""


@dataclass(frozen=True)
class Store:
    """How the recorder reaches the store: the Ledger (opened on first use) and how a command
    is committed (the webhook's group commit, or the Ledger's `execute`)."""

    ledger: Callable[[], Awaitable[Ledger]]
    commit: Callable[[Command], Awaitable[Committed]]


def alone(ledger: Ledger) -> Store:
    """A Store that commits each command in a transaction of its own, on the caller's thread
    (a command-line tool: nothing to batch with)."""

    async def opened() -> Ledger:
        return ledger

    async def commit(command: Command) -> Committed:
        return ledger.execute(command)

    return Store(opened, commit)


def json_kind(value: object) -> str:
    return type(value).__name__.replace("dict", "object").replace("list", "array")


class Recorder:
    """`keep_refused`: whether a refused body is kept in the quarantine (the webhook's, so
    nothing a signed sender said is lost) or only reported (`ingest`: an operator is feeding a
    file and reads the refusals)."""

    def __init__(self, store: Store, keep_refused: bool = True) -> None:
        self.store = store
        self.keep_refused = keep_refused

    async def record(self, raw: bytes, receipt: Receipt) -> Outcome:
        """Records the callback whose body is `raw`, received as `receipt` says."""
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
            # Other triggers go through the same commit as the ones we interpret.
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
