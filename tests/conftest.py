"""Fixtures: one PostgreSQL server per run, one database per test."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import alembic_lockstep.bootstrap
import httpx
import pytest
from alembic_lockstep.scripts import ScriptFiles, read_script_files
from sqlalchemy.engine import URL

from tests.support import process_guard
from tests.support.api import api_client
from tests.support.configs import settings_for, shared_folder
from tests.support.postgres import create_database, drop_database, test_server
from tests.support.processes import SERVICE_VARIABLES
from tests.support.reports import REPORTS, drain_reports
from tests.support.revisions import HEAD
from tests.support.secrets import PASSWORDS, drain_process_leaks, secrets_in

# CI runs the suite twice: on the embedded PostgreSQL 18, then on Debian's
# PostgreSQL 15 (.ci/run), where these modules are left out (-m "not
# one_server"). They start servers of their own (the embedded one, one with
# TLS) and would run the same twice; or they are the longest runs (the fuzzer,
# the previous release, which CI also checks on 15 with `python -m
# release_check`, the online migration under load, the random kills and the
# deterministic kills after each commit, the workers' exit statuses, the event
# streams' listener behind closed ports and poolers), whose subject is
# processes, signals, the lock and the listener rather than the server's version.
ONE_SERVER_MODULES = frozenset(
    {
        "tests/db/test_embedded.py",
        "tests/db/test_tls.py",
        "tests/test_first_hour.py",
        "tests/api/test_openapi_fuzzing.py",
        "tests/migrations/test_previous_release.py",
        "tests/migrations/test_load_during_migration.py",
        "tests/migrations/test_random_kills.py",
        "tests/migrations/test_rerun_after_commit.py",
        "tests/migrations/test_worker_exits.py",
        "tests/api/test_sdk_events.py",
    }
)


async def _script_files(config_path: Path) -> ScriptFiles:
    """An app served in process reads its revision scripts for the checks
    while serving in a process of its own (alembic_lockstep/scripts.py). A
    test without the `processes` marker starts no process (the fast tier's
    promise, which tests/support/process_guard.py keeps): from its setup to
    its teardown, that process cannot be started, and the app reads them
    itself, as it does wherever no process can be started. The check runs
    seconds after an app starts, so an app a module's fixture started may
    make it in any later test of the module, or between its phases."""
    if process_guard.unmarked_test_running():
        raise OSError("a test without the processes marker starts no process")
    return await read_script_files(config_path)


def pytest_configure(config: pytest.Config) -> None:
    process_guard.install()
    # setattr: the bootstrap imports the name for itself, not to export it.
    setattr(alembic_lockstep.bootstrap, "read_script_files", _script_files)  # noqa: B010


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> object:
    with process_guard.running(item):
        return (yield)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.relative_to(config.rootpath).as_posix() in ONE_SERVER_MODULES:
            item.add_marker(pytest.mark.one_server)


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


@pytest.fixture(scope="session", autouse=True)
def _register_database_password(admin_url: URL) -> None:
    if admin_url.password:
        PASSWORDS.append(admin_url.password)


# What the reports of the run (from this process or pytest-xdist's workers)
# carried: leaked secrets and processes started without the marker.
RUN_FAILURES: dict[str, list[str]] = {
    "secrets in the logs of this run": [],
    "processes started by tests without the `processes` marker": [],
}
LEAKS, UNMARKED = RUN_FAILURES.values()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """At a test's end, in the process that ran it: its processes' secrets, the
    processes it started unmarked and what it reported, carried by the report."""
    report = yield
    if call.when == "teardown":
        report.user_properties.append(("leaks", drain_process_leaks(item.nodeid)))
        report.user_properties.append(("unmarked", process_guard.drain_unmarked()))
        report.user_properties.append(("reports", drain_reports()))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    LEAKS.extend(
        secrets_in(
            f"{report.nodeid} ({report.when}): captured output",
            report.capstdout + report.capstderr + report.caplog,
        )
    )
    for name, values in report.user_properties:
        if name == "leaks":
            LEAKS.extend(values)  # type: ignore[arg-type]
        elif name == "unmarked":
            UNMARKED.extend(values)  # type: ignore[arg-type]
        elif name == "reports":
            REPORTS.update(values)  # type: ignore[call-overload]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the run, a secret anywhere in its logs fails it, and so does a
    process started by a test without the `processes` marker (even where the
    test caught the error the guard raised)."""
    if hasattr(session.config, "workerinput"):
        return  # a pytest-xdist worker: its reports went to the controller
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for title, lines in RUN_FAILURES.items():
        if not lines:
            continue
        if reporter is not None:
            reporter.write_sep("!", title)
            for line in lines[:20]:
                reporter.write_line(line)
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
    from alembic_lockstep.commands import migrate

    from service.bootstrap import migration_config

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


# Requests a second one key may make to a module's shared app (see module_client).
MODULE_KEY_RATE = 100_000.0


@pytest.fixture(scope="module")
async def module_client(module_database: URL) -> AsyncIterator[httpx.AsyncClient]:
    """One app at head, through its real lifespan, shared by the tests of a
    module: starting an app and cloning a database cost most of an in-process
    test. Every resource is scoped by account, so each test makes an account
    of its own (tests.support.api.new_tenant) and sees nothing of the others.

    Those accounts are all made with the one operator token, so a module's
    tests spend one key's budget together: a module of quick tests made more
    than the default 200 in two seconds and was refused 429. The limit is
    raised, not turned off, so every request still passes through it; the
    default limit is tested with apps of their own
    (tests/api/test_response_rules.py)."""
    async with api_client(module_database, rate_limit_per_key=MODULE_KEY_RATE) as client:
        yield client


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for name, values in REPORTS.items():
        terminalreporter.write_sep("-", f"report: {name}")
        terminalreporter.write_line(json.dumps(values, indent=2))
