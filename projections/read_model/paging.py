"""Keyset pages: a list read `limit + 1` rows at a time after the last row's key, so a page
costs the same however deep it is. Callers turn `next_key` into their own cursor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from store.backend import Cursor, Row, keyset_rows

# (SQL condition, value) pairs; a list value fills several placeholders, an empty one none.
Conditions = list[tuple[str, Any]]


@dataclass(frozen=True)
class KeysetPage:
    items: list[dict[str, Any]]
    # The key (the `order` columns) of the page's last row when more rows follow, else None.
    next_key: list[Any] | None


def keyset_page(
    cur: Cursor,
    table: str,
    order: tuple[str, ...],
    conditions: Conditions,
    after: Sequence[Any] | None,
    limit: int,
    shape: Callable[[Row], dict[str, Any]],
    keep: Callable[[dict[str, Any]], bool] | None = None,
    prepare: Callable[[Sequence[Row]], Sequence[Row]] | None = None,
) -> KeysetPage:
    """One keyset page of `table` ordered by `order`, after the key `after`. With `keep`,
    shaped items it refuses are left out: the page may then hold fewer than `limit` items
    while `next_key` still leads on. `prepare` takes the page's rows at once before each is
    shaped (to open their personal values in one go)."""
    rows = keyset_rows(cur, table, conditions, order, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [shape(row) for row in (prepare(rows) if prepare else rows)]
    return KeysetPage(
        [item for item in items if keep(item)] if keep else items,
        [rows[-1][column] for column in order] if more else None,
    )


def where_sql(conditions: Conditions) -> tuple[str, list[Any]]:
    """ " WHERE ..." (or "") and its parameters for `conditions`."""
    params: list[Any] = []
    for _, value in conditions:
        params += value if isinstance(value, list) else [value]
    where = " AND ".join(condition for condition, _ in conditions)
    return (f" WHERE {where}" if where else ""), params


def in_time_order(
    cur: Cursor,
    table: str,
    columns: str,
    conditions: Conditions,
    after: tuple[str, str] | None,
    limit: int | None,
) -> list[Row]:
    """Rows of `table` meeting `conditions`, ordered by event_time and source_ref, after the
    keyset cursor `after`."""
    if after:
        conditions = [*conditions, ("(event_time, source_ref) > (?, ?)", list(after))]
    where, params = where_sql(conditions)
    sql = f"SELECT {columns} FROM {table}{where} ORDER BY event_time, source_ref"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return cur.execute(sql, params).fetchall()
