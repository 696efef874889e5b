"""Flag writes announced on the SDK's event stream (`GET /api/v1/events`).

The same channel and the same guarantees as configs
(service/configs/events.py, which parses what arrives): a NOTIFY inside
the write's transaction, delivered at commit to every listening worker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.driver import DriverStatement

# The one channel of every SDK event; its listeners check each payload.
CHANNEL = "config_events"
FLAG_CHANGED = "flag_changed"
FLAG_DELETED = "flag_deleted"
# Many flags at once (discovery): clients refetch the whole list, once.
FLAGS_CHANGED = "flags_changed"

_NOTIFY = DriverStatement(f"SELECT pg_notify('{CHANNEL}', $1)")


async def announce(
    connection: AsyncConnection, account_id: uuid.UUID, event: str, key: str | None = None
) -> None:
    """Tell the account's streams, once this transaction commits (configs'
    and flags' events alike)."""
    await _NOTIFY.execute(connection, notification(account_id, event, key))


def notification(account_id: uuid.UUID, event: str, key: str | None = None) -> str:
    """The payload `announce` sends (for a statement that NOTIFYs on its own)."""
    payload: dict[str, object] = {"account": str(account_id), "event": event}
    if key is not None:
        payload["id"] = key
    return json.dumps(payload)


async def send(connection: AsyncConnection, payload: Mapping[str, object]) -> None:
    """NOTIFY the channel with `payload`, delivered at this transaction's commit."""
    await _NOTIFY.execute(connection, json.dumps(payload))
