"""The seal chain's pure parts (store.seal): the encoding, and what the verifier names on a log
held in memory."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any
from uuid import UUID

from evidence import verify
from store import seal

STREAM = UUID(int=7)


def log(n: int, start: int = 1, step: int = 1) -> list[tuple[int, UUID, int, str, bytes]]:
    return [(start + i * step, STREAM, i + 1, "t", f"state {i}".encode()) for i in range(n)]


def seal_pages(
    rows: Iterable[tuple[int, Any, int, str, bytes]], previous: bytes, page: int
) -> Iterator[seal.Seal]:
    """Seals over a log held in memory: `page` events each, chained from `previous`.
    `rows`: (notification id, stream, version, topic, state) in notification order."""
    ids: list[int] = []
    digests: list[bytes] = []

    def close() -> seal.Seal:
        batch = seal.Batch(len(digests), seal.batch_digest(digests), seal.locator(digests))
        return seal.sealed(previous, ids[0], ids[-1], batch)

    for notification_id, *event in rows:
        ids.append(notification_id)
        digests.append(seal.event_digest(*event))
        if len(ids) == page:
            done = close()
            yield done
            previous, ids, digests = done.seal, [], []
    if ids:
        yield close()


def test_the_encoding_keeps_fields_apart() -> None:
    # Length prefixes: moving a byte from the topic to the state changes the bytes hashed.
    assert seal.encode(STREAM, 1, "ab", b"c") != seal.encode(STREAM, 1, "a", b"bc")
    assert seal.encode(STREAM, 1, "t", b"s") == seal.encode(STREAM.hex, 1, "t", b"s")
    assert seal.encode(STREAM, 1, "t", b"s") == seal.encode(str(STREAM), 1, "t", b"s")


def test_the_verifier_passes_an_intact_log_and_names_a_gap_in_a_gapped_seal() -> None:
    events = log(9, start=10, step=3)  # ids with gaps, as PostgreSQL's may have
    pages = list(seal_pages(events, seal.GENESIS, page=4))
    found = verify.Verifier().run(pages, iter(events))
    assert isinstance(found, verify.Verified)
    assert (found.events, found.seals, found.head) == (9, 3, pages[-1])
    gone = events[:5] + events[6:]
    problem = verify.Verifier().run(pages, iter(gone))
    assert isinstance(problem, verify.Problem)
    assert (problem.kind, problem.notification_id) == ("missing", events[6][0])


def test_an_event_moved_to_a_later_batch_is_out_of_order() -> None:
    events = log(6)
    pages = list(seal_pages(events, seal.GENESIS, page=3))
    moved = [*events[:4], (5, *events[1][1:]), *events[5:]]
    problem = verify.Verifier().run(pages, iter(moved))
    assert isinstance(problem, verify.Problem)
    assert (problem.kind, problem.notification_id) == ("out_of_order", 5)
    assert "notification 2" in problem.detail


def test_an_event_after_the_last_seal_is_unsealed() -> None:
    events = log(5)
    pages = list(seal_pages(events[:4], seal.GENESIS, page=2))
    problem = verify.Verifier().run(pages, iter(events))
    assert isinstance(problem, verify.Problem)
    assert (problem.kind, problem.notification_id) == ("unsealed", 5)
    assert (problem.stream, problem.topic) == (str(STREAM), "t")
    assert "after the last seal (4)" in problem.detail
    assert problem.describe().startswith(f"notification 5 (t on stream {STREAM}): unsealed")
    # No seal at all: the first event is named.
    first = verify.Verifier().run([], iter(events))
    assert isinstance(first, verify.Problem)
    assert (first.kind, first.notification_id) == ("unsealed", 1)


def test_columns_the_ledger_does_not_write_are_unreadable() -> None:
    events = log(4)
    pages = list(seal_pages(events, seal.GENESIS, page=2))
    for column, value, why in (
        (4, "text", "its state is stored as text"),
        (4, None, "its state is stored as NULL"),
        (4, 7, "its state is stored as an integer"),
        (3, None, "its topic is not text"),
        (1, "not a uuid", "its stream id is not a UUID"),
    ):
        changed = list(events[2])
        changed[column] = value
        problem = verify.Verifier().run(pages, iter([*events[:2], tuple(changed), events[3]]))
        assert isinstance(problem, verify.Problem), why
        assert (problem.kind, problem.notification_id) == ("unreadable", 3)
        assert problem.detail.startswith(why)
