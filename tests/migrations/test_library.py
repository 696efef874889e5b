"""alembic-lockstep's defaults an adopter gets without asking: readiness
details private, progress lines only where the app set up no logging."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest
from alembic_lockstep import (
    Bootstrap,
    BootstrapState,
    LogFormat,
    MigrationConfig,
    readiness_router,
)
from alembic_lockstep.logs import LOGGER, make_visible
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

# Never connected to: a bootstrap that has not run answers from its status alone.
URL = make_url("postgresql+asyncpg://app:secret@127.0.0.1:1/app")


def app_with(router_options: dict[str, object]) -> FastAPI:
    config = MigrationConfig(migration_url=URL, alembic_config=Path("alembic.ini"))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[BootstrapState]:
        engine = create_async_engine(URL)
        yield BootstrapState(bootstrap=Bootstrap(config, engine))
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)
    app.include_router(readiness_router(**router_options))  # type: ignore[arg-type]
    return app


async def readiness_of(app: FastAPI) -> httpx.Response:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get("/readyz")


async def test_readiness_details_are_private_by_default() -> None:
    response = await readiness_of(app_with({}))
    assert response.status_code == 503
    assert response.json() == {"status": "unready"}


async def test_readiness_details_for_those_show_details_admits() -> None:
    def admitted(request: Request) -> bool:
        return request.headers.get("x-operator") == "yes"

    response = await readiness_of(app_with({"show_details": admitted}))
    assert response.json() == {"status": "unready"}
    app = app_with({"show_details": lambda _: True})
    response = await readiness_of(app)
    assert response.status_code == 503
    assert response.json()["status"] == "unready"
    assert "phase" in response.json()


@contextmanager
def bare_logging() -> Iterator[None]:
    """No handler on the root logger or the library's, as under plain uvicorn
    (inside a test's body: pytest puts its own on the root for each phase);
    whatever was there is put back after."""
    root, library = logging.getLogger(), logging.getLogger(LOGGER)
    saved = (root.handlers[:], root.level, library.handlers[:], library.propagate, library.level)
    root.handlers, library.handlers = [], []
    library.propagate, library.level = True, logging.NOTSET
    try:
        yield
    finally:
        root.handlers, root.level, library.handlers = saved[0], saved[1], saved[2]
        library.propagate, library.level = saved[3], saved[4]


def test_progress_goes_to_stderr_when_nothing_is_configured(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with bare_logging():
        make_visible(LogFormat.TEXT)
        make_visible(LogFormat.TEXT)  # once only
        logging.getLogger(f"{LOGGER}.bootstrap").info("applied revision r1 (1 of 1) in 0.010s")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    expected = f"INFO alembic_lockstep.bootstrap [pid {os.getpid()}] applied revision r1"
    assert expected in lines[0]


def test_progress_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    with bare_logging():
        make_visible(LogFormat.JSON)
        logging.getLogger(f"{LOGGER}.bootstrap").info(
            "applied revision %s", "r1", extra={"revision": "r1"}
        )
    event = json.loads(capsys.readouterr().err)
    assert event["message"] == "applied revision r1"
    assert event["revision"] == "r1"
    assert event["level"] == "info"


def test_an_app_that_configured_logging_keeps_its_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with bare_logging():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("APP %(message)s"))
        logging.getLogger().addHandler(handler)
        make_visible(LogFormat.TEXT)
        assert logging.getLogger(LOGGER).handlers == []
        logging.getLogger(f"{LOGGER}.bootstrap").warning("could not verify the checksums")
    assert capsys.readouterr().err == "APP could not verify the checksums\n"


def test_off_adds_nothing() -> None:
    before = logging.getLogger(LOGGER).handlers[:]
    make_visible(LogFormat.OFF)
    assert logging.getLogger(LOGGER).handlers == before


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log_format must be one of text, json, off"):
        MigrationConfig(migration_url=URL, alembic_config=Path("a.ini"), log_format="xml")  # type: ignore[arg-type]
