"""Reads in one statement: the caller's key and what it reads.

A point read used to cost four round trips (BEGIN, the caller's key, the
resource, COMMIT). A single statement is atomic and sees one snapshot, so the
key's check (its digest, its revocation, its user's role) and the read it
guards can be one statement, outside any explicit transaction: the caller
rides along as a CTE, and what is read joins it LATERALly with the caller's
account in place of an account parameter. No key, no rows: the read itself
reaches nothing of another account, and nothing at all for an unknown key.

A core read is written once as a template whose account is `{account}`;
`AccountRead` makes both statements of it: `plain` for a known account (the
operator's command line, writes that already know their caller) and
`as_caller` for a presented key, whose digest takes the account's parameter
number. The request path says who may read through `Presented.admit`, which
sees the caller's columns (`caller_*`) before the core looks at what was read,
so a refused caller learns nothing from the read.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from service.db.driver import Connection, DriverStatement, Row

CALLER_COLUMNS = (
    "caller_key_id",
    "caller_account_id",
    "caller_user_id",
    "caller_secret_hash",
    "caller_max_role",
    "caller_role",
)
# One indexed lookup by digest (api_keys_secret_hash_key), its user's role.
CALLER = """
SELECT k.id AS caller_key_id, k.account_id AS caller_account_id, k.user_id AS caller_user_id,
       k.secret_hash AS caller_secret_hash, k.max_role AS caller_max_role, u.role AS caller_role
  FROM api_keys AS k JOIN users AS u ON u.id = k.user_id
 WHERE k.secret_hash = {digest} AND k.revoked_at IS NULL
"""


class Presented(Protocol):
    """A key presented with a request, not yet admitted."""

    @property
    def digest(self) -> bytes: ...

    async def admit(self, caller: Row | None) -> uuid.UUID:
        """The account the caller acts in, from the caller's columns of the
        read's first row (None: no row, the key is unknown or revoked); raises
        when the caller may not read."""
        ...


Account = uuid.UUID | Presented


class PresentedWriter(Presented, Protocol):
    """A key presented with a write that is one statement: the statement
    writes only for a key whose role (its user's, capped at the key's) is one
    of `roles`, and `admit` then refuses the others as a lookup of its own
    would, so a refused caller has written nothing."""

    @property
    def roles(self) -> list[str]: ...


# The caller of a write in one statement: its row only when its role (and
# the key's cap) is one of the roles given, $n a text[] of their names.
WRITER = """
SELECT caller_account_id AS account_id FROM caller
 WHERE caller_role = ANY({roles}) AND (caller_max_role IS NULL OR caller_max_role = ANY({roles}))
"""


class AccountRead:
    """One read of an account's rows, run for a known account or for a
    presented key. `template` names the account `{account}`; `account` is the
    number of the parameter it takes in `plain` (the digest's in `as_caller`).
    `order` (the template's ORDER BY, its columns unqualified) keeps a list in
    order across the join."""

    __slots__ = ("as_caller", "plain")

    def __init__(self, template: str, account: int, order: str = "") -> None:
        parameter = f"${account}"
        self.plain = DriverStatement(template.format(account=parameter))
        inner = template.format(account="caller.caller_account_id")
        outer_order = (
            " ORDER BY " + ", ".join(f"found.{part.strip()}" for part in order.split(","))
            if order
            else ""
        )
        self.as_caller = DriverStatement(
            f"WITH caller AS ({CALLER.format(digest=parameter)})"
            f" SELECT caller.*, found.* FROM caller LEFT JOIN LATERAL ({inner}) AS found ON true"
            f"{outer_order}"
        )

    async def rows(
        self, connection: Connection, account: Account, *arguments: Any, present: str = "id"
    ) -> list[Row]:
        """The rows read (`present`: a column every row read has, absent from
        the caller's row when nothing was read)."""
        if isinstance(account, uuid.UUID):
            return await self.plain.fetch(connection, *_with(arguments, account))
        found = await self.as_caller.fetch(connection, *_with(arguments, account.digest))
        await account.admit(found[0] if found else None)
        return [row for row in found if row[present] is not None]

    async def row(
        self, connection: Connection, account: Account, *arguments: Any, present: str = "id"
    ) -> Row | None:
        found = await self.rows(connection, account, *arguments, present=present)
        return found[0] if found else None


def _with(arguments: Sequence[Any], value: Any) -> list[Any]:
    """`arguments` with the account's (or digest's) value in its place."""
    return [value if argument is ACCOUNT else argument for argument in arguments]


class _Account:
    """Where the account goes among a read's arguments."""

    def __repr__(self) -> str:
        return "ACCOUNT"


ACCOUNT: Any = _Account()


class Listed:
    """A page of rows, and how many match in all when that was asked."""

    __slots__ = ("rows", "total")

    def __init__(self, rows: list[Row], total: int | None) -> None:
        self.rows = rows
        self.total = total


# The orders of a list of keyed rows (a key unique in its account, a name),
# the key first: it breaks ties. Keys and names in byte order ("C"), whatever
# the database's collation.
KEYED_ORDERS = {
    "key": 'key COLLATE "C"',
    "name": 'name COLLATE "C"',
    "created_at": "created_at",
    "updated_at": "updated_at",
}


class KeysetPages:
    """Keyset pages of an account's rows in (created_at, id) order after a
    cursor (stable while rows are added), each one statement (an
    `AccountRead`, one for each shape of request): $1 the account, then each
    condition's value, the cursor's created_at and id, and last the size.
    `table` has the columns account_id, created_at and id."""

    __slots__ = ("columns", "statements", "table")

    def __init__(self, table: str, columns: str = "*") -> None:
        self.table, self.columns = table, columns
        self.statements: dict[tuple[Any, ...], AccountRead] = {}

    async def page(
        self,
        connection: Connection,
        account: Account,
        where: Sequence[tuple[str, Any]],
        size: int,
        after: Sequence[Any] | None,
        descending: bool,
    ) -> list[Row]:
        """A page of `size` after the cursor `after` (its created_at and id),
        of the rows that pass each of `where`: a condition whose parameter is
        `{0}`, and its value."""
        statement = self.statement(
            [condition for condition, _ in where], after is not None, descending
        )
        arguments = [ACCOUNT, *(value for _, value in where), *(after or ())]
        return await statement.rows(connection, account, *arguments, size)

    def statement(self, conditions: Sequence[str], after: bool, descending: bool) -> AccountRead:
        """The statement of a page of this shape."""
        shape = (*conditions, after, descending)
        statement = self.statements.get(shape)
        if statement is None:
            statement = self.statements[shape] = self._statement(conditions, after, descending)
        return statement

    def _statement(self, conditions: Sequence[str], after: bool, descending: bool) -> AccountRead:
        where = ["account_id = {account}"]
        where += [condition.format(f"${number}") for number, condition in enumerate(conditions, 2)]
        number = len(conditions) + 1
        order = " DESC" if descending else ""
        if after:
            number += 2
            where.append(
                f"(created_at, id) {'<' if descending else '>'} (${number - 1}, ${number})"
            )
        ordering = f"created_at{order}, id{order}"
        return AccountRead(
            f"SELECT {self.columns} FROM {self.table} WHERE {' AND '.join(where)}"
            f" ORDER BY {ordering} LIMIT ${number + 1}",
            account=1,
            order=ordering,
        )


class NumberedPages:
    """Pages numbered from 1 of an account's rows, each one statement (an
    `AccountRead`, one for each shape of request), with the count of all that
    match when asked: the count is then the statement's outer row, so a page
    past the end still carries it.

    `source` names the account's column `{alias}.account_id`; `orders` maps a
    sort's name to its column (unqualified, a collation allowed); the first
    order is the total order that breaks ties."""

    __slots__ = ("alias", "columns", "orders", "source", "statements")

    def __init__(self, columns: str, source: str, alias: str, orders: dict[str, str]) -> None:
        self.columns, self.source, self.alias, self.orders = columns, source, alias, orders
        self.statements: dict[tuple[Any, ...], AccountRead] = {}

    async def page(
        self,
        connection: Connection,
        account: Account,
        where: Sequence[tuple[str, Any]],
        sort: str,
        number: int,
        size: int,
        *,
        total: bool,
    ) -> Listed:
        """Page `number` of `size` in `sort`'s order ("-" first: descending),
        of the rows that pass each of `where`: a condition whose parameter is
        `{0}`, and its value."""
        shape = (*(condition for condition, _ in where), sort, total)
        statement = self.statements.get(shape)
        if statement is None:
            statement = self.statements[shape] = self._statement(where, sort, total)
        found = await statement.rows(
            connection,
            account,
            ACCOUNT,
            *(value for _, value in where),
            size,
            (number - 1) * size,
            present="total" if total else "id",
        )
        if not total:
            return Listed(found, None)
        return Listed([row for row in found if row["id"] is not None], found[0]["total"])

    def _statement(self, where: Sequence[tuple[str, Any]], sort: str, total: bool) -> AccountRead:
        conditions = [f"{self.alias}.account_id = {{account}}"]
        conditions += [
            condition.format(f"${number}") for number, (condition, _) in enumerate(where, 2)
        ]
        tie = next(iter(self.orders.values()))
        column = self.orders[sort.removeprefix("-")]
        direction = " DESC" if sort.startswith("-") else ""
        after = len(where) + 1
        filtered = f"FROM {self.source} WHERE {' AND '.join(conditions)}"
        page = (
            f"SELECT {self.columns} {filtered}"
            f" ORDER BY {self.alias}.{column}{direction}, {self.alias}.{tie}"
            f" LIMIT ${after + 1} OFFSET ${after + 2}"
        )
        if total:
            page = (
                f"SELECT page.*, counted.total FROM (SELECT count(*) AS total {filtered})"
                f" AS counted LEFT JOIN LATERAL ({page}) AS page ON true"
            )
        return AccountRead(page, account=1, order=f"{column}{direction}, {tie}")


def searched_for(alias: str) -> str:
    """A condition of `NumberedPages`: the key or the name holds the value,
    whatever its case (strpos: no LIKE pattern), both sides lower-cased by
    PostgreSQL as service/storage.py's `searched`."""
    return (
        f"(strpos(lower({alias}.key), lower({{0}})) > 0"
        f" OR strpos(lower({alias}.name), lower({{0}})) > 0)"
    )
