"""The application factory: `uvicorn --factory service.app:create_app`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from service import __version__, health
from service.api import router as api_router
from service.api.dependencies import KeyUsage
from service.api.errors import install_error_handlers
from service.api.negotiation import ContentNegotiation
from service.api.openapi import complete_openapi
from service.api.rate_limits import RateLimits
from service.db.engines import create_app_engine
from service.migrations.bootstrap import Bootstrap, MigrationFailed
from service.migrations.exits import exit_after_failed_migration
from service.migrations.status import MigrationStatus
from service.migrations.watch import SchemaWatch
from service.observability.logs import configure_logging
from service.observability.metrics import Metrics
from service.observability.middleware import RequestObservability
from service.workers import die_with_supervisor
from settings import Settings, load_settings

logger = logging.getLogger("service.app")

# How long a failed process stays up, unready, so probes and logs can see why.
FAILURE_EXIT_DELAY = 2.0
# How long shutdown waits for a cancelled migration to roll back and unlock.
BOOTSTRAP_STOP_TIMEOUT = 20.0


class State(TypedDict):
    """Long-lived objects, shared with every request through `request.state`."""

    settings: Settings
    engine: AsyncEngine
    migration: MigrationStatus
    schema_watch: SchemaWatch
    key_usage: KeyUsage
    rate_limits: RateLimits


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; settings come from the environment unless given."""
    settings = settings or load_settings()
    die_with_supervisor()
    configure_logging(settings.log_level, settings.log_format)
    status = MigrationStatus()
    metrics = Metrics(status)
    app = FastAPI(
        title="Platform service",
        version=__version__,
        lifespan=_lifespan(settings, status),
        # A redirect to the same path without its trailing slash would be built
        # from the client's Host header: answer 404 instead.
        redirect_slashes=False,
    )
    app.state.operator_token = (
        settings.operator_token.get_secret_value() if settings.operator_token else None
    )
    app.state.metrics = metrics
    app.add_middleware(
        ContentNegotiation, max_bytes=settings.max_body_bytes, routes=app.router.routes
    )
    app.add_middleware(RequestObservability, metrics=metrics)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(api_router)
    complete_openapi(app)
    return app


def _lifespan(
    settings: Settings, status: MigrationStatus
) -> Callable[[FastAPI], AbstractAsyncContextManager[State]]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        engine = create_app_engine(settings)
        bootstrap = Bootstrap(
            settings, engine, status, hold_lock_after_failure=settings.migration_exit_on_failure
        )
        task = asyncio.create_task(_run_bootstrap(bootstrap), name="migration-bootstrap")
        try:
            yield State(
                settings=settings,
                engine=engine,
                migration=status,
                schema_watch=bootstrap.watch,
                key_usage=KeyUsage(settings.api_key_usage_interval),
                rate_limits=RateLimits.per_second_and_minute(
                    settings.rate_limit_per_key, settings.rate_limit_auth_failures
                ),
            )
        finally:
            exiting = await _stop(task)
            if not exiting:
                await bootstrap.release_kept_lock()
            await engine.dispose()
        if exiting:
            exit_after_failed_migration(status.error or "unknown")

    return lifespan


async def _run_bootstrap(bootstrap: Bootstrap) -> bool:
    """Run the bootstrap; True when its migration failed and the process shuts
    down to exit for it (MIGRATION_EXIT_ON_FAILURE)."""
    try:
        await bootstrap.run()
    except MigrationFailed:
        if bootstrap.settings.migration_exit_on_failure:
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
        await asyncio.wait_for(task, BOOTSTRAP_STOP_TIMEOUT)
    return False
