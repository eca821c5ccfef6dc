"""Keyset pages: a list read `limit + 1` rows at a time after the last row's key, so a page
costs the same however deep it is. Callers turn `next_key` into their own cursor."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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
    """One keyset page of `table` ordered by `order`, after the key `after`. Items `keep`
    refuses are left out (`next_key` still leads on). `prepare` takes the page's rows at once
    before each is shaped."""
    rows = keyset_rows(cur, table, conditions, order, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [shape(row) for row in (prepare(rows) if prepare else rows)]
    return KeysetPage(
        [item for item in items if keep(item)] if keep else items,
        [rows[-1][column] for column in order] if more else None,
    )


def all_pages(
    cur: Cursor, table: str, conditions: Conditions, order: tuple[str, ...], size: int
) -> Iterator[list[Row]]:
    """Every row of `table` meeting `conditions` in `order`, a keyset page of `size` at a time."""
    after: list[Any] | None = None
    while True:
        rows = keyset_rows(cur, table, conditions, order, after, size)
        yield rows
        if len(rows) < size:
            return
        after = [rows[-1][column] for column in order]


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
    """Rows of `table` meeting `conditions` in (event_time, source_ref) order, after `after`."""
    if after:
        conditions = [*conditions, ("(event_time, source_ref) > (?, ?)", list(after))]
    where, params = where_sql(conditions)
    sql = f"SELECT {columns} FROM {table}{where} ORDER BY event_time, source_ref"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return cur.execute(sql, params).fetchall()
