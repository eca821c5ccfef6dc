"""The two-letter codes the log stores its most frequent events' topics under ("MD"): `written`
at the mapper, `read` wherever stored rows come in, `spellings` in every query filtering the
log by topic. A store holds them for ever (the seal covers them): a code is never changed
nor reused."""

from __future__ import annotations

from collections.abc import Iterable

from eventsourcing.utils import get_topic, register_topic

from domain.contact import Contact
from domain.message import Message

# The README's "What is stored" lists them.
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
    return SHORT.get(topic, topic)


def read(topic: str) -> str:
    return FULL.get(topic, topic)


def spellings(topics: Iterable[str]) -> list[str]:
    """The stored spellings of `topics`, sorted: for `topic IN (...)`."""
    return sorted({written(topic) for topic in topics})
