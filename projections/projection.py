"""What a projection is to the projector, and the projections this service keeps."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from projections import callbacks, consent, messages, rules
from projections.log_reader import LoggedEvent
from store.db import Cursor
from store.vault import Vault


@dataclass(frozen=True)
class Projection:
    name: str
    topics: frozenset[str]
    tables: tuple[str, ...]
    schema: Callable[[int], list[str]]
    apply: Callable[[Cursor, int, list[LoggedEvent]], None]
    # Columns added to a table since its first version: (table, column, SQL type). A database
    # from before gets them (and is told it needs a replay to fill them).
    added_columns: tuple[tuple[str, str, str], ...] = ()
    # Indexes that go with a table's layout of this version (its key): made with the table,
    # never added to a table an earlier version made (whose key serves the same lookups).
    # Named as in the schema, the generation `{g}`.
    layout_indexes: frozenset[str] = frozenset()
    # Tables whose primary key changed since their first version: table -> its key now. A
    # generation being built with another (by an earlier version) is built again.
    keys: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Tables filled only from events no earlier version wrote: made empty for a database
    # from before, they are complete (no replay needed).
    complete_when_new: frozenset[str] = frozenset()


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
            messages.ADDED_COLUMNS,
        ),
        consent.NAME: Projection(
            consent.NAME,
            consent.TOPICS,
            consent.TABLES,
            consent.schema,
            lambda cur, g, events: consent.apply(cur, g, events, keywords, vault),
            consent.ADDED_COLUMNS,
            consent.LAYOUT_INDEXES,
            consent.KEYS,
            consent.COMPLETE_WHEN_NEW,
        ),
        callbacks.NAME: Projection(
            callbacks.NAME,
            callbacks.TOPICS,
            callbacks.TABLES,
            callbacks.schema,
            lambda cur, g, events: callbacks.apply(cur, g, events),
        ),
    }
