"""Request dependencies shared by the API routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import ApiError
from service.status import MigrationStatus

RETRY_AFTER_SECONDS = "5"


async def require_ready(request: Request) -> None:
    """Refuse API work until the schema is at head."""
    status: MigrationStatus = request.state.migration
    if not status.ready:
        raise ApiError(
            503,
            f"the service is starting: database schema {status.phase.value}",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )


async def database_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: committed when the handler succeeds, rolled back otherwise."""
    async with request.state.sessions() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


SessionDep = Annotated[AsyncSession, Depends(database_session)]
