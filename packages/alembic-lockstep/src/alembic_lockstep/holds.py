"""Holds: a cancelled migration stops the fleet's attempts, not one process's.

An operator (a DBA) who cancels a running revision (`pg_cancel_backend`)
cancelled it because it hurt production. The process whose statement was
cancelled records a hold on that revision; every process then refuses to run
it (phase `held` in /readyz) until an operator lifts the hold
(`migrate --resume --reason TEXT`), which is recorded beside it: who held,
who lifted, when and why. The table is the audit trail of holds.

The table belongs to the application's schema like the audit trail:
`define_holds_table(Base.metadata)` in its models, and a revision creates it.
A revision cancelled before that revision has run cannot be held (the log
says so).
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    MetaData,
    Table,
    Text,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

HOLDS_TABLE = "schema_migration_holds"


def define_holds_table(metadata: MetaData) -> Table:
    """Define the holds table on `metadata` (the application's models include it)."""
    return Table(
        HOLDS_TABLE,
        metadata,
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        Column("revision", Text, nullable=False),
        Column("reason", Text, nullable=False),
        Column("held_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("held_by", Text, nullable=False),
        Column("lifted_at", DateTime(timezone=True)),
        Column("lifted_by", Text),
        Column("lift_reason", Text),
    )


holds_table = define_holds_table(MetaData())


@dataclass(frozen=True)
class Hold:
    revision: str
    reason: str
    held_at: datetime
    held_by: str

    def as_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "reason": self.reason,
            "since": self.held_at.isoformat(),
            "held_by": self.held_by,
        }


def this_process() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


async def holds_exist(connection: AsyncConnection) -> bool:
    return bool(await connection.scalar(text(f"SELECT to_regclass('{HOLDS_TABLE}') IS NOT NULL")))


async def record_hold(connection: AsyncConnection, revision: str, reason: str) -> bool:
    """Hold `revision`; False when the database has no holds table yet."""
    if not await holds_exist(connection):
        await connection.rollback()
        return False
    await connection.execute(
        insert(holds_table).values(revision=revision, reason=reason, held_by=this_process())
    )
    await connection.commit()
    return True


async def active_holds(connection: AsyncConnection) -> list[Hold]:
    """The holds not lifted, oldest first."""
    if not await holds_exist(connection):
        await connection.rollback()
        return []
    rows = await connection.execute(
        select(holds_table)
        .where(holds_table.c.lifted_at.is_(None))
        .order_by(holds_table.c.held_at, holds_table.c.id)
    )
    holds = [Hold(row.revision, row.reason, row.held_at, row.held_by) for row in rows]
    await connection.rollback()
    return holds


async def lift_holds(connection: AsyncConnection, operator: str, reason: str) -> list[Hold]:
    """Lift every hold, recording who and why; the holds lifted."""
    if not await holds_exist(connection):
        await connection.rollback()
        return []
    rows = await connection.execute(
        update(holds_table)
        .where(holds_table.c.lifted_at.is_(None))
        .values(lifted_at=func.now(), lifted_by=operator, lift_reason=reason)
        .returning(holds_table)
    )
    lifted = [Hold(row.revision, row.reason, row.held_at, row.held_by) for row in rows]
    await connection.commit()
    return lifted


def default_operator() -> str:
    """Who lifts a hold when the command does not say: the OS user, on this host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"
