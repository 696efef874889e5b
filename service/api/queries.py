"""List queries with cursors: keyset pagination of the /v1 dialect."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, Table, tuple_

from service.api.jsonapi import Page


def paged(query: Select[Any], table: Table, page: Page) -> Select[Any]:
    """Keyset pagination on (created_at, id), or (position, created_at, id)."""
    columns = [table.c.created_at, table.c.id]
    if page.by_position:
        columns.insert(0, table.c.position)
    key = tuple_(*columns)
    if page.keyset is not None:
        query = query.where(
            key < tuple_(*page.keyset) if page.descending else key > tuple_(*page.keyset)
        )
    order = [column.desc() for column in columns] if page.descending else columns
    return query.order_by(*order).limit(page.size)
