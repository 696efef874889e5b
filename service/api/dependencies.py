"""Request dependencies: the readiness gate, the transaction, the caller and its role."""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service import keys
from service.errors import ApiError
from service.status import MigrationStatus

RETRY_AFTER_SECONDS = "5"
ROLE_RANK = {"VIEWER": 0, "MEMBER": 1, "ADMIN": 2, "OWNER": 3}

_CALLER = text(
    """
    SELECT k.id AS key_id, k.account_id, k.user_id, k.secret_hash, u.role
      FROM api_keys AS k JOIN users AS u ON u.id = k.user_id
     WHERE k.secret_hash = :digest AND k.revoked_at IS NULL
    """
)
_TOUCH_KEY = text("UPDATE api_keys SET last_used_at = now() WHERE id = :id")


async def require_ready(request: Request) -> None:
    """Refuse API work until the schema is at head."""
    status: MigrationStatus = request.state.migration
    if not status.ready:
        raise ApiError(
            503,
            f"the service is starting: database schema {status.phase.value}",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )


async def database(request: Request) -> AsyncIterator[AsyncConnection]:
    """One transaction per request: committed when the handler succeeds, rolled back otherwise."""
    async with request.state.engine.begin() as connection:
        yield connection


Database = Annotated[AsyncConnection, Depends(database)]


@dataclass(frozen=True)
class Caller:
    """Who is calling: an API key, acting as its user, in its account."""

    key_id: uuid.UUID
    account_id: uuid.UUID
    user_id: uuid.UUID
    role: str

    def outranks_or_equals(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


@dataclass
class KeyUsage:
    """When each key's last-used time was last written by this process.

    The time is written at most once per interval per key and process, so a
    busy key costs no write per request.
    """

    interval: float
    written: dict[uuid.UUID, float] = field(default_factory=dict)

    def due(self, key_id: uuid.UUID) -> bool:
        now = time.monotonic()
        if now - self.written.get(key_id, -self.interval) < self.interval:
            return False
        self.written[key_id] = now
        return True


def _unauthorized(detail: str) -> ApiError:
    return ApiError(401, detail, headers={"WWW-Authenticate": 'Bearer realm="platform"'})


async def authenticated(request: Request, connection: Database) -> Caller:
    """The caller behind `Authorization: Bearer <key>`, or 401."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise _unauthorized("an API key is required: Authorization: Bearer <key>")
    key = key.strip()
    if not keys.looks_like_key(key):
        raise _unauthorized("the API key is not valid")
    presented = keys.digest(key)
    row = (await connection.execute(_CALLER, {"digest": presented})).mappings().first()
    # The lookup is by digest; compare in constant time all the same.
    if row is None or not hmac.compare_digest(bytes(row["secret_hash"]), presented):
        raise _unauthorized("the API key is not valid or was revoked")
    if request.state.key_usage.due(row["key_id"]):
        await connection.execute(_TOUCH_KEY, {"id": row["key_id"]})
    return Caller(row["key_id"], row["account_id"], row["user_id"], row["role"])


def role_at_least(minimum: str) -> Callable[..., Coroutine[Any, Any, Caller]]:
    async def check(caller: Annotated[Caller, Depends(authenticated)]) -> Caller:
        if not caller.outranks_or_equals(minimum):
            raise ApiError(
                403, f"this needs the role {minimum} or higher; the key's user is {caller.role}"
            )
        return caller

    return check


Viewer = Annotated[Caller, Depends(role_at_least("VIEWER"))]
Member = Annotated[Caller, Depends(role_at_least("MEMBER"))]
Admin = Annotated[Caller, Depends(role_at_least("ADMIN"))]
Owner = Annotated[Caller, Depends(role_at_least("OWNER"))]
