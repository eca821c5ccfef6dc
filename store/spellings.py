"""The shorter topics the log stores its most frequent events under.

A class's topic ("callback_ledger.domain.message:Message.DeliveryReported", domain/topics.py)
was written in full on every event: nearly a tenth of a stored callback. The events written
once or more per callback are now stored under their class's qualified name instead
("Message.DeliveryReported"; no module path, so no ':'), and the code names every class by its
topic as before: `written` at the mapper, `read` wherever stored rows come in, and `spellings`
in every query that filters the log by topic, which matches events of either spelling (a store
holds the full ones of earlier versions for ever: the seal covers the bytes as stored)."""

from __future__ import annotations

from collections.abc import Iterable

from eventsourcing.utils import get_topic, register_topic

from domain.contact import Contact
from domain.message import Message

SHORTENED: tuple[type, ...] = (
    Message.Registered,  # type: ignore[attr-defined]
    Message.FirstReported,
    Message.DeliveryReported,
    Message.Submitted,
    Contact.Registered,  # type: ignore[attr-defined]
    Contact.ConsentReported,
    Contact.InboundMessageReceived,
)
SHORT: dict[str, str] = {get_topic(cls): cls.__qualname__ for cls in SHORTENED}
FULL: dict[str, str] = {short: full for full, short in SHORT.items()}
for _cls in SHORTENED:  # so the library's mapper resolves the stored spelling
    register_topic(SHORT[get_topic(_cls)], _cls)


def written(topic: str) -> str:
    """The spelling a new event of `topic` is stored under."""
    return SHORT.get(topic, topic)


def read(topic: str) -> str:
    """The topic of a stored event, whichever spelling it was stored under."""
    return FULL.get(topic, topic)


def spellings(topics: Iterable[str]) -> list[str]:
    """Every stored spelling of `topics`, sorted: for `topic IN (...)`."""
    out = set(topics)
    out.update(SHORT[t] for t in list(out) if t in SHORT)
    return sorted(out)
