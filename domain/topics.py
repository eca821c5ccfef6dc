"""The topics our events and aggregates are stored under.

A stored event names its class by a topic ("module:QualName"), and the read side filters the log
by topic. The first events were written when the domain was the module `callback_ledger.domain`;
those topics are part of every store written since, so every persisted class states its topic
explicitly and keeps that spelling wherever the code lives now."""

from __future__ import annotations

STORED_PACKAGE = "callback_ledger.domain"


def stored(module: str, qualname: str) -> str:
    """The topic of class `qualname` in `domain/<module>.py`, as stores hold it."""
    return f"{STORED_PACKAGE}.{module}:{qualname}"
