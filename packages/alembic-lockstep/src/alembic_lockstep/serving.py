"""The bootstrap inside a FastAPI app: a background task of the lifespan, its
failure policy, and the readiness route.

    async with run_in_background(bootstrap):   # in the lifespan, around its yield
        yield {"bootstrap": bootstrap, ...}

The server opens its port at once (the lifespan does not wait for the
migration) and liveness passes; readiness (`readiness_router`) answers 503
until the schema is at head. On a failed migration, with `exit_on_failure`,
the process stays up FAILURE_EXIT_DELAY seconds (so probes and logs can see
why), shuts down gracefully, and exits in the way no supervisor restarts
(exits.py); otherwise it keeps serving, unready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, TypedDict, cast

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from alembic_lockstep.bootstrap import Bootstrap, MigrationFailed
from alembic_lockstep.errors import describe_error
from alembic_lockstep.exits import exit_after_failed_migration
from alembic_lockstep.scripts import current_revisions

logger = logging.getLogger(__name__)

# How long a failed process stays up, unready, so probes and logs can see why.
FAILURE_EXIT_DELAY = 2.0
# How long shutdown waits for a cancelled migration to roll back and unlock.
STOP_TIMEOUT = 20.0
# How long readiness waits for the database's answer.
DATABASE_CHECK_SECONDS = 2.0


class BootstrapState(TypedDict):
    """The part of a lifespan state the readiness route reads: yield a state
    that holds the bootstrap under this key (a TypedDict may extend this one)."""

    bootstrap: Bootstrap


def bootstrap_of(request: Request) -> Bootstrap:
    """The bootstrap in the lifespan state of the app serving `request`."""
    return cast(BootstrapState, request.scope["state"])["bootstrap"]


@contextlib.asynccontextmanager
async def run_in_background(bootstrap: Bootstrap) -> AsyncIterator[None]:
    """Run the bootstrap while the block runs; on leaving it, cancel it (a running
    revision rolls back, the lock is released) and, when it failed under the
    exit policy, end the process (exits.py)."""
    task = asyncio.create_task(_run(bootstrap), name="migration-bootstrap")
    try:
        yield
    finally:
        exiting = await _stop(task)
        if not exiting:
            await bootstrap.release_kept_lock()
    if exiting:
        exit_after_failed_migration(bootstrap.status.error or "unknown")


async def _run(bootstrap: Bootstrap) -> bool:
    """Run the bootstrap; True when its migration failed and the process shuts
    down to exit for it (`exit_on_failure`)."""
    try:
        await bootstrap.run()
    except MigrationFailed:
        if bootstrap.config.exit_on_failure:
            await asyncio.sleep(FAILURE_EXIT_DELAY)
            # A graceful shutdown through the server's own SIGTERM handling.
            signal.raise_signal(signal.SIGTERM)
            return True
    return False


async def _stop(task: asyncio.Task[bool]) -> bool:
    """Cancel the bootstrap: the running revision rolls back, the lock is released.
    True when the bootstrap had asked for the shutdown to exit for a failed
    migration; a shutdown asked for by a signal from outside (the supervisor
    stopping its workers, the orchestrator) ends the process normally."""
    if task.done():
        if task.cancelled():
            return False
        if (error := task.exception()) is not None:
            logger.error("the bootstrap ended with an unexpected error", exc_info=error)
            return False
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
        await asyncio.wait_for(task, STOP_TIMEOUT)
    return False


async def readiness(bootstrap: Bootstrap) -> tuple[int, dict[str, object]]:
    """(status code, body): 200 once the schema is at head and the database
    answers, still at this code's head; 503 before, after a failure, and while
    the database is unreachable."""
    status = bootstrap.status
    if not status.ready and not await bootstrap.recover_if_at_head():
        return 503, status.as_json()
    # At head: ready only while the database answers, so a restarting database
    # takes the replica out of rotation instead of failing its requests; and
    # only while it is still at this code's head.
    problem = await _database_problem(bootstrap)
    body = status.as_json()
    if problem is not None:
        body.update(status="unready", database="unreachable", error=problem)
        return 503, body
    return (200 if status.ready else 503), body


async def _database_problem(bootstrap: Bootstrap) -> str | None:
    try:
        async with asyncio.timeout(DATABASE_CHECK_SECONDS):
            async with bootstrap.engine.connect() as connection:
                current = await current_revisions(connection)
            await bootstrap.watch.noticed(current)
    except Exception as error:
        return describe_error(error) if not isinstance(error, TimeoutError) else "no answer in time"
    return None


class ReadinessAnswer(BaseModel):
    """The body of the readiness route: `status` for anyone, the rest for those
    `show_details` admits."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ready", "unready"]
    phase: str | None = None
    phase_seconds: float | None = None
    current_revision: str | None = None
    target_revision: str | None = None
    migrated_here: bool | None = None
    schema_ahead: bool | None = None
    schema_ahead_unplaced: str | None = None
    verification: str | None = None
    migration: dict[str, Any] | None = None
    lock_holder: dict[str, Any] | None = None
    hold: dict[str, Any] | None = None
    error: str | None = None
    failure: str | None = None
    database: Literal["unreachable"] | None = None


def _nobody(_: Request) -> bool:
    return False


def readiness_router(
    *, path: str = "/readyz", show_details: Callable[[Request], bool] = _nobody
) -> APIRouter:
    """A router with the readiness route; its answer says what the migration is
    doing (revisions, the lock holder's address, errors) only to those
    `show_details` admits (the operator), "status" alone to others. By default
    nobody sees the details: pass a check of the operator's credentials."""
    router = APIRouter()

    described: dict[str, Any] = {
        "summary": "Readiness: the schema is at head",
        "response_class": JSONResponse,
        "responses": {
            200: {"model": ReadinessAnswer, "description": "Ready"},
            503: {
                "model": ReadinessAnswer,
                "description": "Not ready; the body says what the migration is doing",
            },
        },
    }

    # HEAD too, as a route of its own (one route of two methods would give
    # both operations one id): some load balancers' health checks send HEAD,
    # which a GET route of FastAPI's answers with 405.
    @router.get(path, **described)
    @router.head(path, **described)
    async def readyz(request: Request) -> JSONResponse:
        status_code, body = await readiness(bootstrap_of(request))
        shown = body if show_details(request) else {"status": body["status"]}
        return JSONResponse(shown, status_code=status_code)

    return router
