"""The first hour of a new user and of an operator (issue 16): the embedded
PostgreSQL's stable port, the way in (a first account and key), the command
line beside a running service, and the words of error messages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from service.db.embedded import EmbeddedPostgres
from tests.conftest import shared_folder
from tests.processes import PROJECT_ROOT


@pytest.fixture
def folder() -> Iterator[Path]:
    with shared_folder() as path:
        yield path


async def test_the_embedded_server_keeps_its_port_across_a_quick_restart(folder: Path) -> None:
    server = EmbeddedPostgres(folder / "postgres")
    server.start()
    first_port = server.port
    # A connection open while the server stops is closed by the server: its end
    # lingers in TIME_WAIT on the server's port, as the service's pool's do.
    url = server.url().set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(url)
    try:
        server.stop()
    finally:
        connection.terminate()
    restarted = EmbeddedPostgres(folder / "postgres")
    restarted.start()
    try:
        assert restarted.port == first_port
    finally:
        restarted.stop()


ROLE_AFTER_A = re.compile(r"\ba (ADMIN|OWNER|EDITOR)\b")


def test_no_message_or_document_says_a_before_a_role_that_takes_an() -> None:
    """Say "an ADMIN", "an OWNER": the role names are read as words."""
    sources = [
        *PROJECT_ROOT.joinpath("service").rglob("*.py"),
        PROJECT_ROOT / "settings.py",
        PROJECT_ROOT / "README.md",
        *PROJECT_ROOT.joinpath("docs").rglob("*.md"),
    ]
    found = [
        f"{path.relative_to(PROJECT_ROOT)}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if ROLE_AFTER_A.search(line)
    ]
    assert found == []
