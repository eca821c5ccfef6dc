"""The shorter topics the log stores its most frequent events under.

A class's topic ("callback_ledger.domain.message:Message.DeliveryReported", domain/topics.py)
was written in full on every event: nearly a tenth of a stored callback. The events written
once or more per callback are now stored under a code of two letters ("MD"; no ':', so no
module path either), and the code names every class by its topic as before: `written` at the
mapper (whichever way it encodes the event), `read` wherever stored rows come in, and
`spellings` in every query that filters the log by topic. A store holds them for ever (the
seal covers the bytes as stored): a code is never changed nor reused."""

from __future__ import annotations

from collections.abc import Iterable

from eventsourcing.utils import get_topic, register_topic

from domain.contact import Contact
from domain.message import Message

# Each class stored under a code, and the code it is stored under (never reused: a store
# holds it for ever). The README's "What is stored" lists them.
CODED: dict[type, str] = {
    Message.Registered: "MR",  # type: ignore[attr-defined]
    Message.FirstReported: "MF",
    Message.DeliveryReported: "MD",
    Message.Submitted: "MS",
    Contact.Registered: "CR",  # type: ignore[attr-defined]
    Contact.ConsentReported: "CC",
    Contact.InboundMessageReceived: "CI",
}
SHORT: dict[str, str] = {get_topic(cls): code for cls, code in CODED.items()}
FULL: dict[str, str] = {short: full for full, short in SHORT.items()}
for _cls, _code in CODED.items():  # so the library's mapper resolves the stored codes
    register_topic(_code, _cls)


def written(topic: str) -> str:
    """The spelling a new event of `topic` is stored under."""
    return SHORT.get(topic, topic)


def read(topic: str) -> str:
    """The topic of a stored event, whichever spelling it was stored under."""
    return FULL.get(topic, topic)


def spellings(topics: Iterable[str]) -> list[str]:
    """The stored spellings of `topics`, sorted: for `topic IN (...)`."""
    return sorted({written(topic) for topic in topics})
