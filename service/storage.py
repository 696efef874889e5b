"""Storage pieces every domain core shares: a row looked up within its
account (404 for any other account's row as for none), the account's row lock
that serialises who may act as OWNER, and a violated unique constraint told
as the conflict it means. No HTTP here: refusals are service.problems."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import RowMapping, Select, Table, bindparam, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.accounts import callers
from service.accounts.callers import ACCOUNT, AccountRead
from service.db.driver import Connection, Row
from service.models import Account, table
from service.problems import Conflicting, Missing

accounts = table(Account)


async def one_in_account(
    connection: AsyncConnection,
    table: Table,
    account_id: uuid.UUID,
    row_id: uuid.UUID,
    columns: Sequence[Any] | None = None,
    *,
    lock: bool = False,
) -> Mapping[Any, Any]:
    """The row of this account with this id (its `columns`, or all); 404 for any
    other account's row as for none."""
    query = _one_by_id(table, tuple(columns or ()), lock)
    parameters = {"row_id": row_id, "account_id": account_id}
    row: Mapping[Any, Any] | None = (await connection.execute(query, parameters)).mappings().first()
    if row is None:
        raise Missing(f"no {table.name[:-1].replace('_', ' ')} with id {row_id}")
    return row


async def read_in_account(
    connection: Connection, account: callers.Account, table: Table, row_id: uuid.UUID
) -> Row:
    """As `one_in_account`, in one statement with the caller's check when a
    key is presented (service/accounts/callers.py)."""
    read = _READS_BY_ID.get(table.name)
    if read is None:
        read = _READS_BY_ID[table.name] = AccountRead(
            f"SELECT * FROM {table.name} WHERE id = $1 AND account_id = {{account}}", account=2
        )
    row = await read.row(connection, account, row_id, ACCOUNT)
    if row is None:
        raise Missing(f"no {table.name[:-1].replace('_', ' ')} with id {row_id}")
    return row


_READS_BY_ID: dict[str, AccountRead] = {}
_ONE_BY_ID: dict[tuple[str, tuple[str, ...], bool], Select[Any]] = {}


def _one_by_id(table: Table, columns: tuple[Any, ...], lock: bool) -> Select[Any]:
    """The statement of `one_in_account`, built once per table, columns and lock.

    A statement built for each request costs SQLAlchemy its construction and
    its cache key on every execution; a prebuilt one with bound parameters
    keeps its key (about a third of a point read's database-side CPU here:
    docs/benchmarks/api.notes.md)."""
    shape = (table.name, tuple(column.key for column in columns), lock)
    query = _ONE_BY_ID.get(shape)
    if query is None:
        query = select(*(columns or [table])).where(
            table.c.id == bindparam("row_id"), table.c.account_id == bindparam("account_id")
        )
        if lock:
            query = query.with_for_update()
        _ONE_BY_ID[shape] = query
    return query


async def lock_account(connection: AsyncConnection, account_id: uuid.UUID) -> None:
    """Serialise changes to who may act as OWNER within an account, so two
    concurrent requests cannot both pass a last-owner check."""
    await connection.execute(
        select(accounts.c.id).where(accounts.c.id == account_id).with_for_update()
    )


async def rows(connection: AsyncConnection, query: Select[Any]) -> Sequence[RowMapping]:
    result = await connection.execute(query)
    found: Sequence[RowMapping] = result.mappings().all()
    return found


def conflict_from(error: IntegrityError, meanings: Mapping[str, tuple[str, str]]) -> Conflicting:
    """A 409 naming what already exists, from the violated constraint's name."""
    constraint = getattr(getattr(error.orig, "__cause__", None), "constraint_name", None)
    detail, pointer = meanings.get(
        constraint or "", ("the request conflicts with existing data", "/data")
    )
    return Conflicting(detail, pointer)


def searched(query: Select[Any], table: Table, search: str) -> Select[Any]:
    """Rows whose key or name holds `search`, whatever its case (strpos: no
    LIKE pattern to escape). Both sides are lower-cased by PostgreSQL: its
    lower() and Python's disagree ("İ", a final sigma), and a stored name
    searched for must be found."""
    wanted = func.lower(search)
    return query.where(
        or_(
            func.strpos(func.lower(table.c.key), wanted) > 0,
            func.strpos(func.lower(table.c.name), wanted) > 0,
        )
    )
