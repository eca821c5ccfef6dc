"""Verifying the seal chain (store.seal): recomputing it over the log, a page at a time, and
naming the first event or seal that does not match."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from store.seal import COLUMNS as COLUMNS
from store.seal import (
    GENESIS,
    LOCATOR_BYTES,
    NOT_THE_LEDGERS,
    batch_digest,
    chain,
    event_digest,
    stream_bytes,
)
from store.seal import TABLE as TABLE
from store.seal import Seal as Seal

# Recent events' digests kept by `Verifier` to tell "out of order" from "altered".
RECENT = 10_000


@dataclass(frozen=True)
class Problem:
    """The first thing that does not match: an event (its notification id, and for an
    unsealed or unreadable one its stream and topic) or a seal."""

    kind: str  # altered, missing, out_of_order, unsealed, unreadable, seal_mismatch
    notification_id: int | None
    seal_position: int | None
    detail: str
    stream: str | None = None
    topic: str | None = None

    def describe(self) -> str:
        where = (
            f"notification {self.notification_id}"
            if self.notification_id is not None
            else f"seal {self.seal_position}"
        )
        if self.topic is not None or self.stream is not None:
            where += f" ({self.topic or 'unknown topic'} on stream {self.stream or 'unknown'})"
        return f"{where}: {self.kind.replace('_', ' ')}: {self.detail}"


_STORED_AS = {str: "text", int: "an integer", float: "a real number", type(None): "NULL"}


def unreadable(stream: Any, version: Any, topic: Any, state: Any) -> str | None:
    """Why an event's stored columns are not what the ledger writes (and cannot be hashed),
    or None when they are."""
    if not isinstance(state, bytes | bytearray | memoryview):
        kind = _STORED_AS.get(type(state), type(state).__name__)
        return f"its state is stored as {kind}, not as bytes (BLOB / bytea)"
    if not isinstance(topic, str):
        return "its topic is not text"
    if not isinstance(version, int):
        return "its version is not an integer"
    try:
        stream_bytes(stream)
    except (ValueError, TypeError, AttributeError):
        return "its stream id is not a UUID"
    return None


def named(kind: str, row: Sequence[Any], detail: str) -> Problem:
    """A problem with the event of `row` (notification id, stream, version, topic, state),
    naming its stream and topic as far as they can be read."""
    notification_id, stream, _, topic, _ = row
    try:
        stream_name: str | None = str(UUID(bytes=stream_bytes(stream)))
    except (ValueError, TypeError, AttributeError):
        stream_name = None
    topic_name = topic[:200] if isinstance(topic, str) else None
    return Problem(kind, int(notification_id), None, detail, stream_name, topic_name)


@dataclass(frozen=True)
class Verified:
    head: Seal | None
    events: int
    seals: int
    start: int  # the first notification id checked


class Verifier:
    """Recomputes the chain from the seals and the events, both read in order a page at a
    time (memory bounded by a page, a batch and `RECENT` digests, whatever the log's size)."""

    def __init__(self, genesis: bytes = GENESIS) -> None:
        self.head = genesis
        self.events = 0
        self.seals = 0
        self._recent: OrderedDict[bytes, int] = OrderedDict()

    def run(
        self,
        seals: Iterable[Seal],
        events: Iterator[tuple[int, Any, int, str, bytes]],
        trusted_previous: bool = False,
    ) -> Verified | Problem:
        """`seals` from the first to check; `events` (notification id, stream, version, topic,
        state) from that seal's first id, up to the newest event (read before the last seal, so
        every batch committed by then has its seal among `seals`): any event after the last
        seal is unsealed. With `trusted_previous`, the first seal's `previous` is taken as it
        is (`--since`)."""
        pending = next(events, None)
        last: Seal | None = None
        start: int | None = None
        for seal in seals:
            if last is None:
                start = seal.first_id
                if trusted_previous:
                    self.head = seal.previous
            batch: list[tuple[int, bytes]] = []
            while pending is not None and pending[0] <= seal.position:
                notification_id, *event = pending
                if (why := unreadable(*event)) is not None:
                    return named("unreadable", pending, why)
                if notification_id < seal.first_id:
                    return named(
                        "unsealed", pending,
                        f"no seal covers it (the next seal, {seal.position}, starts at "
                        f"{seal.first_id}): {NOT_THE_LEDGERS}",
                    )  # fmt: skip
                batch.append((notification_id, event_digest(*event)))
                pending = next(events, None)
            problem = self._check(seal, batch)
            if problem is not None:
                return problem
            last = seal
        if pending is not None:
            after = f"after the last seal ({last.position})" if last is not None else "(no seal)"
            return named("unsealed", pending, f"no seal covers it {after}: {NOT_THE_LEDGERS}")
        return Verified(last, self.events, self.seals, start or 0)

    def _check(self, seal: Seal, batch: list[tuple[int, bytes]]) -> Problem | None:
        if seal.previous != self.head:
            return Problem(
                "seal_mismatch", None, seal.position,
                f"its previous hash {seal.previous.hex()} is not the seal before it "
                f"({self.head.hex()})",
            )  # fmt: skip
        problem = self._locate(seal, batch)
        if problem is not None:
            return problem
        digest = batch_digest(d for _, d in batch)
        if digest != seal.batch or chain(seal.previous, digest) != seal.seal:
            return Problem(
                "seal_mismatch", None, seal.position,
                "its hash does not match the events it covers and the seal before it "
                "(the seal row was altered)",
            )  # fmt: skip
        for notification_id, d in batch:
            self._recent[d[:LOCATOR_BYTES]] = notification_id
            if len(self._recent) > RECENT:
                self._recent.popitem(last=False)
        self.head = seal.seal
        self.events += len(batch)
        self.seals += 1
        return None

    def _locate(self, seal: Seal, batch: list[tuple[int, bytes]]) -> Problem | None:
        """Names the first event of this seal's batch that does not match its locator."""
        expected = [
            seal.locator[i : i + LOCATOR_BYTES] for i in range(0, len(seal.locator), LOCATOR_BYTES)
        ]
        if len(expected) != seal.events:
            return None  # the locator itself was altered: the hash check names the seal
        ids = [n for n, _ in batch]
        contiguous = seal.position - seal.first_id + 1 == seal.events
        if contiguous and ids != list(range(seal.first_id, seal.position + 1)):
            present = set(ids)
            gone = next(n for n in range(seal.first_id, seal.position + 1) if n not in present)
            return Problem("missing", gone, seal.position, f"sealed in seal {seal.position}")
        where = {p: i for i, p in enumerate(expected)}
        for i, (notification_id, d) in enumerate(batch):
            found = d[:LOCATOR_BYTES]
            if i < len(expected) and found == expected[i]:
                continue
            fewer = len(batch) < len(expected)
            if fewer and i + 1 < len(expected) and found == expected[i + 1]:
                return Problem(
                    "missing", notification_id, seal.position,
                    f"the event sealed before it (seal {seal.position}) is gone",
                )  # fmt: skip
            if found in where:
                return Problem(
                    "out_of_order", notification_id, seal.position,
                    f"it holds the event sealed at place {where[found] + 1} of seal "
                    f"{seal.position}, not the one sealed there",
                )  # fmt: skip
            if found in self._recent:
                return Problem(
                    "out_of_order", notification_id, seal.position,
                    f"it holds the event sealed as notification {self._recent[found]}",
                )  # fmt: skip
            return Problem(
                "altered", notification_id, seal.position,
                f"its stored bytes do not match seal {seal.position}",
            )  # fmt: skip
        if len(batch) < len(expected):
            after = batch[-1][0] if batch else seal.first_id - 1
            return Problem(
                "missing", after + 1, seal.position,
                f"seal {seal.position} covers {seal.events} events, the log holds {len(batch)}",
            )  # fmt: skip
        return None
