"""The notes app: `uvicorn --factory notes.app:create_app --workers 2`.

Its database is NOTES_DATABASE_URL (postgresql+asyncpg://...). Every worker
migrates on startup under the bootstrap's lock; /readyz answers 503 until the
schema is at head; /notes serves once it is.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic_lockstep import (
    Bootstrap,
    BootstrapState,
    LogFormat,
    MigrationConfig,
    readiness_router,
    run_in_background,
)
from fastapi import FastAPI, HTTPException, Request
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from notes.models import notes

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


class State(BootstrapState):
    engine: AsyncEngine


def migration_config() -> MigrationConfig:
    return MigrationConfig(
        migration_url=make_url(os.environ["NOTES_DATABASE_URL"]),
        alembic_config=ALEMBIC_INI,
        lock_name="notes-app:schema-migrations",
        application_name="notes-app",
        poll_interval=0.2,
        retry_max_interval=0.5,
        # The progress lines' format (the app sets up no logging of its own).
        log_format=LogFormat(os.environ.get("NOTES_LOG_FORMAT", "text")),
    )


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[State]:
    config = migration_config()
    engine = create_async_engine(config.migration_url, pool_size=2)
    bootstrap = Bootstrap(config, engine)
    try:
        async with run_in_background(bootstrap):
            yield State(bootstrap=bootstrap, engine=engine)
    finally:
        await engine.dispose()


def from_this_machine(request: Request) -> bool:
    return request.client is not None and request.client.host in {"127.0.0.1", "::1"}


def create_app() -> FastAPI:
    app = FastAPI(title="Notes", lifespan=lifespan)
    # The details (revisions, the lock holder's address, errors) for callers on
    # this machine only: the library shows them to nobody unless told.
    app.include_router(readiness_router(show_details=from_this_machine))

    @app.get("/notes")
    async def list_notes(request: Request) -> dict[str, object]:
        state: State = request.scope["state"]
        if not state["bootstrap"].status.ready:
            raise HTTPException(503, "the schema is not at head yet")
        async with state["engine"].connect() as connection:
            count = await connection.scalar(select(func.count()).select_from(notes))
        return {"pid": os.getpid(), "notes": count}

    return app
