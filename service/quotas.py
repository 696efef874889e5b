"""Per-account quotas: how many configs, contexts, environments, live API
keys and users one account may hold (settings QUOTA_*, README "Limits").

A write that adds rows checks its account's count after inserting them, in
its own transaction: over the quota, the request is answered 409 naming the
limit and the transaction rolls back, so nothing is added. The count is read
under a transaction-scoped advisory lock of the account and kind: a
concurrent writer of the same kind waits for this transaction to end, and
its count (a later statement, so a later snapshot) sees these rows. `hold`
takes the lock after the insert and counts in a statement of its own; a
write that would rather count in its insert's statement (a config's create:
one round trip less) takes the lock first (`lock`), so that statement's
snapshot comes after it, and hands the count to `check`. The lock is not the
account's row lock, so quota checks never queue behind other work of the
account, and it holds through a transaction-pooling PgBouncer.

A config's create in one statement (service/configs/store.py `create_alone`)
takes the same lock inside its statement, then locks its account's row of
config_counts, which the database keeps (revisions 0016, 0017): the row's latest
count, whatever the statement's snapshot, and both locks held for that
statement alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import ColumnElement, Table, func, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.driver import DriverStatement
from service.models import ApiKey, Config, Context, Environment, User, table
from service.problems import Conflicting
from settings import Settings

# The first number of the two-number advisory locks of quotas (the migration
# lock uses the one-number form, a separate space).
_LOCK_SPACE = 0x51554F00
_LOCK_ON_DRIVER = DriverStatement("SELECT pg_advisory_xact_lock($1, hashtext($2))")


class Kind(Enum):
    """What a quota counts: (number in the lock space, table, plural, setting)."""

    CONFIGS = (1, "configs", "QUOTA_CONFIGS")
    CONTEXTS = (2, "contexts", "QUOTA_CONTEXTS")
    ENVIRONMENTS = (3, "environments", "QUOTA_ENVIRONMENTS")
    API_KEYS = (4, "live API keys", "QUOTA_API_KEYS")
    USERS = (5, "users", "QUOTA_USERS")

    def __init__(self, number: int, plural: str, setting: str) -> None:
        self.number, self.plural, self.setting = number, plural, setting


_COUNTED: dict[Kind, tuple[Table, ColumnElement[bool]]] = {
    Kind.CONFIGS: (table(Config), true()),
    Kind.CONTEXTS: (table(Context), true()),
    Kind.ENVIRONMENTS: (table(Environment), true()),
    Kind.API_KEYS: (table(ApiKey), table(ApiKey).c.revoked_at.is_(None)),
    Kind.USERS: (table(User), true()),
}


@dataclass(frozen=True)
class AccountQuotas:
    limits: dict[Kind, int]

    async def hold(self, connection: AsyncConnection, account_id: uuid.UUID, kind: Kind) -> None:
        """Call after inserting rows of `kind`: Conflicting (a 409, and so a
        rollback) when the account now holds more than its quota."""
        await self.lock(connection, account_id, kind)
        rows, condition = _COUNTED[kind]
        held = await connection.scalar(
            select(func.count()).select_from(rows).where(rows.c.account_id == account_id, condition)
        )
        self.check(kind, held or 0)

    async def lock(self, connection: AsyncConnection, account_id: uuid.UUID, kind: Kind) -> None:
        """Before inserting rows of `kind` whose statement also counts them."""
        await _LOCK_ON_DRIVER.execute(connection, self.lock_space(kind), str(account_id))

    @staticmethod
    def lock_space(kind: Kind) -> int:
        """The first number of `kind`'s lock, for a statement that takes the
        lock itself (the second: hashtext of the account id's text)."""
        return _LOCK_SPACE + kind.number

    def check(self, kind: Kind, held: int) -> None:
        """Conflicting (a 409, and so a rollback) when `held`, the account's
        count of `kind` with the new rows, is over its quota."""
        limit = self.limits[kind]
        if held > limit:
            raise Conflicting(
                f"the account has reached its quota of {limit} {kind.plural} ({kind.setting}); "
                f"remove some first, or ask the operator to raise it"
            )


def quotas_of(settings: Settings) -> AccountQuotas:
    """The quotas the service's settings give every account."""
    return AccountQuotas(
        {
            Kind.CONFIGS: settings.quota_configs,
            Kind.CONTEXTS: settings.quota_contexts,
            Kind.ENVIRONMENTS: settings.quota_environments,
            Kind.API_KEYS: settings.quota_api_keys,
            Kind.USERS: settings.quota_users,
        }
    )
