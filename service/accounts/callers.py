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
