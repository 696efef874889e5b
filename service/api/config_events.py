"""Announcing config writes to the SDK's event streams (`GET /api/v1/events`).

Every write of a config, through either dialect, sends a PostgreSQL NOTIFY
inside its own transaction: PostgreSQL delivers it at commit, to every
listening worker of every replica, and a rolled-back write sends nothing.
NOTIFY passes through a transaction-pooling PgBouncer; LISTEN does not, so
the listeners hold direct connections (service/api/sdk/event_hub.py).
"""

from __future__ import annotations

import json
import uuid

from sqlalchemy import String, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

CHANNEL = "config_events"
CHANGED = "config_changed"
DELETED = "config_deleted"
# Many configs at once (discovery): clients refetch the whole list, once.
MANY_CHANGED = "configs_changed"


# Built once: every config write sends it.
_NOTIFY = select(func.pg_notify(CHANNEL, bindparam("payload", type_=String)))


async def announce(
    connection: AsyncConnection, account_id: uuid.UUID, event: str, key: str | None = None
) -> None:
    """Tell the account's streams, once this transaction commits."""
    payload = {"account": str(account_id), "event": event}
    if key is not None:
        payload["id"] = key
    await connection.execute(_NOTIFY, {"payload": json.dumps(payload)})
