"""The application factory: `uvicorn --factory service.app:create_app`."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from alembic_lockstep import MigrationStatus, die_with_supervisor, run_in_background
from fastapi import FastAPI
from pydantic import SecretStr

from service import __version__, api, health
from service.api import sdk
from service.api.account_shares import AccountShares
from service.api.answer_budget import AnswerBudget
from service.api.docs import install_docs
from service.api.errors import install_error_handlers
from service.api.key_usage import KeyUsage
from service.api.negotiation import ContentNegotiation
from service.api.openapi import complete_openapi
from service.api.rate_limits import RateLimits
from service.api.sdk.event_hub import running_hub
from service.bootstrap import create_bootstrap
from service.db.engines import create_app_engine
from service.db.statement_pool import open_statement_pool
from service.db.statement_timeout import ReadBound
from service.observability.logs import configure_logging
from service.observability.metrics import Metrics
from service.observability.middleware import RequestObservability
from service.state import State
from settings import Settings, SettingsError, load_settings

# How often a worker looks whether its schema is at head, to start listening for
# config events (an in-memory flag: cheap).
SCHEMA_READY_POLL = 0.1
# The exit status a server's supervisor takes for "this worker will not start,
# and no restart would change that": it stops the whole server rather than
# start workers into the same error. uvicorn's STARTUP_FAILURE, gunicorn's
# WORKER_BOOT_ERROR.
WILL_NOT_START = 3


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; settings come from the environment unless given."""
    settings = settings or _settings_of_a_worker()
    die_with_supervisor()
    configure_logging(settings.log_level, settings.log_format)
    status = MigrationStatus()
    metrics = Metrics(status)
    app = FastAPI(
        title="Platform service",
        version=__version__,
        lifespan=_lifespan(settings, status, metrics),
        # A redirect to the same path without its trailing slash would be built
        # from the client's Host header: answer 404 instead.
        redirect_slashes=False,
        # Served by install_docs, from an installed package rather than a CDN.
        docs_url=None,
        redoc_url=None,
        # The service's metrics and request log are its own (service/observability).
        # FastAPI's OpenTelemetry bridge does nothing without a provider, yet
        # looked for one on every request: off.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    # Inside the body's checks: a request takes its account's share once its
    # whole body has arrived. One that held it during a slow body kept its
    # slot for up to HTTP_BODY_TIMEOUT with no work to do; under made-up keys
    # of the right shape, that kept every key a worker did not know yet waiting.
    app.add_middleware(AccountShares, slots=settings.account_slots, routes=app.router.routes)
    app.add_middleware(
        ContentNegotiation, max_bytes=settings.max_body_bytes, routes=app.router.routes
    )
    # Outermost but for the request log and metrics, so a request refused
    # its share or for its body is counted.
    app.add_middleware(RequestObservability, metrics=metrics)
    install_error_handlers(app)
    # The API first: its requests outnumber the probes' (routes are matched in
    # order). Its routes are served as they are, not as included routers
    # (service/api/routers.py).
    for router in (*api.ROUTERS, *sdk.ROUTERS):
        app.router.routes.extend(router.routes)
    app.include_router(health.router)
    complete_openapi(app)
    install_docs(app)
    return app


def _settings_of_a_worker() -> Settings:
    """The settings of the environment; invalid ones end the process with one
    line saying which (never a value) and `WILL_NOT_START`. A factory that
    raised would end its worker with status 1, which uvicorn's and gunicorn's
    supervisors restart into the same error for as long as they run.
    (`python -m service` checks them before it starts a worker: status 2.)"""
    try:
        return load_settings()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(WILL_NOT_START) from None


def _lifespan(
    settings: Settings, status: MigrationStatus, metrics: Metrics
) -> Callable[[FastAPI], AbstractAsyncContextManager[State]]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        engine = create_app_engine(settings)
        bootstrap = create_bootstrap(settings, engine, status)
        statements = await open_statement_pool(settings, engine)
        try:
            async with (
                run_in_background(bootstrap),
                running_hub(
                    settings.events_url,
                    settings.database_connect_timeout,
                    settings.http_max_connections,
                    listen_after=lambda: _schema_at_head(status),
                ) as events,
            ):
                _freeze_startup_objects()
                yield State(
                    bootstrap=bootstrap,
                    settings=settings,
                    engine=engine,
                    statements=statements,
                    read_bound=ReadBound(
                        settings.request_statement_timeout, settings.database_pooler
                    ),
                    operator_token=_operator_token(settings),
                    metrics=metrics,
                    key_usage=KeyUsage(settings.api_key_usage_interval),
                    rate_limits=RateLimits(
                        settings.rate_limit_per_key,
                        settings.rate_limit_auth_failures,
                        _secret(settings.rate_limit_storage_url),
                    ),
                    events=events,
                    answers=AnswerBudget(settings.answer_buffer_bytes),
                )
        finally:
            if statements is not None:
                await statements.close()
            await engine.dispose()

    return lifespan


async def _schema_at_head(status: MigrationStatus) -> None:
    """Return once the bootstrap is ready. The status is a state machine with no
    event to wait on; its flag is in this process's memory, so a poll is cheap."""
    while not status.ready:  # noqa: ASYNC110
        await asyncio.sleep(SCHEMA_READY_POLL)


def _freeze_startup_objects() -> None:
    """Leave what startup built (modules, the app, its routes and schemas: about
    130,000 objects that live as long as the process) out of every garbage
    collection from now on. A full collection walked them all, 100-350 ms with
    the event loop stopped: the p99 of the API (docs/benchmarks/api.notes.md).
    No collection first: it found nothing to free here and took 130 ms of startup."""
    gc.freeze()


def _operator_token(settings: Settings) -> str | None:
    return _secret(settings.operator_token)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value else None
