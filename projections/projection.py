"""What a projection is to the projector, and the projections this service keeps."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from projections import callbacks, consent, messages, rules
from projections.log_reader import LoggedEvent
from store.backend import Cursor
from store.vault import Vault


@dataclass(frozen=True)
class Projection:
    name: str
    topics: frozenset[str]
    tables: tuple[str, ...]
    schema: Callable[[int], list[str]]
    apply: Callable[[Cursor, int, list[LoggedEvent]], None]


def all_projections(
    keywords: rules.Keywords = rules.DEFAULT_KEYWORDS,
    next_actions: Mapping[str, str] | None = None,
    vault: Vault | None = None,
) -> dict[str, Projection]:
    """`vault`: the store's (the Projector's); the projections name identities and seal what
    they show with it (projections.personal). None: a plaintext store."""
    return {
        messages.NAME: Projection(
            messages.NAME,
            messages.TOPICS,
            messages.TABLES,
            messages.schema,
            lambda cur, g, events: messages.apply(cur, g, events, next_actions, vault),
        ),
        consent.NAME: Projection(
            consent.NAME,
            consent.TOPICS,
            consent.TABLES,
            consent.schema,
            lambda cur, g, events: consent.apply(cur, g, events, keywords, vault),
        ),
        callbacks.NAME: Projection(
            callbacks.NAME,
            callbacks.TOPICS,
            callbacks.TABLES,
            callbacks.schema,
            lambda cur, g, events: callbacks.apply(cur, g, events),
        ),
    }
