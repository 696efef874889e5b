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
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.driver import DriverStatement

CHANNEL = "config_events"
CHANGED = "config_changed"
DELETED = "config_deleted"
# Many configs at once (discovery): clients refetch the whole list, once.
MANY_CHANGED = "configs_changed"
# Not an SDK event: API keys were revoked (or their user deleted), and their
# streams end on every worker before any later event reaches them.
KEYS_REVOKED = "keys_revoked"
# Key ids per notification: a NOTIFY payload holds at most 8,000 bytes.
_KEYS_PER_NOTIFICATION = 100


# Every config write sends it: straight on the driver (service/db/driver.py).
_NOTIFY = DriverStatement(f"SELECT pg_notify('{CHANNEL}', $1)")


async def announce(
    connection: AsyncConnection, account_id: uuid.UUID, event: str, key: str | None = None
) -> None:
    """Tell the account's streams, once this transaction commits."""
    payload = {"account": str(account_id), "event": event}
    if key is not None:
        payload["id"] = key
    await _NOTIFY.execute(connection, json.dumps(payload))


async def announce_revoked_keys(
    connection: AsyncConnection, account_id: uuid.UUID, key_ids: Sequence[uuid.UUID]
) -> None:
    """End the keys' streams once this transaction commits: NOTIFY delivers in
    commit order, so no event committed after the revocation reaches them."""
    for start in range(0, len(key_ids), _KEYS_PER_NOTIFICATION):
        chunk = key_ids[start : start + _KEYS_PER_NOTIFICATION]
        payload = {"account": str(account_id), "event": KEYS_REVOKED, "keys": list(map(str, chunk))}
        await _NOTIFY.execute(connection, json.dumps(payload))
