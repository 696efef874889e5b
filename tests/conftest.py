"""Shared fixtures: one PostgreSQL server per run, one database per test."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from settings import Settings
from tests.postgres import create_database, drop_database, service_url, test_server
from tests.processes import (
    OPERATOR_TOKEN,
    PROCESS_LOGS,
    PROCESS_OUTPUTS,
    PROJECT_ROOT,
    SERVICE_VARIABLES,
)
from tests.revisions import HEAD

__all__ = ["OPERATOR_TOKEN"]

TEST_SCENARIOS = PROJECT_ROOT / "tests" / "scenarios"


@pytest.fixture(autouse=True)
def _clean_service_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from each test, never from the developer's shell."""
    for name in SERVICE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEST_SCENARIO_BASE", HEAD)


@pytest.fixture(scope="session")
def admin_url() -> Iterator[URL]:
    with shared_folder() as folder, test_server(folder) as url:
        yield url


@contextmanager
def shared_folder() -> Iterator[Path]:
    """A temporary folder that the embedded server's own user may enter when we are
    root (pytest's tmp_path lives in a folder only its owner may enter)."""
    folder = Path(tempfile.mkdtemp(prefix="platform-service-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


API_KEY = re.compile(r"psk_[A-Za-z0-9_-]{43}")
# The database password of this run, once the server is known.
PASSWORDS: list[str] = []
# What pytest captured of every test phase: the in-process apps' logs and output.
CAPTURED: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def _register_database_password(admin_url: URL) -> None:
    if admin_url.password:
        PASSWORDS.append(admin_url.password)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    CAPTURED.append(report.capstdout + report.capstderr + report.caplog)


def leaked_secrets() -> list[str]:
    """Where the logs and output of the whole run (this process's captured
    output and every process the tests started) show a database password, the
    operator token or an API key."""
    texts = {
        f"log {path}": path.read_text(errors="replace") for path in PROCESS_LOGS if path.exists()
    }
    texts.update({f"process output {n}": text for n, text in enumerate(PROCESS_OUTPUTS)})
    texts.update({f"captured test output {n}": text for n, text in enumerate(CAPTURED)})
    found = []
    for where, text in texts.items():
        if any(password in text for password in PASSWORDS):
            found.append(f"{where}: the database password")
        if OPERATOR_TOKEN in text:
            found.append(f"{where}: the operator token")
        if API_KEY.search(text):
            found.append(f"{where}: an API key")
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the run, a secret anywhere in its logs fails it."""
    leaks = leaked_secrets()
    if leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("!", "secrets in the logs of this run")
            for leak in leaks[:20]:
                reporter.write_line(leak)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
async def empty_database(admin_url: URL) -> AsyncIterator[URL]:
    """A new, empty database for this test alone."""
    url = await create_database(admin_url)
    yield url
    await drop_database(admin_url, url.database or "")


@pytest.fixture(scope="session")
async def migrated_template(admin_url: URL) -> AsyncIterator[str]:
    """A database at head, built once by the real bootstrap, to clone."""
    from service.bootstrap import migration_config
    from service.migrations.commands import migrate

    url = await create_database(admin_url)
    assert await migrate(migration_config(settings_for(url)), None) == 0
    yield url.database or ""
    await drop_database(admin_url, url.database or "")


@pytest.fixture
async def migrated_database(admin_url: URL, migrated_template: str) -> AsyncIterator[URL]:
    """A database at head for this test alone (a clone of the template)."""
    url = await create_database(admin_url, template=migrated_template)
    yield url
    await drop_database(admin_url, url.database or "")


@pytest.fixture(scope="module")
async def module_database(admin_url: URL, migrated_template: str) -> AsyncIterator[URL]:
    """A database at head shared by the tests of one module (for a module's server)."""
    url = await create_database(admin_url, template=migrated_template)
    yield url
    await drop_database(admin_url, url.database or "")


def settings_for(url: URL, **overrides: object) -> Settings:
    """Settings for an in-process app on `url`; failures keep the test process alive."""
    values: dict[str, object] = {
        "database_url": service_url(url),
        "migration_exit_on_failure": False,
        "database_retry_max_interval": 0.5,
        "readiness_poll_interval": 0.2,
        "operator_token": OPERATOR_TOKEN,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def scenario_config(scenario: str) -> Path:
    """alembic.ini of a test-only migration scenario under tests/scenarios."""
    return TEST_SCENARIOS / scenario / "alembic.ini"


async def eventually(condition, within: float = 30.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Await `condition()` until truthy; fail after `within` seconds."""
    async with asyncio.timeout(within):
        while not (result := await condition()):  # noqa: ASYNC110 (polls the database)
            await asyncio.sleep(interval)
        return result


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.reports import REPORTS

    for name, values in REPORTS.items():
        terminalreporter.write_sep("-", f"report: {name}")
        terminalreporter.write_line(json.dumps(values, indent=2))
