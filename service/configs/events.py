"""Announcing config writes to the SDK's event streams (`GET /api/v1/events`).

Flag writes travel the same channel (service/flags/events.py); `parse`
takes their events too.

Every write of a config, through either dialect, sends a PostgreSQL NOTIFY
inside its own transaction: PostgreSQL delivers it at commit, to every
listening worker of every replica, and a rolled-back write sends nothing.
NOTIFY passes through a transaction-pooling PgBouncer; LISTEN does not, so
the listeners hold direct connections (service/api/sdk/event_hub.py).

Any role that can connect to the database can NOTIFY the channel too, so the
listeners take only what `announce` itself sends (`parse`): a JSON object of
an account's id, one of the known event names and, for the events of one
config, a config key; anything else is dropped. The deployment examples also
revoke CONNECT from PUBLIC (docs/operations/database-roles.md).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from service.flags import events as flag_events
from service.flags.events import FLAG_CHANGED, FLAG_DELETED, FLAGS_CHANGED

# One announce for every SDK event, configs' and flags' (the same channel).
from service.flags.events import announce as announce

# One channel for every SDK event, configs' and flags'.
CHANNEL = flag_events.CHANNEL
CHANGED = "config_changed"
DELETED = "config_deleted"
# Many configs at once (discovery): clients refetch the whole list, once.
MANY_CHANGED = "configs_changed"
# Not an SDK event: API keys were revoked (or their user deleted), and their
# streams end on every worker before any later event reaches them.
KEYS_REVOKED = "keys_revoked"
# Key ids per notification: a NOTIFY payload holds at most 8,000 bytes.
_KEYS_PER_NOTIFICATION = 100


# The events of one config or flag carry its key; the "many changed" ones nothing.
_ONE_CONFIG = frozenset({CHANGED, DELETED, FLAG_CHANGED, FLAG_DELETED})
_NAMES = {
    name: name
    for name in (CHANGED, DELETED, MANY_CHANGED, FLAG_CHANGED, FLAG_DELETED, FLAGS_CHANGED)
}
# A config's and a flag's key column (service/models.py) hold at most 128 characters.
_MAX_KEY_LENGTH = 128


@dataclass(frozen=True)
class ConfigEvent:
    """A notification as `announce` (or `announce_revoked_keys`) sends it, its
    values checked."""

    account_id: uuid.UUID
    name: str
    key: str | None
    revoked_keys: frozenset[uuid.UUID] = frozenset()


def parse(payload: str) -> ConfigEvent | None:
    """The event in a notification's payload, or None for anything `announce`
    would not have sent: another shape, an unknown name, an id that is not a
    config key. The name returned is the service's own string, never the
    payload's, so nothing of a forged payload but a checked key reaches a frame."""
    try:
        message = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    event = message.get("event")
    if event == KEYS_REVOKED:
        return _revoked_keys(message)
    name = _NAMES.get(event) if isinstance(event, str) else None
    expected = {"account", "event", "id"} if name in _ONE_CONFIG else {"account", "event"}
    if name is None or set(message) != expected:
        return None
    account_id = _account_id(message["account"])
    key = message.get("id")
    if account_id is None or (name in _ONE_CONFIG and not _is_config_key(key)):
        return None
    return ConfigEvent(account_id, name, key)


def _revoked_keys(message: dict[str, object]) -> ConfigEvent | None:
    """Keys revoked in one transaction: {"account", "event", "keys": [ids]}."""
    account_id = _account_id(message.get("account"))
    keys = message.get("keys")
    if set(message) != {"account", "event", "keys"} or account_id is None:
        return None
    if not isinstance(keys, list) or not 0 < len(keys) <= _KEYS_PER_NOTIFICATION:
        return None
    ids = [_account_id(key) for key in keys]  # a key's id is written as an account's
    if any(key_id is None for key_id in ids):
        return None
    return ConfigEvent(account_id, KEYS_REVOKED, None, frozenset(filter(None, ids)))


def _account_id(value: object) -> uuid.UUID | None:
    """The id of an account, written as `announce` writes it (str of a UUID)."""
    if not isinstance(value, str):
        return None
    try:
        account_id = uuid.UUID(value)
    except ValueError:
        return None
    return account_id if str(account_id) == value else None


def _is_config_key(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= _MAX_KEY_LENGTH
        and value.isprintable()
        and value.strip() == value
    )


async def announce_revoked_keys(
    connection: AsyncConnection, account_id: uuid.UUID, key_ids: Sequence[uuid.UUID]
) -> None:
    """End the keys' streams once this transaction commits: NOTIFY delivers in
    commit order, so no event committed after the revocation reaches them."""
    for start in range(0, len(key_ids), _KEYS_PER_NOTIFICATION):
        chunk = key_ids[start : start + _KEYS_PER_NOTIFICATION]
        payload = {"account": str(account_id), "event": KEYS_REVOKED, "keys": list(map(str, chunk))}
        await flag_events.send(connection, payload)
