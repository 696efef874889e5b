"""The first hour of a new user and of an operator (issue 16): the embedded
PostgreSQL's stable port, the way in (a first account and key), the command
line beside a running service, and the words of error messages."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import URL

from service.db.embedded import CONNECTION_FILE, EmbeddedPostgres
from tests.support.api import JSONAPI, api_client, document
from tests.support.configs import shared_folder
from tests.support.postgres import connect
from tests.support.processes import (
    OPERATOR_TOKEN,
    PROCESS_OUTPUTS,
    PROJECT_ROOT,
    ServiceProcess,
    free_port,
    service_environment,
)
from tests.support.revisions import HEAD
from tests.support.secrets import API_KEY, PASSWORDS

# Every test here starts a real process or server.
pytestmark = pytest.mark.processes

# The number `alembic revision` gives the next draft.
NEXT = f"{int(HEAD[:4]) + 1:04d}"


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


@pytest.mark.processes
def test_the_embedded_server_listens_on_the_port_it_is_given(folder: Path) -> None:
    port = free_port()
    chosen = {
        "EMBEDDED_POSTGRES_DIR": str(folder / "postgres"),
        "EMBEDDED_POSTGRES_PORT": str(port),
    }
    ran = service_command("db", "status", **chosen)
    assert ran.returncode == 0, ran.stderr
    assert f"embedded PostgreSQL: postgresql+asyncpg://postgres:***@127.0.0.1:{port}/" in ran.stderr


@pytest.mark.processes
def test_an_embedded_port_that_is_no_port_or_is_taken_is_refused(folder: Path) -> None:
    directory = folder / "postgres"
    for value in ("0", "65536", "-1", "", "5432x", "\u0665\u0664\u0663\u0662", "\u00b2", "8e3"):
        refused = service_command(
            "db", "status", EMBEDDED_POSTGRES_DIR=str(directory), EMBEDDED_POSTGRES_PORT=value
        )
        assert refused.returncode == 2, (value, refused.stderr)
        assert "invalid settings: EMBEDDED_POSTGRES_PORT" in refused.stderr, value
        assert not directory.exists(), "nothing was started"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = service_command(
            "db", "status", EMBEDDED_POSTGRES_DIR=str(directory), EMBEDDED_POSTGRES_PORT=str(port)
        )
    assert refused.returncode == 1, refused.stderr
    assert f"port {port} on 127.0.0.1 is in use (EMBEDDED_POSTGRES_PORT" in refused.stderr
    assert "Traceback" not in refused.stderr


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


# --- the way in: a first account and key ---------------------------------------


def service_command(*arguments: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """`python -m service ARGUMENTS` (or another module's, with `-m` first). Its
    output may hold a new key on purpose: kept for the end-of-run secrets scan
    with the key masked."""
    command = list(arguments) if arguments[0] == "-m" else ["-m", "service", *arguments]
    result = subprocess.run(
        [sys.executable, *command],
        cwd=PROJECT_ROOT,
        env=service_environment(**variables),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    PROCESS_OUTPUTS.append(API_KEY.sub("psk_<new>", result.stdout + result.stderr))
    return result


def _on(url: URL) -> dict[str, str]:
    return {"DATABASE_URL": url.render_as_string(hide_password=False)}


async def test_the_operator_creates_an_account_with_its_owner_and_first_key(
    migrated_database: URL,
) -> None:
    created = service_command(
        "accounts",
        "create",
        "--name",
        "My team",
        "--email",
        "Me@Example.test",
        **_on(migrated_database),
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert API_KEY.fullmatch(secret), "standard output holds the secret alone"
    assert secret not in created.stderr
    assert "Authorization: Bearer" in created.stderr
    async with api_client(migrated_database) as client:
        headers = {"Authorization": f"Bearer {secret}"}
        account = await client.get("/v1/account", headers=headers)
        assert account.status_code == 200, account.text
        assert account.json()["data"]["attributes"]["name"] == "My team"
        users = (await client.get("/v1/users", headers=headers)).json()["data"]
        assert [(u["attributes"]["email"], u["attributes"]["role"]) for u in users] == [
            ("Me@Example.test", "OWNER")
        ]
        environments = (await client.get("/v1/environments", headers=headers)).json()["data"]
        assert {e["attributes"]["key"] for e in environments} == {
            "development",
            "staging",
            "production",
        }
    connection = await connect(migrated_database)
    try:
        audit = await connection.fetchrow("SELECT * FROM operator_audit")
        key = await connection.fetchrow("SELECT * FROM api_keys")
    finally:
        await connection.close()
    assert audit["action"] == "accounts create"
    assert audit["api_key_id"] == key["id"]
    assert audit["reason"]
    assert key["max_role"] == "OWNER"
    assert key["created_by_user_id"] is None


async def test_account_creation_refuses_bad_input_and_writes_nothing(
    migrated_database: URL,
) -> None:
    # (No NUL byte: an argument cannot hold one.)
    refusals = {
        ("--name", "Team", "--email", "not-an-email"): (1, "--email"),
        ("--name", "", "--email", "a@b.test"): (2, "argument --name: must not be blank"),
        ("--name", "   ", "--email", "a@b.test"): (2, "argument --name: must not be blank"),
        # Bytes that are not UTF-8 reach Python as lone surrogates.
        ("--name", "lone \udcff", "--email", "a@b.test"): (2, "--name: is not valid UTF-8"),
        ("--name", "x" * 201, "--email", "a@b.test"): (2, "--name: must be at most 200"),
        ("--name", "Team", "--email", "a" * 250 + "@b.test"): (2, "--email: must be at most 254"),
        ("--name", "Team", "--email", "a@b.test", "--operator", "o" * 129): (
            2,
            "--operator: must be at most 128",
        ),
        ("--name", "Team", "--email", "a@b.test", "--reason", "r" * 1001): (
            2,
            "--reason: must be at most 1000",
        ),
        ("--name", "Team"): (2, "--email"),
    }
    for arguments, (status, named) in refusals.items():
        refused = service_command("accounts", "create", *arguments, **_on(migrated_database))
        assert refused.returncode == status, (arguments, refused.stderr)
        assert named in refused.stderr, (arguments, refused.stderr)
        assert "Traceback" not in refused.stderr
    connection = await connect(migrated_database)
    try:
        for table in ("accounts", "users", "api_keys", "operator_audit"):
            assert await connection.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    finally:
        await connection.close()


async def _counts(url: URL) -> dict[str, int]:
    connection = await connect(url)
    try:
        return {
            table: await connection.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("accounts", "users", "api_keys", "operator_audit")
        }
    finally:
        await connection.close()


@pytest.mark.processes
async def test_the_way_in_names_the_port_the_service_serves_on(migrated_database: URL) -> None:
    by_variable = service_command(
        "accounts", "create", "--name", "A", "--email", "a@t.test", PORT="9123",
        **_on(migrated_database),
    )  # fmt: skip
    assert by_variable.returncode == 0, by_variable.stderr
    assert "http://127.0.0.1:9123/v1/account" in by_variable.stderr
    by_option = service_command(
        "--port", "9124", "accounts", "create", "--name", "B", "--email", "b@t.test",
        **_on(migrated_database),
    )  # fmt: skip
    assert by_option.returncode == 0, by_option.stderr
    assert "http://127.0.0.1:9124/v1/account" in by_option.stderr


@pytest.mark.processes
async def test_the_same_account_step_run_twice_makes_no_second_account(
    migrated_database: URL,
) -> None:
    step = ("accounts", "create", "--name", "My team", "--email", "you@example.test")
    first = service_command(*step, **_on(migrated_database))
    assert first.returncode == 0, first.stderr
    account_id = await _only_account(migrated_database)
    before = await _counts(migrated_database)
    again = service_command(
        "accounts", "create", "--name", "My team", "--email", "You@Example.TEST",
        **_on(migrated_database),
    )  # fmt: skip
    assert again.returncode == 1, again.stderr
    assert again.stdout == "", "no key: standard output holds nothing"
    assert f"exists already ({account_id})" in again.stderr
    assert f"accounts recover {account_id}" in again.stderr
    assert "--allow-duplicate" in again.stderr
    assert "Traceback" not in again.stderr
    assert await _counts(migrated_database) == before
    # Another name, or another owner, is another account; --allow-duplicate says so.
    for arguments in (
        ("--name", "My team 2", "--email", "you@example.test"),
        ("--name", "My team", "--email", "someone@example.test"),
        ("--name", "My team", "--email", "you@example.test", "--allow-duplicate"),
    ):
        made = service_command("accounts", "create", *arguments, **_on(migrated_database))
        assert made.returncode == 0, (arguments, made.stderr)
        assert API_KEY.fullmatch(made.stdout.strip())
    assert (await _counts(migrated_database))["accounts"] == 4


async def _only_account(url: URL) -> uuid.UUID:
    connection = await connect(url)
    try:
        (row,) = await connection.fetch("SELECT id FROM accounts")
    finally:
        await connection.close()
    return uuid.UUID(str(row["id"]))


@pytest.mark.processes
async def test_the_same_account_step_run_at_once_makes_one_account(
    migrated_database: URL,
) -> None:
    """Four commands at once: each finds no account of that name, unless the
    check and the insert are serialised. A lock on `accounts` holds every
    insert back until all four have checked (or wait to), so the race always
    happens here, not only when the processes' starts happen to overlap."""
    command = [
        sys.executable,
        "-m",
        "service",
        "accounts",
        "create",
        "--name",
        "T",
        "--email",
        "o@t.test",
    ]
    environment = service_environment(**_on(migrated_database))
    holder, watcher = await connect(migrated_database), await connect(migrated_database)
    try:
        transaction = holder.transaction()
        await transaction.start()
        # SHARE: reads go on, inserts wait.
        await holder.execute("LOCK TABLE accounts IN SHARE MODE")
        running = [
            subprocess.Popen(
                command, cwd=PROJECT_ROOT, env=environment, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            for _ in range(4)
        ]  # fmt: skip
        # From another session: pg_stat_activity is read once per transaction.
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )
        deadline = time.monotonic() + 120
        while await watcher.fetchval(waiting) < 4:
            assert time.monotonic() < deadline, "the four commands never all waited"
            assert all(process.poll() is None for process in running), "a command ended early"
            await asyncio.sleep(0.05)
        await transaction.commit()
    finally:
        await holder.close()
        await watcher.close()
    outcomes = [process.communicate(timeout=120) for process in running]
    for stdout, stderr in outcomes:
        PROCESS_OUTPUTS.append(API_KEY.sub("psk_<new>", stdout + stderr))
    assert sorted(process.returncode for process in running) == [0, 1, 1, 1]
    assert (await _counts(migrated_database))["accounts"] == 1


async def _create_account(client: httpx.AsyncClient, owner: dict[str, str]) -> httpx.Response:
    return await client.post(
        "/v1/accounts",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Type": JSONAPI},
        json=document("accounts", {"name": "Team", "owner": owner}),
    )


async def test_the_owner_of_a_new_account_is_an_owner_without_saying_so(
    migrated_database: URL,
) -> None:
    async with api_client(migrated_database) as client:
        created = await _create_account(client, {"email": "o@team.test"})
        assert created.status_code == 201, created.text
        owner = next(item for item in created.json()["included"] if item["type"] == "users")
        assert owner["attributes"]["role"] == "OWNER"
        demoted = await _create_account(client, {"email": "m@t.test", "role": "MEMBER"})
        assert demoted.status_code == 422
        assert "OWNER" in demoted.text


# --- the command line beside a running service on the embedded PostgreSQL -------


def test_the_command_line_reaches_the_embedded_server_of_a_running_service(
    folder: Path, tmp_path: Path
) -> None:
    beside = {"EMBEDDED_POSTGRES_DIR": str(folder / "postgres")}
    service = ServiceProcess.service(
        service_environment(**beside, LOG_FORMAT="json"), tmp_path / "serve.log", "--workers", "2"
    )
    try:
        service.wait_for_phase("ready", timeout=120)
        password = (folder / "postgres" / "password").read_text().strip()
        PASSWORDS.append(password)
        connection_file = folder / "postgres" / CONNECTION_FILE
        assert stat.S_IMODE(connection_file.stat().st_mode) == 0o600
        assert password in connection_file.read_text()
        # The way in names the port served on, so the command says where to call.
        assert f"scripts/serve --port {service.port} accounts create --name" in service.logs()
        assert str(connection_file) in service.logs()

        status = service_command("db", "status", **beside)
        assert status.returncode == 0, status.stderr
        assert "at head:          yes" in status.stdout
        assert "embedded PostgreSQL of the running service" in status.stderr
        for arguments in (("db", "history", "--limit", "3"), ("db", "verify"), ("migrate",)):
            ran = service_command(*arguments, **beside)
            assert ran.returncode == 0, (arguments, ran.stderr)
        current = service_command("-m", "alembic", "current", **beside)
        assert current.returncode == 0, current.stderr
        assert "(head)" in current.stdout

        count = ("psql", "-X", "-tA", "-c", "SELECT count(*) FROM accounts")
        assert service_command(*count, **beside).stdout.strip() == "0"
        created = service_command(
            "accounts", "create", "--name", "T", "--email", "o@t.test", **beside
        )
        assert created.returncode == 0, created.stderr
        assert service_command(*count, **beside).stdout.strip() == "1"
        account = httpx.get(
            f"http://127.0.0.1:{service.port}/v1/account",
            headers={"Authorization": f"Bearer {created.stdout.strip()}"},
        )
        assert account.status_code == 200, account.text
        service.assert_running()  # the commands neither stopped nor replaced its server
        service.signal(signal.SIGTERM)
        assert service.wait(30) == 0
        assert not connection_file.exists()
    finally:
        service.stop()
    for output in PROCESS_OUTPUTS:
        assert password not in output


@pytest.mark.processes
def test_the_way_in_is_offered_only_while_there_is_no_account(folder: Path, tmp_path: Path) -> None:
    beside = {"EMBEDDED_POSTGRES_DIR": str(folder / "postgres")}
    assert service_command("migrate", **beside).returncode == 0
    created = service_command("accounts", "create", "--name", "T", "--email", "o@t.test", **beside)
    assert created.returncode == 0, created.stderr
    service = ServiceProcess.service(service_environment(**beside), tmp_path / "serve.log")
    try:
        service.wait_for_phase("ready", timeout=120)
        service.signal(signal.SIGTERM)
        assert service.wait(30) == 0
    finally:
        service.stop()
    assert "API: http://127.0.0.1:" in service.logs()
    assert "accounts create" not in service.logs()


def test_alembic_without_a_database_says_what_to_do(folder: Path) -> None:
    ran = service_command("-m", "alembic", "current", EMBEDDED_POSTGRES_DIR=str(folder))
    assert ran.returncode == 1
    assert ran.stderr.strip().splitlines()[-1:] == [ran.stderr.strip()], "one line"
    assert "set DATABASE_URL" in ran.stderr
    assert "scripts/serve" in ran.stderr


# --- a drafted revision passes CI as written -----------------------------------

SCRATCH_COLUMN = "    scratch_notes: Mapped[dict[str, object] | None] = mapped_column(JSONB)\n"


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The project's code and migrations in a folder of its own: a draft written
    there never reaches alembic/versions."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("service", "alembic"):
        shutil.copytree(
            PROJECT_ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in ("alembic.ini", "settings.py", "pyproject.toml"):
        shutil.copy(PROJECT_ROOT / name, copy / name)
    (copy / ".venv").symlink_to(PROJECT_ROOT / ".venv")
    return copy


def _draft(copy: Path, *arguments: str, **variables: str) -> Path:
    environment = service_environment(**variables)
    environment["PYTHONPATH"] = str(copy)
    ran = subprocess.run(
        [sys.executable, "-m", "alembic", "revision", *arguments],
        cwd=copy, env=environment, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    PROCESS_OUTPUTS.append(ran.stdout + ran.stderr)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    (draft,) = (copy / "alembic" / "versions").glob(f"*_{NEXT}_*.py")
    return draft


def _lint(path: Path, copy: Path) -> None:
    ruff = PROJECT_ROOT / ".venv" / "bin" / "ruff"
    for command in (["check", str(path)], ["format", "--check", str(path)]):
        linted = subprocess.run([str(ruff), *command], cwd=copy, capture_output=True, text=True)
        assert linted.returncode == 0, linted.stdout + linted.stderr


def test_an_autogenerated_draft_is_numbered_and_passes_the_lint(
    project_copy: Path, migrated_database: URL
) -> None:
    models = project_copy / "service" / "models.py"
    text = models.read_text()
    anchor = "    name: Mapped[str] = mapped_column(String(200))\n"
    assert anchor in text
    models.write_text(text.replace(anchor, anchor + SCRATCH_COLUMN, 1))
    draft = _draft(
        project_copy, "--autogenerate", "-m", "Accounts: scratch notes", **_on(migrated_database)
    )
    assert draft.name.endswith(f"_{NEXT}_accounts_scratch_notes.py")
    source = draft.read_text()
    assert f'revision: str = "{NEXT}_accounts_scratch_notes"' in source
    assert f'down_revision: str | Sequence[str] | None = "{HEAD}"' in source
    assert "op.add_column" in source
    assert "postgresql.JSONB" in source
    _lint(draft, project_copy)
    assert not list((PROJECT_ROOT / "alembic" / "versions").glob(f"*_{NEXT}_*"))


def test_a_draft_written_by_hand_is_numbered_without_a_database(project_copy: Path) -> None:
    draft = _draft(project_copy, "-m", "Users: a nickname, backfilled in batches later on")
    # The id fits Alembic's version column (32 characters) with whole words.
    assert draft.name.endswith(f"_{NEXT}_users_a_nickname_backfilled.py")
    _lint(draft, project_copy)
    assert f'"{NEXT}_users_a_nickname_backfilled"' in draft.read_text()


# --- the first set-up says what it does ------------------------------------------


def test_the_first_set_up_says_what_it_is_doing(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "scripts" / "ensure-environment", project / "scripts")
    # No package to install: the steps around the installation are what is shown.
    (project / "requirements-none.txt").write_text("# nothing\n")
    environment = {**os.environ, "PYTHON": sys.executable}
    script = [str(project / "scripts" / "ensure-environment"), "requirements-none.txt"]
    first = subprocess.run(script, env=environment, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    steps = [line for line in first.stderr.splitlines() if line.startswith("setting up .venv:")]
    assert [step.split(":")[1].split()[0] for step in steps] == [
        "creating",
        "installing",
        "compiling",
        "ready",
    ]
    assert first.stdout == ""
    again = subprocess.run(script, env=environment, capture_output=True, text=True, timeout=60)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    # The documentation's packages go to an environment of their own.
    docs = subprocess.run(
        [*script, ".venv-docs"], env=environment, capture_output=True, text=True, timeout=300
    )
    assert docs.returncode == 0, docs.stderr
    assert docs.stderr.splitlines()[0].startswith("setting up .venv-docs: creating")
    assert (project / ".venv-docs" / "bin" / "python").exists()


async def test_commands_on_a_refusing_database_say_so_in_one_line(
    migrated_database: URL, empty_database: URL
) -> None:
    """A wrong password, a closed port, a schema behind head: one line, exit 1."""
    cases = {
        ("db", "status"): (
            migrated_database.set(password="not-the-password"),
            "(authentication_failed): InvalidPasswordError",
        ),
        ("db", "history"): (migrated_database.set(port=free_port()), "(unreachable)"),
        ("accounts", "create", "--name", "Team", "--email", "a@b.test"): (
            empty_database,
            "the schema is not at head: run `python -m service migrate`",
        ),
    }
    for arguments, (url, said) in cases.items():
        failed = service_command(*arguments, **_on(url))
        assert failed.returncode == 1, (arguments, failed.stderr)
        assert said in failed.stderr, (arguments, failed.stderr)
        assert "Traceback" not in failed.stderr
        assert "not-the-password" not in failed.stderr + failed.stdout
